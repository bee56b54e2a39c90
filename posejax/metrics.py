"""Evaluation metrics of the Human3.6M / MPI-INF-3DHP / MPII protocols (docs/method.md section 6).

Every function returns PER-SAMPLE values (shape = the leading axes) so that callers can average
per action, per subject or overall; average them over samples that have at least one valid joint.
`joint_mask` [..., J] (bool) selects the joints that count; a sample without any gives 0.
3D inputs are [..., J, 3] (mm); 2D inputs [..., J, 2] (pixels).
"""

from __future__ import annotations

import jax.numpy as jnp

from posejax import geometry, procrustes
from posejax.skeleton import H36M, Skeleton

PCK_THRESHOLD_MM = 150.0
AUC_THRESHOLDS_MM = tuple(float(t) for t in range(0, 151, 5))  # 31 thresholds, 0..150 mm


def _joint_weights(pred, joint_mask):
  if joint_mask is None:
    return jnp.ones(pred.shape[:-1], jnp.float32)
  return jnp.broadcast_to(jnp.asarray(joint_mask, jnp.float32), pred.shape[:-1])


def _mean_over_joints(values, weights):
  total = jnp.sum(weights, axis=-1)
  nonempty = total > 0
  return jnp.where(nonempty, jnp.sum(values * weights, -1) / jnp.where(nonempty, total, 1.0), 0.0)


def _root_aligned(pred, gt, skeleton):
  root = skeleton.root
  return pred - pred[..., root:root + 1, :], gt - gt[..., root:root + 1, :]


def joint_errors(pred, gt):
  """Per-joint Euclidean distances [..., J]."""
  return geometry.safe_norm(jnp.asarray(pred, jnp.float32) - jnp.asarray(gt, jnp.float32))


def mpjpe(pred, gt, joint_mask=None, skeleton: Skeleton = H36M):
  """Mean per-joint position error after aligning the roots (Human3.6M protocol 1). [...]"""
  pred, gt = _root_aligned(jnp.asarray(pred, jnp.float32), jnp.asarray(gt, jnp.float32),
                           skeleton)
  return _mean_over_joints(joint_errors(pred, gt), _joint_weights(pred, joint_mask))


def n_mpjpe(pred, gt, joint_mask=None, skeleton: Skeleton = H36M):
  """MPJPE after the optimal scale s* = <pred, gt> / <pred, pred> of the root-aligned pose. [...]"""
  pred, gt = _root_aligned(jnp.asarray(pred, jnp.float32), jnp.asarray(gt, jnp.float32),
                           skeleton)
  weights = _joint_weights(pred, joint_mask)[..., None]
  dot = jnp.sum(weights * pred * gt, axis=(-2, -1))
  norm = jnp.sum(weights * pred * pred, axis=(-2, -1))
  scale = jnp.where(norm > 0, dot / jnp.where(norm > 0, norm, 1.0), 1.0)
  return mpjpe(scale[..., None, None] * pred, gt, joint_mask, skeleton)


def pa_mpjpe(pred, gt, joint_mask=None):
  """MPJPE after similarity Procrustes alignment of pred to gt (Human3.6M protocol 2). [...]"""
  weights = _joint_weights(pred, joint_mask)
  aligned = procrustes.align(pred, gt, weights, with_scale=True)
  return _mean_over_joints(joint_errors(aligned, gt), weights)


def pck_3d(pred, gt, joint_mask=None, threshold: float = PCK_THRESHOLD_MM,
           skeleton: Skeleton = H36M):
  """Fraction of joints within `threshold` mm (strictly less) after root alignment. [...]"""
  pred, gt = _root_aligned(jnp.asarray(pred, jnp.float32), jnp.asarray(gt, jnp.float32),
                           skeleton)
  correct = (joint_errors(pred, gt) < threshold).astype(jnp.float32)
  return _mean_over_joints(correct, _joint_weights(pred, joint_mask))


def auc_3d(pred, gt, joint_mask=None, skeleton: Skeleton = H36M):
  """Area under the 3D PCK curve: mean PCK over thresholds 0, 5, ..., 150 mm. [...]"""
  pcks = [pck_3d(pred, gt, joint_mask, t, skeleton) for t in AUC_THRESHOLDS_MM]
  return jnp.mean(jnp.stack(pcks, axis=-1), axis=-1)


def pckh_2d(pred, gt, head_size, joint_mask=None, threshold: float = 0.5):
  """MPII PCKh: fraction of joints within `threshold * head_size` pixels (<=, as MPII's script).

  Args:
    pred, gt: [..., J, 2] pixels.
    head_size: [...] the head segment length in pixels (MPII: 0.6 x the head box diagonal).
    joint_mask: [..., J] bool, visible labeled joints.
  """
  head_size = jnp.asarray(head_size, jnp.float32)
  correct = joint_errors(pred, gt) <= threshold * head_size[..., None]
  return _mean_over_joints(correct.astype(jnp.float32), _joint_weights(pred, joint_mask))


def pixel_error(pred, gt, joint_mask=None):
  """Mean 2D joint distance in pixels. [...]"""
  return _mean_over_joints(joint_errors(pred, gt), _joint_weights(pred, joint_mask))


# ------------------------------------------------------------- DeepPose's 2D metrics (PDJ, PCP)
#
# Toshev & Szegedy, arXiv 1312.4659, section 4: PDJ (percent of detected joints within a
# fraction of the torso diameter) and PCP (percent of correct parts: a limb is correct when its
# predicted end points are within half the true limb length of the true ones).

PDJ_FRACTION = 0.2  # the paper's headline PDJ@0.2
PCP_THRESHOLD = 0.5
PCP_RULES = ("both", "mean")

# The 10 sticks of the LSP evaluation (head, torso, upper and lower arms and legs), each end
# point the mean of the named joints (the torso runs from the shoulders' midpoint to the hips'
# midpoint, as in the LSP evaluation, so it needs no pelvis or thorax joint). Resolve them on a
# skeleton with `lsp_like_limbs`.
LSP_LIKE_LIMBS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("head", ("head_top",), ("neck_nose",)),
    ("torso", ("left_shoulder", "right_shoulder"), ("left_hip", "right_hip")),
    ("right_upper_arm", ("right_shoulder",), ("right_elbow",)),
    ("right_lower_arm", ("right_elbow",), ("right_wrist",)),
    ("right_upper_leg", ("right_hip",), ("right_knee",)),
    ("right_lower_leg", ("right_knee",), ("right_ankle",)),
    ("left_upper_arm", ("left_shoulder",), ("left_elbow",)),
    ("left_lower_arm", ("left_elbow",), ("left_wrist",)),
    ("left_upper_leg", ("left_hip",), ("left_knee",)),
    ("left_lower_leg", ("left_knee",), ("left_ankle",)),
)
LSP_LIKE_LIMB_NAMES = tuple(name for name, _, _ in LSP_LIKE_LIMBS)


def lsp_like_limbs(skeleton: Skeleton = H36M, limbs=LSP_LIKE_LIMBS):
  """The limbs of `limbs` (default the 10 LSP sticks) as joint indices of `skeleton`.

  Returns:
    a tuple of (end point a, end point b), each a tuple of joint indices whose mean is the end
    point; `pcp` takes it as its `limbs`. On H36M: head (10, 9), torso ((11, 14), (4, 1)), ...

  Raises:
    KeyError: the skeleton lacks a named joint (the message names it).
  """
  return tuple((tuple(skeleton.index(n) for n in a), tuple(skeleton.index(n) for n in b))
               for _, a, b in limbs)


def pdj(pred, gt, diameter, joint_mask=None, fraction: float = PDJ_FRACTION):
  """Percent of detected joints: the fraction of joints within `fraction * diameter` (<=).

  Args:
    pred, gt: [..., J, 2] pixels.
    diameter: [...] the torso diameter of the true pose (`deeppose.torso_diameter(gt)`).
    joint_mask: [..., J] bool, the joints that count.
    fraction: of the diameter (the paper's curves run 0 to 0.5; headline 0.2).

  Returns:
    [...] float32 in [0, 1]; 0 for a sample without a counted joint.
  """
  diameter = jnp.asarray(diameter, jnp.float32)
  correct = joint_errors(pred, gt) <= fraction * diameter[..., None]
  return _mean_over_joints(correct.astype(jnp.float32), _joint_weights(pred, joint_mask))


def _end_indices(end) -> tuple[int, ...]:
  """A limb end point's joints: an index or a sequence of indices."""
  try:
    return tuple(int(i) for i in end)
  except TypeError:
    return (int(end),)


def _end_point(joints, end):
  """The mean of joints [..., J, 2] over the indices `end` (an int or a tuple of ints)."""
  indices = _end_indices(end)
  return sum(joints[..., i, :] for i in indices) / len(indices)


def _end_labelled(mask, end):
  indices = _end_indices(end)
  labelled = mask[..., indices[0]]
  for i in indices[1:]:
    labelled = labelled & mask[..., i]
  return labelled


def limb_correct(pred, gt, limbs, joint_mask=None, threshold: float = PCP_THRESHOLD,
                 rule: str = "both"):
  """Per limb: whether it is correct, and whether it counts.

  Args:
    pred, gt: [..., J, 2] pixels.
    limbs: L pairs (end a, end b), each end a joint index or a tuple of indices whose mean is
      the end point (`lsp_like_limbs(skeleton)`).
    joint_mask: [..., J] bool; a limb counts when every joint of both ends is labelled.
    threshold: fraction of the true limb length.
    rule: "both" (each end point within threshold x the true length of its true position, the
      usual "strict" PCP) or "mean" (the mean of the two end-point errors within it, the rule
      DeepPose's numbers use).

  Returns:
    (correct [..., L] bool, counted [..., L] bool).
  """
  if rule not in PCP_RULES:
    raise ValueError(f"rule must be one of {PCP_RULES}, got {rule!r}")
  pred, gt = jnp.asarray(pred, jnp.float32), jnp.asarray(gt, jnp.float32)
  mask = (jnp.ones(gt.shape[:-1], bool) if joint_mask is None
          else jnp.broadcast_to(jnp.asarray(joint_mask, bool), gt.shape[:-1]))
  correct, counted = [], []
  for a, b in limbs:
    true_a, true_b = _end_point(gt, a), _end_point(gt, b)
    length = geometry.safe_norm(true_a - true_b)
    error_a = geometry.safe_norm(_end_point(pred, a) - true_a)
    error_b = geometry.safe_norm(_end_point(pred, b) - true_b)
    limit = threshold * length
    if rule == "both":
      correct.append((error_a <= limit) & (error_b <= limit))
    else:
      correct.append((error_a + error_b) / 2 <= limit)
    counted.append(_end_labelled(mask, a) & _end_labelled(mask, b))
  return jnp.stack(correct, axis=-1), jnp.stack(counted, axis=-1)


def pcp(pred, gt, limbs, joint_mask=None, threshold: float = PCP_THRESHOLD, rule: str = "both"):
  """Percent of correct parts per sample: the fraction of counted limbs that are correct.

  See `limb_correct` for the arguments (rule "both" or "mean").

  Returns:
    [...] float32 in [0, 1]; 0 for a sample without a counted limb.
  """
  correct, counted = limb_correct(pred, gt, limbs, joint_mask, threshold, rule)
  return _mean_over_joints(correct.astype(jnp.float32), counted.astype(jnp.float32))
