"""posejax.data.real.coco: person_keypoints json fixtures -> person crops with exact labels."""

import os

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")
pytest.importorskip("pycocotools")

import fixtures_person_data as fx  # noqa: E402
from posejax.data.real import coco, mpii  # noqa: E402
from posejax.skeleton import H36M  # noqa: E402

SIZE = 32
# COCO keypoint indices (the dataset's documentation) by canonical name, written out here
# independently of skeleton.COCO_TO_H36M so that a wrong mapping fails.
COCO_INDEX = {"neck_nose": 0, "left_shoulder": 5, "right_shoulder": 6, "left_elbow": 7,
              "right_elbow": 8, "left_wrist": 9, "right_wrist": 10, "left_hip": 11,
              "right_hip": 12, "left_knee": 13, "right_knee": 14, "left_ankle": 15,
              "right_ankle": 16}
# Image 7 (64 x 48): person 1 with all 17 keypoints (some occluded, v = 1), bbox
# [10, 4, 20, 40]: centre (19.5, 23.5) in pixel-centre coordinates, crop side 1.25 x 40 = 50.
KEYPOINTS_1 = {k: (11 + k, 5 + 2 * k, 1 + k % 2) for k in range(17)}
BBOX_1 = (10, 4, 20, 40)
# Person 2: two labeled keypoints (left hip, right ankle).
KEYPOINTS_2 = {11: (50, 20, 2), 16: (55, 40, 1)}
BBOX_2 = (45, 10, 15, 35)


def _crop(points, bbox, margin=1.25, size=SIZE):
  """Expected crop pixels, by hand: box centre (x + w/2 - 0.5, y + h/2 - 0.5), side
  margin * max(w, h); crop pixel = (pixel - box corner) * size / side - 0.5."""
  x, y, w, h = bbox
  side = margin * max(w, h)
  corner = np.array([x + w / 2 - 0.5, y + h / 2 - 0.5]) - side / 2
  return (np.asarray(points, float) - corner) * size / side - 0.5


def _check_joints(example, keypoints, bbox):
  for name in H36M.joint_names:
    j = H36M.index(name)
    source = COCO_INDEX.get(name)
    if source is None or keypoints.get(source, (0, 0, 0))[2] == 0:
      assert not example["joints_2d_mask"][j], name
      np.testing.assert_array_equal(example["joints_2d"][j], 0, err_msg=name)
    else:
      assert example["joints_2d_mask"][j], name
      np.testing.assert_allclose(example["joints_2d"][j],
                                 _crop([keypoints[source][:2]], bbox)[0], atol=1e-4,
                                 err_msg=name)


def _manual_dir(tmp_path):
  root = tmp_path / "coco"
  left_wrist = KEYPOINTS_1[9][:2]
  fx.write_jpeg(root / "train2017" / "000000000007.jpg", fx.dotted_image(48, 64, [left_wrist]))
  grey = fx.dotted_image(30, 40)[..., 0]  # COCO has greyscale images
  fx.write_jpeg(root / "train2017" / "000000000003.jpg", grey)
  fx.write_jpeg(root / "val2017" / "000000000009.jpg", fx.dotted_image(30, 40))
  fx.write_coco(root / "annotations" / "person_keypoints_train2017.json",
                [fx.coco_image(7, 48, 64), fx.coco_image(3, 30, 40)],
                [fx.coco_person(101, 7, KEYPOINTS_1, BBOX_1),
                 fx.coco_person(102, 7, KEYPOINTS_2, BBOX_2),
                 fx.coco_person(103, 7, KEYPOINTS_1, BBOX_1, iscrowd=1),
                 fx.coco_person(104, 3, {0: (20, 10, 2)}, (15, 5, 10, 20)),
                 fx.coco_person(105, 3, {0: (20, 10, 2)}, (15, 5, 0, 0))])  # no box
  fx.write_coco(root / "annotations" / "person_keypoints_val2017.json",
                [fx.coco_image(9, 30, 40)],
                [fx.coco_person(201, 9, {5: (10, 10, 2), 6: (20, 10, 2)}, (5, 5, 20, 20))])
  return root


def test_persons_filters_and_fields(tmp_path):
  path = str(_manual_dir(tmp_path) / "annotations" / "person_keypoints_train2017.json")
  persons = coco.read_persons(path)
  # Sorted by image id; the crowd and the zero-size box are skipped.
  assert [(p.image, int(p.labeled.sum())) for p in persons] == [
      ("000000000003.jpg", 1), ("000000000007.jpg", 17), ("000000000007.jpg", 2)]
  np.testing.assert_allclose(persons[1].centre, [19.5, 23.5])
  assert persons[1].side == 40 and persons[1].head_size == 0
  assert [p.image for p in coco.read_persons(path, min_keypoints=3)] == ["000000000007.jpg"]


def test_prepare_and_read_back(tmp_path):
  data_dir = str(tmp_path / "data")
  builder = coco.prepare(str(_manual_dir(tmp_path)), data_dir, image_size=SIZE)
  assert {s: builder.info.splits[s].num_examples for s in ("train", "validation")} == {
      "train": 3, "validation": 1}
  source = coco.prepared_source(data_dir, image_size=SIZE)
  by_count = {int(s["joints_2d_mask"].sum()): s for s in (source("train_2d", i)
                                                          for i in range(3))}
  assert sorted(by_count) == [1, 2, 13]  # 17 COCO keypoints give 13 canonical joints
  first = by_count[13]
  _check_joints(first, KEYPOINTS_1, BBOX_1)
  _check_joints(by_count[2], KEYPOINTS_2, BBOX_2)
  # Left wrist (20, 23) -> ((20, 23) - (-5.5, -1.5)) * 0.64 - 0.5, and the drawn dot is there.
  np.testing.assert_allclose(first["joints_2d"][H36M.index("left_wrist")], [15.82, 15.18],
                             atol=1e-5)
  weights = first["image"][..., 0].astype(float)
  ys, xs = np.mgrid[:SIZE, :SIZE]
  centroid = np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()
  np.testing.assert_allclose(centroid, [15.82, 15.18], atol=0.3)
  # Camera guess: focal 64, principal point (31.5, 23.5), composed with the crop.
  np.testing.assert_allclose(first["camera"], [[40.96, 0, 23.18], [0, 40.96, 15.5], [0, 0, 1]],
                             atol=1e-5)
  assert first["head_size"] == 0 and not first["has_3d"]
  grey = by_count[1]["image"]
  assert grey.shape == (SIZE, SIZE, 3) and grey.dtype == np.uint8
  valid = coco.prepared_source(data_dir, "validation", image_size=SIZE)("train_2d", 0)
  _check_joints(valid, {5: (10, 10, 2), 6: (20, 10, 2)}, (5, 5, 20, 20))


def test_a_left_right_swap_fails_the_joint_check():
  frame = fx.dotted_image(48, 64)
  keypoints = np.array([KEYPOINTS_1[k] for k in range(17)], float)
  person = mpii.Person("x.jpg", keypoints[:, :2], np.ones(17, bool), np.array([19.5, 23.5]),
                       40.0, 0.0)
  _check_joints(mpii.person_example(frame, person, SIZE, 1.25, coco.MAPPING),
                KEYPOINTS_1, BBOX_1)
  with pytest.raises(AssertionError, match="right_hip"):
    _check_joints(mpii.person_example(frame, person, SIZE, 1.25,
                                      fx.swapped_mapping(coco.MAPPING)),
                  KEYPOINTS_1, BBOX_1)


def _assert_nothing_prepared(data_dir):
  with pytest.raises(FileNotFoundError, match="prepare_data --dataset=coco"):
    coco.prepared_source(str(data_dir), image_size=SIZE)
  assert not list(data_dir.glob("**/incomplete*"))
  assert not list(data_dir.glob("**/*.array_record*"))


def test_missing_files_are_named_and_leave_nothing(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere: manual dir not found"):
    coco.prepare(str(tmp_path / "nowhere"), str(tmp_path / "data"), image_size=SIZE)
  root = _manual_dir(tmp_path)
  os.remove(root / "annotations" / "person_keypoints_val2017.json")
  with pytest.raises(FileNotFoundError, match="person_keypoints_val2017.json: file not found"):
    coco.prepare(str(root), str(tmp_path / "data"), image_size=SIZE)
  _assert_nothing_prepared(tmp_path / "data")
  root = _manual_dir(tmp_path)
  os.remove(root / "train2017" / "000000000007.jpg")
  with pytest.raises(FileNotFoundError, match="000000000007.jpg: image file not found"):
    coco.prepare(str(root), str(tmp_path / "data"), image_size=SIZE)
  _assert_nothing_prepared(tmp_path / "data")


def test_truncated_image_fails_and_leaves_nothing(tmp_path):
  root = _manual_dir(tmp_path)
  fx.truncate(root / "val2017" / "000000000009.jpg", 0.3)
  with pytest.raises(ValueError, match="000000000009.jpg: not a readable image"):
    coco.prepare(str(root), str(tmp_path / "data"), image_size=SIZE)
  _assert_nothing_prepared(tmp_path / "data")


def test_broken_annotation_files_are_named(tmp_path):
  path = tmp_path / "person_keypoints_train2017.json"
  fx.write_coco(path, [fx.coco_image(7, 48, 64)], [fx.coco_person(1, 7, KEYPOINTS_1, BBOX_1)])
  fx.truncate(path, 0.5)
  with pytest.raises(ValueError, match="train2017.json: not a complete JSON file"):
    coco.read_persons(str(path))
  fx.write_mpii_json(path, [fx.mpii_json_entry("a.jpg", {0: (1, 1)}, (2, 2), 1.0)])
  with pytest.raises(ValueError, match="train2017.json: not a COCO annotation file"):
    coco.read_persons(str(path))
  fx.write_coco(path, [fx.coco_image(7, 48, 64)], [fx.coco_person(1, 7, KEYPOINTS_1, BBOX_1)])
  data = fx.json.loads(path.read_text())
  data["categories"][0]["keypoints"] = fx.COCO_KEYPOINTS[::-1]
  path.write_text(fx.json.dumps(data))
  with pytest.raises(ValueError, match="train2017.json: the person category's keypoints"):
    coco.read_persons(str(path))
  data["categories"][0]["keypoints"] = fx.COCO_KEYPOINTS
  del data["annotations"][0]["bbox"]
  path.write_text(fx.json.dumps(data))
  with pytest.raises(ValueError, match="train2017.json: annotation id 1: missing field 'bbox'"):
    coco.read_persons(str(path))
