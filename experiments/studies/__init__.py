"""Studies: one question each, measured (their figures are in docs/results.md)."""

from __future__ import annotations


def latest_pose25d_model(workdir: str, study: str):
  """(config, task, model, step) of a pose25d workdir's latest checkpoint; a usage error naming
  the `study` ("this study decodes pose25d") for a workdir of another task."""
  # Imported here, not above: a study sets TF_CPP_MIN_LOG_LEVEL before the library loads, and
  # this package is imported before the study's module.
  from absl import app  # pylint: disable=import-outside-toplevel
  from posejax.tasks import get_task  # pylint: disable=import-outside-toplevel
  from posejax.train import checkpoints  # pylint: disable=import-outside-toplevel

  config = checkpoints.load_config(workdir)
  if config.task != "pose25d":
    raise app.UsageError(f"{workdir} holds a {config.task!r} model; {study}")
  task = get_task(config)
  model, step = checkpoints.restore_task_model(task, checkpoints.checkpoint_dir(workdir,
                                                                                "latest"))
  return config, task, model, step
