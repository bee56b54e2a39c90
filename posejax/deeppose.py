"""DeepPose (Toshev & Szegedy, arXiv 1312.4659): the pure maths of direct joint regression.

Box normalisation, the torso diameter, the refinement boxes of the cascade, the pixel maps that
cut them out, and the simulated boxes refiners train on; no Flax. Every function is batched over
leading axes, float32, and safe under `jax.jit`, `jax.vmap` and `jax.grad`.

- **Box frame** (the paper's section 3): a box b = (centre c, size (w, h)) normalises a point y
  to N(y; b) = ((y_x - c_x) / w, (y_y - c_y) / h); the networks predict joints in that frame and
  N^-1 maps them back. DeepPose boxes are squares, so (w, h) = (side, side).
- **Cascade** (section 3.2): stage s >= 2 looks at joint i through the square sub-box
  b_i = (y_i^(s-1), sigma * diam(y^(s-1))) and moves the joint by N^-1 of its output in that box:
  y_i^s = y_i^(s-1) + side * psi_i. diam is the torso diameter, the distance between opposing
  torso joints (left shoulder, right hip), found by joint NAME on the skeleton.
- **Refiner data** (the paper's eq. 7): boxes centred on the truth plus a displacement drawn
  from a normal with the mean and variance of the previous stage's errors on the training set.
  posejax keeps those statistics in torso diameters (scale-free: the same numbers for any crop
  size; the paper's are in pixels), `displacement_statistics`, and draws the boxes with
  `sample_refinement_boxes`.
- **Pixels**: centres at integer coordinates (docs/design.md section 6). A square box of side s
  around c becomes an out x out sub-image by u' = (u - c + s / 2) * out / s - 0.5, the convention
  of `posejax.data.render.synthetic.crop_camera` and `posejax.data.real.crop.crop_matrix`: the
  box centre lands on ((out - 1) / 2, (out - 1) / 2). The sub-image's camera is K' = T K.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from posejax import geometry
from posejax.skeleton import H36M, Skeleton

# The paper's torso diameter: the distance between opposing torso joints.
TORSO_DIAMETER_JOINTS = ("left_shoulder", "right_hip")
# Sub-boxes never shrink below this side (pixels): a collapsed prediction (e.g. an untrained
# stage 1 that puts every joint on the box centre) has diameter 0, and a zero side would make the
# sub-image matrix infinite.
MIN_SIDE = 1.0


def _f32(x):
  return jnp.asarray(x, jnp.float32)


def normalize_points(points, centre, size):
  """N(y; b): points in the frame of the box (centre, size).

  Args:
    points: [..., J, 2] pixels (x, y).
    centre: [..., 2] the box centre in pixels.
    size: [..., 2] (width, height) of the box in pixels; a square box's side as [..., 1].

  Returns:
    [..., J, 2] float32 (points - centre) / size: the box centre is 0, its edges +-0.5.
  """
  return (_f32(points) - _f32(centre)[..., None, :]) / _f32(size)[..., None, :]


def denormalize_points(normalized, centre, size):
  """N^-1(y; b), the inverse of `normalize_points`: [..., J, 2] float32 pixels."""
  return _f32(normalized) * _f32(size)[..., None, :] + _f32(centre)[..., None, :]


def diameter_joints(skeleton: Skeleton = H36M,
                    names: tuple[str, str] = TORSO_DIAMETER_JOINTS) -> tuple[int, int]:
  """The joint indices whose distance is the torso diameter: `names` looked up on `skeleton`,
  or the skeleton's scale pair where it lacks one of them (a hand or an animal has no
  shoulders; its scale pair is its own unit of size)."""
  try:
    return skeleton.index(names[0]), skeleton.index(names[1])
  except KeyError:
    return tuple(skeleton.scale_pair)


def torso_diameter(joints_2d, skeleton: Skeleton = H36M,
                   names: tuple[str, str] = TORSO_DIAMETER_JOINTS):
  """diam(y): the distance between the two named joints (default left shoulder, right hip).

  Args:
    joints_2d: [..., J, 2] pixels.
    skeleton: gives the joint order; a skeleton without one of `names` uses its scale pair.
    names: the two joint names.

  Returns:
    [...] float32 (finite gradient where the two joints coincide).
  """
  a, b = diameter_joints(skeleton, names)
  joints_2d = _f32(joints_2d)
  return geometry.safe_norm(joints_2d[..., a, :] - joints_2d[..., b, :])


def refinement_boxes(joints_2d, diameter, sigma: float, min_side: float = MIN_SIDE):
  """The cascade's sub-boxes b_i = (y_i, sigma * diam(y)), one per joint.

  Args:
    joints_2d: [..., J, 2] the previous stage's joints (pixels).
    diameter: [...] torso diameters (pixels) of those joints.
    sigma: box side in torso diameters (the paper: 1.0 on FLIC, 2.0 on LSP).
    min_side: the smallest side (pixels).

  Returns:
    (centres [..., J, 2], sides [..., J]) float32.
  """
  joints_2d = _f32(joints_2d)
  side = jnp.maximum(sigma * _f32(diameter), min_side)
  return joints_2d, jnp.broadcast_to(side[..., None], joints_2d.shape[:-1])


def subimage_matrices(centres, sides, out_size: int):
  """Pixel maps T from source pixels to the out x out sub-image of square boxes.

  u' = (u - c + side / 2) * out / side - 0.5 (and likewise v'), so the box centre lands on
  ((out - 1) / 2, (out - 1) / 2) and the box's edges on the sub-image's edges (-0.5, out - 0.5).
  Warp with `augment.warp_images(images, T, out_size=out)`; the sub-image camera is K' = T K.

  Args:
    centres: [..., 2] box centres (pixels).
    sides: [...] box sides (pixels, positive; clamped to 1e-6).
    out_size: the sub-image side in pixels.

  Returns:
    [..., 3, 3] float32 affine maps (last row 0 0 1).
  """
  centres = _f32(centres)
  sides = jnp.maximum(_f32(sides), 1e-6)
  zoom = out_size / sides
  shift = (sides[..., None] / 2 - centres) * zoom[..., None] - 0.5  # [..., 2]
  zeros, ones = jnp.zeros_like(zoom), jnp.ones_like(zoom)
  return jnp.stack([
      jnp.stack([zoom, zeros, shift[..., 0]], axis=-1),
      jnp.stack([zeros, zoom, shift[..., 1]], axis=-1),
      jnp.stack([zeros, zeros, ones], axis=-1),
  ], axis=-2)


def displacement_statistics(pred, gt, mask, diameter):
  """Mean and standard deviation per joint of a stage's errors, in torso diameters.

  The statistics of the paper's eq. 7, made scale-free: d = (pred - gt) / diam(gt) per labelled
  joint of every sample with a positive diameter.

  Args:
    pred: [..., J, 2] the stage's predictions (pixels) on the training images.
    gt: [..., J, 2] the true joints (pixels).
    mask: [..., J] bool, labelled joints.
    diameter: [...] torso diameters of the true poses (pixels).

  Returns:
    (mean [J, 2], std [J, 2]) float32, the population statistics over all leading axes; zeros
    for a joint without any labelled sample.
  """
  pred, gt, diameter = _f32(pred), _f32(gt), _f32(diameter)
  num_joints = pred.shape[-2]
  usable = diameter > 0
  weights = (jnp.asarray(mask, bool) & usable[..., None]).astype(jnp.float32)
  scaled = (pred - gt) / jnp.where(usable, diameter, 1.0)[..., None, None]
  weights = weights.reshape(-1, num_joints)[..., None]  # [N, J, 1]
  scaled = scaled.reshape(-1, num_joints, 2)
  count = jnp.sum(weights, axis=0)
  seen = count > 0
  safe_count = jnp.where(seen, count, 1.0)
  mean = jnp.sum(weights * scaled, axis=0) / safe_count
  variance = jnp.sum(weights * jnp.square(scaled - mean), axis=0) / safe_count
  spread = variance > 0
  std = jnp.where(spread, jnp.sqrt(jnp.where(spread, variance, 1.0)), 0.0)  # finite gradient
  return jnp.where(seen, mean, 0.0), jnp.where(seen, std, 0.0)


def sample_refinement_boxes(key, joints_2d, mask, diameter, mean, std, sigma: float, k: int,
                            displacement_scale: float = 1.0, min_side: float = MIN_SIDE):
  """Draws k refiner training boxes per image: (joint i, box (y_i + delta, sigma * diam)).

  The joint is drawn uniformly (with replacement) among the image's labelled joints; the
  displacement is delta = diam * (mean_i + displacement_scale * std_i * eps), eps ~ N(0, I)
  (the paper's eq. 7 with `displacement_statistics`; scale 0 puts the boxes on the truth).

  Args:
    key: a JAX PRNG key.
    joints_2d: [B, J, 2] true joints (pixels).
    mask: [B, J] bool, labelled joints.
    diameter: [B] torso diameters of the true poses (pixels).
    mean, std: [J, 2] from `displacement_statistics`.
    sigma: box side in torso diameters.
    k: boxes per image (static).
    displacement_scale: multiplies std.
    min_side: the smallest box side (pixels).

  Returns:
    (joint [B, k] int32, centres [B, k, 2] float32, sides [B, k] float32, weight [B, k] float32):
    weight is 0 for an image without a labelled joint or without a positive diameter (its
    boxes are drawn anyway, so shapes stay static, but must not count).
  """
  joints_2d, diameter = _f32(joints_2d), _f32(diameter)
  mask = jnp.asarray(mask, bool)
  batch, num_joints = mask.shape
  joint_key, noise_key = jax.random.split(key)
  labelled = jnp.any(mask, axis=-1)
  # Uniform over the labelled joints; over all joints where there is none (weight 0 then).
  logits = jnp.where(mask | ~labelled[:, None], 0.0, -jnp.inf)
  joint = jax.random.categorical(joint_key, jnp.broadcast_to(logits[:, None, :],
                                                             (batch, k, num_joints)))
  eps = jax.random.normal(noise_key, (batch, k, 2), jnp.float32)
  displacement = _f32(mean)[joint] + displacement_scale * _f32(std)[joint] * eps
  truth = jnp.take_along_axis(joints_2d, joint[..., None], axis=1)  # [B, k, 2]
  centres = truth + diameter[:, None, None] * displacement
  sides = jnp.broadcast_to(jnp.maximum(sigma * diameter, min_side)[:, None], (batch, k))
  weight = jnp.broadcast_to((labelled & (diameter > 0))[:, None], (batch, k))
  return joint.astype(jnp.int32), centres, sides, weight.astype(jnp.float32)


def gather_joints(joints_2d, joint):
  """joints_2d [B, J, D] read at joint [B, k] -> [B, k, D]."""
  return jnp.take_along_axis(jnp.asarray(joints_2d), jnp.asarray(joint)[..., None], axis=-2)


def refinement_targets(joints_2d, joint, centres, sides):
  """The refiner's targets N(y_i; b) = (y_i - c) / side of drawn boxes.

  Args:
    joints_2d: [B, J, 2] true joints (pixels).
    joint, centres, sides: [B, k], [B, k, 2], [B, k] from `sample_refinement_boxes`.

  Returns:
    [B, k, 2] float32.
  """
  truth = _f32(gather_joints(joints_2d, joint))
  return (truth - _f32(centres)) / _f32(sides)[..., None]
