"""3D pose evaluation: MPJPE, N-MPJPE, PA-MPJPE (mm), 3D PCK and AUC over every view of a
held-out stream, per action where samples have one (the Human3.6M protocol's table).

Any task whose prediction gives a metric pose uses it: `predict(images, cameras)` returns at
least `pose_3d_mm` [N, J, 3] and `valid` [N], and `joints_2d` [N, J, 2] when it predicts 2D.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from posejax import metrics
from posejax.data.batching.sources import Source


# One program: run op by op, the metrics (Procrustes' SVD among them) compiled each of their
# ops on first use in every process, 2-4 s of a short run's evaluation (BUILD_NOTES.md,
# session 11).
@jax.jit
def _metrics(poses, truths) -> dict[str, jax.Array]:
  return {"mpjpe": metrics.mpjpe(poses, truths), "n_mpjpe": metrics.n_mpjpe(poses, truths),
          "pa_mpjpe": metrics.pa_mpjpe(poses, truths), "pck": metrics.pck_3d(poses, truths),
          "auc": metrics.auc_3d(poses, truths)}


def metrics_of(poses, truths) -> dict[str, np.ndarray]:
  """Per-view errors (mm) and 3D PCK / AUC of [N, J, 3] predictions and ground truths."""
  return {name: np.asarray(value) for name, value in _metrics(poses, truths).items()}


def _action_name(action) -> str:
  action = np.asarray(action).reshape(-1)[0] if np.ndim(action) else action
  return action.decode() if isinstance(action, bytes) else str(action)


def sample_count(source: Source, stream: str, samples: int) -> int:
  """How many samples to evaluate: `samples`, at most the stream's size; 0: all of a finite
  stream."""
  size = getattr(source, "sizes", {}).get(stream)  # datasets know how many samples they hold
  if size is not None:
    return min(samples, size) if samples > 0 else size
  if samples <= 0:
    raise ValueError(f"Evaluating all samples of {stream!r} needs a source that knows its size; "
                     "set config.eval.samples > 0")
  return samples


def evaluate(predict: Callable[[np.ndarray, np.ndarray], dict], source: Source, *,
             stream: str = "test", samples: int = 50) -> dict:
  """MPJPE, N-MPJPE, PA-MPJPE (mm) and 3D PCK / AUC over every view of the first `samples`
  samples of a held-out stream (0: all of a finite one); each view is one single-image
  prediction. When samples carry an "action", the same metrics per action go to
  results["per_action"]."""
  per_view, actions, valid_views = [], [], 0
  for index in range(sample_count(source, stream, samples)):
    sample = source(stream, index)
    view_mask = sample.get("view_mask", np.ones(len(sample["image"]), bool))
    predictions = predict(sample["image"], sample["camera"])
    pose, valid = predictions["pose_3d_mm"], predictions["valid"]
    per_view.append(metrics_of(pose[view_mask], sample["joints_3d"][view_mask]))
    if "joints_2d" in sample and "joints_2d" in predictions:  # the 2D stage's share
      per_view[-1]["error_2d_px"] = np.asarray(metrics.pixel_error(
          predictions["joints_2d"][view_mask], sample["joints_2d"][view_mask],
          sample["joints_2d_mask"][view_mask]))
    actions += [_action_name(sample["action"])] * int(view_mask.sum()) if "action" in sample \
        else []
    valid_views += int(np.sum(valid[view_mask]))
  errors = {k: np.concatenate([v[k] for v in per_view]) for k in per_view[0]}
  results = {name: float(np.mean(values)) for name, values in errors.items()}
  results["views"] = len(errors["mpjpe"])
  results["valid_fraction"] = valid_views / max(results["views"], 1)
  if actions:
    actions = np.array(actions)
    results["per_action"] = {
        name: {k: float(np.mean(v[actions == name])) for k, v in errors.items()}
        for name in sorted(set(actions))}
  return results


def format_results(results: dict, title: str = "held-out test") -> str:
  """A console table: all views, then one row per action when there are actions (their
  unweighted mean is the usual Human3.6M figure)."""
  header = f"{'':<16}{'MPJPE':>8}{'N-MPJPE':>9}{'PA-MPJPE':>10}{'PCK@150':>9}{'AUC':>7}"
  row = lambda name, r: (f"{name:<16}{r['mpjpe']:>8.1f}{r['n_mpjpe']:>9.1f}"  # noqa: E731
                         f"{r['pa_mpjpe']:>10.1f}{100 * r['pck']:>8.1f}%{100 * r['auc']:>6.1f}%")
  error_2d = (f", 2D error {results['error_2d_px']:.1f} px" if "error_2d_px" in results
              else "")
  lines = [f"{title}: {results['views']} views, valid reconstructions "
           f"{100 * results['valid_fraction']:.0f} %{error_2d}  (errors in mm)", header,
           row("all views", results)]
  per_action = results.get("per_action", {})
  if per_action:
    lines += [row(name, r) for name, r in per_action.items()]
    lines.append(row("mean of actions", {k: float(np.mean([r[k] for r in per_action.values()]))
                                         for k in ("mpjpe", "n_mpjpe", "pa_mpjpe", "pck",
                                                   "auc")}))
  return "\n".join(lines)
