"""posejax.geometry: soft-argmax, 2.5D decoding, projection, root depth and reconstruction."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from posejax import geometry
from posejax.skeleton import H36M, Skeleton


def chain_skeleton(num_joints, scale_pair, root):
  """A skeleton of `num_joints` joints with the given scale pair and root (a star on the root)."""
  parents = tuple(-1 if j == root else root for j in range(num_joints))
  return Skeleton(name=f"star{num_joints}", joint_names=tuple(f"j{j}" for j in range(num_joints)),
                  parents=parents, scale_pair=scale_pair, flip_pairs=(),
                  mean_bone_lengths_mm=(100.0,) * (num_joints - 1), mean_scale_mm=100.0)


def crop_camera(focal, aspect, principal, angle, zoom, shift, flip):
  """Intrinsics composed with a 2D similarity crop (rotation, zoom, shift, optional mirror)."""
  intrinsics = np.array([[focal, 0, principal[0]], [0, focal * aspect, principal[1]], [0, 0, 1]])
  cos, sin = np.cos(angle), np.sin(angle)
  affine = np.array([[zoom * cos, -zoom * sin, shift[0]], [zoom * sin, zoom * cos, shift[1]],
                     [0, 0, 1]])
  if flip:
    affine = np.array([[-1, 0, 255], [0, 1, 0], [0, 0, 1]]) @ affine
  return affine @ intrinsics


def person_crop_camera(pose, focal, aspect, principal, angle, fill, flip, crop_size=256):
  """The crop camera of a person crop, as a dataset makes it: a 2 m box around the body, scaled
  by `fill`, centred in a `crop_size` crop, rotated by `angle`, optionally mirrored."""
  box_in_pixels = focal * 2000.0 / pose[:, 2].mean()
  zoom = fill * crop_size / box_in_pixels
  camera = crop_camera(focal, aspect, principal, angle, zoom, (0, 0), flip)
  centre = camera @ pose.mean(axis=0)
  centre = centre[:2] / centre[2]
  shift = np.array([[1, 0, crop_size / 2 - centre[0]], [0, 1, crop_size / 2 - centre[1]],
                    [0, 0, 1]])
  return shift @ camera


def quadratic_c(pose, skeleton):
  """The c coefficient of docs/method.md section 3 for an exact pose (float64)."""
  k, l = skeleton.scale_pair
  normalized = pose / np.linalg.norm(pose[k] - pose[l])
  rays = normalized / normalized[:, 2:]
  rel = normalized[:, 2] - normalized[skeleton.root, 2]
  return np.sum(np.square(rel[k] * rays[k] - rel[l] * rays[l])) - 1.0


@st.composite
def posed_cameras(draw):
  num_joints = draw(st.integers(2, 24))
  k, l = draw(st.lists(st.integers(0, num_joints - 1), min_size=2, max_size=2, unique=True))
  root = draw(st.integers(0, num_joints - 1))
  skeleton = chain_skeleton(num_joints, (k, l), root)
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
  body = rng.normal(size=(num_joints, 3)) * draw(st.floats(100, 500))
  direction = np.array([*rng.uniform(-0.35, 0.35, size=2), 1.0])
  center = direction / np.linalg.norm(direction) * draw(st.floats(2000, 6000))
  pose = body + center
  camera = person_crop_camera(
      pose, focal=draw(st.floats(200, 3000)), aspect=draw(st.floats(0.8, 1.25)),
      principal=(draw(st.floats(0, 2000)), draw(st.floats(0, 2000))),
      angle=draw(st.floats(-np.pi, np.pi)), fill=draw(st.floats(0.3, 1.5)),
      flip=draw(st.booleans()))
  scale = np.linalg.norm(pose[k] - pose[l])
  # docs/method.md: the '+' root is the true one where c < 0 (scale bone not along the line of sight).
  # c ~ -sin^2(angle between the scale bone and the ray): c < -0.25 keeps the bone at least
  # 30 degrees off the line of sight, away from the degenerate c = 0 where the roots meet and
  # float32 rounding is amplified without bound.
  assume(scale > 200 and quadratic_c(pose, skeleton) < -0.25)
  assume(np.all(pose[:, 2] > 300))
  return pose, camera, skeleton


@given(posed_cameras())
def test_project_then_reconstruct_round_trip(case):
  pose, camera, skeleton = case
  pose = pose.astype(np.float32).astype(np.float64)  # the float32 pose is the ground truth
  joints_2d = geometry.project(pose.astype(np.float32), camera.astype(np.float32))
  rel_depth = geometry.relative_depth_target(pose.astype(np.float32), skeleton)
  reconstructed, depth, valid = geometry.reconstruct(joints_2d, rel_depth, camera, skeleton)
  assert bool(valid)
  expected = pose / np.linalg.norm(pose[skeleton.scale_pair[0]] - pose[skeleton.scale_pair[1]])
  np.testing.assert_allclose(reconstructed, expected, atol=1e-4, rtol=0)
  np.testing.assert_allclose(depth, expected[skeleton.root, 2], atol=1e-4, rtol=0)


def test_reconstruct_is_batched_and_vmappable():
  rng = np.random.default_rng(0)
  poses = rng.normal(size=(3, 5, 17, 3)) * 200 + np.array([0, 0, 4000])
  poses[..., 8, :] = poses[..., 0, :] + np.array([0, -500, 0])  # upright torsos
  cameras = np.broadcast_to(crop_camera(1000, 1, (500, 500), 0.3, 0.25, (10, 20), False),
                            (3, 5, 3, 3))
  joints_2d = geometry.project(poses, cameras)
  normalized, _ = geometry.normalize_pose(poses)
  rel_depth = geometry.relative_depth_target(poses)
  batched, _, valid = geometry.reconstruct(joints_2d, rel_depth, cameras)
  mapped, _, _ = jax.vmap(jax.vmap(geometry.reconstruct))(joints_2d, rel_depth, cameras)
  assert batched.shape == (3, 5, 17, 3) and valid.shape == (3, 5) and bool(valid.all())
  np.testing.assert_allclose(batched, mapped, atol=1e-5)
  np.testing.assert_allclose(batched, normalized, atol=1e-4)


def test_reconstruct_without_root_gradient_moves_each_joint_along_its_own_ray():
  rng = np.random.default_rng(1)
  pose = rng.normal(size=(17, 3)) * 200 + np.array([0, 0, 4000])
  pose[8] = pose[0] + np.array([50, -500, 100])  # a torso mostly across the line of sight
  camera = crop_camera(1000, 1, (500, 500), 0.3, 0.25, (10, 20), False)
  joints_2d = geometry.project(pose, camera)
  rel_depth = geometry.relative_depth_target(pose)
  pose_of = lambda z, grad: geometry.reconstruct(joints_2d, z, camera,  # noqa: E731
                                                 root_gradient=grad)[0]
  offset = rel_depth + 0.3  # the pose does not depend on the depths' common offset
  np.testing.assert_allclose(pose_of(offset, False), pose_of(rel_depth, True), atol=1e-5)
  # d P_j / d z_i: [J, 3, J]. Without the root's gradient only i == j is left, the ray of j,
  # less the mean over i (the common offset is projected out of the gradient).
  held = jax.jacobian(pose_of)(offset, False)
  full = jax.jacobian(pose_of)(offset, True)
  rays = np.asarray(pose_of(rel_depth, True) / (pose_of(rel_depth, True)[:, 2:]))
  expected = (np.eye(17) - 1 / 17)[:, None, :] * rays[:, :, None]
  np.testing.assert_allclose(held, expected, atol=1e-6)
  k, l = H36M.scale_pair
  assert np.abs(full[:, :, k]).max() > 1e-3 and np.abs(full[:, :, l]).max() > 1e-3


def _all_finite(tree):
  return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(tree))


def _reconstruction_and_gradients(joints_2d, rel_depth, camera, skeleton=H36M):
  def objective(joints_2d, rel_depth, camera):
    pose, depth, _ = geometry.reconstruct(joints_2d, rel_depth, camera, skeleton)
    return jnp.sum(pose) + jnp.sum(depth)

  outputs = jax.jit(geometry.reconstruct, static_argnums=3)(joints_2d, rel_depth, camera,
                                                            skeleton)
  gradients = jax.jit(jax.grad(objective, argnums=(0, 1, 2)))(joints_2d, rel_depth, camera)
  return outputs, gradients


DEFAULT_CAMERA = np.array([[1000.0, 0, 128], [0, 1000, 128], [0, 0, 1]], np.float32)


def _degenerate_cases():
  rng = np.random.default_rng(1)
  joints_2d = rng.uniform(0, 256, size=(17, 2)).astype(np.float32)
  rel_depth = rng.normal(size=17).astype(np.float32) * 0.3
  same_pixel = joints_2d.copy()
  same_pixel[8] = same_pixel[0]
  # Rays of thorax and pelvis 1 px apart but 5 units apart in depth: c >> b^2 / 4a.
  negative_discriminant_2d = joints_2d.copy()
  negative_discriminant_2d[8] = negative_discriminant_2d[0] + np.array([1.0, 0.0])
  negative_discriminant_depth = rel_depth.copy()
  negative_discriminant_depth[8] = negative_discriminant_depth[0] + 5.0
  return {
      "same_pixel": (same_pixel, rel_depth, DEFAULT_CAMERA),
      "negative_discriminant": (negative_discriminant_2d, negative_discriminant_depth,
                                DEFAULT_CAMERA),
      "at_infinity": (np.full((17, 2), 3e30, np.float32), np.full(17, -3e30, np.float32),
                      DEFAULT_CAMERA),
      "huge_2d_only": (joints_2d * 1e25, rel_depth, DEFAULT_CAMERA),
      "zeros": (np.zeros((17, 2), np.float32), np.zeros(17, np.float32), DEFAULT_CAMERA),
      "zero_camera": (joints_2d, rel_depth, np.zeros((3, 3), np.float32)),
  }


@pytest.mark.parametrize("name", list(_degenerate_cases()))
def test_degenerate_inputs_give_finite_outputs_gradients_and_invalid(name):
  joints_2d, rel_depth, camera = _degenerate_cases()[name]
  (pose, depth, valid), gradients = _reconstruction_and_gradients(joints_2d, rel_depth, camera)
  assert _all_finite((pose, depth)) and _all_finite(gradients)
  assert not bool(valid)
  depth_only, valid_only = geometry.root_depth(joints_2d, rel_depth, camera)
  assert not bool(valid_only) and bool(jnp.isfinite(depth_only))


def test_negative_discriminant_case_really_has_negative_discriminant():
  joints_2d, rel_depth, camera = _degenerate_cases()["negative_discriminant"]
  rays = np.asarray(geometry.back_project(joints_2d, camera), np.float64)
  a, b, c = _quadratic(rays, np.asarray(rel_depth, np.float64))
  assert b * b - 4 * a * c < 0


def _quadratic(rays, rel_depth, k=8, l=0, scale=1.0):
  """docs/method.md section 3's a, b, c of the scale pair, in float64, written out directly."""
  (xk, yk), (xl, yl) = rays[k, :2], rays[l, :2]
  zk, zl = rel_depth[k], rel_depth[l]
  a = (xk - xl)**2 + (yk - yl)**2
  b = 2 * (zk * (xk**2 + yk**2 - xk * xl - yk * yl) + zl * (xl**2 + yl**2 - xk * xl - yk * yl))
  c = (xk * zk - xl * zl)**2 + (yk * zk - yl * zl)**2 + (zk - zl)**2 - scale**2
  return a, b, c


# (x_k, y_k, x_l, y_l, z_k, z_l) of the scale pair (thorax 8, pelvis 0) on an identity camera,
# one per branch of the solver: the signs of b and c decide how many roots are positive.
_BRANCHES = {
    "b<0, c>0: two positive roots, the larger": (1.0, 0.0, 1.5, 0.0, 0.9, 0.0),
    "b<0, c<0: one positive root": (0.2, 0.0, 0.6, 0.0, 0.5, 0.0),
    "b>0, c<0: the cancellation-free form": (0.4, 0.0, 0.0, 0.0, 0.5, 0.0),
    "b>0, c>0: both roots negative, invalid": (1.0, 0.0, 0.5, 0.0, 0.9, 0.0),
}


@pytest.mark.parametrize("name", list(_BRANCHES))
def test_root_depth_takes_the_plus_root_on_every_branch(name):
  xk, yk, xl, yl, zk, zl = _BRANCHES[name]
  joints_2d = np.zeros((17, 2), np.float32)
  joints_2d[8], joints_2d[0] = (xk, yk), (xl, yl)
  rel_depth = np.zeros(17, np.float32)
  rel_depth[8], rel_depth[0] = zk, zl
  camera = np.eye(3, dtype=np.float32)
  rays = np.concatenate([joints_2d, np.ones((17, 1))], axis=-1).astype(np.float64)
  a, b, c = _quadratic(rays, rel_depth.astype(np.float64))
  expected_signs = {"b<0, c>0": (-1, 1), "b<0, c<0": (-1, -1), "b>0, c<0": (1, -1),
                    "b>0, c>0": (1, 1)}[name.split(":")[0]]
  assert (np.sign(b), np.sign(c)) == expected_signs
  roots = np.roots([a, b, c])
  assert np.isreal(roots).all()  # D >= 0 on every branch here
  plus = (-b + np.sqrt(b * b - 4 * a * c)) / (2 * a)
  assert plus == pytest.approx(roots.real.max(), rel=1e-12)
  depth, valid = geometry.root_depth(joints_2d, rel_depth, camera)
  np.testing.assert_allclose(float(depth), plus, rtol=1e-5)
  assert bool(valid) == (plus > 0)
  if name.startswith("b<0, c>0"):  # the smaller root is positive too, and not the answer
    assert 0 < roots.real.min() < float(depth) - 1e-3


def test_valid_cases_are_valid_next_to_degenerate_ones_in_one_batch():
  cases = _degenerate_cases()
  pose = np.array([[0, 0, 4000.0]] * 17) + np.random.default_rng(2).normal(size=(17, 3)) * 100
  pose[8] = pose[0] + np.array([0, -500, 0])
  good = (geometry.project(pose, DEFAULT_CAMERA), geometry.relative_depth_target(pose),
          DEFAULT_CAMERA)
  batch = [np.stack(x) for x in zip(good, cases["same_pixel"], cases["at_infinity"])]
  (_, _, valid), gradients = _reconstruction_and_gradients(*batch)
  np.testing.assert_array_equal(valid, [True, False, False])
  assert _all_finite(gradients)


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_softargmax_of_a_delta_is_the_cell_centre(stride):
  heatmaps = np.zeros((2, 16, 12, 3), np.float32)
  cells = [(3, 5), (0, 0), (15, 11)]  # (row, col), including both corners
  for j, (row, col) in enumerate(cells):
    heatmaps[:, row, col, j] = 1.0
  joints_2d, probabilities = geometry.softargmax(heatmaps, temperature=50.0, stride=stride)
  expected = [[stride * col + (stride - 1) / 2, stride * row + (stride - 1) / 2]
              for row, col in cells]
  np.testing.assert_allclose(joints_2d, np.broadcast_to(expected, (2, 3, 2)), atol=1e-4)
  np.testing.assert_allclose(probabilities.sum(axis=(1, 2)), 1.0, atol=1e-6)


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_softargmax_of_a_gaussian_is_its_centre_and_has_gradients(stride):
  row, col = 7, 9
  ys, xs = np.mgrid[0:16, 0:20]
  gaussian = np.exp(-((xs - col)**2 + (ys - row)**2) / (2 * 1.5**2)).astype(np.float32)
  heatmaps = gaussian[None, :, :, None]
  joints_2d, _ = geometry.softargmax(heatmaps, stride=stride)
  centre = [stride * col + (stride - 1) / 2, stride * row + (stride - 1) / 2]
  np.testing.assert_allclose(joints_2d[0, 0], centre, atol=1e-3)

  gradient = jax.grad(lambda h: geometry.softargmax(h, stride=stride)[0][0, 0, 0])(heatmaps)
  assert _all_finite(gradient) and float(jnp.abs(gradient).max()) > 0
  # Raising the map right of the peak pulls x to the right.
  assert float(gradient[0, row, col + 1, 0]) > 0 > float(gradient[0, row, col - 1, 0])


def test_relative_depth_and_confidence_read_the_maps_at_the_joint():
  heatmaps = np.zeros((8, 8, 2), np.float32)
  heatmaps[2, 5, 0] = 1.0
  heatmaps[6, 1, 1] = 0.8
  depthmaps = np.zeros((8, 8, 2), np.float32)
  depthmaps[2, 5, 0] = -0.25
  depthmaps[6, 1, 1] = 0.5
  joints_2d, rel_depth, conf = geometry.decode_25d(heatmaps, depthmaps, temperature=200.0,
                                                   stride=4)
  np.testing.assert_allclose(joints_2d, [[21.5, 9.5], [5.5, 25.5]], atol=1e-3)
  np.testing.assert_allclose(rel_depth, [-0.25, 0.5], atol=1e-4)
  np.testing.assert_allclose(conf, [1.0, 0.8], atol=1e-4)


def test_confidence_interpolates_bilinearly_and_clips():
  heatmaps = np.zeros((4, 4, 1), np.float32)
  heatmaps[1, 1, 0], heatmaps[1, 2, 0], heatmaps[2, 1, 0], heatmaps[2, 2, 0] = 0.2, 0.6, 1.0, 3.0
  # stride 2: cell centre u -> pixel 2u + 0.5. Halfway between cells 1 and 2 in x, 1/4 in y.
  point = np.array([[2 * 1.5 + 0.5, 2 * 1.25 + 0.5]], np.float32)
  expected = 0.75 * (0.5 * 0.2 + 0.5 * 0.6) + 0.25 * (0.5 * 1.0 + 0.5 * 3.0)
  np.testing.assert_allclose(geometry.confidence(heatmaps, point, stride=2), [expected],
                             atol=1e-6)
  at_peak = np.array([[2 * 2 + 0.5, 2 * 2 + 0.5]], np.float32)
  np.testing.assert_allclose(geometry.confidence(heatmaps, at_peak, stride=2), [1.0])


def test_back_project_inverts_the_camera_with_rotation_and_flip():
  camera = crop_camera(800, 1.1, (320, 240), 0.4, 0.3, (5, -7), True)
  rays = np.array([[0.1, -0.2, 1.0], [0.0, 0.0, 1.0], [-0.3, 0.25, 1.0]])
  pixels = geometry.project(rays, camera)
  np.testing.assert_allclose(geometry.back_project(pixels, camera), rays, atol=1e-6)


def test_normalize_pose_uses_the_scale_pair():
  pose = np.zeros((17, 3), np.float32)
  pose[:, 2] = 3000.0
  pose[8] = [0, -300, 3400]  # thorax 500 mm from the pelvis
  normalized, scale = geometry.normalize_pose(pose)
  assert float(scale) == pytest.approx(500.0)
  np.testing.assert_allclose(normalized[0], [0, 0, 6.0], atol=1e-6)
  np.testing.assert_allclose(geometry.root_relative_depth(normalized)[8], 0.8, atol=1e-6)
  np.testing.assert_allclose(geometry.relative_depth_target(pose)[8], 0.8, atol=1e-6)


def test_estimate_scale_recovers_metric_size():
  skeleton = dataclasses.replace(H36M)
  rng = np.random.default_rng(3)
  directions = rng.normal(size=(16, 3))
  directions /= np.linalg.norm(directions, axis=1, keepdims=True)
  pose_mm = np.zeros((17, 3))
  for (child, parent), length, direction in zip(skeleton.bones, skeleton.mean_bone_lengths_mm,
                                                directions):
    pose_mm[child] = pose_mm[parent] + length * direction
  normalized, scale = geometry.normalize_pose(pose_mm)
  np.testing.assert_allclose(geometry.estimate_scale(normalized), scale, rtol=1e-5)
  # Bones with a masked joint are ignored: corrupting the right wrist changes nothing.
  corrupted = np.asarray(normalized).copy()
  corrupted[16] *= 10
  mask = np.ones(17, bool)
  mask[16] = False
  np.testing.assert_allclose(geometry.estimate_scale(corrupted, joint_mask=mask), scale,
                             rtol=1e-5)
