"""posejax.data.real.lsp: LSP and LSP-extended fixtures in their real formats (joints.mat as
scipy writes MATLAB v5, 3 x 14 x N and 14 x 3 x N; tiny JPEGs) -> person crops with exact labels."""

import os

import numpy as np
import pytest
import scipy.io

pytest.importorskip("tensorflow_datasets")

import fixtures_person_data as fx  # noqa: E402
from posejax.data.real import datasets, lsp  # noqa: E402
from posejax.skeleton import H36M  # noqa: E402

SIZE = 24
# The LSP joint order of the dataset's README, by canonical name; written out here
# independently of lsp.MAPPING so that a wrong mapping fails.
LSP_ID = {"right_ankle": 0, "right_knee": 1, "right_hip": 2, "left_hip": 3, "left_knee": 4,
          "left_ankle": 5, "right_wrist": 6, "right_elbow": 7, "right_shoulder": 8,
          "left_shoulder": 9, "left_elbow": 10, "left_wrist": 11, "neck_nose": 12,
          "head_top": 13}
LEFT_WRIST = 11
HEIGHT, WIDTH = 40, 36


def _joints(image: int) -> np.ndarray:
  """[14, 2] 1-based (MATLAB) joints of fixture image `image` (1-based), all distinct and
  inside the 36 x 40 image; the left wrist on an integer pixel for its dot."""
  j = np.arange(14)
  joints = np.stack([4.0 + 2 * j + image * 0.25, 5.0 + 2.25 * j], axis=-1)
  joints[LEFT_WRIST] = [30.0 - image, 8.0 + image]
  return joints


def _write_lsp(root, num_images=4, occluded=((1, LEFT_WRIST),), layout=None):
  """lsp_dataset/: joints.mat (3 x 14 x N, flag 1 = occluded) and images/im%04d.jpg."""
  joints = np.zeros((3, 14, num_images))
  for i in range(num_images):
    joints[:2, :, i] = _joints(i + 1).T
  for image, joint in occluded:
    joints[2, joint, image - 1] = 1
  if layout is not None:
    joints = layout(joints)
  directory = root / lsp.LSP_DIR
  directory.mkdir(parents=True, exist_ok=True)
  scipy.io.savemat(directory / lsp.JOINTS_FILE, {"joints": joints})
  for i in range(num_images):
    dot = _joints(i + 1)[LEFT_WRIST] - 1
    fx.write_jpeg(directory / "images" / f"im{i + 1:04d}.jpg", fx.dotted_image(HEIGHT, WIDTH,
                                                                                [dot]))
  return directory


def _write_lspet(root, num_images=2, unlabelled=((2, 0),)):
  """lspet_dataset/: joints.mat (14 x 3 x N, flag 1 = visible) and images/im%05d.jpg."""
  joints = np.zeros((14, 3, num_images))
  for i in range(num_images):
    joints[:, :2, i] = _joints(10 + i)
    joints[:, 2, i] = 1
  for image, joint in unlabelled:
    joints[joint, :, image - 1] = [-1.0, -1.0, 0]  # unplaced: off the image
  directory = root / lsp.LSPET_DIR
  directory.mkdir(parents=True, exist_ok=True)
  scipy.io.savemat(directory / lsp.JOINTS_FILE, {"joints": joints})
  for i in range(num_images):
    fx.write_jpeg(directory / "images" / f"im{i + 1:05d}.jpg", fx.dotted_image(HEIGHT, WIDTH))
  return directory


def _manual_dir(tmp_path):
  root = tmp_path / "manual"
  _write_lsp(root)
  _write_lspet(root)
  return root


def _expected_crop(joints_1based, labelled, margin=1.25, size=SIZE):
  """Crop pixels derived by hand: 0-based joints, the square around the labelled ones times
  the margin, crop pixel = (frame pixel - box corner) * size / side - 0.5."""
  points = np.asarray(joints_1based, float) - 1
  low, high = points[labelled].min(0), points[labelled].max(0)
  side = margin * (high - low).max()
  corner = (low + high) / 2 - side / 2
  return (points - corner) * size / side - 0.5


def _check_joints(sample, joints_1based, labelled):
  expected = _expected_crop(joints_1based, labelled)
  for name in H36M.joint_names:
    j = H36M.index(name)
    source = LSP_ID.get(name)
    if source is None or not labelled[source]:
      assert not sample["joints_2d_mask"][j], name
      np.testing.assert_array_equal(sample["joints_2d"][j], 0, err_msg=name)
    else:
      assert sample["joints_2d_mask"][j], name
      np.testing.assert_allclose(sample["joints_2d"][j], expected[source], atol=1e-4,
                                 err_msg=name)


def test_read_both_layouts(tmp_path):
  root = _manual_dir(tmp_path)
  annotations = lsp.read_lsp(str(root / lsp.LSP_DIR / lsp.JOINTS_FILE))
  assert annotations.joints.shape == (4, 14, 2) and len(annotations) == 4
  np.testing.assert_allclose(annotations.joints[2], _joints(3) - 1)  # 0-based
  assert annotations.labelled.all()  # LSP places every joint
  assert not annotations.visible[0, LEFT_WRIST] and annotations.visible.sum() == 4 * 14 - 1
  extended = lsp.read_lspet(str(root / lsp.LSPET_DIR / lsp.JOINTS_FILE))
  assert extended.joints.shape == (2, 14, 2)
  np.testing.assert_allclose(extended.joints[0], _joints(10) - 1)
  assert extended.labelled.sum() == 27 and not extended.labelled[1, 0]
  np.testing.assert_array_equal(extended.joints[1, 0], 0)  # unlabelled: zeros
  np.testing.assert_array_equal(extended.visible, extended.labelled)


def test_standard_split_and_crops(tmp_path):
  root = _manual_dir(tmp_path)
  splits = lsp.read_splits(str(root), num_train=2)
  names = {split: [os.path.basename(e.person.image) for e in entries]
           for split, entries in splits.items()}
  assert names == {"train": ["im0001.jpg", "im0002.jpg", "im00001.jpg", "im00002.jpg"],
                   "test": ["im0003.jpg", "im0004.jpg"]}
  assert [os.path.basename(e.person.image) for e in lsp.read_splits(
      str(root), extended=False, num_train=3)["train"]] == ["im0001.jpg", "im0002.jpg",
                                                             "im0003.jpg"]
  frame = fx.dotted_image(HEIGHT, WIDTH, [_joints(1)[LEFT_WRIST] - 1])
  example = lsp.person_example(frame, splits["train"][0], SIZE, 1.25)
  _check_joints(example, _joints(1), np.ones(14, bool))
  assert not example["joints_2d_visible"][H36M.index("left_wrist")]
  assert example["joints_2d_visible"].sum() == 13
  # The white dot drawn at the left wrist is where the label says.
  weights = example["image"][..., 0].astype(float)
  ys, xs = np.mgrid[:SIZE, :SIZE]
  centroid = np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()
  np.testing.assert_allclose(centroid, example["joints_2d"][H36M.index("left_wrist")], atol=0.3)


def test_prepare_and_read_back(tmp_path):
  root = _manual_dir(tmp_path)
  data_dir = str(tmp_path / "data")
  builder = datasets.prepare("lsp", str(root), data_dir, image_size=SIZE, num_train=2)
  assert {s: builder.info.splits[s].num_examples for s in ("train", "test")} == {
      "train": 4, "test": 2}
  source = datasets.source("lsp", data_dir, image_size=SIZE, num_train=2)
  assert source.sizes == {"test": 2}
  by_file = {}
  for split, stream in (("train", "train_2d"), ("test", "test")):
    records = builder.as_data_source(split=split)
    for index in range(len(records)):
      by_file[os.path.basename(records[index]["image_file"].decode())] = source(stream, index)
  assert sorted(by_file) == ["im00001.jpg", "im00002.jpg", "im0001.jpg", "im0002.jpg",
                             "im0003.jpg", "im0004.jpg"]
  _check_joints(by_file["im0004.jpg"], _joints(4), np.ones(14, bool))
  assert by_file["im0004.jpg"]["joints_2d_visible"].sum() == 14
  assert not by_file["im0001.jpg"]["joints_2d_visible"][H36M.index("left_wrist")]
  lspet_labelled = np.ones(14, bool)
  lspet_labelled[0] = False  # image 2's right ankle is unplaced
  _check_joints(by_file["im00002.jpg"], _joints(11), lspet_labelled)
  sample = by_file["im0003.jpg"]
  assert set(sample) == {"image", "camera", "joints_2d", "joints_2d_mask", "joints_2d_visible",
                         "joints_3d", "has_3d", "head_size"}
  assert sample["image"].shape == (SIZE, SIZE, 3) and not sample["has_3d"]
  assert datasets.DATASETS["lsp"].streams == ("train_2d", "test")
  with pytest.raises(KeyError, match="no stream 'train_multiview'"):
    source("train_multiview", 0)
  assert not list((tmp_path / "data").glob("**/incomplete*"))


def test_missing_files_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere: manual dir not found or empty"):
    lsp.prepare(str(tmp_path / "nowhere"), str(tmp_path / "data"))
  root = tmp_path / "manual"
  (root / lsp.LSP_DIR / "images").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match=f"{lsp.LSP_DIR}/{lsp.JOINTS_FILE}: file not found"):
    lsp.read_splits(str(root))
  _write_lsp(root)
  with pytest.raises(FileNotFoundError,
                     match=f"{lsp.LSPET_DIR}/{lsp.JOINTS_FILE}: file not found"):
    lsp.read_splits(str(root), num_train=2)
  assert len(lsp.read_splits(str(root), extended=False, num_train=2)["test"]) == 2
  os.remove(root / lsp.LSP_DIR / "images" / "im0003.jpg")
  with pytest.raises(FileNotFoundError, match="images/im0003.jpg: image file not found"):
    lsp.prepare(str(root), str(tmp_path / "data"), extended=False, num_train=2)
  assert not list((tmp_path / "data").glob("**/*.array_record*"))


@pytest.mark.parametrize("damage, message", [
    ("extended_layout", r"expected LSP's joints of shape 3 x 14 x N .*got 14 x 3 x 4 \(that is "
                        r"LSP-extended's layout"),
    ("two_rows", r"expected LSP's joints of shape 3 x 14 x N .*got 2 x 14 x 4"),
    ("flat", r"expected LSP's joints of shape 3 x 14 x N .*got 42 x 4"),
    ("flags", r"the visibility flags must be 0 or 1, found \[0.0, 0.5, 1.0\]"),
    ("other_variable", r"no 'joints' variable \(found \['points'\]\)"),
    ("truncated", "not a complete MATLAB v5 file"),
])
def test_malformed_joints_mat_is_named(tmp_path, damage, message):
  root = tmp_path / "manual"
  layouts = {"extended_layout": lambda j: j.transpose(1, 0, 2), "two_rows": lambda j: j[:2],
             "flat": lambda j: j.reshape(42, 4)}
  directory = _write_lsp(root, layout=layouts.get(damage))
  path = directory / lsp.JOINTS_FILE
  if damage == "flags":
    joints = scipy.io.loadmat(path)["joints"]
    joints[2, 3, 1] = 0.5
    scipy.io.savemat(path, {"joints": joints})
  elif damage == "other_variable":
    scipy.io.savemat(path, {"points": np.zeros((3, 14, 4))})
  elif damage == "truncated":
    fx.truncate(path, 0.5)
  with pytest.raises(ValueError, match=f"{lsp.JOINTS_FILE}: {message}"):
    lsp.read_splits(str(root), extended=False, num_train=2)


def test_malformed_extended_file_and_split_sizes(tmp_path):
  root = tmp_path / "manual"
  _write_lsp(root)
  directory = _write_lspet(root)
  scipy.io.savemat(directory / lsp.JOINTS_FILE, {"joints": np.zeros((3, 14, 2))})
  with pytest.raises(ValueError, match=r"expected LSP-extended's joints of shape 14 x 3 x N "
                                       r".*got 3 x 14 x 2 \(that is LSP's layout"):
    lsp.read_splits(str(root), num_train=2)
  with pytest.raises(ValueError, match="4 images; the split needs more than num_train = 1000"):
    lsp.read_splits(str(root), extended=False)
