"""posejax.data.render.synthetic: exact cameras, rigid multi-view consistency, determinism, visibility."""

import numpy as np
import pytest

from posejax.data.render import synthetic
from posejax.skeleton import H36M

CONFIG = synthetic.SyntheticConfig(image_size=64, num_views=4, seed=3, motion="procedural")


def project(points, camera):
  pixels = np.einsum("...ij,...nj->...ni", camera.astype(np.float64), points.astype(np.float64))
  return pixels[..., :2] / pixels[..., 2:]


@pytest.mark.parametrize("stream", synthetic.STREAMS)
def test_projecting_the_3d_joints_gives_the_2d_joints(stream):
  for index in range(3):
    sample = synthetic.sample(CONFIG, stream, index)
    np.testing.assert_allclose(project(sample["joints_3d"], sample["camera"]),
                               sample["joints_2d"], atol=1e-3)
    assert sample["image"].dtype == np.uint8 and sample["image"].shape[-3:] == (64, 64, 3)
    assert np.all(sample["joints_3d"][..., 2] > 1000)  # in front of the camera, metres away


@pytest.mark.parametrize("stream", ["train_multiview", "test"])
def test_views_are_one_pose_under_rigid_transforms(stream):
  sample = synthetic.sample(CONFIG, stream, 1)
  rotation = sample["world_to_camera_rotation"].astype(np.float64)
  translation = sample["world_to_camera_translation"].astype(np.float64)
  expected = np.einsum("vij,nj->vni", rotation, sample["joints_world"]) + translation[:, None]
  np.testing.assert_allclose(sample["joints_3d"], expected, atol=0.05)
  np.testing.assert_allclose(np.einsum("vji,vjk->vik", rotation, rotation),
                             np.broadcast_to(np.eye(3), (4, 3, 3)), atol=1e-5)
  np.testing.assert_allclose(np.linalg.det(rotation), 1.0, atol=1e-5)
  # The cameras really differ: distinct viewing directions, 3-6 m away.
  centres = -np.einsum("vji,vj->vi", rotation, translation)
  distances = np.linalg.norm(centres[:, [0, 2]] - sample["joints_world"][0, [0, 2]], axis=1)
  assert np.all((distances > 2500) & (distances < 6500))
  forward = rotation[:, 2]
  assert np.max(forward @ forward.T - 2 * np.eye(4)) < 0.9


def test_same_seed_same_bytes_other_index_other_sample():
  first = synthetic.sample(CONFIG, "train_multiview", 7)
  again = synthetic.sample(CONFIG, "train_multiview", 7)
  assert first.keys() == again.keys()
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  other = synthetic.sample(CONFIG, "train_multiview", 8)
  assert not np.array_equal(first["image"], other["image"])
  reseeded = synthetic.sample(synthetic.SyntheticConfig(image_size=64, seed=4,
                                                        motion="procedural"),
                              "train_multiview", 7)
  assert not np.array_equal(first["joints_world"], reseeded["joints_world"])


def test_streams_have_their_shapes_and_splits_differ():
  single = synthetic.sample(CONFIG, "train_2d", 0)
  assert single["joints_2d"].shape == (17, 2) and single["joints_2d_mask"].shape == (17,)
  multi = synthetic.sample(CONFIG, "train_multiview", 0)
  assert multi["image"].shape == (4, 64, 64, 3) and multi["view_mask"].all()
  # Held-out cameras sit higher than the training cameras' range allows.
  heights = [-(synthetic.sample(CONFIG, "test", i)["world_to_camera_rotation"][0].T
               @ synthetic.sample(CONFIG, "test", i)["world_to_camera_translation"][0])[1]
             for i in range(3)]
  assert min(heights) > 1700
  # Validation is held out like the test stream but never repeats a test sample.
  validation = synthetic.sample(CONFIG, "validation", 0)
  assert not np.array_equal(validation["joints_world"], synthetic.sample(CONFIG, "test", 0)[
      "joints_world"])
  with pytest.raises(ValueError, match="train_multiview"):
    synthetic.sample(CONFIG, "valid", 0)


def _standing_pose(overrides):
  """A standing pose facing +Z (its left on +X), with some bone directions overridden."""
  directions = {1: (-1, 0, 0), 2: (0, -1, 0), 3: (0, -1, 0), 4: (1, 0, 0), 5: (0, -1, 0),
                6: (0, -1, 0), 7: (0, 1, 0), 8: (0, 1, 0), 9: (0, 1, 0.1), 10: (0, 1, 0),
                11: (1, 0.2, 0), 12: (0.3, -1, 0), 13: (0.2, -1, 0), 14: (-1, 0.2, 0),
                15: (-0.3, -1, 0), 16: (-0.2, -1, 0)}
  directions.update(overrides)
  pose = np.zeros((17, 3))
  for (child, parent), length in zip(H36M.bones, H36M.mean_bone_lengths_mm):
    direction = np.asarray(directions[child], float)
    pose[child] = pose[parent] + direction / np.linalg.norm(direction) * length
  pose[:, 1] += 1000
  return pose


def _render(pose, camera_position, colours=np.full((6, 3), 0.5)):
  rng = np.random.default_rng(0)
  subject = synthetic.Subject(bone_scale=np.ones(16), girth=1.0, colours=colours,
                              stripe_frequency=0.0)
  scene = synthetic.Scene(palette=np.full((5, 3), 0.5), light=np.array([0.0, 1, 0]),
                          pillar=None, pillar_colour=np.zeros(3))
  rotation, translation = synthetic.look_at(np.asarray(camera_position, float),
                                            pose[H36M.index("spine")])
  camera = synthetic.Camera(np.array([[1000.0, 0, 500], [0, 1000, 500], [0, 0, 1]]), rotation,
                            translation)
  return synthetic.render_view(pose, subject, scene, camera, 64, 1.3, rng)


def _visibility(pose, camera_position):
  return dict(zip(H36M.joint_names, _render(pose, camera_position)["joints_2d_mask"]))


def test_front_and_back_look_different():
  """Without a face, feet and a front panel a capsule body seen from behind is its mirror image
  seen from the front: left/right and every relative depth's sign would be guesswork."""
  pose = _standing_pose({})
  np.testing.assert_allclose(synthetic.facing_direction(pose), [0, 0, 1], atol=0.06)
  # skin, shirt, sleeve, trousers grey; shoes pure green; chest pure blue.
  colours = np.array([[0.5] * 3] * 4 + [[0, 1, 0], [0, 0, 1]])

  def pixels_of(image, channel):
    image = image.astype(int)
    others = np.delete(image, channel, axis=-1)
    return int(np.sum((image[..., channel] > 40) & (others.max(-1) < 10)))

  front, back, side = (_render(pose, position, colours)["image"]
                       for position in ([0, 1200, 4000], [0, 1200, -4000], [4000, 1200, 0]))
  assert pixels_of(front, 2) > 40 and pixels_of(back, 2) == 0  # the chest faces the front
  assert pixels_of(front, 1) > 0 and pixels_of(side, 1) > 0  # shoes
  # Feet and nose point forwards (+Z): they break the front/back mirror symmetry.
  a, b, radius = synthetic.body_capsules(pose, 1.0, 1.0)
  nose, right_foot, left_foot = range(len(synthetic._CAPSULES), len(synthetic._CAPSULES) + 3)
  for foot in (right_foot, left_foot):
    np.testing.assert_allclose((b[foot] - a[foot]) / np.linalg.norm(b[foot] - a[foot]),
                               [0, 0, 1], atol=1e-6)
  head = pose[H36M.index("head_top")]
  nose_tip = b[nose] + radius[nose] * np.array([0, 0, 1])
  assert nose_tip[2] - head[2] > 92 + 15


def test_visibility_in_a_constructed_self_occlusion():
  # Right forearm folded across the belly (in front of the spine joint, seen from the front),
  # left forearm bent behind the back.
  pose = _standing_pose({15: (-0.2, -1, 0.25), 16: (1, 0.3, 0.9),
                         12: (0.2, -1, -0.2), 13: (-0.7, 0.1, -1)})
  pose[16] = pose[15] + np.array([1.0, 0.15, 0.0]) * 251.7  # forearm horizontal, across
  pose[16, 2] = pose[H36M.index("spine"), 2] + 260  # well in front of the torso
  pose[15, 2] = pose[16, 2]
  front = _visibility(pose, [0, 1200, 4000])
  back = _visibility(pose, [0, 1200, -4000])
  assert front["right_wrist"] and front["head_top"] and front["left_knee"]
  assert not front["left_wrist"]  # behind the back
  assert back["left_wrist"]
  assert not back["right_wrist"]  # behind the belly, seen from behind
  # The far side of a side view is hidden by the near side.
  # (The left hip is hidden too: the hanging left forearm is in front of it.)
  side = _visibility(_standing_pose({}), [4000, 1200, 0])  # from the subject's left (+X)
  assert side["left_knee"] and side["left_elbow"] and side["left_shoulder"]
  assert not side["right_knee"] and not side["right_elbow"] and not side["right_shoulder"]


def test_bounding_box_culling_renders_the_same_bytes_as_brute_force(monkeypatch):
  config = synthetic.SyntheticConfig(image_size=48, num_views=4, seed=9, motion="procedural",
                                     occluder_probability=1.0)
  culled = [synthetic.sample(config, "train_multiview", i)["image"] for i in range(3)]
  monkeypatch.setattr(synthetic, "_ray_capsules_culled",
                      lambda directions, a, b, radius, camera, size:
                      synthetic._ray_capsules(directions, a, b, radius))
  brute_force = [synthetic.sample(config, "train_multiview", i)["image"] for i in range(3)]
  for fast, slow in zip(culled, brute_force):
    np.testing.assert_array_equal(fast, slow)


def test_users_pose_file_is_a_motion_source(tmp_path):
  pose = _standing_pose({})
  poses = np.stack([pose + [i * 10.0, 0, 0] for i in range(6)]).astype(np.float32)
  np.save(tmp_path / "poses.npy", poses)
  config = synthetic.SyntheticConfig(image_size=32, num_views=2, motion=str(tmp_path / "poses.npy"))
  sample = synthetic.sample(config, "train_multiview", 0)
  # The subject's proportions change the bone lengths, not the bone directions of the user's pose.
  world = sample["joints_world"].astype(np.float64)
  child, parent = H36M.index("left_knee"), H36M.index("left_hip")
  direction = world[child] - world[parent]
  assert abs(direction[1]) / np.linalg.norm(direction) > 0.99  # thigh straight down, as given
  with pytest.raises(FileNotFoundError, match="missing.npy"):
    synthetic.sample(synthetic.SyntheticConfig(motion=str(tmp_path / "missing.npy")),
                     "train_multiview", 0)
