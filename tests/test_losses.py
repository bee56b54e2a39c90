"""posejax.losses: heatmap targets, L_H, L_Z, L_MC, L_B and the combined objectives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from posejax import geometry, losses, procrustes
from posejax.skeleton import H36M


def rigid_views(num_samples=3, num_views=4, seed=0, noise=0.0):
  """Poses [S, V, 17, 3] that are rigid transforms of one pose per sample (plus noise)."""
  rng = np.random.default_rng(seed)
  base = rng.normal(size=(num_samples, 1, 17, 3))
  rotations = Rotation.random(num_samples * num_views, random_state=seed).as_matrix()
  rotations = rotations.reshape(num_samples, num_views, 3, 3)
  translations = rng.normal(size=(num_samples, num_views, 1, 3)) * 3
  poses = np.einsum("svij,svnj->svni", rotations, np.broadcast_to(base, (num_samples, num_views,
                                                                          17, 3)))
  poses = poses + translations + noise * rng.normal(size=poses.shape)
  confidences = rng.uniform(0.2, 1.0, size=(num_samples, num_views, 17))
  return poses.astype(np.float32), confidences.astype(np.float32)


def test_heatmap_targets_peak_at_the_joint_with_the_softargmax_convention():
  joints_2d = np.array([[[21.5, 9.5], [10.0, 30.0]]], np.float32)  # cell (row 2, col 5) centre
  targets = losses.heatmap_targets(joints_2d, (16, 12), stride=4, sigma=2.0)
  assert targets.shape == (1, 16, 12, 2)
  assert float(targets[0, 2, 5, 0]) == pytest.approx(1.0)
  assert float(targets[0, 2, 6, 0]) == pytest.approx(np.exp(-1 / 8))  # one cell away, sigma 2
  # A sub-cell joint: (10, 30) px is cell (2.125, 7.125); cell (2, 7) is 0.125 cells away.
  assert float(targets[0, 7, 2, 1]) == pytest.approx(np.exp(-2 * 0.125**2 / 8), rel=1e-6)
  # At lambda = 50 the soft-argmax of such a target snaps towards the nearest cell centre
  # (9.5, 29.5): a property of the method's layer 1 (BUILD_NOTES.md), pinned down here.
  found, _ = geometry.softargmax(targets, temperature=50.0, stride=4)
  assert 9.5 < float(found[0, 1, 0]) < 9.6 and 29.5 < float(found[0, 1, 1]) < 29.6


def test_heatmap_loss_is_a_mean_over_labeled_joints_only():
  target = np.zeros((2, 4, 4, 3), np.float32)
  pred = np.zeros((2, 4, 4, 3), np.float32)
  pred[0, :, :, 0] = 1.0  # per-pixel squared error 1 on a labeled joint
  pred[0, :, :, 1] = 100.0  # masked out: must not count
  pred[1, 0, 0, 2] = 4.0  # one pixel of 16 with squared error 16 -> mean 1
  mask = np.array([[True, False, True], [False, False, True]])
  # Labeled joints: (0,0) error 1, (0,2) error 0, (1,2) error 1 -> mean 2/3.
  assert float(losses.heatmap_loss(pred, target, mask)) == pytest.approx(2 / 3)
  assert float(losses.heatmap_loss(pred, target, np.zeros_like(mask))) == 0.0


def test_depth_loss():
  mask = np.array([True, True, False])
  value = losses.depth_loss(np.array([1.0, 0.0, 50.0]), np.array([0.0, 2.0, 0.0]), mask)
  assert float(value) == pytest.approx((1 + 4) / 2)


def test_multiview_consistency_is_zero_for_rigid_views_and_positive_otherwise():
  poses, confidences = rigid_views()
  view_mask = np.ones(poses.shape[:2], bool)
  consistent = losses.multiview_consistency_loss(poses, confidences, view_mask)
  assert float(consistent) == pytest.approx(0.0, abs=2e-6)
  noisy, _ = rigid_views(noise=0.1)
  assert float(losses.multiview_consistency_loss(noisy, confidences, view_mask)) > 1e-2
  # A scaled view is inconsistent for the rigid loss but consistent for the similarity loss.
  scaled = poses.copy()
  scaled[:, 1] *= 1.5
  assert float(losses.multiview_consistency_loss(scaled, confidences, view_mask)) > 1e-2
  assert float(losses.multiview_consistency_loss(scaled, confidences, view_mask,
                                                 with_scale=True)) == pytest.approx(0, abs=5e-6)


def test_multiview_consistency_normalisation_by_hand():
  # Two views of three points, unit confidences, not rigidly related. The loss is the mean
  # over the two ordered pairs of the per-joint mean L1 residual after the best rigid fit
  # (the two directions differ: the L1 norm is not rotation invariant).
  view0 = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
  view1 = view0.copy()
  view1[:, 2] += np.array([2.0, 0.0, 1.0])
  poses = np.stack([view0, view1])[None]
  confidences = np.ones((1, 2, 3), np.float32)
  value = losses.multiview_consistency_loss(poses, confidences, np.ones((1, 2), bool))
  def residual(source, target):  # the least-squares rotation by SciPy, not the code's own fit
    source_mean, target_mean = source.mean(0), target.mean(0)
    rotation, _ = Rotation.align_vectors(target - target_mean, source - source_mean)
    fitted = rotation.apply(source - source_mean) + target_mean
    return np.abs(target - fitted).sum(-1).mean()

  expected = (residual(view0, view1) + residual(view1, view0)) / 2
  assert float(value) == pytest.approx(float(expected), rel=1e-5)
  assert float(value) > 0.1


def test_multiview_consistency_view_mask_ignores_missing_views():
  poses, confidences = rigid_views(num_views=4)
  garbage = poses.copy()
  garbage[:, 3] = np.random.default_rng(1).normal(size=garbage[:, 3].shape) * 10
  mask = np.array([[True, True, True, False]] * poses.shape[0])
  assert float(losses.multiview_consistency_loss(garbage, confidences, mask)) == pytest.approx(
      0, abs=2e-6)
  assert float(losses.multiview_consistency_loss(garbage, confidences, np.ones_like(mask))) > 1
  # A sample with a single view contributes nothing (and no NaN).
  single = np.zeros_like(mask)
  single[:, 0] = True
  assert float(losses.multiview_consistency_loss(garbage, confidences, single)) == 0.0


def _fixed_transform_loss(poses, confidences, transforms, view_mask):
  """The L_MC formula with the alignments given as constants (reference for the gradient)."""
  num_views = poses.shape[1]
  total, count = 0.0, 0
  for s in range(poses.shape[0]):
    for v in range(num_views):
      for w in range(num_views):
        if v == w or not (view_mask[s, v] and view_mask[s, w]):
          continue
        scale, rotation, translation = (t[s, v, w] for t in transforms)
        moved = scale * poses[s, w] @ rotation.T + translation
        weights = confidences[s, v] * confidences[s, w]
        total = total + jnp.mean(weights * jnp.abs(poses[s, v] - moved).sum(-1))
        count += 1
  return total / count


def test_multiview_consistency_gradient_skips_the_alignment_and_the_confidences():
  poses, confidences = rigid_views(num_samples=2, num_views=3, noise=0.2, seed=4)
  view_mask = np.ones(poses.shape[:2], bool)
  target = np.broadcast_to(poses[:, :, None], (2, 3, 3, 17, 3))
  source = np.broadcast_to(poses[:, None], (2, 3, 3, 17, 3))
  weights = confidences[:, :, None] * confidences[:, None]
  transforms = [np.asarray(t) for t in procrustes.similarity_transform(source, target, weights,
                                                                       with_scale=False)]
  loss = lambda p, c: losses.multiview_consistency_loss(p, c, view_mask)
  grad_poses, grad_confidences = jax.grad(loss, argnums=(0, 1))(poses, confidences)
  reference = jax.grad(_fixed_transform_loss)(poses, confidences, transforms, view_mask)
  np.testing.assert_allclose(grad_poses, reference, atol=1e-6)
  assert float(jnp.abs(grad_poses).max()) > 1e-3  # the poses do get a gradient
  np.testing.assert_array_equal(grad_confidences, 0.0)  # confidences are constants


def test_limb_length_loss_by_hand_and_confidence_is_constant():
  skeleton = H36M
  lengths = skeleton.mean_bone_lengths
  directions = np.zeros((16, 3), np.float32)
  directions[:, 1] = 1.0
  pose = np.zeros((17, 3), np.float32)
  for (child, parent), length in zip(skeleton.bones, lengths):
    pose[child] = pose[parent] + length * directions[0]
  confidences = np.ones(17, np.float32)
  assert float(losses.limb_length_loss(pose, confidences)) == pytest.approx(0.0, abs=1e-10)
  # Lengthen the right forearm (joint 16) by 0.1: one bone of 16 with error 0.01.
  stretched = pose.copy()
  stretched[16, 1] += 0.1
  assert float(losses.limb_length_loss(stretched, confidences)) == pytest.approx(0.01 / 16,
                                                                                 rel=1e-4)
  half = confidences.copy()
  half[16] = 0.5
  assert float(losses.limb_length_loss(stretched, half)) == pytest.approx(0.005 / 16, rel=1e-4)
  grad_confidence = jax.grad(losses.limb_length_loss, argnums=1)(stretched, half)
  np.testing.assert_array_equal(grad_confidence, 0.0)
  # Zero-length bones (a collapsed pose) still give finite gradients.
  gradient = jax.grad(losses.limb_length_loss)(np.zeros((17, 3), np.float32), confidences)
  assert bool(jnp.all(jnp.isfinite(gradient)))


def test_combined_objectives_weight_their_terms():
  rng = np.random.default_rng(8)
  heatmaps = rng.uniform(size=(2, 8, 8, 17)).astype(np.float32)
  targets = rng.uniform(size=(2, 8, 8, 17)).astype(np.float32)
  mask = np.ones((2, 17), bool)
  rel, rel_target = rng.normal(size=(2, 2, 17)).astype(np.float32)
  total, terms = losses.fully_supervised_loss(heatmaps, targets, mask, rel, rel_target, mask,
                                              psi=5.0)
  assert float(total) == pytest.approx(float(terms["heatmap"] + 5 * terms["depth"]), rel=1e-6)
  assert float(terms["depth"]) > 0

  poses, confidences = rigid_views(num_samples=2, num_views=4, noise=0.1)
  view_mask = np.ones((2, 4), bool)
  total, terms = losses.weakly_supervised_loss(heatmaps, targets, mask, poses, confidences,
                                               view_mask, alpha=10.0, beta=100.0)
  expected = terms["heatmap"] + 10 * terms["multiview"] + 100 * terms["limb"]
  assert float(total) == pytest.approx(float(expected), rel=1e-6)
  assert all(float(v) > 0 for v in terms.values())
  gradient = jax.grad(lambda p: losses.weakly_supervised_loss(
      heatmaps, targets, mask, p, confidences, view_mask)[0])(poses)
  assert bool(jnp.all(jnp.isfinite(gradient))) and float(jnp.abs(gradient).max()) > 0


def test_scale_bone_loss_is_zero_where_the_root_exists_and_pulls_vertex_poses_back():
  camera = np.array([[1000.0, 0, 128], [0, 1000, 128], [0, 0, 1]], np.float32)
  rng = np.random.default_rng(0)
  joints_2d = rng.uniform(60, 200, size=(17, 2)).astype(np.float32)
  rel_depth = (rng.normal(size=17) * 0.2).astype(np.float32)
  k, l = H36M.scale_pair
  joints_2d[k] = joints_2d[l] + [0.0, -120.0]  # an upright torso: c < 0, a root exists
  rel_depth[k] = rel_depth[l] + 0.3
  vertex_depth = rel_depth.copy()
  vertex_depth[k] = vertex_depth[l] + 3.0  # thorax 3 units behind the pelvis: D < 0

  def loss(depths):
    poses, _, valid = geometry.reconstruct(joints_2d, depths, camera, H36M)
    return losses.scale_bone_loss(poses[None], np.ones(1, bool)), valid

  solvable, valid = loss(jnp.asarray(rel_depth))
  assert bool(valid) and float(solvable) < 1e-8
  at_vertex, valid = loss(jnp.asarray(vertex_depth))
  assert not bool(valid) and float(at_vertex) > 1.0  # the bone is ~3 units long, not 1
  gradient = jax.grad(lambda d: loss(d)[0])(jnp.asarray(vertex_depth))
  assert np.all(np.isfinite(gradient))
  assert gradient[k] > 0 > gradient[l]  # lowering the depth gap shortens the bone
  assert float(losses.scale_bone_loss(np.zeros((0, 17, 3)), np.zeros(0, bool))) == 0.0


def test_scale_pair_tilt_loss_by_hand():
  k, l = H36M.scale_pair
  depths = np.zeros((3, 17), np.float32)
  depths[0, k] = 0.5  # across the line of sight enough: no loss
  depths[1, k], depths[1, l] = 0.6, -0.3  # gap 0.9: 0.2 too much
  depths[2, k] = -1.7  # gap 1.7, but this pose is masked out
  mask = np.array([True, True, False])
  loss = losses.scale_pair_tilt_loss(depths, mask)
  np.testing.assert_allclose(loss, (0.0 + 0.2**2) / 2, rtol=1e-5)
  gradient = jax.grad(lambda d: losses.scale_pair_tilt_loss(d, mask))(jnp.asarray(depths))
  assert gradient[1, k] > 0 > gradient[1, l]  # closing the gap lowers the loss
  assert not np.any(gradient[0]) and not np.any(gradient[2])


def _facing_the_camera_knees_bent():
  """A pose in camera coordinates (x right, y down, z forward) facing the camera (its left on
  the image's right), both knees bent towards the camera: sin(bend) 0.8 each,
  the hips 0.2 apart."""
  pose = np.zeros((17, 3), np.float32)
  for side, x in (("right", -0.1), ("left", 0.1)):
    pose[H36M.index(f"{side}_hip")] = (x, 0.0, 0.0)
    pose[H36M.index(f"{side}_knee")] = (x, 0.4, -0.2)
    pose[H36M.index(f"{side}_ankle")] = (x, 0.8, 0.0)
  return pose


def test_knee_bend_loss_by_hand_tells_a_pose_from_its_mirror_image():
  pose = _facing_the_camera_knees_bent()
  ones = np.ones(17, np.float32)
  assert float(losses.knee_bend_loss(pose, ones)) == 0.0
  mirrored = pose * np.array([1, 1, -1], np.float32)  # depth negated: the knees bend backwards
  assert float(losses.knee_bend_loss(mirrored, ones)) == pytest.approx(0.16, rel=1e-5)
  # A rigid motion changes nothing; a mirror through any plane does.
  rotation = Rotation.from_euler("xyz", [0.3, -1.2, 2.0]).as_matrix().astype(np.float32)
  assert float(losses.knee_bend_loss(mirrored @ rotation.T, ones)) == pytest.approx(0.16, rel=1e-5)
  assert float(losses.knee_bend_loss(pose * np.array([-1, 1, 1], np.float32), ones)) == (
      pytest.approx(0.16, rel=1e-5))
  # One leg straight: it costs 0, and the mean is over both legs.
  straight = mirrored.copy()
  straight[H36M.index("left_knee"), 2] = 0.0
  assert float(losses.knee_bend_loss(straight, ones)) == pytest.approx(0.08, rel=1e-5)
  # A leg with an unconfident knee does not count; confidences get no gradient.
  unsure = ones.copy()
  unsure[H36M.index("left_knee")] = 0.0
  assert float(losses.knee_bend_loss(straight, unsure)) == pytest.approx(0.16, rel=1e-5)
  np.testing.assert_array_equal(jax.grad(losses.knee_bend_loss, argnums=1)(mirrored, unsure), 0.0)
  # Batched, and finite on a collapsed pose and with nothing weighted.
  batch = np.stack([pose, mirrored])
  assert float(losses.knee_bend_loss(batch, np.ones((2, 17), np.float32))) == pytest.approx(0.08)
  collapsed = jax.grad(losses.knee_bend_loss)(np.zeros((17, 3), np.float32), ones)
  assert bool(jnp.all(jnp.isfinite(collapsed)))
  assert float(losses.knee_bend_loss(mirrored, np.zeros(17, np.float32))) == 0.0
  # The margin: a flat pose (no depth) costs it, the bent knees of `pose` (-0.8 x 0.2) do not.
  flat = pose * np.array([1, 1, 0], np.float32)
  assert float(losses.knee_bend_loss(flat, ones, margin=0.05)) == pytest.approx(0.05)
  assert float(losses.knee_bend_loss(pose, ones, margin=0.05)) == 0.0
