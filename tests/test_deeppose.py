"""posejax.deeppose: box frames, torso diameter, sub-image maps, displacement statistics and the
refiner's box sampling (DeepPose, Toshev & Szegedy, arXiv 1312.4659)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from posejax import deeppose, geometry
from posejax.data.batching import augment
from posejax.data.real import crop
from posejax.skeleton import H36M, Skeleton

_normalize = jax.jit(deeppose.normalize_points)
_denormalize = jax.jit(deeppose.denormalize_points)


@st.composite
def boxes_and_points(draw):
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
  centre = rng.uniform(-500, 1500, size=(3, 2))
  size = rng.uniform(1, 1000, size=(3, 2)) * draw(st.sampled_from([1e-2, 1.0, 10.0]))
  points = centre[:, None] + rng.normal(size=(3, 5, 2)) * size[:, None]
  return points.astype(np.float32), centre.astype(np.float32), size.astype(np.float32)


@given(boxes_and_points())
def test_normalize_and_denormalize_are_inverse(case):
  points, centre, size = case
  normalized = _normalize(points, centre, size)
  np.testing.assert_allclose(normalized, (points - centre[:, None]) / size[:, None], rtol=1e-5,
                             atol=1e-6)
  scale = np.abs(points).max() + np.abs(centre).max() + size.max()
  np.testing.assert_allclose(_denormalize(normalized, centre, size), points, rtol=0,
                             atol=1e-5 * scale)
  np.testing.assert_allclose(_normalize(_denormalize(normalized, centre, size), centre, size),
                             normalized, rtol=0, atol=1e-5 * scale / size.min())


def test_box_centre_and_edges_in_the_box_frame():
  centre, side = np.array([10.0, 20.0]), np.array([4.0])
  points = np.array([[10.0, 20.0], [8.0, 18.0], [12.0, 22.0]])
  np.testing.assert_array_equal(deeppose.normalize_points(points, centre, side),
                                [[0, 0], [-0.5, -0.5], [0.5, 0.5]])


def _star(names, scale_pair):
  parents = (-1,) + (0,) * (len(names) - 1)
  return Skeleton(name="star", joint_names=names, parents=parents, scale_pair=scale_pair,
                  flip_pairs=(), mean_bone_lengths_mm=(1.0,) * (len(names) - 1),
                  mean_scale_mm=1.0)


def test_torso_diameter_by_joint_name_and_its_fallback():
  assert deeppose.diameter_joints(H36M) == (H36M.index("left_shoulder"),
                                            H36M.index("right_hip")) == (11, 1)
  joints = np.zeros((2, 17, 2), np.float32)
  joints[:, 11] = [3.0, 4.0]  # left shoulder; right hip at the origin: a 3-4-5 triangle
  joints[1, 1] = [3.0, -4.0]
  np.testing.assert_allclose(deeppose.torso_diameter(joints, H36M), [5.0, 8.0])
  # Other names on the same skeleton.
  np.testing.assert_allclose(
      deeppose.torso_diameter(joints, H36M, ("left_shoulder", "pelvis")), [5.0, 5.0])
  # A skeleton without shoulders uses its scale pair.
  paw = _star(("body", "paw", "tail"), scale_pair=(2, 1))
  points = np.array([[0.0, 0.0], [1.0, 1.0], [7.0, 9.0]])
  assert deeppose.diameter_joints(paw) == (2, 1)
  assert deeppose.torso_diameter(points, paw) == pytest.approx(10.0)
  # Finite gradient where the two joints coincide (an untrained stage 1 puts all on one point).
  gradient = jax.jit(jax.grad(lambda j: deeppose.torso_diameter(j, H36M).sum()))(
      jnp.zeros((17, 2)))
  assert np.isfinite(gradient).all()


def test_refinement_boxes_are_centred_on_the_joints_with_sigma_diameters():
  joints = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
  centres, sides = deeppose.refinement_boxes(joints, np.array([10.0, 0.0]), 1.5)
  np.testing.assert_array_equal(centres, joints)
  np.testing.assert_array_equal(sides, [[15.0] * 3, [deeppose.MIN_SIDE] * 3])


def test_subimage_matrix_maps_the_box_onto_the_subimage():
  out = 32
  centres = np.array([[40.0, 30.0], [-3.25, 100.5]], np.float32)
  sides = np.array([50.0, 7.0], np.float32)
  matrices = np.asarray(deeppose.subimage_matrices(centres, sides, out))
  assert matrices.shape == (2, 3, 3) and matrices.dtype == np.float32
  for matrix, centre, side in zip(matrices, centres, sides):
    # The repository's crop convention (synthetic.crop_camera, crop.crop_matrix).
    np.testing.assert_allclose(matrix, crop.crop_matrix(centre, side, out), rtol=1e-6,
                               atol=1e-5)
    box = np.array([centre, centre - side / 2, centre + side / 2])
    mapped = crop.transform_points(matrix, box)
    np.testing.assert_allclose(mapped, [[(out - 1) / 2] * 2, [-0.5, -0.5],
                                        [out - 0.5, out - 0.5]], atol=1e-4)


def test_subimage_camera_projects_the_3d_joints_onto_the_subimage_joints():
  rng = np.random.default_rng(0)
  camera = np.array([[600.0, 0, 130.0], [0, 610.0, 120.0], [0, 0, 1]], np.float32)
  joints_3d = (rng.normal(size=(17, 3)) * 300 + [0, 0, 4000]).astype(np.float32)

  @jax.jit
  def subimage_projections(joints_3d, camera):
    joints_2d = geometry.project(joints_3d, camera)
    diameter = deeppose.torso_diameter(joints_2d)
    centres, sides = deeppose.refinement_boxes(joints_2d, diameter, 1.0)
    matrices = deeppose.subimage_matrices(centres, sides, 24)  # [17, 3, 3]: one per joint
    subcameras = jnp.einsum("jab,bc->jac", matrices, camera, precision="highest")
    return joints_2d, matrices, geometry.project(jnp.broadcast_to(joints_3d, (17, 17, 3)),
                                                 subcameras)

  joints_2d, matrices, projected = subimage_projections(joints_3d, camera)
  mapped = jnp.stack([crop.transform_points(m, joints_2d) for m in np.asarray(matrices)])
  np.testing.assert_allclose(projected, mapped, atol=2e-3)
  # Joint j sits on its own sub-image's centre.
  np.testing.assert_allclose(projected[np.arange(17), np.arange(17)], 11.5, atol=2e-3)


def test_subimage_warp_matches_the_numpy_twin_and_cuts_the_box():
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, size=(2, 40, 48, 3), dtype=np.uint8)
  joints = rng.uniform(0, 40, size=(2, 5, 2)).astype(np.float32)
  centres, sides = deeppose.refinement_boxes(joints, np.array([20.0, 7.5]), 1.3)
  matrices = deeppose.subimage_matrices(centres, sides, 9)
  per_joint = np.broadcast_to(images[:, None], (2, 5, 40, 48, 3))
  device = np.asarray(augment.warp_images(per_joint, matrices, out_size=9))
  host = augment.warp_images_numpy(per_joint, np.asarray(matrices), out_size=(9, 9))
  assert device.shape == host.shape == (2, 5, 9, 9, 3)
  difference = np.abs(device.astype(np.int32) - host)
  # Both compute in float32 in the same order; XLA may still round a pixel to the other side.
  assert difference.max() <= 1 and np.mean(difference > 0) < 1e-2
  # A box of side = out around an integer pixel is a plain copy of the image around it.
  matrix = deeppose.subimage_matrices(np.array([20.0, 11.0]), np.float32(7.0), 7)
  cut = augment.warp_images_numpy(images[0], np.asarray(matrix), out_size=7)
  np.testing.assert_array_equal(cut, images[0, 8:15, 17:24])
  # A non-square output.
  wide = augment.warp_images_numpy(images[0], np.eye(3, dtype=np.float32), out_size=(5, 12))
  np.testing.assert_array_equal(wide, images[0, :5, :12])


def test_displacement_statistics_exact_values():
  gt = np.zeros((3, 2, 2), np.float32)
  pred = np.zeros((3, 2, 2), np.float32)
  diameter = np.array([2.0, 4.0, 0.0], np.float32)  # the third sample has no usable diameter
  pred[0, 0] = [2.0, -2.0]  # joint 0: (1, -1) diameters
  pred[1, 0] = [12.0, 0.0]  # joint 0: (3, 0)
  pred[2, 0] = [100.0, 100.0]  # ignored: zero diameter
  pred[0, 1] = [50.0, 50.0]  # joint 1 masked everywhere
  mask = np.array([[True, False], [True, False], [True, True]])
  statistics = jax.jit(deeppose.displacement_statistics)
  mean, std = statistics(pred, gt, mask, diameter)
  np.testing.assert_allclose(mean, [[2.0, -0.5], [0.0, 0.0]])
  np.testing.assert_allclose(std, [[1.0, 0.5], [0.0, 0.0]])
  gradient = jax.jit(jax.grad(lambda p: sum(jnp.sum(s) for s in statistics(
      p, gt, mask, diameter))))(jnp.asarray(gt))
  assert np.isfinite(gradient).all()


def test_sampled_boxes_follow_the_statistics_and_skip_unlabelled_joints():
  k = 10_000
  mean = np.array([[0.1, -0.2], [5.0, 5.0], [-0.3, 0.05]], np.float32)
  std = np.array([[0.2, 0.1], [9.0, 9.0], [0.05, 0.3]], np.float32)
  joints = np.array([[[10, 20], [30, 40], [50, 60]]] * 4, np.float32)
  mask = np.array([[False, False, True],  # only joint 2: all k draws are joint 2
                   [True, False, True],  # joints 0 and 2, never 1
                   [False, False, False],  # no label: weight 0
                   [True, True, True]])  # labelled but zero diameter: weight 0
  diameter = np.array([8.0, 4.0, 5.0, 0.0], np.float32)
  sample = jax.jit(deeppose.sample_refinement_boxes, static_argnames=("sigma", "k"))
  joint, centres, sides, weight = sample(jax.random.key(0), joints, mask, diameter, mean, std,
                                         sigma=2.0, k=k, displacement_scale=1.0)
  assert joint.shape == weight.shape == sides.shape == (4, k) and centres.shape == (4, k, 2)
  np.testing.assert_array_equal(weight[:, 0], [1, 1, 0, 0])
  np.testing.assert_allclose(sides[:, 0], [16.0, 8.0, 10.0, deeppose.MIN_SIDE])
  assert (joint[0] == 2).all()
  assert not (joint[1] == 1).any() and 0.47 < np.mean(joint[1] == 0) < 0.53
  # Displacements in diameters: over 1e4 draws, mean within 3 % of a std, std within 3 %.
  displacement = (np.asarray(centres[0]) - joints[0, 2]) / diameter[0]
  np.testing.assert_array_less(np.abs(displacement.mean(0) - mean[2]), 0.03 * std[2])
  np.testing.assert_allclose(displacement.std(0), std[2], rtol=0.03)
  # The refiner's targets undo the displacement.
  targets = deeppose.refinement_targets(joints, joint, centres, sides)
  np.testing.assert_allclose(targets[0], -displacement * diameter[0] / 16.0, atol=1e-5)
  # Scale 0: the boxes sit on the truth moved by the mean displacement exactly.
  joint, centres, _, _ = sample(jax.random.key(1), joints, mask, diameter, mean, std, sigma=2.0,
                                k=k, displacement_scale=0.0)
  expected = joints[1][np.asarray(joint[1])] + diameter[1] * mean[np.asarray(joint[1])]
  np.testing.assert_allclose(centres[1], expected, atol=1e-5)


def test_statistics_of_simulated_errors_come_back():
  rng = np.random.default_rng(2)
  gt = rng.uniform(0, 100, size=(4000, 3, 2)).astype(np.float32)
  diameter = rng.uniform(10, 50, size=4000).astype(np.float32)
  mean = np.array([[0.1, 0.0], [-0.2, 0.3], [0.0, 0.0]])
  std = np.array([[0.05, 0.2], [0.1, 0.1], [0.3, 0.01]])
  pred = gt + diameter[:, None, None] * (mean + std * rng.normal(size=gt.shape))
  got_mean, got_std = deeppose.displacement_statistics(pred, gt, np.ones((4000, 3), bool),
                                                       diameter)
  np.testing.assert_allclose(got_mean, mean, atol=0.02)
  np.testing.assert_allclose(got_std, std, rtol=0.05)
