"""posejax.data.render.motion: DeepMimic clips, procedural motion, user pose files, bone lengths."""

import json
import pathlib
import re

import numpy as np
import pytest

from posejax.data.render import motion
from posejax.skeleton import H36M

I = {name: i for i, name in enumerate(H36M.joint_names)}
UP = np.array([0.0, 1.0, 0.0])
ANKLES = [I["left_ankle"], I["right_ankle"]]


def facing_directions(poses):
  """[T, 3] unit horizontal facing direction from the hips: a person facing f with up u has
  their right side towards f x u, so f = u x (right_hip - left_hip). Swapped left/right labels
  flip it by 180 degrees."""
  facing = np.cross(UP, poses[:, I["right_hip"]] - poses[:, I["left_hip"]])
  facing[:, 1] = 0.0
  return facing / np.linalg.norm(facing, axis=-1, keepdims=True)


def knee_bend_signs(poses, side):
  """[T] cosine between the knee's bend axis (thigh x shin) and the body's left axis
  (right_hip -> left_hip), scaled by how bent the knee is.

  A knee flexes about the thigh's left-pointing axis: the shin swings backwards, so
  thigh x shin points to the body's left (positive). A knee bent backwards the wrong way
  (hyperextension) makes it negative. Hip twist and abduction tilt the axis but (within
  anatomical limits) keep it within 90 degrees of the pelvis's left axis.
  """
  thigh = poses[:, I[f"{side}_knee"]] - poses[:, I[f"{side}_hip"]]
  shin = poses[:, I[f"{side}_ankle"]] - poses[:, I[f"{side}_knee"]]
  left = poses[:, I["left_hip"]] - poses[:, I["right_hip"]]
  norms = (np.linalg.norm(thigh, axis=-1) * np.linalg.norm(shin, axis=-1)
           * np.linalg.norm(left, axis=-1))
  return (np.cross(thigh, shin) * left).sum(-1) / norms


# --- bone_lengths --------------------------------------------------------------------------------

def test_bone_lengths_exact_values_and_batch_shape():
  pose = np.zeros((H36M.num_joints, 3))
  for k, (child, parent) in enumerate(H36M.bones):  # each bone k along +X with length k + 1
    pose[child] = pose[parent] + [k + 1.0, 0.0, 0.0]
  np.testing.assert_allclose(motion.bone_lengths(pose), np.arange(1.0, 17.0), atol=1e-12)
  batch = np.broadcast_to(pose, (2, 3, H36M.num_joints, 3))
  assert motion.bone_lengths(batch).shape == (2, 3, 16)


# --- user pose files ------------------------------------------------------------------------------

def test_load_pose_file_round_trip(tmp_path):
  poses = motion.procedural_motion(np.random.default_rng(0), 5).astype(np.float64)
  path = tmp_path / "poses.npy"
  np.save(path, poses)
  loaded = motion.load_pose_file(path)
  assert loaded.dtype == np.float32 and loaded.shape == (5, 17, 3)
  np.testing.assert_array_equal(loaded, poses.astype(np.float32))
  np.testing.assert_array_equal(motion.load_pose_file(str(path)), loaded)


@pytest.mark.parametrize("array, message", [
    (np.zeros((17, 3)), r"shape \(17, 3\)"),
    (np.zeros((4, 16, 3)), r"shape \(4, 16, 3\)"),
    (np.zeros((4, 17, 2)), r"shape \(4, 17, 2\)"),
    (np.zeros((0, 17, 3)), r"shape \(0, 17, 3\)"),
    (np.full((3, 17, 3), np.nan), "non-finite"),
    (np.full((3, 17, 3), "a"), "real numbers"),
])
def test_load_pose_file_rejects_bad_arrays(tmp_path, array, message):
  path = tmp_path / "bad_poses.npy"
  np.save(path, array)
  with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + message):
    motion.load_pose_file(path)


def test_load_pose_file_rejects_infinity_metres_and_non_npy(tmp_path):
  poses = motion.procedural_motion(np.random.default_rng(1), 3)
  with_inf = poses.copy()
  with_inf[2, 5, 1] = np.inf
  np.save(tmp_path / "inf.npy", with_inf)
  with pytest.raises(ValueError, match=r"inf\.npy.*non-finite.*pose 2"):
    motion.load_pose_file(tmp_path / "inf.npy")
  np.save(tmp_path / "metres.npy", poses / 1000.0)
  with pytest.raises(ValueError, match=r"metres\.npy.*metres"):
    motion.load_pose_file(tmp_path / "metres.npy")
  (tmp_path / "text.npy").write_text("not an array")
  with pytest.raises(ValueError, match=r"text\.npy.*not a readable"):
    motion.load_pose_file(tmp_path / "text.npy")
  np.save(tmp_path / "objects.npy", np.array([{"pose": 1}], dtype=object), allow_pickle=True)
  with pytest.raises(ValueError, match=r"objects\.npy"):
    motion.load_pose_file(tmp_path / "objects.npy")


def test_load_pose_file_missing(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"nowhere\.npy"):
    motion.load_pose_file(tmp_path / "nowhere.npy")


# --- procedural motion ----------------------------------------------------------------------------

def test_procedural_motion_is_deterministic_and_seed_dependent():
  first = motion.procedural_motion(np.random.default_rng(7), 50)
  again = motion.procedural_motion(np.random.default_rng(7), 50)
  other = motion.procedural_motion(np.random.default_rng(8), 50)
  assert first.shape == (50, 17, 3) and first.dtype == np.float32
  assert np.isfinite(first).all()
  np.testing.assert_array_equal(first, again)
  assert np.abs(first - other).max() > 100.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_procedural_motion_has_exactly_the_requested_bone_lengths(seed):
  rng = np.random.default_rng(seed)
  jittered = np.asarray(H36M.mean_bone_lengths_mm) * rng.uniform(0.8, 1.2, size=16)
  for requested in (None, jittered):
    poses = motion.procedural_motion(rng, 200, bone_lengths_mm=requested)
    expected = H36M.mean_bone_lengths_mm if requested is None else requested
    np.testing.assert_allclose(motion.bone_lengths(poses.astype(np.float64)),
                               np.broadcast_to(expected, (200, 16)), rtol=0, atol=1e-3)


def test_procedural_motion_is_smooth():
  """At the default 30 Hz no joint moves more than 100 mm between frames (3 m/s), over 20 seeds
  of 10 s; and the motion is not frozen either."""
  steps = np.concatenate([
      np.linalg.norm(np.diff(motion.procedural_motion(np.random.default_rng(seed), 300), axis=0),
                     axis=-1) for seed in range(20)])
  assert steps.max() < 100.0
  assert np.median(steps) > 1.0


def test_procedural_knees_never_bend_backwards():
  """See `knee_bend_signs`: the shin always swings backwards relative to the thigh."""
  for seed in range(20):
    poses = motion.procedural_motion(np.random.default_rng(seed), 300).astype(np.float64)
    for side in ("left", "right"):
      assert knee_bend_signs(poses, side).min() > 0.0, (seed, side)


def test_procedural_feet_on_the_ground():
  """In every frame the lower ankle is at ankle height and no ankle is below it."""
  poses = motion.procedural_motion(np.random.default_rng(3), 300)
  ankle_heights = poses[:, ANKLES, 1]
  np.testing.assert_allclose(ankle_heights.min(axis=1), motion.ANKLE_HEIGHT_MM, atol=1e-3)
  # The pelvis stays at standing-to-crouching height: the body is not upside down or flying.
  assert (poses[:, I["pelvis"], 1] > 400).all() and (poses[:, I["pelvis"], 1] < 1100).all()
  assert (poses[:, I["head_top"], 1] > poses[:, I["pelvis"], 1]).all()


def test_procedural_yaw_varies_across_seeds_and_slowly_within_one():
  headings = np.array([
      facing_directions(motion.procedural_motion(np.random.default_rng(seed), 60))
      for seed in range(40)])  # [seed, T, 3]
  angles = np.arctan2(headings[:, 0, 0], headings[:, 0, 2])
  quadrants = np.floor((angles + np.pi) / (np.pi / 2)).astype(int)
  assert set(quadrants) >= {0, 1, 2, 3}
  assert np.linalg.norm(headings[:, 0].mean(axis=0)) < 0.5  # no preferred heading
  turn_per_frame = np.arccos(np.clip((headings[:, 1:] * headings[:, :-1]).sum(-1), -1, 1))
  assert turn_per_frame.max() < np.deg2rad(10)


def test_procedural_motion_rejects_bad_arguments():
  rng = np.random.default_rng(0)
  with pytest.raises(ValueError, match="num_frames"):
    motion.procedural_motion(rng, 0)
  with pytest.raises(ValueError, match="bone_lengths_mm"):
    motion.procedural_motion(rng, 2, bone_lengths_mm=np.ones(15))
  with pytest.raises(ValueError, match="bone_lengths_mm"):
    motion.procedural_motion(rng, 2, bone_lengths_mm=-np.ones(16))


# --- DeepMimic clips ------------------------------------------------------------------------------

def test_deepmimic_clip_paths_empty_without_pybullet(monkeypatch):
  monkeypatch.setattr(motion, "_pybullet_data_dir", lambda: None)
  assert motion.deepmimic_clip_paths() == []


@pytest.fixture(scope="module")
def clips():
  pytest.importorskip("pybullet")
  paths = motion.deepmimic_clip_paths()
  return {path.stem.removeprefix("humanoid3d_"): motion.load_deepmimic_clip(path)
          for path in paths}


def test_deepmimic_clips_load_with_rigid_human_sized_bodies(clips):
  assert len(clips) >= 10 and {"walk", "run", "jump", "cartwheel"} <= set(clips)
  for name, clip in clips.items():
    assert clip.ndim == 3 and clip.shape[1:] == (17, 3) and len(clip) > 10, name
    assert clip.dtype == np.float32 and np.isfinite(clip).all(), name
    lengths = motion.bone_lengths(clip.astype(np.float64))
    assert (lengths.std(axis=0) / lengths.mean(axis=0)).max() < 1e-4, name  # rigid links
    # H36M S1: pelvis-head_top 727 mm along a straight spine, legs 897 mm.
    pelvis_to_head = np.linalg.norm(clip[:, I["head_top"]] - clip[:, I["pelvis"]], axis=-1)
    assert (pelvis_to_head > 600).all() and (pelvis_to_head < 900).all(), name
    leg = lengths[0, 1] + lengths[0, 2]
    assert 800 < leg < 1000, name
    np.testing.assert_allclose(clip[:, ANKLES, 1].min(), motion.ANKLE_HEIGHT_MM, atol=1e-2)


def test_deepmimic_walk_is_upright_on_the_floor_and_walks(clips):
  walk = clips["walk"]
  ankle_heights = walk[:, ANKLES, 1]
  assert 0 <= ankle_heights.min() <= 150
  assert (ankle_heights.min(axis=1) < 150).mean() > 0.8  # a foot on the floor in most frames
  standing_height = walk[:, I["head_top"], 1].max()  # head top above the floor, 80 mm ankles
  assert 1550 < standing_height < 1950
  assert (walk[:, I["pelvis"], 1] > 800).all()
  travel = walk[-1, I["pelvis"]] - walk[0, I["pelvis"]]
  assert abs(travel[1]) < 50 and np.linalg.norm(travel[[0, 2]]) > 1000  # 1.34 m in 1.3 s


def test_deepmimic_walk_left_and_right(clips):
  """People walk forwards: the facing direction given by the hip labels (see
  `facing_directions`) must agree with the direction the pelvis travels, in the first frame and
  in every frame; and the shoulders must agree with the hips."""
  walk = clips["walk"].astype(np.float64)
  travel = walk[-1, I["pelvis"]] - walk[0, I["pelvis"]]
  travel /= np.linalg.norm(travel)
  facing = facing_directions(walk)
  assert facing[0] @ travel > 0.9
  assert (facing @ travel > 0.7).all()
  shoulders_right = walk[:, I["right_shoulder"]] - walk[:, I["left_shoulder"]]
  hips_right = walk[:, I["right_hip"]] - walk[:, I["left_hip"]]
  assert ((shoulders_right * hips_right).sum(-1) > 0).all()
  # The knees bend the anatomical way too (the clip's knee angles are all negative).
  for side in ("left", "right"):
    assert (knee_bend_signs(walk, side) > 0).mean() > 0.9


def test_deepmimic_forward_kinematics_matches_pybullet(clips):
  """Our NumPy FK against pybullet's own, on the humanoid loaded as DeepMimic loads it."""
  pybullet = pytest.importorskip("pybullet")
  import pybullet_data  # pylint: disable=import-outside-toplevel
  client = pybullet.connect(pybullet.DIRECT)
  try:
    body = pybullet.loadURDF(
        str(pathlib.Path(pybullet_data.getDataPath()) / "humanoid" / "humanoid.urdf"),
        globalScaling=0.25, useFixedBase=True, flags=pybullet.URDF_MAINTAIN_LINK_ORDER,
        physicsClientId=client)
    joints = [pybullet.getJointInfo(body, j, physicsClientId=client)
              for j in range(pybullet.getNumJoints(body, physicsClientId=client))]
    compared = 0
    for path in motion.deepmimic_clip_paths()[::3]:
      frames = motion._read_deepmimic_frames(path)[::17]  # pylint: disable=protected-access
      positions, _ = motion._humanoid_link_frames(frames)  # pylint: disable=protected-access
      for t, frame in enumerate(frames):
        w, x, y, z = frame[4:8]
        pybullet.resetBasePositionAndOrientation(body, frame[1:4], [x, y, z, w],
                                                 physicsClientId=client)
        for index, info in enumerate(joints):
          columns = motion._JOINT_COLUMNS.get(info[1].decode())  # pylint: disable=protected-access
          if columns is None:
            continue
          values = frame[columns]
          if len(values) == 4:
            pybullet.resetJointStateMultiDof(body, index, [*values[1:], values[0]],
                                             physicsClientId=client)
          else:
            pybullet.resetJointState(body, index, values[0], physicsClientId=client)
        for index, info in enumerate(joints):
          state = pybullet.getLinkState(body, index, computeForwardKinematics=True,
                                        physicsClientId=client)
          np.testing.assert_allclose(positions[info[12].decode()][t], state[4], atol=1e-5)
          compared += 1
    assert compared > 100
  finally:
    pybullet.disconnect(client)


def test_deepmimic_clip_errors(tmp_path):
  pytest.importorskip("pybullet")
  with pytest.raises(FileNotFoundError, match=r"no_such_clip\.txt"):
    motion.load_deepmimic_clip(tmp_path / "no_such_clip.txt")
  walk = json.loads(next(p for p in motion.deepmimic_clip_paths()
                         if p.stem.endswith("_walk")).read_text())
  cases = {
      "not_json.txt": "{ Frames: [",
      "no_frames.txt": json.dumps({"Loop": "wrap"}),
      "short_frames.txt": json.dumps({"Frames": [row[:40] for row in walk["Frames"]]}),
      "ragged_frames.txt": json.dumps({"Frames": [walk["Frames"][0], walk["Frames"][1][:40]]}),
      "no_rows.txt": json.dumps({"Frames": []}),
      "nan.txt": json.dumps({"Frames": [walk["Frames"][0][:5] + [float("nan")]
                                        + walk["Frames"][0][6:]]}),
      "zero_quaternion.txt": json.dumps({"Frames": [walk["Frames"][0][:8] + [0.0] * 4
                                                    + walk["Frames"][0][12:]]}),
  }
  for name, text in cases.items():
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=re.escape(name)):
      motion.load_deepmimic_clip(tmp_path / name)
  # A well-formed one-frame clip loads.
  (tmp_path / "one_frame.txt").write_text(json.dumps({"Frames": walk["Frames"][:1]}))
  assert motion.load_deepmimic_clip(tmp_path / "one_frame.txt").shape == (1, 17, 3)
