"""posejax.data.real.mpii: official .mat and HRNet json fixtures -> person crops with exact labels."""

import os

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")

import fixtures_person_data as fx  # noqa: E402
from posejax.data.real import mpii  # noqa: E402
from posejax.skeleton import H36M  # noqa: E402

SIZE = 32
# The MPII joint ids of the dataset's documentation, by canonical name; written out here
# independently of skeleton.MPII_TO_H36M so that a wrong mapping fails.
MPII_ID = {"right_ankle": 0, "right_knee": 1, "right_hip": 2, "left_hip": 3, "left_knee": 4,
           "left_ankle": 5, "pelvis": 6, "thorax": 7, "neck_nose": 8, "head_top": 9,
           "right_wrist": 10, "right_elbow": 11, "right_shoulder": 12, "left_shoulder": 13,
           "left_elbow": 14, "left_wrist": 15}
# Person A (1-based MATLAB pixels): 16 distinct joints; objpos (41, 28) and scale 0.2 give the
# 0-based box centre (40, 27 + 15 x 0.2) = (40, 30) and side 1.25 x 200 x 0.2 = 50.
JOINTS_A = {j: (20.0 + 3 * j, 12.0 + 2 * j) for j in range(16)}
LEFT_WRIST_A = JOINTS_A[15]
HEAD_BOX_A = (30, 10, 36, 18)  # diagonal 10 px -> head size 6 px
# Person B: joints 4 (left knee) and 10 (right wrist) are not annotated; is_visible as in the
# real file: doubles, chars and [].
JOINTS_B = {j: (60.0 + (j % 4), 20.0 + j) for j in range(16) if j not in (4, 10)}
VISIBLE_B = {0: "1", 1: fx.EMPTY, 2: 0.0}


def _crop(points_1based, objpos, scale, margin=1.25, size=SIZE):
  """Expected crop pixels, derived by hand: box centre objpos - 1 + (0, 15 s), side
  margin * 200 s; crop pixel = (frame pixel - box corner) * size / side - 0.5."""
  side = margin * 200 * scale
  centre = np.asarray(objpos, float) - 1 + [0, 15 * scale]
  return (np.asarray(points_1based, float) - 1 - (centre - side / 2)) * size / side - 0.5


def _check_joints(example, joints_1based, objpos, scale):
  """Every canonical joint lands where its MPII joint is (by name); the others are masked."""
  for name in H36M.joint_names:
    j = H36M.index(name)
    source = MPII_ID.get(name)
    if source is None or source not in joints_1based:
      assert not example["joints_2d_mask"][j], name
      np.testing.assert_array_equal(example["joints_2d"][j], 0, err_msg=name)
    else:
      assert example["joints_2d_mask"][j], name
      np.testing.assert_allclose(example["joints_2d"][j],
                                 _crop([joints_1based[source]], objpos, scale)[0],
                                 atol=1e-4, err_msg=name)


def _manual_dir(tmp_path):
  """Images: a.jpg (80x60) with persons A, B, an unlabeled one and one without a person box;
  b.jpg with one person (a bare 1x1 annorect, head box []); c.jpg a test image (img_train 0,
  no joints)."""
  root = tmp_path / "manual"
  # The dot is drawn at left wrist A in 0-based pixels.
  fx.write_jpeg(root / "images" / "a.jpg", fx.dotted_image(60, 80, [np.subtract(
      LEFT_WRIST_A, 1)]))
  fx.write_jpeg(root / "images" / "b.jpg", fx.dotted_image(40, 50))
  fx.write_jpeg(root / "images" / "c.jpg", fx.dotted_image(40, 50))
  fx.write_mpii_mat(root / mpii.MAT_FILE, [
      ("a.jpg", [fx.mpii_rect(JOINTS_A, HEAD_BOX_A, (41, 28), 0.2),
                 fx.mpii_rect(JOINTS_B, (58, 15, 64, 23), (62, 30), 0.15, VISIBLE_B),
                 fx.mpii_rect({}, (1, 1, 2, 2), (10, 10), 0.1),
                 fx.mpii_rect({0: (5.0, 5.0)}, (1, 1, 2, 2), None, None)], True),
      ("b.jpg", [fx.mpii_rect({9: (20.0, 10.0)}, None, (20, 20), 0.1)], True),
      ("c.jpg", [fx.mpii_rect({}, (1, 1, 2, 2), (25, 20), 0.1)], False),
  ])
  return root


def test_mat_persons_and_their_fields(tmp_path):
  persons = mpii.read_mat(str(_manual_dir(tmp_path) / mpii.MAT_FILE))
  assert list(persons) == ["train"]
  train = persons["train"]
  # The unlabeled person, the one without a box and the test image are skipped.
  assert [p.image for p in train] == ["a.jpg", "a.jpg", "b.jpg"]
  np.testing.assert_allclose(train[0].centre, [40, 27 + 3])
  assert train[0].side == pytest.approx(40)
  assert train[0].head_size == pytest.approx(6.0)
  assert train[1].labeled.tolist() == [j not in (4, 10) for j in range(16)]
  assert train[2].labeled.sum() == 1 and train[2].head_size == 0


def test_example_crop_camera_and_labels():
  frame = fx.dotted_image(60, 80, [np.subtract(LEFT_WRIST_A, 1)])
  person = mpii.Person("a.jpg", np.array([JOINTS_A[j] for j in range(16)]) - 1,
                       np.ones(16, bool), np.array([40.0, 30.0]), 40.0, 6.0)
  example = mpii.person_example(frame, person, SIZE, 1.25, mpii.MAPPING)
  # Box: centre (40, 30), side 50, corner (15, 5), zoom 0.64. Guessed camera: focal 80,
  # principal point (39.5, 29.5). K = crop @ intrinsics.
  np.testing.assert_allclose(example["camera"], [[51.2, 0, 15.18], [0, 51.2, 15.18], [0, 0, 1]],
                             atol=1e-5)
  assert example["head_size"] == pytest.approx(3.84)
  # Left wrist A at 1-based (65, 42) -> 0-based (64, 41) -> ((64, 41) - (15, 5)) * 0.64 - 0.5.
  np.testing.assert_allclose(example["joints_2d"][H36M.index("left_wrist")], [30.86, 22.54],
                             atol=1e-5)
  # The white dot drawn at the left wrist is where the label says.
  weights = example["image"][..., 0].astype(float)
  ys, xs = np.mgrid[:SIZE, :SIZE]
  centroid = np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()
  np.testing.assert_allclose(centroid, [30.86, 22.54], atol=0.3)
  assert example["image"].shape == (SIZE, SIZE, 3) and example["image"].dtype == np.uint8


def test_a_left_right_swap_fails_the_joint_check():
  frame = fx.dotted_image(60, 80)
  person = mpii.Person("a.jpg", np.array([JOINTS_A[j] for j in range(16)]) - 1,
                       np.ones(16, bool), np.array([40.0, 30.0]), 40.0, 6.0)
  _check_joints(mpii.person_example(frame, person, SIZE, 1.25, mpii.MAPPING), JOINTS_A,
                (41, 28), 0.2)
  with pytest.raises(AssertionError, match="right_hip"):  # the first limb joint
    _check_joints(mpii.person_example(frame, person, SIZE, 1.25, fx.swapped_mapping(mpii.MAPPING)),
                  JOINTS_A, (41, 28), 0.2)


def test_prepare_mat_and_read_back(tmp_path):
  manual = _manual_dir(tmp_path)
  data_dir = str(tmp_path / "data")
  builder = mpii.prepare(str(manual), data_dir, image_size=SIZE)
  assert builder.info.splits["train"].num_examples == 3
  source = mpii.prepared_source(data_dir, image_size=SIZE)
  samples = {}
  for index in range(3):
    record = builder.as_data_source(split="train")[index]
    samples[(record["image_file"], int(record["joints_2d_mask"].sum()))] = source(
        "train_2d", index)
  a, b = samples[(b"a.jpg", 16)], samples[(b"a.jpg", 14)]  # all but spine; 2 missing
  _check_joints(a, JOINTS_A, (41, 28), 0.2)
  _check_joints(b, JOINTS_B, (62, 30), 0.15)
  _check_joints(samples[(b"b.jpg", 1)], {9: (20.0, 10.0)}, (20, 20), 0.1)
  assert a["head_size"] == pytest.approx(3.84)
  assert set(a) == {"image", "camera", "joints_2d", "joints_2d_mask", "joints_3d", "has_3d",
                    "head_size"}
  assert not a["has_3d"] and a["joints_3d"].shape == (17, 3)
  with pytest.raises(ValueError, match="train_2d"):
    source("train_multiview", 0)
  assert not list((tmp_path / "data").glob("**/incomplete*"))


def test_json_splits_and_head_sizes(tmp_path):
  root = tmp_path / "manual"
  fx.write_jpeg(root / "images" / "a.jpg", fx.dotted_image(60, 80))
  fx.write_jpeg(root / "images" / "b.jpg", fx.dotted_image(40, 50))
  fx.write_mpii_json(root / "annot" / "train.json", [
      fx.mpii_json_entry("a.jpg", JOINTS_A, (41, 28), 0.2),
      fx.mpii_json_entry("a.jpg", JOINTS_B, (62, 30), 0.15)])
  fx.write_mpii_json(root / "annot" / "valid.json", [
      fx.mpii_json_entry("b.jpg", {9: (20.0, 10.0), 15: (25.0, 30.0)}, (20, 20), 0.1)])
  fx.write_gt_valid(str(root / "annot" / "gt_valid.mat"), [[(18, 8), (21, 12)]])  # diag 5
  builder = mpii.prepare(str(root), str(tmp_path / "data"), annotation_format="json",
                         image_size=SIZE)
  assert {s: builder.info.splits[s].num_examples for s in ("train", "validation")} == {
      "train": 2, "validation": 1}
  valid = mpii.prepared_source(str(tmp_path / "data"), "validation", annotation_format="json",
                               image_size=SIZE)("train_2d", 0)
  _check_joints(valid, {9: (20.0, 10.0), 15: (25.0, 30.0)}, (20, 20), 0.1)
  # 0.6 x 5 px frame head size x zoom 32 / 25.
  assert valid["head_size"] == pytest.approx(3.0 * 32 / 25)
  train = mpii.prepared_source(str(tmp_path / "data"), annotation_format="json",
                               image_size=SIZE)
  masks = sorted(int(train("train_2d", i)["joints_2d_mask"].sum()) for i in range(2))
  assert masks == [14, 16]
  assert train("train_2d", 0)["head_size"] == 0  # the json train split has no head boxes


def _assert_nothing_prepared(data_dir, **config):
  with pytest.raises(FileNotFoundError, match="prepare_data --dataset=mpii"):
    mpii.prepared_source(str(data_dir), **config)
  assert not list(data_dir.glob("**/incomplete*"))
  assert not list(data_dir.glob("**/*.array_record*"))


def test_wrong_manual_dir_names_it(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere: manual dir not found or empty"):
    mpii.prepare(str(tmp_path / "nowhere"), str(tmp_path / "data"), image_size=SIZE)


def test_missing_annotation_file_is_named(tmp_path):
  (tmp_path / "manual" / "images").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match=f"{mpii.MAT_FILE}: file not found"):
    mpii.prepare(str(tmp_path / "manual"), str(tmp_path / "data"), image_size=SIZE)
  with pytest.raises(FileNotFoundError, match="train.json: file not found"):
    mpii.prepare(str(tmp_path / "manual"), str(tmp_path / "data"), annotation_format="json",
                 image_size=SIZE)


def test_missing_image_fails_and_leaves_nothing(tmp_path):
  manual = _manual_dir(tmp_path)
  os.remove(manual / "images" / "b.jpg")
  with pytest.raises(FileNotFoundError, match="b.jpg: image file not found"):
    mpii.prepare(str(manual), str(tmp_path / "data"), image_size=SIZE)
  _assert_nothing_prepared(tmp_path / "data", image_size=SIZE)


def test_truncated_image_fails_and_leaves_nothing(tmp_path):
  manual = _manual_dir(tmp_path)
  fx.truncate(manual / "images" / "a.jpg", 0.3)
  with pytest.raises(ValueError, match="a.jpg: not a readable image"):
    mpii.prepare(str(manual), str(tmp_path / "data"), image_size=SIZE)
  _assert_nothing_prepared(tmp_path / "data", image_size=SIZE)


@pytest.mark.parametrize("damage, message", [
    ("truncate", "not a complete MATLAB v5 file"),
    ("json", "not a complete MATLAB v5 file"),
    ("v73", "MATLAB v7.3"),
    ("other_variable", "no RELEASE struct"),
])
def test_broken_mat_files_are_named(tmp_path, damage, message):
  manual = _manual_dir(tmp_path)
  path = manual / mpii.MAT_FILE
  if damage == "truncate":
    fx.truncate(path, 0.5)
  elif damage == "json":
    path.write_text('{"annolist": []}')
  elif damage == "v73":
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w", userblock_size=512) as f:
      f["RELEASE"] = np.zeros(3)
    with open(path, "r+b") as f:  # the MATLAB v7.3 header in the HDF5 user block
      f.write(b"MATLAB 7.3 MAT-file".ljust(116) + bytes(8) + b"\x00\x02IM")
  else:
    fx.scipy.io.savemat(path, {"annolist": np.zeros(2)})
  with pytest.raises(ValueError, match=f"{mpii.MAT_FILE}: .*{message}"):
    mpii.prepare(str(manual), str(tmp_path / "data"), image_size=SIZE)
  _assert_nothing_prepared(tmp_path / "data", image_size=SIZE)


def test_broken_json_entries_are_named(tmp_path):
  path = fx.write_mpii_json(tmp_path / "annot" / "train.json", [
      fx.mpii_json_entry("a.jpg", JOINTS_A, (41, 28), 0.2), {"image": "b.jpg"}])
  with pytest.raises(ValueError, match="train.json: entry 1: missing field 'joints'"):
    mpii.read_json(path)
  bad = fx.mpii_json_entry("a.jpg", JOINTS_A, (41, 28), 0.2)
  bad["joints"] = bad["joints"][:15]
  fx.write_mpii_json(tmp_path / "annot" / "train.json", [bad])
  with pytest.raises(ValueError, match=r"train.json: entry 0: expected .*joints \[16, 2\]"):
    mpii.read_json(path)
  fx.truncate(path, 0.5)
  with pytest.raises(ValueError, match="train.json: not a complete JSON file"):
    mpii.read_json(path)
  gt_valid = fx.write_gt_valid(str(tmp_path / "gt_valid.mat"), [[(1, 1), (2, 2)]] * 2)
  fx.write_mpii_json(tmp_path / "annot" / "train.json", [
      fx.mpii_json_entry("a.jpg", JOINTS_A, (41, 28), 0.2)])
  with pytest.raises(ValueError, match="gt_valid.mat: 2 head boxes for 1 persons"):
    mpii.read_json(path, gt_valid)
