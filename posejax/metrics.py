"""Evaluation metrics of the Human3.6M / MPI-INF-3DHP / MPII protocols (METHOD.md section 6).

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
