"""Tests of the MPI-INF-3DHP builder on a tiny release in the official formats."""

import os

import numpy as np
import pytest

from posejax import skeleton
from posejax.data.real import datasets, mpi_inf_3dhp
from tests import fixtures_mpi_inf_3dhp as fx
from tests.fixtures_video import truncate

OPTIONS = dict(image_size=32, train_every=1, cameras=(0, 1), subjects=("S1",),
               test_sequences=("TS1",))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  manual_dir = fx.write_release(tmp_path_factory.mktemp("3dhp"))
  data_dir = str(tmp_path_factory.mktemp("data"))
  datasets.prepare("mpi_inf_3dhp", manual_dir, data_dir, **OPTIONS)
  return datasets.source("mpi_inf_3dhp", data_dir, **OPTIONS)


def samples(source, stream, count):
  return [source(stream, i) for i in range(count)]


def mark_at(image, colour, near, window=3):
  """Centroid of the `colour` pixels within `window` px of `near`."""
  weight = np.clip(image.astype(np.float64) @ (2 * np.asarray(colour) / 255 - 1) / 255, 0, None)
  x0, y0 = np.round(near).astype(int)
  ys, xs = np.mgrid[y0 - window:y0 + window + 1, x0 - window:x0 + window + 1]
  w = weight[ys.clip(0, len(image) - 1), xs.clip(0, len(image) - 1)]
  assert w.sum() > 1, f"no {colour} mark near {near}"
  return np.array([(w * xs).sum(), (w * ys).sum()]) / w.sum()


def check_view(sample, view, truth):
  np.testing.assert_allclose(sample["joints_3d_camera"][view], truth, atol=1e-3)
  projected = truth @ sample["camera"][view].T
  np.testing.assert_allclose(sample["joints_2d"][view], projected[:, :2] / projected[:, 2:],
                             atol=1e-3)
  # The pixels: the fixture marks a joint at its frame pixel rounded to integers (0.5 px: the
  # video's and the JPEG's halved colour resolution blur a 3 px mark).
  crop_matrix = sample["camera"][view] @ np.linalg.inv(fx.INTRINSICS)
  for name, colour in fx.MARKS.items():
    mark = np.round(fx.project(truth)[skeleton.H36M.index(name)])
    expected = crop_matrix[:2, :2] @ mark + crop_matrix[:2, 2]
    np.testing.assert_allclose(mark_at(sample["image"][view], colour, expected), expected,
                               atol=0.5)


def test_training_views_splits_and_cameras(source):
  train = samples(source, "train_multiview", 6)
  assert sorted((s["sequence"], int(s["frame"])) for s in train) == [
      (q, f) for q in ("S1/Seq1", "S1/Seq2") for f in (0, 1, 2)]
  for sample in train:
    assert sample["image"].shape == (2, 32, 32, 3) and sample["joints_2d_mask"].all()
    for view, camera in enumerate((0, 1)):
      check_view(sample, view, fx.pose(camera, int(sample["frame"])))
      np.testing.assert_array_equal(sample["joints_3d"][view], sample["joints_3d_camera"][view])


def test_test_set_valid_frames_universal_3d_and_actions(source):
  test = samples(source, "test", 3)
  assert sorted(int(s["frame"]) for s in test) == [0, 2, 3]  # frame 1 is not valid
  for sample in test:
    truth = fx.pose(0, int(sample["frame"]), x=-200.0)
    assert sample["image"].shape == (1, 32, 32, 3)
    check_view(sample, 0, truth)
    np.testing.assert_allclose(sample["joints_3d"][0], 0.9 * truth, atol=1e-3)  # univ_annot3
    assert mpi_inf_3dhp.ACTIONS[sample["action"]] == "Sitting"


def test_a_left_right_swap_in_the_test_joint_order_fails(tmp_path, monkeypatch):
  directory = fx.write_test_sequence(tmp_path, "TS1")
  truth = fx.pose(0, 0, x=-200.0)
  np.testing.assert_allclose(mpi_inf_3dhp.read_test_sequence(directory).joints_3d[0], truth)
  source = list(mpi_inf_3dhp.TEST_MAPPING.source_indices)
  left, right = (skeleton.H36M.index(n) for n in ("left_wrist", "right_wrist"))
  source[left], source[right] = source[right], source[left]
  monkeypatch.setattr(mpi_inf_3dhp, "TEST_MAPPING", skeleton.JointMapping(
      "swapped", mpi_inf_3dhp.TEST_MAPPING.source_joint_names, skeleton.H36M, tuple(source)))
  with pytest.raises(AssertionError):
    np.testing.assert_allclose(mpi_inf_3dhp.read_test_sequence(directory).joints_3d[0], truth)


def test_the_canonical_joints_of_both_joint_sets():
  expected = ["pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee",
              "left_ankle", "spine", "neck", "head", "head_top", "left_shoulder", "left_elbow",
              "left_wrist", "right_shoulder", "right_elbow", "right_wrist"]
  for mapping, indices in ((mpi_inf_3dhp.TRAIN_MAPPING,
                            (4, 23, 24, 25, 18, 19, 20, 3, 5, 6, 7, 9, 10, 11, 14, 15, 16)),
                           (mpi_inf_3dhp.TEST_MAPPING,
                            (14, 8, 9, 10, 11, 12, 13, 15, 1, 16, 0, 5, 6, 7, 2, 3, 4))):
    assert mapping.source_indices == indices
    assert [mapping.source_joint_names[i] for i in indices] == expected


def test_joints_outside_the_frame_are_masked():
  joints_2d = fx.project(fx.pose(0, 0, x=2300.0))  # the left hand leaves the 64 px frame
  view = mpi_inf_3dhp.person_view(np.zeros((48, 64, 3), np.uint8), joints_2d,
                                  np.zeros((17, 3)), fx.INTRINSICS, 32, 1.25)
  outside = joints_2d[:, 0] > 63.5
  assert outside.any() and not outside.all()
  np.testing.assert_array_equal(view["joints_2d_mask"], ~outside)


def test_fitted_test_intrinsics():
  truth = np.stack([fx.pose(0, f) for f in range(3)]).reshape(-1, 3)
  intrinsics, error = mpi_inf_3dhp.fit_intrinsics(fx.project(truth.reshape(-1, 17, 3)[0]),
                                                  truth[:17])
  np.testing.assert_allclose(intrinsics, fx.INTRINSICS, atol=1e-6)
  assert error < 1e-6


# ------------------------------------------------------------------------------- bad input

def prepare(manual_dir, tmp_path):
  datasets.prepare("mpi_inf_3dhp", str(manual_dir), str(tmp_path / "data"), **OPTIONS)


def test_missing_subject_is_named(tmp_path):
  fx.write_test_sequence(tmp_path / "raw", "TS1")
  with pytest.raises(FileNotFoundError, match=os.path.join(
      str(tmp_path / "raw"), "S1", "Seq1", "annot.mat") + ": annotation file not found"):
    prepare(tmp_path / "raw", tmp_path)


def test_bad_files_are_named(tmp_path):
  raw = fx.write_release(tmp_path / "raw")
  calibration = os.path.join(raw, "S1", "Seq2", "camera.calibration")
  with open(calibration, "w") as f:
    f.write(fx.CALIBRATION_HEADER + "name 0\n  intrinsic 1 2 3\n")
  with pytest.raises(ValueError, match=f"{calibration}: camera '0' has no 16-number intrinsic"):
    prepare(raw, tmp_path)
  fx.write_calibration(calibration)
  os.remove(os.path.join(raw, "S1", "Seq2", "imageSequence", "video_1.avi"))
  with pytest.raises(FileNotFoundError, match="Seq2/imageSequence/video_1.avi: video not found"):
    prepare(raw, tmp_path)
  fx.write_train_sequence(raw, "S1", "Seq2")
  annot = os.path.join(raw, "mpi_inf_3dhp_test_set", "TS1", "annot_data.mat")
  truncate(annot, 0.5)
  with pytest.raises(ValueError, match=f"{annot}: not a readable MATLAB v7.3"):
    prepare(raw, tmp_path)
  annot = os.path.join(raw, "S1", "Seq1", "annot.mat")
  truncate(annot, 0.5)
  with pytest.raises(ValueError, match=f"{annot}: not a readable MATLAB v5 file"):
    prepare(raw, tmp_path)
  assert not os.path.exists(tmp_path / "data" / "posejax_mpi_inf3dhp") or not any(
      files for _, _, files in os.walk(tmp_path / "data"))
