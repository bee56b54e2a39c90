"""posejax.data.batching.augment: camera-exact scale / rotation / flip augmentation, host and
device."""

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from posejax import geometry, procrustes
from posejax.data.batching import augment
from posejax.data.batching.augment import Augmentation
from posejax.skeleton import H36M

HEIGHT, WIDTH = 48, 64  # not square, so that a swapped H and W fails
LEFT_WRIST, RIGHT_WRIST = H36M.index("left_wrist"), H36M.index("right_wrist")
FLIP_ONLY = Augmentation(flip=True)


def canonical_body():
  """An H36M pose (mm) facing the camera (-z), y down: its left side is at +x."""
  joints = {
      "pelvis": (0, 0, 0), "right_hip": (-110, 10, 0), "right_knee": (-120, 450, 20),
      "right_ankle": (-130, 900, 60), "left_hip": (110, 10, 0), "left_knee": (120, 450, 20),
      "left_ankle": (130, 900, 60), "spine": (0, -230, 10), "thorax": (0, -480, 0),
      "neck_nose": (0, -590, -70), "head_top": (0, -720, 0), "left_shoulder": (160, -450, 0),
      "left_elbow": (330, -300, -80), "left_wrist": (350, -60, -150),
      "right_shoulder": (-160, -450, 0), "right_elbow": (-300, -250, -60),
      "right_wrist": (-260, -20, -200)}
  return np.array([joints[name] for name in H36M.joint_names], np.float64)


def handedness(pose):
  """Sign of ((left - right) x up) . forward: positive for every real human, in any pose of
  the camera, negative for its mirror image (which no human has)."""
  left_right = pose[..., H36M.index("left_hip"), :] - pose[..., H36M.index("right_hip"), :]
  up = pose[..., H36M.index("thorax"), :] - pose[..., H36M.index("pelvis"), :]
  forward = pose[..., H36M.index("neck_nose"), :] - pose[..., H36M.index("thorax"), :]
  return np.sign(np.sum(np.cross(left_right, up) * forward, axis=-1))


def random_rotation(rng):
  q = rng.normal(size=4)
  w, x, y, z = q / np.linalg.norm(q)
  return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                   [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                   [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def person_in_front(rng):
  """The canonical body, turned at random about its pelvis, 2-6 m in front of the camera."""
  distance = rng.uniform(2000, 6000)
  offset = np.array([*rng.uniform(-0.3, 0.3, size=2), 1.0]) * distance
  return canonical_body() @ random_rotation(rng).T + offset


def crop_camera(rng, pose, mirror):
  """Intrinsics composed with a person crop: a 2 m box centred in the crop, rotated by any
  angle, optionally mirrored (K with rotation/mirroring in its top-left 2x2)."""
  focal = rng.uniform(200, 3000)
  intrinsics = np.array([[focal, 0, rng.uniform(0, 2000)],
                         [0, focal * rng.uniform(0.8, 1.25), rng.uniform(0, 2000)], [0, 0, 1]])
  angle = rng.uniform(-np.pi, np.pi)
  zoom = rng.uniform(0.5, 1.2) * HEIGHT / (focal * 2000 / pose[:, 2].mean())
  affine = np.diag([zoom, zoom, 1.0])
  affine[:2, :2] = zoom * np.array([[np.cos(angle), -np.sin(angle)],
                                    [np.sin(angle), np.cos(angle)]])
  if mirror:
    affine = np.diag([-1.0, 1.0, 1.0]) @ affine
  camera = affine @ intrinsics
  centre = camera @ pose.mean(axis=0)
  camera[:2] += np.outer([(WIDTH - 1) / 2, (HEIGHT - 1) / 2] - centre[:2] / centre[2],
                         camera[2])
  return camera


def random_view(seed, mirrored_camera=False):
  """(image, camera, joints_2d, mask, joints_3d): a random image and an exact labelled view."""
  rng = np.random.default_rng(seed)
  pose = person_in_front(rng)
  camera = crop_camera(rng, pose, mirrored_camera)
  image = rng.integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
  mask = rng.uniform(size=H36M.num_joints) < 0.8
  joints_2d = np.asarray(geometry.project(pose, camera), np.float64)
  return (image, camera.astype(np.float32), joints_2d.astype(np.float32), mask,
          pose.astype(np.float32))


def augment_on_device(image, camera, joints_2d, mask, joints_3d, augmentation, **kwargs):
  """augment_batch on a batch of one view; returns NumPy arrays without the batch axis."""
  batch = {"image": image[None], "camera": camera[None], "joints_2d": joints_2d[None],
           "joints_2d_mask": mask[None], "joints_3d": joints_3d[None]}
  matrices = augment.augmentation_matrices([augmentation], image.shape[:2])
  return {key: np.asarray(value[0]) for key, value in
          augment.augment_batch(batch, matrices, **kwargs).items()}


def augment_on_host(image, camera, joints_2d, mask, joints_3d, augmentation, **kwargs):
  return augment.augment_view(image, camera, joints_2d, mask, augmentation, joints_3d=joints_3d,
                              **kwargs)


BOTH_PATHS = pytest.mark.parametrize("augment_fn", [augment_on_host, augment_on_device],
                                     ids=["numpy", "jax"])

augmentations = st.builds(Augmentation, scale=st.floats(0.8, 1.2),
                          rotation_rad=st.floats(-np.pi / 6, np.pi / 6), flip=st.booleans())


# ----------------------------------------------------------------------------- the geometry


@BOTH_PATHS
@given(seed=st.integers(0, 2**32 - 1), mirrored_camera=st.booleans(), augmentation=augmentations)
def test_projection_stays_exact(augment_fn, seed, mirrored_camera, augmentation):
  image, camera, joints_2d, mask, joints_3d = random_view(seed, mirrored_camera)
  out = augment_fn(image, camera, joints_2d, mask, joints_3d, augmentation)
  assert out["camera"].dtype == out["joints_2d"].dtype == out["joints_3d"].dtype == np.float32
  projected = geometry.project(out["joints_3d"], out["camera"])
  np.testing.assert_allclose(projected, out["joints_2d"], atol=1e-3, rtol=0)
  # The joints moved as the pixels did (projection exactness alone would allow K' = K, x' = x).
  matrix = augment.augmentation_matrix(augmentation, image.shape[:2])
  source = joints_2d[list(H36M.flip_permutation)] if augmentation.flip else joints_2d
  np.testing.assert_allclose(out["joints_2d"], source @ matrix[:2, :2].T + matrix[:2, 2],
                             atol=1e-3, rtol=0)
  # K' stays an ordinary camera of the same handedness: last row (0, 0, 1), same det sign.
  np.testing.assert_array_equal(out["camera"][2], [0, 0, 1])
  assert np.sign(np.linalg.det(out["camera"])) == np.sign(np.linalg.det(camera))


def test_flipped_camera_has_a_positive_focal_and_mirrored_principal_point():
  camera = np.array([[500.0, 0, 20.25], [0, 510, 30.5], [0, 0, 1]], np.float32)
  out = augment.augment_view(np.zeros((HEIGHT, WIDTH, 3), np.uint8), camera, np.zeros((17, 2)),
                             np.ones(17, bool), FLIP_ONLY)
  np.testing.assert_array_equal(out["camera"],
                                [[500, 0, WIDTH - 1 - 20.25], [0, 510, 30.5], [0, 0, 1]])


@BOTH_PATHS
def test_flip_swaps_left_and_right_and_mirrors_the_world(augment_fn):
  image, camera, joints_2d, mask, joints_3d = random_view(7)
  mask[LEFT_WRIST], mask[RIGHT_WRIST] = True, False
  out = augment_fn(image, camera, joints_2d, mask, joints_3d, FLIP_ONLY)
  # The joint now named left_wrist is where the mirrored right wrist is, in 2D and in 3D.
  mirrored_right_2d = [WIDTH - 1 - joints_2d[RIGHT_WRIST, 0], joints_2d[RIGHT_WRIST, 1]]
  np.testing.assert_allclose(out["joints_2d"][LEFT_WRIST], mirrored_right_2d, atol=1e-4)
  np.testing.assert_allclose(out["joints_3d"][LEFT_WRIST], joints_3d[RIGHT_WRIST] * [-1, 1, 1],
                             atol=1e-4)
  assert out["joints_2d_mask"][RIGHT_WRIST] and not out["joints_2d_mask"][LEFT_WRIST]
  # Unpaired joints (the spine) mirror in place.
  spine = H36M.index("spine")
  np.testing.assert_allclose(out["joints_3d"][spine], joints_3d[spine] * [-1, 1, 1], atol=1e-4)


@BOTH_PATHS
@pytest.mark.parametrize("seed", range(5))
def test_flip_keeps_the_body_a_human_one(augment_fn, seed):
  """Labels keep their meaning: the flipped body has a human's handedness. Either half of the
  flip alone (joint swap without the 3D mirror, or the mirror without the swap) fails this."""
  image, camera, joints_2d, mask, joints_3d = random_view(seed)
  assert handedness(joints_3d) == 1
  assert handedness(joints_3d * [-1, 1, 1]) == -1  # the test has teeth: mirror alone
  assert handedness(joints_3d[list(H36M.flip_permutation)]) == -1  # swap alone
  out = augment_fn(image, camera, joints_2d, mask, joints_3d, Augmentation(1.1, 0.2, True))
  assert handedness(out["joints_3d"]) == 1


@BOTH_PATHS
def test_identity_augmentation_changes_nothing(augment_fn):
  view = random_view(3)
  out = augment_fn(*view, Augmentation())
  for key, value in zip(["image", "camera", "joints_2d", "joints_2d_mask", "joints_3d"], view):
    np.testing.assert_array_equal(out[key], value, err_msg=key)


@BOTH_PATHS
def test_flipping_twice_is_the_identity(augment_fn):
  image, camera, joints_2d, mask, joints_3d = random_view(4)
  once = augment_fn(image, camera, joints_2d, mask, joints_3d, FLIP_ONLY)
  twice = augment_fn(once["image"], once["camera"], once["joints_2d"], once["joints_2d_mask"],
                     once["joints_3d"], FLIP_ONLY)
  assert not np.array_equal(once["image"], image)
  np.testing.assert_array_equal(twice["image"], image)
  np.testing.assert_array_equal(twice["joints_2d_mask"], mask)
  np.testing.assert_array_equal(twice["joints_3d"], joints_3d)
  # c' = (W - 1) - c rounds in float32 on the device path: equal to an ulp of the crop size.
  np.testing.assert_allclose(twice["camera"], camera, rtol=0, atol=1e-5)
  np.testing.assert_allclose(twice["joints_2d"], joints_2d, rtol=0, atol=1e-5)


def test_augmentation_matrix_turns_and_flips_about_the_crop_centre():
  centre = np.array([(WIDTH - 1) / 2, (HEIGHT - 1) / 2, 1])
  for augmentation in [Augmentation(1.2, 0.5, False), Augmentation(0.8, -0.3, True)]:
    matrix = augment.augmentation_matrix(augmentation, (HEIGHT, WIDTH))
    np.testing.assert_allclose(matrix @ centre, centre, atol=1e-12)
    np.testing.assert_array_equal(matrix[2], [0, 0, 1])
    np.testing.assert_allclose(abs(np.linalg.det(matrix)), augmentation.scale**2)
  np.testing.assert_array_equal(augment.augmentation_matrix(FLIP_ONLY, (HEIGHT, WIDTH)),
                                [[-1, 0, WIDTH - 1], [0, 1, 0], [0, 0, 1]])


@BOTH_PATHS
@pytest.mark.parametrize("mask_outside", [False, True])
def test_mask_outside_is_an_option_and_off_by_default(augment_fn, mask_outside):
  image, camera, joints_2d, _, joints_3d = random_view(5)
  joints_2d[:] = [[WIDTH - 3.0, 10.0]] * H36M.num_joints  # near the right edge...
  joints_2d[0] = [(WIDTH - 1) / 2, (HEIGHT - 1) / 2]  # ...but the pelvis at the centre
  mask = np.ones(H36M.num_joints, bool)
  kwargs = {"mask_outside": True} if mask_outside else {}
  # Zoomed 1.2x about the centre, the edge joints leave the crop; the pelvis stays.
  out = augment_fn(image, camera, joints_2d, mask, joints_3d, Augmentation(scale=1.2), **kwargs)
  assert out["joints_2d"][1, 0] > WIDTH - 0.5
  expected = np.zeros_like(mask) if mask_outside else mask.copy()
  expected[0] = True
  np.testing.assert_array_equal(out["joints_2d_mask"], expected)


# --------------------------------------------------------------------------------- the image


def gaussian_dot(centre, sigma=1.5):
  ys, xs = np.mgrid[:HEIGHT, :WIDTH]
  r2 = (xs - centre[0])**2 + (ys - centre[1])**2
  dot = np.rint(255 * np.exp(-r2 / (2 * sigma**2))).astype(np.uint8)
  return np.repeat(dot[..., None], 3, axis=-1)


@BOTH_PATHS
@pytest.mark.parametrize("augmentation", [
    Augmentation(1.15, np.deg2rad(25), False), Augmentation(0.85, np.deg2rad(-20), True),
    FLIP_ONLY], ids=["turn", "turn+flip", "flip"])
def test_image_content_follows_the_joints(augment_fn, augmentation):
  """A dot drawn at the right wrist ends up at the augmented right wrist, i.e. under the label
  left_wrist after a flip: the image, the joints and the swap agree."""
  _, camera, joints_2d, mask, joints_3d = random_view(6)
  joints_2d[RIGHT_WRIST] = [40.3, 19.6]
  image = gaussian_dot(joints_2d[RIGHT_WRIST])
  out = augment_fn(image, camera, joints_2d, mask, joints_3d, augmentation)
  target = out["joints_2d"][LEFT_WRIST if augmentation.flip else RIGHT_WRIST]
  brightness = out["image"][..., 0].astype(np.float64)
  brightest = np.unravel_index(np.argmax(brightness), brightness.shape)[::-1]
  assert np.all(np.abs(brightest - target) <= 1.0), (brightest, target)
  ys, xs = np.mgrid[:HEIGHT, :WIDTH]
  centroid = np.array([np.sum(xs * brightness), np.sum(ys * brightness)]) / brightness.sum()
  np.testing.assert_allclose(centroid, target, atol=0.1)


def reference_warp(images, matrices):
  """Independent reference: jax.scipy.ndimage.map_coordinates (order 1, zeros outside), float."""
  _, height, width, _ = images.shape
  ys, xs = np.mgrid[:height, :width].astype(np.float64)
  out = []
  for image, matrix in zip(images, matrices):
    inverse = np.linalg.inv(np.asarray(matrix, np.float64))
    source_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    source_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    out.append(np.stack([jax.scipy.ndimage.map_coordinates(
        image[..., c].astype(np.float32), [source_y, source_x], order=1, mode="constant")
        for c in range(image.shape[-1])], axis=-1))
  return np.asarray(out)


def random_images_and_matrices(seed, num):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, size=(num, HEIGHT, WIDTH, 3), dtype=np.uint8)
  augmentations = [augment.sample_augmentation(rng) for _ in range(num)]
  return images, augment.augmentation_matrices(augmentations, (HEIGHT, WIDTH))


def test_numpy_and_jax_warps_agree_with_each_other_and_a_reference():
  images, matrices = random_images_and_matrices(0, 8)
  host = augment.warp_images_numpy(images, matrices)
  device = np.asarray(augment.warp_images(images, matrices))
  assert host.dtype == device.dtype == np.uint8
  difference = np.abs(host.astype(np.int32) - device)
  # Both compute in float32 in the same order; XLA may still round a pixel to the other side.
  assert difference.max() <= 1 and np.mean(difference > 0) < 1e-3
  reference = reference_warp(images, matrices)
  assert np.abs(host - reference).max() <= 0.5 + 1e-3  # only the final rounding differs
  assert np.abs(device - reference).max() <= 0.5 + 1e-3
  assert np.mean(host == 0) > 0.05  # the rotated crops really do read zeros outside


def test_jax_warp_under_jit_and_vmap_and_any_leading_axes():
  images, matrices = random_images_and_matrices(1, 6)
  batched = np.asarray(augment.warp_images(images, matrices))
  mapped = jax.jit(jax.vmap(augment.warp_images))(images, matrices)
  np.testing.assert_array_equal(mapped, batched)
  nested = augment.warp_images(images.reshape(2, 3, HEIGHT, WIDTH, 3),
                               matrices.reshape(2, 3, 3, 3))
  np.testing.assert_array_equal(np.asarray(nested).reshape(batched.shape), batched)
  gray = augment.warp_images_numpy(images[..., :1], matrices)
  np.testing.assert_array_equal(gray, augment.warp_images_numpy(images, matrices)[..., :1])


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 5), np.uint8)])
def test_warp_rejects_what_it_cannot_warp(bad):
  with pytest.raises(ValueError, match="uint8"):
    augment.warp_images_numpy(bad, np.eye(3))
  with pytest.raises(ValueError, match="uint8"):
    augment.warp_images(bad, np.eye(3))


# ------------------------------------------------------------------------ sampling, multi-view


def test_sampling_ranges_and_flip_rate():
  rng = np.random.default_rng(0)
  draws = [augment.sample_augmentation(rng) for _ in range(2000)]
  scales = np.array([d.scale for d in draws])
  rotations = np.rad2deg([d.rotation_rad for d in draws])
  assert 0.8 <= scales.min() < 0.81 and 1.19 < scales.max() <= 1.2
  assert -30 <= rotations.min() < -29.5 and 29.5 < rotations.max() <= 30
  assert 0.45 < np.mean([d.flip for d in draws]) < 0.55
  assert not any(augment.sample_augmentation(rng, flip_probability=0.0).flip for _ in range(50))
  assert augment.sample_augmentation(rng, flip=True, flip_probability=0.0).flip
  again = [augment.sample_augmentation(np.random.default_rng(0)) for _ in range(1)]
  assert again[0] == draws[0]


def test_views_of_a_sample_share_one_flip_but_not_their_scale():
  rng = np.random.default_rng(1)
  samples = [augment.sample_view_augmentations(rng, 4) for _ in range(200)]
  assert all(len({view.flip for view in views}) == 1 for views in samples)
  assert 50 < sum(views[0].flip for views in samples) < 150
  assert all(len({view.scale for view in views}) == 4 for views in samples)


def rigid_misfit(source, target):
  """RMS residual (mm) after the best proper rigid transform (reflections excluded)."""
  _, rotation, translation = procrustes.similarity_transform(source, target, with_scale=False)
  aligned = source @ np.asarray(rotation).T + np.asarray(translation)
  return float(np.sqrt(np.mean(np.sum((aligned - target)**2, axis=-1))))


@pytest.mark.parametrize("flip", [False, True])
def test_multiview_sample_stays_rigidly_consistent_on_the_device(flip):
  """One world pose seen by 4 cameras: after augmenting the [S=1, V=4] batch with one shared
  flip, the views' camera-frame poses still differ by rigid motions only (what L_MC assumes),
  and every view still projects exactly."""
  rng = np.random.default_rng(2)
  world = canonical_body()
  cameras_3d = [(random_rotation(rng), np.array([0, 0, 4000.0])) for _ in range(4)]
  poses = np.stack([world @ r.T + t for r, t in cameras_3d])
  cameras = np.stack([crop_camera(rng, pose, False) for pose in poses])
  batch = {
      "image": rng.integers(0, 256, size=(1, 4, HEIGHT, WIDTH, 3), dtype=np.uint8),
      "camera": cameras[None].astype(np.float32),
      "joints_2d": np.asarray(geometry.project(poses, cameras))[None],
      "joints_2d_mask": np.ones((1, 4, H36M.num_joints), bool),
      "joints_3d": poses[None].astype(np.float32),
      "view_mask": np.ones((1, 4), bool),
  }
  views = augment.sample_view_augmentations(rng, 4, flip_probability=float(flip))
  out = augment.augment_batch(batch, augment.augmentation_matrices([views], (HEIGHT, WIDTH)))
  assert set(out) == set(batch)
  np.testing.assert_array_equal(out["view_mask"], batch["view_mask"])
  poses_out = np.asarray(out["joints_3d"][0], np.float64)
  np.testing.assert_allclose(geometry.project(out["joints_3d"], out["camera"]),
                             out["joints_2d"], atol=1e-3)
  for v in range(1, 4):
    assert rigid_misfit(poses_out[v], poses_out[0]) < 0.05
  # Why the flip must be shared: a mirrored view next to an unmirrored one is not rigid.
  mixed = augment.augment_view(batch["image"][0, 1], cameras[1], batch["joints_2d"][0, 1],
                               batch["joints_2d_mask"][0, 1],
                               Augmentation(views[1].scale, views[1].rotation_rad, not flip),
                               joints_3d=poses[1])
  # (The body is nearly left-right symmetric, so its mirror image is off by tens of mm only.)
  assert rigid_misfit(mixed["joints_3d"].astype(np.float64), poses_out[0]) > 10


def test_device_batch_matches_host_views():
  views = [random_view(seed) for seed in range(4)]
  rng = np.random.default_rng(3)
  augmentations = [augment.sample_augmentation(rng, flip=seed % 2 == 0) for seed in range(4)]
  keys = ["image", "camera", "joints_2d", "joints_2d_mask", "joints_3d"]
  batch = {key: np.stack([view[i] for view in views]) for i, key in enumerate(keys)}
  device = jax.jit(augment.augment_batch)(
      batch, augment.augmentation_matrices(augmentations, (HEIGHT, WIDTH)))
  for n, (view, augmentation) in enumerate(zip(views, augmentations)):
    host = augment.augment_view(view[0], view[1], view[2], view[3], augmentation,
                                joints_3d=view[4])
    np.testing.assert_array_equal(device["joints_2d_mask"][n], host["joints_2d_mask"])
    np.testing.assert_array_equal(device["joints_3d"][n], host["joints_3d"])
    np.testing.assert_allclose(device["camera"][n], host["camera"], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(device["joints_2d"][n], host["joints_2d"], atol=1e-3)
    assert np.abs(device["image"][n].astype(np.int32) - host["image"]).max() <= 1


@pytest.mark.parametrize("pixels_per_chunk", [0, 4 * HEIGHT * WIDTH, None])
def test_jax_warp_chunking_does_not_change_the_result(pixels_per_chunk):
  images, matrices = random_images_and_matrices(2, 6)  # 6 = one chunk of 4 and a rest of 2
  chunked = augment.warp_images(images, matrices, pixels_per_chunk=pixels_per_chunk)
  np.testing.assert_array_equal(chunked, augment.warp_images(images, matrices,
                                                             pixels_per_chunk=0))
  np.testing.assert_array_equal(chunked[0], augment.warp_images(images[0], matrices[0]))


def test_device_path_takes_an_unlabelled_multiview_batch():
  """The weakly supervised stream carries images and cameras only (no labels may reach it)."""
  images, matrices = random_images_and_matrices(4, 6)
  cameras = np.broadcast_to(np.array([[90.0, 0, 30], [0, 90, 20], [0, 0, 1]], np.float32),
                            (2, 3, 3, 3))
  batch = {"image": images.reshape(2, 3, HEIGHT, WIDTH, 3), "camera": cameras,
           "view_mask": np.array([[True, True, False]] * 2)}
  out = augment.augment_batch(batch, matrices.reshape(2, 3, 3, 3))
  assert set(out) == {"image", "camera", "view_mask"}
  np.testing.assert_array_equal(out["image"].reshape(images.shape),
                                augment.warp_images(images, matrices))
  mirror = np.linalg.det(matrices[:, :2, :2]) < 0
  expected = (matrices @ cameras.reshape(6, 3, 3)) * np.where(mirror[:, None, None], [-1, 1, 1], 1)
  np.testing.assert_allclose(out["camera"].reshape(6, 3, 3), expected, rtol=1e-6, atol=1e-4)
  assert mirror.any() and not mirror.all()
