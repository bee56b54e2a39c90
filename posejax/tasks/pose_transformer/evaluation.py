"""The pose transformer's evaluation on a held-out stream, every view one single-image
prediction.

The pose of a decoder layer is read out as at inference: each joint type from its most
confident query (`matching.class_assignment`; "fixed": query j), scaled to mm with the mean
bone lengths (`geometry.estimate_scale`, as PoseNet's `inference.predict_metric`). Reported:

- the house's 3D table (`evaluators.pose3d`): MPJPE, N-MPJPE, PA-MPJPE, 3D PCK, AUC of the last
  layer, per action where samples have one;
- MPJPE of every decoder layer, read out by class (`mpjpe_per_layer`) and with the oracle
  assignment, the training matcher given the truth (`oracle_mpjpe_per_layer`): the
  coarse-to-fine refinement at work, apart from read-out mistakes;
- `class_matches_oracle`: the fraction of joints whose class-only query is the oracle's (last
  layer; PRTR#17's flickering left/right knees show up here), and where not, whose it is
  (`readout_disagreements`): a query the oracle gave another joint, or one it gave none (a
  duplicate the class head did not send to the background);
- MPJPE of the hidden joints (joints_2d_mask False: behind the body or an occluder in the
  synthetic data, outside the frame in Human3.6M) and of the others, pooled over joints.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from posejax import geometry, matching, metrics
from posejax.data.batching.sources import Source
from posejax.evaluators import pose3d
from posejax.models.pose_transformer import read_out
from posejax.skeleton import Skeleton
from posejax.tasks.pose_transformer.objective import Settings, assignment, target_pose

# images [V, S, S, 3] -> (logits [L, V, N, J + 1], coords [L, V, N, 3]) as numpy
Forward = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def metric_poses(poses) -> tuple[np.ndarray, np.ndarray]:
  """(poses in mm [..., J, 3], scale_mm [...]) of scale-normalised poses, each scaled by its
  own estimate from the mean bone lengths."""
  scale = np.asarray(geometry.estimate_scale(poses))
  return np.asarray(poses) * scale[..., None, None], scale


def layer_readouts(logits, coords, model_matching: str) -> tuple[np.ndarray, np.ndarray]:
  """(poses [L, V, J, 3], joint_scores [L, V, J]) of every decoder layer, read out by class."""
  poses, scores = read_out(logits, coords, model_matching)
  return np.asarray(poses), np.asarray(scores)


def oracle_readouts(logits, coords, truth_mm, settings: Settings, model_matching: str,
                    skeleton: Skeleton):
  """(poses [L, V, J, 3], query_for_joint [L, V, J]) of every decoder layer with the training
  assignment against the truth (every joint labeled)."""
  target = target_pose(truth_mm, skeleton)
  mask = jnp.ones(target.shape[:-1], bool)
  query_for_joint = assignment(logits, coords, target, mask, settings, model_matching)
  return matching.gather_queries(coords, query_for_joint), query_for_joint


# One program per number of views: run op by op, the read-outs and the Hungarian solve
# compiled each of their ops on first use, 4-5 s of a short run's evaluation (BUILD_NOTES.md,
# session 11).
@functools.partial(jax.jit, static_argnames=("settings", "model_matching", "skeleton"))
def _readouts(logits, coords, truth_mm, *, settings: Settings, model_matching: str,
              skeleton: Skeleton) -> dict[str, jax.Array]:
  """view_records' poses, oracle_poses, class_query and oracle_query of one sample."""
  poses, _ = read_out(logits, coords, model_matching)
  oracle_poses, oracle_query = oracle_readouts(logits, coords, truth_mm, settings,
                                               model_matching, skeleton)
  if model_matching == "fixed":
    class_query = oracle_query[-1]
  else:
    class_query = matching.class_assignment(logits[-1])[0]
  return dict(poses=poses, oracle_poses=oracle_poses, class_query=class_query,
              oracle_query=oracle_query[-1])


def view_records(forward: Forward, sample: dict, settings: Settings, model_matching: str,
                 skeleton: Skeleton) -> dict[str, np.ndarray]:
  """What the evaluation keeps of one sample's present views (M of them): poses [L, M, J, 3]
  and oracle_poses [L, M, J, 3] (normalised), class_query / oracle_query [M, J] (last layer),
  truth [M, J, 3] (mm), visible [M, J]."""
  single = np.asarray(sample["image"]).ndim == 3
  take = (lambda x: np.asarray(x)[None]) if single else np.asarray  # noqa: E731
  images = take(sample["image"])
  present = take(sample["view_mask"]) if "view_mask" in sample else np.ones(len(images), bool)
  truth = take(sample["joints_3d"])[present].astype(np.float32)
  visible = take(sample["joints_2d_mask"])[present].astype(bool)
  logits, coords = (np.asarray(x)[:, present] for x in forward(images))
  records = _readouts(logits, coords, truth, settings=settings, model_matching=model_matching,
                      skeleton=skeleton)
  return dict({k: np.asarray(v) for k, v in records.items()}, truth=truth, visible=visible)


def readout_disagreements(class_query, oracle_query) -> dict[str, float]:
  """Where the class read-out's query [M, J] is not the oracle's: the fraction of all joints
  whose class query the oracle matched to another joint ("other_joint") or to no joint
  ("duplicate")."""
  class_query, oracle_query = np.asarray(class_query), np.asarray(oracle_query)
  differs = class_query != oracle_query
  used = (class_query[:, :, None] == oracle_query[:, None, :]).any(-1)  # matched to some joint
  return dict(other_joint=float(np.mean(differs & used)),
              duplicate=float(np.mean(differs & ~used)))


def _action_name(action) -> str:
  """A sample's action as text (stored as bytes, or one per view)."""
  action = np.asarray(action).reshape(-1)[0] if np.ndim(action) else action
  return action.decode() if isinstance(action, bytes) else str(action)


def pooled_mpjpe(poses_mm, truth_mm, joint_mask) -> float | None:
  """MPJPE over the joints of `joint_mask` [M, J] of all views together (each joint counts
  once, whichever view it is in); None when the mask is empty."""
  joint_mask = np.asarray(joint_mask, bool)
  count = joint_mask.sum(-1)
  if not count.any():
    return None
  per_view = np.asarray(metrics.mpjpe(poses_mm, truth_mm, joint_mask))
  return float(np.sum(per_view * count) / np.sum(count))


def summary(poses_mm, truth_mm, actions) -> dict:
  """The house's 3D results (`pose3d.evaluate`'s keys) of [M, J, 3] poses and truths."""
  errors = pose3d.metrics_of(poses_mm, truth_mm)
  results = {name: float(np.mean(values)) for name, values in errors.items()}
  if actions:
    actions = np.asarray(actions)
    results["per_action"] = {
        name: {k: float(np.mean(v[actions == name])) for k, v in errors.items()}
        for name in sorted(set(actions))}
  return results


def evaluate(forward: Forward, source: Source, *, stream: str, count: int,
             settings: Settings, model_matching: str, skeleton: Skeleton) -> dict:
  """The module docstring's figures on the first `count` samples of `stream`.

  Returns:
    pose3d's keys (mpjpe, n_mpjpe, pa_mpjpe, pck, auc, views, valid_fraction, per_action),
    mpjpe_per_layer and oracle_mpjpe_per_layer [L], class_matches_oracle, mpjpe_hidden and
    mpjpe_visible (None when no joint is of the kind), hidden_joints; errors in mm.
  """
  records, actions = [], []
  for index in range(count):
    sample = source(stream, index)
    records.append(view_records(forward, sample, settings, model_matching, skeleton))
    if "action" in sample:
      actions += [_action_name(sample["action"])] * len(records[-1]["truth"])
  if not records or not sum(len(r["truth"]) for r in records):
    raise ValueError(f"No view to evaluate in the first {count} samples of {stream!r}")
  data = {k: np.concatenate([r[k] for r in records], axis=1 if k.endswith("poses") else 0)
          for k in records[0]}
  truth, visible = data["truth"], data["visible"]
  poses_mm, scale = metric_poses(data["poses"])
  oracle_mm, _ = metric_poses(data["oracle_poses"])
  results = summary(poses_mm[-1], truth, actions)
  results["views"] = int(len(truth))
  results["valid_fraction"] = float(np.mean(scale[-1] > 0))
  results["mpjpe_per_layer"] = [float(np.mean(metrics.mpjpe(p, truth))) for p in poses_mm]
  results["oracle_mpjpe_per_layer"] = [float(np.mean(metrics.mpjpe(p, truth)))
                                       for p in oracle_mm]
  results["class_matches_oracle"] = float(np.mean(data["class_query"] == data["oracle_query"]))
  results["class_query_elsewhere"] = readout_disagreements(data["class_query"],
                                                           data["oracle_query"])
  results["mpjpe_hidden"] = pooled_mpjpe(poses_mm[-1], truth, ~visible)
  results["mpjpe_visible"] = pooled_mpjpe(poses_mm[-1], truth, visible)
  results["hidden_joints"] = int((~visible).sum())
  return results


def _mm(value: float | None) -> str:
  return "-" if value is None else f"{value:.1f}"


def format_results(results: dict, title: str = "held-out test") -> str:
  """pose3d's table of the last layer, then the transformer's own lines."""
  per_layer = "  ".join(f"{i + 1}: {_mm(v)}" for i, v in enumerate(results["mpjpe_per_layer"]))
  oracle = "  ".join(f"{i + 1}: {_mm(v)}"
                     for i, v in enumerate(results["oracle_mpjpe_per_layer"]))
  return "\n".join([
      pose3d.format_results(results, title),
      f"MPJPE per decoder layer, class read-out (mm)  {per_layer}",
      f"MPJPE per decoder layer, oracle matching (mm) {oracle}",
      f"class read-out = oracle matching: {100 * results['class_matches_oracle']:.1f} % of "
      f"joints (last layer); elsewhere: a duplicate "
      f"{100 * results['class_query_elsewhere']['duplicate']:.1f} %, another joint's query "
      f"{100 * results['class_query_elsewhere']['other_joint']:.1f} %",
      f"MPJPE of hidden joints {_mm(results['mpjpe_hidden'])} mm "
      f"({results['hidden_joints']} joints), visible {_mm(results['mpjpe_visible'])} mm"])
