"""A trained workdir's predictions beside the ground truth, for a person to look at.

    python -m experiments.show_predictions --workdir=DIR [--samples=1] [--out=predictions.png]

One row per view of the first held-out test samples: the crop with the predicted 2D skeleton,
the predicted 3D pose (front and side) and the ground truth (front and side), both poses root
at the centre and at the same scale, so the rows show what MPJPE measures; each prediction's
title gives its MPJPE. Every view is its own single-image prediction, as in evaluation.
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

from experiments import cli
from posejax import viz
from posejax.data.batching.sources import make_source
from posejax.models.inference import predict_metric
from posejax.train.checkpoints import restore_model

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir.")
_OUT = flags.DEFINE_string("out", "predictions.png", "Where to write the PNG.")
_SAMPLES = flags.DEFINE_integer("samples", 1, "Test samples to show (a row per view).")
_FIRST = flags.DEFINE_integer("first", 0, "Index of the first test sample.")
_SIZE = flags.DEFINE_integer("size", 192, "Side of each panel, pixels.")


def sample_rows(model, sample: dict, size: int) -> list[list]:
  """Five panels (`viz.prediction_and_truth`) for each view of one multi-view sample."""
  predictions = predict_metric(model, sample["image"], sample["camera"])
  views = np.flatnonzero(sample.get("view_mask", np.ones(len(sample["image"]), bool)))
  return [viz.prediction_and_truth(
      sample["image"][v], predictions["joints_2d"][v], predictions["pose_3d_mm"][v],
      sample["joints_3d"][v], joint_mask=predictions["confidence"][v] >= 0.5,
      valid=bool(predictions["valid"][v]), skeleton=model.skeleton, size=size) for v in views]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _WORKDIR.value is None:
    raise app.UsageError("--workdir is required")
  model, config = restore_model(_WORKDIR.value)
  source = make_source(config.data)
  rows = []
  for index in range(_FIRST.value, _FIRST.value + _SAMPLES.value):
    rows += sample_rows(model, source("test", index), _SIZE.value)
  viz.contact_sheet(rows).save(_OUT.value)
  print(f"wrote {_OUT.value}: {_SAMPLES.value} test samples, {len(rows)} views")


if __name__ == "__main__":
  cli.run(main)
