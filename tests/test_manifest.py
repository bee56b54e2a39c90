"""posejax.data.real.manifest: own multi-view recordings (a video, jpg sequences) -> unlabeled
multi-view samples whose crop cameras see the person where the pixels show it."""

import os

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")
pytest.importorskip("av")

import fixtures_person_data as fx  # noqa: E402
import fixtures_video  # noqa: E402
from ml_collections import config_dict  # noqa: E402

from posejax.data.batching import pipeline  # noqa: E402
from posejax.data.real import datasets, manifest  # noqa: E402
from posejax.tasks import get_task  # noqa: E402

SIZE = 32
HEIGHT, WIDTH = 48, 64
FRAMES = 5
DEPTH = 1000.0
# The person (one bright point) per camera and frame, in frame pixels: it moves 3 px a frame,
# so reading the wrong frame of a camera puts the point 3-5 crop pixels off.
PIXELS = {"cam0": [(20 + 3 * i, 15 + 2 * i) for i in range(FRAMES)],
          "cam1": [(40 - 3 * i, 20 + i) for i in range(FRAMES)],
          "cam2": [(30, 10 + 3 * i) for i in range(FRAMES)]}
INTRINSICS = {"cam0": np.array([[60.0, 0, 31.5], [0, 60, 23.5], [0, 0, 1]]),  # focal only
              "cam1": np.array([[70.0, 0, 30], [0, 72, 25], [0, 0, 1]]),
              "cam2": np.array([[50.0, 0, 33], [0, 50, 22], [0, 0, 1]])}
# cam2 does not see the person in frames 1 and 3; cam1 misses frame 3 too (one view left).
SEEN = {"cam0": [True] * 5, "cam1": [True, True, True, False, True],
        "cam2": [True, False, True, False, True]}


def _box(pixel, frame):
  """A person box around the point, off-centre by a frame-dependent amount."""
  x, y = pixel
  return [x - 7 + frame, y - 9, x + 9 + frame, y + 6]


def _point_3d(camera, frame):
  """The point in the camera's frame (mm) that projects onto PIXELS[camera][frame]."""
  u, v = PIXELS[camera][frame]
  return DEPTH * np.linalg.solve(INTRINSICS[camera], [u, v, 1.0])


def _recording(root, frame_step=1, **overrides):
  frames = {c: np.stack([fx.dotted_image(HEIGHT, WIDTH, [p]) for p in PIXELS[c]])
            for c in PIXELS}
  fixtures_video.write_video(root / "rec" / "cam0.mp4", frames["cam0"])
  for camera in ("cam1", "cam2"):  # numbered 1..5 without padding: natural order matters
    for i, image in enumerate(frames[camera]):
      fx.write_jpeg(root / "rec" / camera / f"{i + 1 if i < 4 else 10}.jpg", image)
  spec = {
      "cameras": {
          "cam0": {"video": "rec/cam0.mp4", "focal_length_px": 60},
          "cam1": {"frames": "rec/cam1/*.jpg", "intrinsics": INTRINSICS["cam1"].tolist()},
          "cam2": {"frames": "rec/cam2/*.jpg", "intrinsics": INTRINSICS["cam2"].tolist()}},
      "boxes": {c: [_box(PIXELS[c][i], i) if SEEN[c][i] else None for i in range(FRAMES)]
                for c in PIXELS},
      "frame_step": frame_step,
  }
  spec.update(overrides)
  return fx.write_manifest(root / "studio.json", spec)


def _centroid(image):
  weights = image[..., 0].astype(np.float64)
  ys, xs = np.mgrid[:image.shape[0], :image.shape[1]]
  return np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()


def test_manifest_frames_and_views(tmp_path):
  recording = manifest.read_manifest(_recording(tmp_path))
  assert [c.name for c in recording.cameras] == ["cam0", "cam1", "cam2"]
  assert recording.frame_indices == (0, 1, 2, 4)  # frame 3: one view only
  assert [os.path.basename(f) for f in recording.cameras[1].frames] == [
      "1.jpg", "2.jpg", "3.jpg", "4.jpg", "10.jpg"]
  np.testing.assert_allclose(recording.cameras[0].camera_matrix(HEIGHT, WIDTH),
                             INTRINSICS["cam0"])
  step = manifest.read_manifest(_recording(tmp_path / "b", frame_step=2))
  assert step.frame_indices == (0, 2, 4)
  assert manifest.read_manifest(_recording(tmp_path / "c"), min_views=3).frame_indices == (
      0, 2, 4)


def test_prepare_samples_and_exact_crop_cameras(tmp_path):
  _recording(tmp_path / "manual")
  data_dir = str(tmp_path / "data")
  builder = manifest.prepare(str(tmp_path / "manual"), data_dir, name="studio",
                             image_size=SIZE)
  records = builder.as_data_source(split="train")
  assert len(records) == 4
  source = manifest.prepared_source(data_dir, name="studio", image_size=SIZE)
  checked = 0
  for index in range(len(records)):
    frame = int(records[index]["frame"])
    assert records[index]["recording"] in ("studio", b"studio")
    sample = source("train_multiview", index)
    assert set(sample) == {"image", "camera", "view_mask"}  # no labels at all
    assert sample["image"].shape == (3, SIZE, SIZE, 3)
    assert sample["view_mask"].tolist() == [SEEN[c][frame] for c in PIXELS]
    for v, camera in enumerate(PIXELS):
      if not SEEN[camera][frame]:
        np.testing.assert_array_equal(sample["image"][v], 0)
        np.testing.assert_array_equal(sample["camera"][v], 0)
        continue
      # The point in 3D, projected with the crop camera, lands on the point in the crop.
      projected = sample["camera"][v] @ _point_3d(camera, frame)
      np.testing.assert_allclose(projected[:2] / projected[2], _centroid(sample["image"][v]),
                                 atol=0.35, err_msg=f"frame {frame} {camera}")
      checked += 1
  assert checked == 3 + 2 + 3 + 3  # frames 0, 1, 2, 4
  # Frame 0, cam0 (focal 60, principal point at the image centre (31.5, 23.5)): box
  # [13, 6, 29, 21], centre (21, 13.5), side 1.25 x 16 = 20, corner (11, 3.5), zoom 1.6:
  # K = [[60 x 1.6, 0, (31.5 - 11) x 1.6 - 0.5], [0, 96, (23.5 - 3.5) x 1.6 - 0.5], [0, 0, 1]].
  first = [source("train_multiview", i) for i in range(4)
           if int(records[i]["frame"]) == 0][0]
  np.testing.assert_allclose(first["camera"][0], [[96, 0, 32.3], [0, 96, 31.5], [0, 0, 1]],
                             atol=1e-4)
  batch = pipeline.make_batch(source, pipeline.BatchSpec(labeled=0, multiview=2, num_views=2),
                              step=0)
  assert batch["multiview"]["image"].shape == (2, 2, SIZE, SIZE, 3)
  with pytest.raises(ValueError, match="train_multiview"):
    source("train_2d", 0)
  assert not list((tmp_path / "data").glob("**/incomplete*"))


def _edit(path, change):
  spec = fx.json.loads(open(path).read())
  change(spec)
  fx.write_manifest(path, spec)
  return path


@pytest.mark.parametrize("change, error, message", [
    (lambda s: s.pop("cameras"), ValueError, "'cameras' must be an object with at least 2"),
    (lambda s: s["cameras"]["cam1"].update(video="x.mp4"), ValueError,
     "cameras.cam1: needs exactly one of 'video' and 'frames'"),
    (lambda s: s["cameras"]["cam0"].pop("focal_length_px"), ValueError,
     "cameras.cam0: needs exactly one of 'intrinsics' and 'focal_length_px'"),
    (lambda s: s["cameras"]["cam1"].update(intrinsics=[[1, 0], [0, 1]]), ValueError,
     "cameras.cam1.intrinsics: expected a 3x3 matrix"),
    (lambda s: s["cameras"]["cam0"].update(focal_length_px=-5), ValueError,
     "cameras.cam0.focal_length_px: must be positive"),
    (lambda s: s["boxes"].pop("cam2"), ValueError, "'boxes' must have one list per camera"),
    (lambda s: s["boxes"]["cam1"].pop(), ValueError, "the same number of frames"),
    (lambda s: s["boxes"]["cam1"].__setitem__(2, [5, 5, 1, 9]), ValueError,
     r"boxes.cam1\[2\]: expected x1 > x0"),
    (lambda s: s["boxes"]["cam0"].__setitem__(0, [5, 5, 9]), ValueError,
     r"boxes.cam0\[0\]: expected \[x0, y0, x1, y1\] or null"),
    (lambda s: s.update(frame_step=0), ValueError, "'frame_step' must be a positive integer"),
    (lambda s: s.update(fps=25), ValueError, r"unknown fields \['fps'\]"),
    (lambda s: [s["boxes"][c].append(None) for c in s["boxes"]], ValueError,
     "boxes.cam0 has 6 frames but camera 'cam0' has only 5"),
    (lambda s: s["cameras"]["cam0"].update(video="rec/missing.mp4"), FileNotFoundError,
     "missing.mp4: video file not found"),
    (lambda s: s["cameras"]["cam2"].update(frames="rec/none/*.jpg"), FileNotFoundError,
     "cameras.cam2.frames: no file matches"),
])
def test_manifest_errors_name_the_file_and_field(tmp_path, change, error, message):
  path = _edit(_recording(tmp_path), change)
  with pytest.raises(error, match=message) as info:
    manifest.read_manifest(path)
  assert "studio.json" in str(info.value) or "missing.mp4" in str(info.value)


def _assert_nothing_prepared(data_dir):
  with pytest.raises(FileNotFoundError, match="prepare_data --dataset=own_multiview"):
    manifest.prepared_source(str(data_dir), image_size=SIZE)
  assert not list(data_dir.glob("**/incomplete*"))
  assert not list(data_dir.glob("**/*.array_record*"))


def test_bad_input_fails_and_leaves_nothing(tmp_path):
  (tmp_path / "empty" / "rec").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match="empty: no \\*.json manifest"):
    manifest.prepare(str(tmp_path / "empty"), str(tmp_path / "data"), image_size=SIZE)
  with pytest.raises(FileNotFoundError, match="nowhere: manual dir not found"):
    manifest.prepare(str(tmp_path / "nowhere"), str(tmp_path / "data"), image_size=SIZE)
  _recording(tmp_path / "manual")
  fx.truncate(tmp_path / "manual" / "rec" / "cam2" / "10.jpg", 0.3)
  with pytest.raises(ValueError, match="10.jpg: not a readable image"):
    manifest.prepare(str(tmp_path / "manual"), str(tmp_path / "data"), image_size=SIZE)
  _assert_nothing_prepared(tmp_path / "data")
  fixtures_video.truncate(tmp_path / "manual" / "rec" / "cam0.mp4", 0.5)
  with pytest.raises(ValueError, match="cam0.mp4: "):
    manifest.prepare(str(tmp_path / "manual"), str(tmp_path / "data"), image_size=SIZE)
  _assert_nothing_prepared(tmp_path / "data")
  (tmp_path / "manual" / "studio.json").write_text('{"cameras": {')
  with pytest.raises(ValueError, match="studio.json: not a complete JSON file"):
    manifest.prepare(str(tmp_path / "manual"), str(tmp_path / "data"), image_size=SIZE)
  _assert_nothing_prepared(tmp_path / "data")


def test_registry_and_a_weakly_supervised_batch_with_mpii(tmp_path):
  _recording(tmp_path / "own")
  fx.write_jpeg(tmp_path / "mpii" / "images" / "a.jpg", fx.dotted_image(60, 80))
  fx.write_mpii_mat(tmp_path / "mpii" / "mpii_human_pose_v1_u12_1.mat", [
      ("a.jpg", [fx.mpii_rect({j: (20.0 + j, 12.0 + j) for j in range(16)}, (30, 10, 36, 18),
                              (41, 28), 0.2)], True)])
  data_dir = str(tmp_path / "data")
  datasets.prepare("own_multiview", str(tmp_path / "own"), data_dir, image_size=SIZE)
  datasets.prepare("mpii", str(tmp_path / "mpii"), data_dir, image_size=SIZE)
  source = datasets.combine({
      "train_2d": datasets.source("mpii", data_dir, image_size=SIZE),
      "train_multiview": datasets.source("own_multiview", data_dir, image_size=SIZE)})
  task = get_task(config_dict.ConfigDict(dict(
      task="pose25d", batch=dict(labeled=2, multiview=2, num_views=3),
      pseudo_labels=dict(enabled=False))))
  batch = pipeline.make_batch(source, task.batch_spec("ws"), step=0)
  assert batch["labeled"]["joints_2d"].shape == (2, 17, 2)
  assert batch["labeled"]["augmentation"].shape == (2, 3, 3)
  assert set(batch["multiview"]) == {"image", "camera", "view_mask", "augmentation"}
  assert batch["multiview"]["image"].shape == (2, 3, SIZE, SIZE, 3)
