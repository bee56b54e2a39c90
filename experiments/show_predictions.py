"""A trained workdir's predictions beside the ground truth, for a person to look at.

    python -m experiments.show_predictions --workdir=DIR [--samples=1] [--out=predictions.png]

One row per view of the first held-out test samples, each view its own single-image prediction
by the workdir's task (`Task.predict`), as in evaluation. What a row shows depends on what the
task predicts; a task is shown against the truth it is evaluated on:

- pose25d (2D and 3D): the crop with the predicted 2D skeleton, the predicted 3D pose (front and
  side) and the true one (front and side), both root at the centre and at the same scale, so
  the row shows what MPJPE measures; the prediction's titles give its MPJPE.
- pose_transformer (3D only): the crop, then the predicted and the true 3D pose as above.
- deeppose (2D only): the crop with each stage's 2D skeleton (one panel per stage, the last
  titled "(final)"), then the crop with the true 2D skeleton (joints not in joints_2d_mask
  hollow: hidden or not labelled).
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

from experiments import cli
from posejax import viz
from posejax.data.batching.sources import make_source
from posejax.tasks import Task, get_task
from posejax.train.checkpoints import restore_model

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir.")
_OUT = flags.DEFINE_string("out", "predictions.png", "Where to write the PNG.")
_SAMPLES = flags.DEFINE_integer("samples", 1, "Test samples to show (a row per view).")
_FIRST = flags.DEFINE_integer("first", 0, "Index of the first test sample.")
_SIZE = flags.DEFINE_integer("size", 192, "Side of each panel, pixels.")

# What a row may need of a sample, per view.
VIEW_KEYS = ("image", "camera", "joints_2d", "joints_2d_mask", "joints_3d")


def present_views(sample: dict) -> dict[str, np.ndarray]:
  """The sample's VIEW_KEYS with a leading view axis (a single-image sample, such as LSP's, is
  one view), present views only."""
  single = np.ndim(sample["image"]) == 3
  views = {k: np.asarray(sample[k])[None] if single else np.asarray(sample[k])
           for k in VIEW_KEYS if k in sample}
  present = (np.ones(len(views["image"]), bool) if single or "view_mask" not in sample
             else np.asarray(sample["view_mask"], bool))
  return {k: v[present] for k, v in views.items()}


def view_row(prediction: dict, view: dict, task: Task, size: int) -> list:
  """The panels of one view (`viz.prediction_and_truth`), given its prediction and its sample
  arrays (no view axis)."""
  has_3d = "pose_3d_mm" in prediction
  # A task is shown against the truth it is evaluated on: 3D where it predicts 3D, else 2D.
  return viz.prediction_and_truth(
      view["image"], viz.joints_to_draw(prediction), prediction.get("pose_3d_mm"),
      view["joints_3d"] if has_3d else None,
      truth_2d=None if has_3d else view["joints_2d"],
      truth_2d_mask=None if has_3d else view["joints_2d_mask"],
      joint_mask=viz.confident_joints(prediction), valid=bool(prediction.get("valid", True)),
      skeleton=task.skeleton, size=size)


def sample_rows(task: Task, model, sample: dict, size: int) -> list[list]:
  """A row of panels (`view_row`) for each present view of one sample."""
  views = present_views(sample)
  predictions = task.predict(model, views["image"], views["camera"])
  return [view_row({k: v[i] for k, v in predictions.items()},
                   {k: v[i] for k, v in views.items()}, task, size)
          for i in range(len(views["image"]))]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _WORKDIR.value is None:
    raise app.UsageError("--workdir is required")
  model, config = restore_model(_WORKDIR.value)
  task = get_task(config)
  source = make_source(config.data)
  rows = []
  for index in range(_FIRST.value, _FIRST.value + _SAMPLES.value):
    rows += sample_rows(task, model, source("test", index), _SIZE.value)
  viz.contact_sheet(rows).save(_OUT.value)
  print(f"wrote {_OUT.value}: {_SAMPLES.value} test samples, {len(rows)} views")


if __name__ == "__main__":
  cli.run(main)
