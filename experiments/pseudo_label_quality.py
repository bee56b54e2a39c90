"""How good a run's 2D pseudo labels are, where the multi-view data has 2D labels to check them.

    python -m experiments.pseudo_label_quality --workdir=DIR [--thresholds=0.3,0.5,0.7]

Reads DIR/pseudo_labels.npz (written by a ws run with `pseudo_labels.enabled`) and compares
its joints with the dataset's own 2D labels of the same views (the synthetic data and
Human3.6M have them; training never reads them). For each confidence threshold: the share of
the labeled joints kept, and the pixel error of the kept and of the dropped ones.
"""

from __future__ import annotations

import os

from absl import app, flags

from experiments import cli
from posejax.data.batching.sources import make_source
from posejax.tasks.pose25d import pseudo_labels
from posejax.train.checkpoints import load_config

_WORKDIR = flags.DEFINE_string("workdir", None, "A ws training workdir with pseudo labels.")
_THRESHOLDS = flags.DEFINE_list("thresholds", ["0.3", "0.5", "0.7"],
                                "Confidence thresholds to report (the run used its own).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _WORKDIR.value is None:
    raise app.UsageError("--workdir is required")
  path = os.path.join(_WORKDIR.value, pseudo_labels.FILENAME)
  if not os.path.exists(path):
    raise app.UsageError(f"{path} does not exist: train with mode ws and "
                         "--config.pseudo_labels.enabled=True first")
  labels = pseudo_labels.load(path)
  source = make_source(load_config(_WORKDIR.value).data)
  if "joints_2d" not in source("train_multiview", 0):
    raise app.UsageError("This dataset's multi-view stream has no 2D labels to compare with")
  print(f"{path}: made at threshold {float(labels['threshold'])}")
  print(pseudo_labels.format_quality(*pseudo_labels.quality(labels, source),
                                     [float(t) for t in _THRESHOLDS.value]))


if __name__ == "__main__":
  cli.run(main)
