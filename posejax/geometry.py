"""2.5D pose geometry: soft-argmax, relative depth, confidence, root depth, 3D reconstruction.

The two layers of docs/method.md sections 2-3 as pure functions of arrays, batched over any leading
axes and safe under `jax.jit`, `jax.vmap` and `jax.grad`. Geometry always runs in float32: inputs
of another dtype (e.g. bfloat16 network outputs) are cast first.

Conventions: images and heatmaps channels-last (`[..., h, w, J]`), pixel centres at integer
coordinates, x right / y down, camera z forward. A heatmap cell (u, v) of stride s covers input
pixels [s*u, s*u + s) and its centre is at `s*u + (s - 1) / 2`. `camera` is the 3x3 crop camera K
(rays -> crop pixels) whose last row is (0, 0, 1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from posejax.skeleton import H36M, Skeleton

# Ray coordinates and relative depths are clamped to this magnitude before the root-depth
# quadratic, so that its coefficients (up to 6th powers) stay finite in float32 for ANY input.
# 1e4 is far beyond anything physical (a ray 89.99 degrees off axis, a body 10^4 torsos deep).
_MAX_GEOMETRY_MAGNITUDE = 1e4
# Below this `a` (squared distance of the scale pair's rays) the two joints project to the same
# point and the root depth is not determined: `valid` is False.
_MIN_QUADRATIC_A = 1e-10
_TINY = 1e-30
# Products in full float32: GPUs otherwise run float32 matmuls as TF32 (10-bit mantissa), which
# put Procrustes fits 1e-3 off on an H100 (BUILD_NOTES.md). These contractions are tiny.
_FULL_FLOAT32 = jax.lax.Precision.HIGHEST


def _as_f32(x):
  return jnp.asarray(x, jnp.float32)


def _safe_divide(numerator, denominator, ok):
  """numerator / denominator where `ok`, else 0; finite values and gradients everywhere."""
  return jnp.where(ok, numerator / jnp.where(ok, denominator, 1.0), 0.0)


def safe_norm(x, axis=-1, keepdims=False):
  """Euclidean norm with a finite (zero) gradient at the zero vector."""
  squared = jnp.sum(jnp.square(x), axis=axis, keepdims=keepdims)
  positive = squared > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def heatmap_grid(height: int, width: int, stride: int):
  """Centres of the heatmap cells in input-crop pixels.

  Returns:
    (xs [width], ys [height]) float32: `stride * u + (stride - 1) / 2`.
  """
  offset = (stride - 1) / 2
  xs = jnp.arange(width, dtype=jnp.float32) * stride + offset
  ys = jnp.arange(height, dtype=jnp.float32) * stride + offset
  return xs, ys


def softargmax(heatmaps, *, temperature: float = 50.0, stride: int = 4):
  """Spatial soft-argmax of 2D heatmaps (docs/method.md section 2).

  Args:
    heatmaps: [..., h, w, J] raw 2D heatmaps H2D.
    temperature: lambda of the spatial softmax.
    stride: input pixels per heatmap cell.

  Returns:
    (joints_2d [..., J, 2] float32 (x, y) in input-crop pixels,
     probabilities [..., h, w, J] float32, the normalised heatmaps Hbar, summing to 1 over h, w).
  """
  heatmaps = _as_f32(heatmaps)
  *batch, height, width, num_joints = heatmaps.shape
  logits = temperature * heatmaps.reshape(*batch, height * width, num_joints)
  probabilities = jax.nn.softmax(logits, axis=-2).reshape(heatmaps.shape)
  xs, ys = heatmap_grid(height, width, stride)
  x = jnp.einsum("...hwj,w->...j", probabilities, xs, precision=_FULL_FLOAT32)
  y = jnp.einsum("...hwj,h->...j", probabilities, ys, precision=_FULL_FLOAT32)
  return jnp.stack([x, y], axis=-1), probabilities


def relative_depth(probabilities, depthmaps):
  """Relative depths z^r_j = sum_p Hbar_j(p) HZ_j(p).

  Args:
    probabilities: [..., h, w, J] from `softargmax`.
    depthmaps: [..., h, w, J] latent depth maps HZ.

  Returns:
    [..., J] float32 scale-normalised depth relative to the root (positive = farther).
  """
  return jnp.sum(_as_f32(probabilities) * _as_f32(depthmaps), axis=(-3, -2))


def confidence(heatmaps, joints_2d, *, stride: int = 4):
  """Heatmap value at the soft-argmax, sampled bilinearly and clipped to [0, 1].

  Args:
    heatmaps: [..., h, w, J] raw 2D heatmaps.
    joints_2d: [..., J, 2] positions in input-crop pixels.
    stride: input pixels per heatmap cell.

  Returns:
    [..., J] float32 confidences phi. Positions outside the grid read the nearest border cell.
  """
  heatmaps = _as_f32(heatmaps)
  *batch, height, width, num_joints = heatmaps.shape
  offset = (stride - 1) / 2
  u = jnp.clip((_as_f32(joints_2d[..., 0]) - offset) / stride, 0, width - 1)
  v = jnp.clip((_as_f32(joints_2d[..., 1]) - offset) / stride, 0, height - 1)
  u0 = jnp.clip(jnp.floor(u), 0, max(width - 2, 0)).astype(jnp.int32)
  v0 = jnp.clip(jnp.floor(v), 0, max(height - 2, 0)).astype(jnp.int32)
  u1 = jnp.minimum(u0 + 1, width - 1)
  v1 = jnp.minimum(v0 + 1, height - 1)
  du = u - u0
  dv = v - v0
  flat = heatmaps.reshape(*batch, height * width, num_joints)

  def read(row, col):
    return jnp.take_along_axis(flat, (row * width + col)[..., None, :], axis=-2)[..., 0, :]

  top = (1 - du) * read(v0, u0) + du * read(v0, u1)
  bottom = (1 - du) * read(v1, u0) + du * read(v1, u1)
  return jnp.clip((1 - dv) * top + dv * bottom, 0.0, 1.0)


def decode_25d(heatmaps, depthmaps, *, temperature: float = 50.0, stride: int = 4):
  """Layer 1 of the method: network maps -> 2.5D pose.

  Args:
    heatmaps: [..., h, w, J] 2D heatmaps.
    depthmaps: [..., h, w, J] latent depth maps.

  Returns:
    (joints_2d [..., J, 2], rel_depth [..., J], confidence [..., J]), all float32.
  """
  joints_2d, probabilities = softargmax(heatmaps, temperature=temperature, stride=stride)
  return (joints_2d, relative_depth(probabilities, depthmaps),
          confidence(heatmaps, joints_2d, stride=stride))


def _inverse_3x3(matrix):
  """Batched 3x3 inverse by the adjugate; returns (inverse, invertible) with finite values."""
  m = matrix
  cofactor = jnp.stack([
      jnp.cross(m[..., 1, :], m[..., 2, :]),
      jnp.cross(m[..., 2, :], m[..., 0, :]),
      jnp.cross(m[..., 0, :], m[..., 1, :]),
  ], axis=-2)  # rows of the cofactor matrix
  det = jnp.sum(m[..., 0, :] * cofactor[..., 0, :], axis=-1)
  scale = jnp.max(jnp.abs(m), axis=(-2, -1))
  invertible = jnp.abs(det) > 1e-12 * jnp.maximum(scale, _TINY) ** 3
  inverse = _safe_divide(jnp.swapaxes(cofactor, -1, -2), det[..., None, None],
                         invertible[..., None, None])
  return inverse, invertible


def back_project(points_2d, camera):
  """Rays through pixels: [xb, yb, 1] = K^-1 [x, y, 1].

  Args:
    points_2d: [..., J, 2] pixel positions.
    camera: [..., 3, 3] crop camera K (last row (0, 0, 1)).

  Returns:
    [..., J, 3] float32 rays with z = 1 (zeros where K is singular).
  """
  rays, _ = _back_project(points_2d, camera)
  return rays


def _back_project(points_2d, camera):
  inverse, invertible = _inverse_3x3(_as_f32(camera))
  points_2d = _as_f32(points_2d)
  homogeneous = jnp.concatenate([points_2d, jnp.ones_like(points_2d[..., :1])], axis=-1)
  rays = jnp.einsum("...ij,...nj->...ni", inverse, homogeneous, precision=_FULL_FLOAT32)
  # Normalise to z = 1 exactly (the last row of K is (0, 0, 1), so this only removes rounding).
  z = rays[..., 2:]
  rays = _safe_divide(rays, z, jnp.abs(z) > _TINY)
  return rays, invertible


def project(points_3d, camera):
  """Pinhole projection into the crop: pixel = K [X, Y, Z] / Z.

  Args:
    points_3d: [..., J, 3] camera-frame points (any unit).
    camera: [..., 3, 3] crop camera K.

  Returns:
    [..., J, 2] float32 pixel positions (0 for points on the camera plane Z = 0).
  """
  image = jnp.einsum("...ij,...nj->...ni", _as_f32(camera), _as_f32(points_3d),
                     precision=_FULL_FLOAT32)
  depth = image[..., 2:]
  return _safe_divide(image[..., :2], depth, jnp.abs(depth) > _TINY)


def normalize_pose(pose, skeleton: Skeleton = H36M):
  """Scale normalisation P^ = P / s with s = ||P_k - P_l|| (docs/method.md section 1, C = 1).

  Args:
    pose: [..., J, 3] camera-frame joints (mm).

  Returns:
    (normalized [..., J, 3], scale [...]) float32; a zero scale gives a zero pose.
  """
  pose = _as_f32(pose)
  k, l = skeleton.scale_pair
  scale = safe_norm(pose[..., k, :] - pose[..., l, :])
  return _safe_divide(pose, scale[..., None, None], scale[..., None, None] > 0), scale


def root_relative_depth(pose, skeleton: Skeleton = H36M):
  """Z_j - Z_root for a pose [..., J, 3] -> [..., J] (same unit as the pose)."""
  pose = _as_f32(pose)
  return pose[..., 2] - pose[..., skeleton.root, 2][..., None]


def relative_depth_target(pose, skeleton: Skeleton = H36M):
  """Scale-normalised relative depths z^r = (Z_j - Z_root) / s of a metric pose [..., J, 3].

  The L_Z target. Subtracting before dividing keeps float32 precision: Z_j / s - Z_root / s
  would cancel two large numbers (the reconstruction amplifies that error by about Z / s).

  Returns:
    [..., J] float32.
  """
  _, scale = normalize_pose(pose, skeleton)
  return _safe_divide(root_relative_depth(pose, skeleton), scale[..., None],
                      scale[..., None] > 0)


def root_depth(joints_2d, rel_depth, camera, skeleton: Skeleton = H36M, scale: float = 1.0):
  """Absolute scale-normalised root depth from the scale constraint (docs/method.md section 3).

  Solves `||P^_k - P^_l||^2 = C^2` for Z^_root and takes the '+' root of the quadratic. The root
  is evaluated in the cancellation-free form `2c / (-b - sqrt(D))` when b >= 0, which also stays
  finite as a -> 0. When the discriminant D is negative (noisy predictions) the vertex -b / 2a is
  returned (the depth that brings the scale bone closest to C) and `valid` is False.

  Args:
    joints_2d: [..., J, 2] pixel positions in the crop.
    rel_depth: [..., J] scale-normalised relative depths z^r.
    camera: [..., 3, 3] crop camera K.
    skeleton: gives the scale pair (k, l).
    scale: C, the normalised length of the scale pair.

  Returns:
    (root_depth [...], valid [...] bool). `valid` is False where K is singular, the scale pair
    projects to one point, the discriminant is negative, or the depth is not positive. Values
    and gradients are finite for any finite input.
  """
  rays, invertible = _back_project(joints_2d, camera)
  return _solve_root_depth(*_clamp_magnitude(rays, rel_depth), skeleton, scale, invertible)


def _clamp_magnitude(rays, rel_depth):
  limit = _MAX_GEOMETRY_MAGNITUDE
  return jnp.clip(rays, -limit, limit), jnp.clip(_as_f32(rel_depth), -limit, limit)


def _solve_root_depth(rays, rel_depth, skeleton, scale, invertible):
  """The '+' root of a Z^2 + b Z + c = 0 for clamped rays [..., J, 3] and depths [..., J]."""
  k, l = skeleton.scale_pair
  xk, yk, zk = rays[..., k, 0], rays[..., k, 1], rel_depth[..., k]
  xl, yl, zl = rays[..., l, 0], rays[..., l, 1], rel_depth[..., l]
  dx, dy = xk - xl, yk - yl
  a = dx * dx + dy * dy
  # docs/method.md's b, regrouped as x_k^2 - x_k x_l = x_k dx (etc.) to avoid cancellation.
  b = 2 * (zk * (xk * dx + yk * dy) - zl * (xl * dx + yl * dy))
  c = (jnp.square(xk * zk - xl * zl) + jnp.square(yk * zk - yl * zl) + jnp.square(zk - zl)
       - scale**2)
  discriminant = b * b - 4 * a * c
  has_roots = discriminant >= 0
  # D < 0 is treated as D = 0 (the vertex); the double `where` keeps d sqrt finite at D = 0.
  positive = discriminant > 0
  sqrt_d = jnp.where(positive, jnp.sqrt(jnp.where(positive, discriminant, 1.0)), 0.0)

  solvable = a > _MIN_QUADRATIC_A
  stable_denominator = -b - sqrt_d  # <= 0 when b >= 0
  use_stable = (b >= 0) & (stable_denominator < -_TINY)
  depth = jnp.where(
      use_stable,
      _safe_divide(2 * c, stable_denominator, use_stable),
      _safe_divide(-b + sqrt_d, 2 * a, solvable),
  )
  valid = invertible & solvable & has_roots & (depth > 0) & jnp.isfinite(depth)
  return jnp.where(jnp.isfinite(depth), depth, 0.0), valid


def reconstruct(joints_2d, rel_depth, camera, skeleton: Skeleton = H36M, scale: float = 1.0,
                *, root_gradient: bool = True):
  """Layer 2 of the method: 2.5D pose + K -> scale-normalised absolute 3D pose.

  `P^_j = (Z^_root + z^r_j) K^-1 [x_j, y_j, 1]` with Z^_root from `root_depth`.

  Args:
    joints_2d: [..., J, 2] pixel positions in the crop.
    rel_depth: [..., J] scale-normalised relative depths.
    camera: [..., 3, 3] crop camera K.
    skeleton: gives the scale pair.
    scale: C.
    root_gradient: differentiate through the root-depth solve (docs/method.md does). False holds
      Z^_root constant in the gradient: a depth then moves its joint along its own ray only.
      The depths' common offset, which the pose does not depend on, is taken out of the
      gradient (depths measured from their mean over the joints): otherwise it drifts, and a
      network's relative depths drift with it (BUILD_NOTES.md, issue 6, session 4).

  Returns:
    (pose_3d [..., J, 3], root_depth [...], valid [...] bool), float32, finite for finite input.
  """
  rays, invertible = _back_project(joints_2d, camera)
  rays, rel_depth = _clamp_magnitude(rays, rel_depth)
  if not root_gradient:
    rel_depth = rel_depth - jnp.mean(rel_depth, axis=-1, keepdims=True)
  depth, valid = _solve_root_depth(rays, rel_depth, skeleton, scale, invertible)
  if not root_gradient:
    depth = jax.lax.stop_gradient(depth)
  pose = (depth[..., None] + rel_depth)[..., None] * rays
  return pose, depth, valid


def estimate_scale(pose, skeleton: Skeleton = H36M, joint_mask=None):
  """Metric scale of a scale-normalised pose from mean bone lengths (docs/method.md section 5).

  `s = argmin_s sum_e (s l_e - mu_e)^2 = sum_e l_e mu_e / sum_e l_e^2`, with l_e the bone
  lengths of `pose` and mu_e `skeleton.mean_bone_lengths_mm`.

  Args:
    pose: [..., J, 3] scale-normalised pose.
    joint_mask: optional [..., J] bool; bones with a masked joint are ignored.

  Returns:
    [...] float32 scale in mm per normalised unit (0 if no bone is usable); P_mm = s * pose.
  """
  pose = _as_f32(pose)
  child, parent = (jnp.asarray(ix) for ix in zip(*skeleton.bones))
  lengths = safe_norm(pose[..., child, :] - pose[..., parent, :])
  mean_lengths = jnp.asarray(skeleton.mean_bone_lengths_mm, jnp.float32)
  weights = jnp.ones_like(lengths)
  if joint_mask is not None:
    joint_mask = jnp.asarray(joint_mask, jnp.float32)
    weights = joint_mask[..., child] * joint_mask[..., parent]
  numerator = jnp.sum(weights * lengths * mean_lengths, axis=-1)
  denominator = jnp.sum(weights * lengths * lengths, axis=-1)
  return _safe_divide(numerator, denominator, denominator > 0)
