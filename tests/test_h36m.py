"""Tests of the Human3.6M builder on a tiny release in the official formats."""

import os

import numpy as np
import pytest

from posejax import skeleton
from posejax.data.real import datasets, h36m
from tests import fixtures_h36m as fx
from tests.fixtures_video import truncate, write_video

OPTIONS = dict(image_size=96, train_every=1, test_every=2)
STANDARD_17_OF_32 = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
  manual_dir = tmp_path_factory.mktemp("h36m")
  fx.write_release(manual_dir)
  fx.write_sequence(manual_dir, "S5", "Eating", pose_frames=2)  # CDF shorter than its videos
  for camera in h36m.CAMERAS:  # the corrupt sequence of the release: skipped, never read
    fx.write_poses(os.path.join(manual_dir, "S11", h36m.POSE_DIR,
                                f"Directions 1.{camera.name}.cdf"), np.zeros((1, 32, 3)))
  return str(manual_dir)


@pytest.fixture(scope="module")
def source(release, tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("data"))
  datasets.prepare("h36m", release, data_dir, **OPTIONS)
  return datasets.source("h36m", data_dir, **OPTIONS)


def all_samples(source, stream):
  first = source(stream, 0)
  samples, index = [first], 1
  while True:  # the stream wraps around: stop when the first sample comes back
    sample = source(stream, index)
    if (sample["subject"], sample["sequence"], sample["frame"]) == (
        first["subject"], first["sequence"], first["frame"]):
      return samples
    samples.append(sample)
    index += 1


def test_the_standard_17_of_the_32_joints():
  assert h36m.MAPPING.source_indices == STANDARD_17_OF_32
  assert h36m.MAPPING.target is skeleton.H36M


def test_protocol_splits_frames_and_actions(source):
  train = {(s["subject"], s["sequence"], int(s["frame"]))
           for s in all_samples(source, "train_multiview")}
  assert train == ({(subject, "Walking 1", f) for subject in ("S1", "S5", "S6", "S7", "S8")
                    for f in (0, 1, 2)} | {("S5", "Eating", 0), ("S5", "Eating", 1)})
  test = all_samples(source, "test")
  assert {(s["subject"], s["sequence"], int(s["frame"])) for s in test} == {
      ("S9", "TakingPhoto", 0), ("S9", "TakingPhoto", 2), ("S11", "Walking 1", 0),
      ("S11", "Walking 1", 2)}
  assert {(s["subject"], h36m.ACTIONS[s["action"]]) for s in test} == {
      ("S9", "Photo"), ("S11", "Walking")}


def measured_mark(image, colour, near, window: int = 6):
  """Centroid of the pixels of `colour` within `window` pixels of `near` (x, y)."""
  image = image.astype(np.float64)
  weight = np.clip(image @ (2 * np.asarray(colour) / 255 - 1) / 255, 0, None)
  x0, y0 = np.round(near).astype(int)
  ys, xs = np.mgrid[y0 - window:y0 + window + 1, x0 - window:x0 + window + 1]
  w = weight[ys.clip(0, len(image) - 1), xs.clip(0, len(image) - 1)]
  assert w.sum() > 1, f"no {colour} mark near {near}"
  return np.array([(w * xs).sum(), (w * ys).sum()]) / w.sum()


# Camera 54138969 as published (Human3.6M's metadata; VideoPose3D, common/h36m_dataset.py),
# typed here independently of posejax/data/real/h36m.py: focal, centre, k1 k2 k3, p1 p2.
_FX, _FY, _CX, _CY = 1145.0494384765625, 1143.7811279296875, 512.54150390625, 515.4514770507812
_K1, _K2, _K3 = -0.20709891617298126, 0.24777518212795258, -0.0030751503072679043
_P1, _P2 = -0.0009756988729350269, -0.00142447161488235


def _published_projection(X, Y, Z):
  """Human3.6M's projection (Brown-Conrady as its release code applies it), one point, by
  hand: x' = x (radial + p1 x + p2 y) + p1 r^2, y' = y (radial + p1 x + p2 y) + p2 r^2."""
  x, y = X / Z, Y / Z
  r2 = x * x + y * y
  radial = 1 + _K1 * r2 + _K2 * r2 * r2 + _K3 * r2 * r2 * r2
  tangential = _P1 * x + _P2 * y
  xd, yd = x * (radial + tangential) + _P1 * r2, y * (radial + tangential) + _P2 * r2
  return _FX * xd + _CX, _FY * yd + _CY


@pytest.mark.parametrize("point", [(0.0, 0.0, 4000.0), (1600.0, -840.0, 4000.0),
                                   (-500.0, 900.0, 3000.0)])
def test_camera_54138969_projects_as_published(point):
  camera = next(c for c in h36m.CAMERAS if c.name == "54138969")
  np.testing.assert_allclose(camera.project(np.array([point]))[0],
                             _published_projection(*point), rtol=0, atol=1e-9)
  x, y = point[0] / point[2], point[1] / point[2]  # the pinhole projection without the lens
  np.testing.assert_allclose(camera.project(np.array([point]), distort=False)[0],
                             (_FX * x + _CX, _FY * y + _CY), rtol=0, atol=1e-9)
  if point == (1600.0, -840.0, 4000.0):  # (x, y) = (0.40, -0.21): the lens moves it ~11 px
    moved = np.subtract(_published_projection(*point), (_FX * x + _CX, _FY * y + _CY))
    assert 5 < np.hypot(*moved) < 20


def test_views_agree_with_the_published_cameras(source):
  sample = source("test", 1)
  assert sample["image"].shape == (4, 96, 96, 3) and sample["view_mask"].all()
  for view, camera in enumerate(h36m.CAMERAS):
    truth = fx.camera_pose(view, int(sample["frame"]))
    np.testing.assert_array_equal(sample["joints_3d"][view], truth.astype(np.float32))
    K = sample["camera"][view]
    np.testing.assert_allclose(K[2], [0, 0, 1])
    np.testing.assert_allclose(K[0, 0] / K[1, 1], camera.focal[0] / camera.focal[1], rtol=1e-6)
    projected = truth @ K.T
    np.testing.assert_allclose(sample["joints_2d"][view], projected[:, :2] / projected[:, 2:],
                               atol=1e-3)
    assert sample["joints_2d_mask"][view].all()
    # The pixels: each coloured mark sits at its joint's 2D position in the crop.
    for name, colour in fx.MARKS.items():
      joint = sample["joints_2d"][view][skeleton.H36M.index(name)]
      np.testing.assert_allclose(measured_mark(sample["image"][view], colour, joint), joint,
                                 atol=0.6, err_msg=f"{name} in view {view}")


def test_single_views_of_the_training_frames(source):
  multiview = source("train_multiview", 1)
  for view in range(4):
    single = source("train_2d", 4 + view)
    assert set(single) == {"image", "camera", "joints_2d", "joints_2d_mask", "joints_3d",
                           "has_3d"}
    assert single["has_3d"]
    np.testing.assert_array_equal(single["joints_3d"], multiview["joints_3d"][view])


def crop_of(camera_index, root_x, undistort=True, mapping=h36m.MAPPING):
  camera = h36m.CAMERAS[camera_index]
  truth = fx.camera_pose(camera_index, 0, root_x)
  frame = fx.marked_frame(camera, truth)
  joints = fx.pose_32(truth)[np.asarray(mapping.source_indices)]
  return h36m.person_view(frame, joints, camera, 128, 1.25, undistort)


def mark_errors(view):
  return {name: np.linalg.norm(measured_mark(view["image"], colour, joint) - joint)
          for name, colour in fx.MARKS.items()
          for joint in [view["joints_2d"][skeleton.H36M.index(name)]]}


def test_a_left_right_swap_in_the_joint_mapping_fails():
  names = list(h36m.JOINTS_32)
  swapped = skeleton.JointMapping("swapped", h36m.MAPPING.source_joint_names, skeleton.H36M, tuple(
      names.index("RightHand") if j == skeleton.H36M.index("left_wrist") else
      names.index("LeftHand") if j == skeleton.H36M.index("right_wrist") else i
      for j, i in enumerate(h36m.MAPPING.source_indices)))
  assert max(mark_errors(crop_of(1, 0.0))[n] for n in ("left_wrist", "right_wrist")) < 0.6
  view = crop_of(1, 0.0, mapping=swapped)
  with pytest.raises(AssertionError):
    measured_mark(view["image"], fx.MARKS["left_wrist"],
                  view["joints_2d"][skeleton.H36M.index("left_wrist")])


def test_undistorted_crops_follow_the_pinhole_camera():
  # Off-centre, where the lens moves the left wrist by 16.6 frame pixels.
  assert mark_errors(crop_of(0, 1600.0))["left_wrist"] < 0.5
  assert mark_errors(crop_of(0, 1600.0, undistort=False))["left_wrist"] > 1.5


def test_joints_outside_the_frame_are_masked():
  view = crop_of(3, 1850.0)  # the left forearm leaves the frame on the right
  outside = {skeleton.H36M.index(n) for n in ("left_elbow", "left_wrist")}
  assert view["joints_2d_mask"].tolist() == [j not in outside for j in range(17)]


def test_subjects_and_action_names():
  assert h36m.SUBJECTS == {"train": ("S1", "S5", "S6", "S7", "S8"), "test": ("S9", "S11")}
  assert h36m.action_index("WalkingDog 1", "x") == h36m.ACTIONS.index("WalkDog")
  with pytest.raises(ValueError, match="x: unknown Human3.6M action 'Dancing'"):
    h36m.action_index("Dancing 2", "x")


# ------------------------------------------------------------------------------- bad input

def small_release(tmp_path, subjects=("S1", "S9")):
  manual_dir = tmp_path / "h36m"
  for subject in subjects:
    fx.write_sequence(manual_dir, subject, "Walking 1", frames=2)
  return str(manual_dir)


SMALL = dict(image_size=32, train_subjects=("S1",), test_subjects=("S9",))


def test_wrong_manual_dir(tmp_path):
  with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nowhere'}: manual dir not found"):
    datasets.prepare("h36m", str(tmp_path / "nowhere"), str(tmp_path / "data"))


def test_missing_subject_is_named(tmp_path):
  manual_dir = small_release(tmp_path, subjects=("S1",))
  with pytest.raises(FileNotFoundError, match=os.path.join(manual_dir, "S9", h36m.POSE_DIR)
                     + ": missing; subject S9"):
    datasets.prepare("h36m", manual_dir, str(tmp_path / "data"), **SMALL)


def test_missing_video_is_named(tmp_path):
  manual_dir = small_release(tmp_path)
  missing = os.path.join(manual_dir, "S9", h36m.VIDEO_DIR, "Walking 1.58860488.mp4")
  os.remove(missing)
  with pytest.raises(FileNotFoundError, match=f"{missing}: missing"):
    datasets.prepare("h36m", manual_dir, str(tmp_path / "data"), **SMALL)


def test_truncated_pose_file_is_named(tmp_path):
  manual_dir = small_release(tmp_path)
  broken = os.path.join(manual_dir, "S1", h36m.POSE_DIR, "Walking 1.55011271.cdf")
  truncate(broken, 0.3)
  with pytest.raises(ValueError, match=f"{broken}: not a readable Human3.6M pose file"):
    datasets.prepare("h36m", manual_dir, str(tmp_path / "data"), **SMALL)


def test_truncated_video_is_named(tmp_path):
  manual_dir = small_release(tmp_path)
  video = os.path.join(manual_dir, "S1", h36m.VIDEO_DIR, "Walking 1.55011271.mp4")
  truncate(video, 0.5)
  with pytest.raises(ValueError, match=f"{video}: not a readable video"):
    datasets.prepare("h36m", manual_dir, str(tmp_path / "data"), **SMALL)


def test_failure_midway_leaves_nothing_behind(tmp_path):
  manual_dir = small_release(tmp_path)
  # The test split fails after the training split is written: a video of the wrong size.
  video = os.path.join(manual_dir, "S9", h36m.VIDEO_DIR, "Walking 1.54138969.mp4")
  write_video(video, np.zeros((2, 500, 500, 3), np.uint8))
  data_dir = str(tmp_path / "data")
  with pytest.raises(ValueError, match=f"{video}: frames of 500 x 500 pixels, but camera "
                                       "54138969's published calibration is for 1000 x 1002"):
    datasets.prepare("h36m", manual_dir, data_dir, **SMALL)
  leftovers = [os.path.join(root, f) for root, _, files in os.walk(data_dir) for f in files]
  assert leftovers == []
  with pytest.raises(FileNotFoundError, match="No prepared h36m dataset .* Prepare it with: "
                                              "python -m experiments.prepare_data --dataset=h36m"):
    datasets.source("h36m", data_dir, **SMALL)
