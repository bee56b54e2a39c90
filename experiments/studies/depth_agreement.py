r"""Does a weakly supervised model's relative depth follow the truth, or its mirror image?

    python -m experiments.studies.depth_agreement --workdirs=RUNS/a,RUNS/b

For each pose25d workdir (its latest checkpoint), on the validation stream: per view, the
Pearson correlation over the joints between the predicted relative depths and the true ones;
the share of views below 0 (depth anti-correlated with the truth: the pose's mirror image
through the image plane, in part); the rel-depth spread beside the truth's (scale-normalised
units); and the MPJPE of the prediction, of the prediction with its relative depths negated,
of the true 2D with the predicted depths, and of the predicted 2D with the true relative depths:
which of the two halves of the 2.5D pose the error comes from.

Why: on a flat start (stage 2 begins with every relative depth near 0) a pose and its mirror
image through the image plane are about equally far, and for crops seen nearly orthographically
they are about equally consistent between views (a mirror of every view is still one rigid
motion away from the mirror of the other). On the session-22 VM, stage 2 of the main job went
wrong on two batch orders of four, and those models' depth was anti-correlated with the truth
on 18-21 % of the views, against 0-1 % on the runs that worked (BUILD_NOTES.md, session 22).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

# pylint: disable=wrong-import-position

import numpy as np
from absl import app, flags

from experiments import cli, studies
from posejax import geometry, metrics
from posejax.data.batching.sources import make_source


def depth_correlations(predicted_depth, true_depth) -> np.ndarray:
  """[N] Pearson correlation over the joints of each view's [N, J] relative depths (any
  common offset or scale drops out); 0 for a view whose depths are all equal."""
  predicted = np.asarray(predicted_depth, np.float64)
  true = np.asarray(true_depth, np.float64)
  predicted = predicted - predicted.mean(-1, keepdims=True)
  true = true - true.mean(-1, keepdims=True)
  norms = np.linalg.norm(predicted, axis=-1) * np.linalg.norm(true, axis=-1)
  return np.divide(np.sum(predicted * true, -1), norms, out=np.zeros(len(norms)),
                   where=norms > 0)


def metric_mpjpe(joints_2d, rel_depth, cameras, truths, skeleton) -> np.ndarray:
  """[N] MPJPE (mm) of the poses reconstructed from 2D and relative depths, scaled to mm with
  the mean bone lengths, as the evaluation does."""
  poses, _, _ = geometry.reconstruct(joints_2d, rel_depth, cameras, skeleton)
  scale = geometry.estimate_scale(poses, skeleton)
  return np.asarray(metrics.mpjpe(poses * scale[..., None, None], truths))


def agreement(task, model, source, samples: int) -> dict:
  """The depth-agreement figures of one model on the first `samples` validation samples."""
  correlations, spreads, true_spreads = [], [], []
  errors = {"predicted": [], "depth negated": [], "true 2D": [], "true depth": []}
  for index in range(samples):
    sample = source("validation", index)
    mask = sample.get("view_mask", np.ones(len(sample["image"]), bool))
    predicted = task.predict(model, sample["image"], sample["camera"])
    joints_2d, rel_depth = predicted["joints_2d"][mask], predicted["rel_depth"][mask]
    true_depth = np.asarray(geometry.relative_depth_target(sample["joints_3d"][mask],
                                                           model.skeleton))
    correlations.append(depth_correlations(rel_depth, true_depth))
    spreads.append(np.std(rel_depth, -1))  # over the joints: the common offset drops out
    true_spreads.append(np.std(true_depth, -1))
    args = sample["camera"][mask], sample["joints_3d"][mask], model.skeleton
    errors["predicted"].append(metric_mpjpe(joints_2d, rel_depth, *args))
    errors["depth negated"].append(metric_mpjpe(joints_2d, -rel_depth, *args))
    errors["true 2D"].append(metric_mpjpe(sample["joints_2d"][mask], rel_depth, *args))
    errors["true depth"].append(metric_mpjpe(joints_2d, true_depth, *args))
  correlations = np.concatenate(correlations)
  return dict(views=len(correlations), mean_correlation=float(correlations.mean()),
              anti_correlated=float(np.mean(correlations < 0)),
              rel_depth_spread=float(np.mean(np.concatenate(spreads))),
              true_rel_depth_spread=float(np.mean(np.concatenate(true_spreads))),
              **{f"mpjpe, {name}": float(np.mean(np.concatenate(e))) for name, e in errors.items()})


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  for workdir in flags.FLAGS.workdirs:
    config, task, model, step = studies.latest_pose25d_model(workdir,
                                                             "this study reads pose25d")
    samples = config.eval.validation_samples
    results = agreement(task, model, make_source(config.data), samples)
    print(f"{workdir} (step {step}, validation, {results.pop('views')} views):")
    for name, value in results.items():
      print(f"  {name:<22} {value:.3f}" if "mpjpe" not in name else f"  {name:<22} {value:.1f} mm")


def define_flags() -> None:
  """The program's flags, defined when it runs (not on import: the tests import this module)."""
  flags.DEFINE_list("workdirs", None, "Trained pose25d workdirs to read.", required=True)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
