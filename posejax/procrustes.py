"""Weighted Procrustes / Kabsch / Umeyama alignment of point sets, reflections excluded.

Used by the multi-view consistency loss (under stop_gradient) and by PA-MPJPE. Pure functions,
batched over leading axes. The SVD's derivative is ill-conditioned for repeated singular values:
differentiate through these functions only where the inputs are generic, or stop the gradient as
the loss does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Full float32 products: a GPU would otherwise run these as TF32 (see posejax/geometry.py).
_FULL_FLOAT32 = jax.lax.Precision.HIGHEST


def _weighted_mean(points, weights, total):
  return jnp.sum(weights[..., None] * points, axis=-2) / total[..., None]


def similarity_transform(source, target, weights=None, with_scale: bool = True):
  """Best transform `target ~ scale * rotation @ source + translation` (weighted least squares).

  Minimises `sum_n w_n ||target_n - (s R source_n + t)||^2` over proper rotations R (det = +1),
  translations t and, if `with_scale`, scales s (else s = 1: a rigid transform). Umeyama's method
  with the sign correction that excludes reflections.

  Args:
    source: [..., N, 3] points.
    target: [..., N, 3] corresponding points.
    weights: optional [..., N] non-negative weights (default uniform). Zero weights ignore a
      point entirely (outliers, missing joints).
    with_scale: also fit a scale.

  Returns:
    (scale [...], rotation [..., 3, 3], translation [..., 3]) float32. With all weights zero:
    the identity transform.
  """
  source = jnp.asarray(source, jnp.float32)
  target = jnp.asarray(target, jnp.float32)
  if weights is None:
    weights = jnp.ones(source.shape[:-1], jnp.float32)
  weights = jnp.broadcast_to(jnp.asarray(weights, jnp.float32), source.shape[:-1])
  total = jnp.sum(weights, axis=-1)
  has_weight = total > 0
  total = jnp.where(has_weight, total, 1.0)

  source_mean = _weighted_mean(source, weights, total)
  target_mean = _weighted_mean(target, weights, total)
  source_centered = source - source_mean[..., None, :]
  target_centered = target - target_mean[..., None, :]
  covariance = jnp.einsum("...n,...ni,...nj->...ij", weights, target_centered,
                          source_centered, precision=_FULL_FLOAT32) / total[..., None, None]
  u, singular_values, vt = jnp.linalg.svd(covariance)
  # Flip the axis of the smallest singular value if U V^T would be a reflection.
  sign = jnp.sign(jnp.linalg.det(u) * jnp.linalg.det(vt))
  sign = jnp.where(sign == 0, 1.0, sign)
  correction = jnp.concatenate(
      [jnp.ones(sign.shape + (2,), jnp.float32), sign[..., None]], axis=-1)
  rotation = jnp.einsum("...ij,...j,...jk->...ik", u, correction, vt,
                        precision=_FULL_FLOAT32)

  if with_scale:
    source_variance = jnp.sum(weights * jnp.sum(jnp.square(source_centered), -1), -1) / total
    ok = source_variance > 0
    scale = jnp.where(
        ok, jnp.sum(singular_values * correction, -1) / jnp.where(ok, source_variance, 1.0), 1.0)
  else:
    scale = jnp.ones(rotation.shape[:-2], jnp.float32)

  eye = jnp.broadcast_to(jnp.eye(3, dtype=jnp.float32), rotation.shape)
  rotation = jnp.where(has_weight[..., None, None], rotation, eye)
  scale = jnp.where(has_weight, scale, 1.0)
  translation = target_mean - scale[..., None] * jnp.einsum(
      "...ij,...j->...i", rotation, source_mean, precision=_FULL_FLOAT32)
  return scale, rotation, translation


def apply_transform(points, scale, rotation, translation):
  """`scale * rotation @ p + translation` for points [..., N, 3]."""
  return (scale[..., None, None]
          * jnp.einsum("...ij,...nj->...ni", rotation, points, precision=_FULL_FLOAT32)
          + translation[..., None, :])


def align(source, target, weights=None, with_scale: bool = True):
  """`source` [..., N, 3] moved onto `target` by the best similarity (or rigid) transform."""
  source = jnp.asarray(source, jnp.float32)
  return apply_transform(source, *similarity_transform(source, target, weights, with_scale))
