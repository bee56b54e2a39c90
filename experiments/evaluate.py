r"""Evaluate a trained workdir: `python -m experiments.evaluate --workdir=DIR [--checkpoint=best]
[--stream=validation]`.

MPJPE, N-MPJPE, PA-MPJPE (mm, poses scaled from the mean bone lengths), 3D PCK@150 and AUC on
the held-out test stream, per action where the dataset has actions: a table on the console and
eval_latest.json / eval_best.json in the workdir. The workdir's own config.json is used unless
--config is given (e.g. to change `--config.eval.samples=N`). `--stream=validation` evaluates the
validation stream instead (the training's validation samples, `eval.validation_samples`), with
every figure of the test table, for choices that must not look at the test set.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from experiments import cli
from posejax.train.checkpoints import load_config
from posejax.train.loop import evaluate_workdir

_CONFIG = config_flags.DEFINE_config_file("config", None, "Configuration file (default: the "
                                          "workdir's config.json).")
_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir.")
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "latest", ["latest", "best"],
                                "The latest checkpoint, or the best by validation MPJPE.")
_STREAM = flags.DEFINE_enum("stream", "test", ["test", "validation"],
                            "The held-out test stream, or the validation stream.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _WORKDIR.value is None:
    raise app.UsageError("--workdir is required")
  config = _CONFIG.value if _CONFIG.value is not None else load_config(_WORKDIR.value)
  evaluate_workdir(config, _WORKDIR.value, _CHECKPOINT.value, _STREAM.value)


if __name__ == "__main__":
  cli.run(main, config_flags=[_CONFIG])
