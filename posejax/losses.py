"""Losses of the method (docs/method.md section 4), pure and batched over leading axes.

Normalisation (the source leaves it open; the weights psi, alpha, beta go with it):
- `heatmap_loss`: mean over labeled joints of the per-pixel squared error (a joint's map counts
  once whatever the resolution); 0 when nothing is labeled.
- `depth_loss`: mean over labeled joints of the squared relative-depth error (normalised units).
- `multiview_consistency_loss`: for every ordered pair of present views (v, v'), the confidence-
  weighted L1 distance summed over xyz and AVERAGED over the J joints, then averaged over all
  pairs of all samples. So it reads as "mean weighted per-joint L1 error in scale-normalised
  units" and does not grow with J or with the number of views. (docs/method.md's sum over pairs and
  joints equals this times J * V(V-1) for V views.)
- `limb_length_loss`: confidence-weighted squared bone-length error averaged over bones and
  samples.
- `knee_bend_loss` (ours, not the method's): confidence-weighted hinge on knees bent backwards,
  averaged over legs.
Each loss is 0, with finite gradients, when it has nothing to average.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from posejax import geometry, procrustes
from posejax.skeleton import H36M, Skeleton


def _masked_mean(values, mask):
  """sum(values * mask) / sum(mask) for a bool or non-negative weight mask; 0 when empty."""
  mask = jnp.asarray(mask, jnp.float32)
  total = jnp.sum(mask)
  nonempty = total > 0
  return jnp.where(nonempty, jnp.sum(values * mask) / jnp.where(nonempty, total, 1.0), 0.0)


def heatmap_targets(joints_2d, heatmap_size: tuple[int, int], *, stride: int = 4,
                    sigma: float = 2.0):
  """Ground-truth heatmaps: unnormalised Gaussians of peak 1 at each joint.

  Args:
    joints_2d: [..., J, 2] joint positions (x, y) in input-crop pixels.
    heatmap_size: (h, w) of the heatmap grid.
    stride: input pixels per heatmap cell (same convention as `geometry.softargmax`).
    sigma: standard deviation in heatmap cells.

  Returns:
    [..., h, w, J] float32. Mask unlabeled joints in the loss, not here.
  """
  height, width = heatmap_size
  xs, ys = geometry.heatmap_grid(height, width, stride)
  joints_2d = jnp.asarray(joints_2d, jnp.float32)
  dx = (xs[:, None] - joints_2d[..., None, None, :, 0]) / stride  # [..., 1, w, J]
  dy = (ys[:, None, None] - joints_2d[..., None, None, :, 1]) / stride  # [..., h, 1, J]
  return jnp.exp(-(jnp.square(dx) + jnp.square(dy)) / (2 * sigma**2))


def heatmap_loss(heatmaps, target_heatmaps, joint_mask):
  """L_H: mean squared error of 2D heatmaps over labeled joints.

  Args:
    heatmaps: [..., h, w, J] predicted.
    target_heatmaps: [..., h, w, J] from `heatmap_targets`.
    joint_mask: [..., J] bool, labeled (and visible) joints. All False for images without labels.

  Returns:
    scalar float32.
  """
  error = jnp.square(jnp.asarray(heatmaps, jnp.float32) - target_heatmaps)
  per_joint = jnp.mean(error, axis=(-3, -2))
  return _masked_mean(per_joint, joint_mask)


def depth_loss(rel_depth, target_rel_depth, joint_mask):
  """L_Z: mean squared error of scale-normalised relative depths over labeled joints.

  Args:
    rel_depth, target_rel_depth: [..., J].
    joint_mask: [..., J] bool.
  """
  return _masked_mean(jnp.square(rel_depth - target_rel_depth), joint_mask)


def multiview_consistency_loss(poses, confidences, view_mask, *, with_scale: bool = False):
  """L_MC: every view's pose should be a rigid transform of every other view's pose.

  For each ordered pair of views (v, v') of a sample, T_{v<-v'} is the rigid (or similarity)
  transform that best aligns pose v' to pose v with weights phi_v * phi_v', found by Procrustes
  under stop_gradient; the loss is `phi_v phi_v' ||P_v - T(P_v')||_1`. Gradients flow into both
  poses but not through T, and not into the confidences (they are constant loss weights, so the
  network cannot lower the loss by lowering its confidence). See the module docstring for the
  normalisation.

  Args:
    poses: [..., V, J, 3] scale-normalised 3D poses of each view (camera frames of the views).
    confidences: [..., V, J] joint confidences phi in [0, 1].
    view_mask: [..., V] bool, views present (samples may have fewer than V views; fold the
      reconstruction's `valid` in here too).
    with_scale: align with a similarity transform instead of a rigid one.

  Returns:
    scalar float32.
  """
  poses = jnp.asarray(poses, jnp.float32)
  confidences = jax.lax.stop_gradient(jnp.asarray(confidences, jnp.float32))
  num_views = poses.shape[-3]
  target = poses[..., :, None, :, :]  # view v    -> [..., V, 1, J, 3]
  source = poses[..., None, :, :, :]  # view v'   -> [..., 1, V, J, 3]
  weights = confidences[..., :, None, :] * confidences[..., None, :, :]  # [..., V, V, J]
  source, target = jnp.broadcast_arrays(source, target)
  transform = procrustes.similarity_transform(
      jax.lax.stop_gradient(source), jax.lax.stop_gradient(target), weights, with_scale)
  transform = jax.lax.stop_gradient(transform)
  residual = jnp.sum(jnp.abs(target - procrustes.apply_transform(source, *transform)), -1)
  per_pair = jnp.mean(weights * residual, axis=-1)  # [..., V, V]
  view_mask = jnp.asarray(view_mask, bool)
  pair_mask = (view_mask[..., :, None] & view_mask[..., None, :]
               & ~np.eye(num_views, dtype=bool))
  return _masked_mean(per_pair, pair_mask)


def limb_length_loss(poses, confidences, skeleton: Skeleton = H36M, mean_bone_lengths=None):
  """L_B: squared deviation of bone lengths from their means, weighted by confidence.

  Args:
    poses: [..., J, 3] scale-normalised poses.
    confidences: [..., J] in [0, 1]; a bone's weight is the product of its joints' confidences
      (a constant: no gradient).
    skeleton: gives the bones (E of them).
    mean_bone_lengths: [E] in scale-normalised units; default `skeleton.mean_bone_lengths`.

  Returns:
    scalar float32.
  """
  if mean_bone_lengths is None:
    mean_bone_lengths = skeleton.mean_bone_lengths
  child, parent = (np.asarray(ix) for ix in zip(*skeleton.bones))
  poses = jnp.asarray(poses, jnp.float32)
  confidences = jax.lax.stop_gradient(jnp.asarray(confidences, jnp.float32))
  lengths = geometry.safe_norm(poses[..., child, :] - poses[..., parent, :])
  weights = confidences[..., child] * confidences[..., parent]
  error = jnp.square(lengths - jnp.asarray(mean_bone_lengths, jnp.float32))
  return jnp.sum(weights * error) / error.size


def knee_bend_loss(poses, confidences, skeleton: Skeleton = H36M, margin: float = 0.0):
  """Knees bent backwards: a prior of anatomy that tells a pose from its mirror image.

  Ours, not the method's (docs/method.md section 4 has no such term; off in the paper's recipe).
  A knee is a hinge about the hips' axis: for a leg bent the human way,
  bend = (thigh x shin) / (|thigh| |shin|) . (right hip - left hip) < 0 in a right-handed frame.
  A mirror image (the depth negated, or any reflection) flips its sign, and L_MC and L_B cannot
  tell the two apart: multi-view consistency holds with every view mirrored at once. The loss is
  max(0, bend + margin) per leg, weighted by the hip, knee and ankle confidences, averaged over
  the legs. A straight leg or a flat pose costs the margin. The hips' axis is not normalised, so
  a side view's hips, close together in 2D, cannot swing it around. On scale-normalised
  synthetic people (600 legs of "train_multiview") bend has median -0.33, 98 % of the legs are
  below -0.01 and the largest is +0.06 (BUILD_NOTES.md, session 24).

  Args:
    poses: [..., J, 3] poses in a right-handed frame (camera: x right, y down, z forward).
    confidences: [..., J] in [0, 1] (a constant: no gradient).
    skeleton: must name right_hip, right_knee, right_ankle and the left ones.

  Returns:
    scalar float32, 0 with finite gradients when nothing is weighted.
  """
  index = skeleton.index
  poses = jnp.asarray(poses, jnp.float32)
  confidences = jax.lax.stop_gradient(jnp.asarray(confidences, jnp.float32))
  across = poses[..., index("right_hip"), :] - poses[..., index("left_hip"), :]
  length = lambda x: jnp.maximum(geometry.safe_norm(x), 1e-6)[..., None]  # noqa: E731
  bends, weights = [], []
  for side in ("right", "left"):
    hip, knee, ankle = (index(f"{side}_{name}") for name in ("hip", "knee", "ankle"))
    thigh = poses[..., knee, :] - poses[..., hip, :]
    shin = poses[..., ankle, :] - poses[..., knee, :]
    sine = jnp.cross(thigh, shin) / (length(thigh) * length(shin))
    bends.append(jnp.sum(sine * across, axis=-1))
    weights.append(confidences[..., hip] * confidences[..., knee] * confidences[..., ankle])
  return _masked_mean(jax.nn.relu(jnp.stack(bends, -1) + margin), jnp.stack(weights, -1))


def scale_bone_loss(poses, pose_mask, skeleton: Skeleton = H36M, scale: float = 1.0):
  """Squared deviation of the scale pair's length from C, averaged over the masked poses.

  Zero wherever `geometry.root_depth` found a root: the constraint it solves holds exactly.
  Where the discriminant is negative (the depths of k and l differ by more than C allows) the
  pose is reconstructed at the vertex and this measures how far the constraint is missed; it
  is the only term that pushes such predictions back (L_MC and L_B are indifferent to it, and
  weakly supervised training otherwise drifts there: BUILD_NOTES.md, issue 6).

  Args:
    poses: [..., J, 3] reconstructed scale-normalised poses.
    pose_mask: [...] bool or weights.
  """
  k, l = skeleton.scale_pair
  poses = jnp.asarray(poses, jnp.float32)
  length = geometry.safe_norm(poses[..., k, :] - poses[..., l, :])
  return _masked_mean(jnp.square(length - scale), pose_mask)


def scale_pair_tilt_loss(rel_depth, pose_mask, skeleton: Skeleton = H36M,
                         max_gap: float = 0.7):
  """Squared excess of the scale pair's depth gap |z^r_k - z^r_l| over `max_gap` (units of C),
  averaged over the masked poses: the scale bone (the torso) must lie mostly across the line of
  sight, at most ~45 degrees out of the image plane for 0.7.

  docs/method.md assumes this where it takes the '+' root. Weak supervision needs it as a loss: with
  the torso along the line of sight the reconstruction's root depth, hence the lateral extent
  of every pose, tends to 0, and then constant depths that point every bone along the viewing
  ray (right lengths, no lateral extent) make all views agree. Trained networks went there
  (BUILD_NOTES.md, issue 6).

  Args:
    rel_depth: [..., J] scale-normalised relative depths.
    pose_mask: [...] bool or weights.
  """
  k, l = skeleton.scale_pair
  rel_depth = jnp.asarray(rel_depth, jnp.float32)
  excess = jax.nn.relu(jnp.abs(rel_depth[..., k] - rel_depth[..., l]) - max_gap)
  return _masked_mean(jnp.square(excess), pose_mask)


def fully_supervised_loss(heatmaps, target_heatmaps, joint_mask, rel_depth, target_rel_depth,
                          depth_mask, *, psi: float = 5.0):
  """L_FS = L_H + psi L_Z.

  Returns:
    (loss, {"heatmap": L_H, "depth": L_Z}).
  """
  terms = {
      "heatmap": heatmap_loss(heatmaps, target_heatmaps, joint_mask),
      "depth": depth_loss(rel_depth, target_rel_depth, depth_mask),
  }
  return terms["heatmap"] + psi * terms["depth"], terms


def weakly_supervised_loss(heatmaps, target_heatmaps, joint_mask, multiview_poses,
                           multiview_confidences, view_mask, *, skeleton: Skeleton = H36M,
                           mean_bone_lengths=None, alpha: float = 10.0, beta: float = 100.0,
                           with_scale: bool = False):
  """L_WS = L_H + alpha L_MC + beta L_B.

  Args:
    heatmaps, target_heatmaps, joint_mask: the 2D-labeled images (and pseudo labels), as in
      `heatmap_loss`.
    multiview_poses: [S, V, J, 3] reconstructed poses of the multi-view samples.
    multiview_confidences: [S, V, J].
    view_mask: [S, V].
    alpha, beta: weights of L_MC and L_B for the normalisation of this module.

  Returns:
    (loss, {"heatmap": L_H, "multiview": L_MC, "limb": L_B}).
  """
  view_weight = jnp.asarray(view_mask, jnp.float32)[..., None]
  terms = {
      "heatmap": heatmap_loss(heatmaps, target_heatmaps, joint_mask),
      "multiview": multiview_consistency_loss(
          multiview_poses, multiview_confidences, view_mask, with_scale=with_scale),
      "limb": limb_length_loss(multiview_poses, multiview_confidences * view_weight, skeleton,
                               mean_bone_lengths),
  }
  return terms["heatmap"] + alpha * terms["multiview"] + beta * terms["limb"], terms
