"""How good a run's 2D pseudo labels are, where the multi-view data has 2D labels to check them.

    python -m experiments.pseudo_label_quality --workdir=DIR [--thresholds=0.3,0.5,0.7]

Reads DIR/pseudo_labels.npz (written by a ws run with `pseudo_labels.enabled`) and compares
its joints with the dataset's own 2D labels of the same views (the synthetic data and
Human3.6M have them; training never reads them). For each confidence threshold: the share of
the labeled joints kept, and the pixel error of the kept and of the dropped ones.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

# pylint: disable=wrong-import-position

import numpy as np
from absl import app, flags

from posejax.train import pseudo_labels
from posejax.train.loop import load_config, make_source, quiet_library_logs

_WORKDIR = flags.DEFINE_string("workdir", None, "A ws training workdir with pseudo labels.")
_THRESHOLDS = flags.DEFINE_list("thresholds", ["0.3", "0.5", "0.7"],
                                "Confidence thresholds to report (the run used its own).")


def label_errors(labels: dict[str, np.ndarray], source) -> tuple[np.ndarray, np.ndarray]:
  """(pixel error, confidence) of every joint of every view that the dataset labels."""
  errors, confidences = [], []
  for index in range(len(labels["joints_2d"])):
    sample = source("train_multiview", index)
    views = len(sample["image"])
    labeled = np.asarray(sample["joints_2d_mask"], bool)
    labeled &= np.asarray(sample.get("view_mask", np.ones(views, bool)), bool)[:, None]
    error = np.linalg.norm(labels["joints_2d"][index, :views] - sample["joints_2d"], axis=-1)
    errors.append(error[labeled])
    confidences.append(labels["confidence"][index, :views][labeled])
  return np.concatenate(errors), np.concatenate(confidences)


def report(errors: np.ndarray, confidences: np.ndarray, thresholds) -> str:
  lines = [f"{len(errors)} labeled joints; all: mean error {errors.mean():.2f} px, "
           f"median {np.median(errors):.2f} px",
           f"{'threshold':>10}{'kept':>8}{'kept: mean px':>15}{'median px':>11}"
           f"{'dropped: mean px':>18}"]
  for threshold in thresholds:
    kept = confidences > threshold
    mean = lambda x: f"{x.mean():.2f}" if len(x) else "-"  # noqa: E731
    median = f"{np.median(errors[kept]):.2f}" if kept.any() else "-"
    lines.append(f"{threshold:>10.2f}{100 * kept.mean():>7.1f}%{mean(errors[kept]):>15}"
                 f"{median:>11}{mean(errors[~kept]):>18}")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet_library_logs()
  if _WORKDIR.value is None:
    raise app.UsageError("--workdir is required")
  path = os.path.join(_WORKDIR.value, pseudo_labels.FILENAME)
  if not os.path.exists(path):
    raise app.UsageError(f"{path} does not exist: train with mode ws and "
                         "--config.pseudo_labels.enabled=True first")
  with np.load(path) as stored:
    labels = {k: stored[k] for k in stored.files}
  source = make_source(load_config(_WORKDIR.value))
  if "joints_2d" not in source("train_multiview", 0):
    raise app.UsageError("This dataset's multi-view stream has no 2D labels to compare with")
  print(f"{path}: made at threshold {float(labels['threshold'])}")
  print(report(*label_errors(labels, source), [float(t) for t in _THRESHOLDS.value]))


if __name__ == "__main__":
  app.run(main)
