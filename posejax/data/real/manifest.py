r"""Your own multi-view recordings as a TFDS dataset: unlabeled multi-view samples.

The method needs no extrinsics and no labels for its multi-view data: synchronised views of a
person, a crop camera per view, and nothing else. Describe each recording with a JSON manifest
(`*.json` in the manual dir, paths relative to the manifest's folder):

    {
      "cameras": {
        "left":  {"video": "left.mp4", "focal_length_px": 1400},
        "right": {"frames": "right/*.jpg",
                  "intrinsics": [[1390, 0, 957.5], [0, 1392, 541.0], [0, 0, 1]]}
      },
      "boxes": {
        "left":  [[812, 240, 1105, 990], null, ...],
        "right": [[640, 260, 900, 1010], [652, 262, 905, 1011], ...]
      },
      "frame_step": 2
    }

- "cameras" (at least 2): per camera exactly one source, "video" (a video file PyAV reads,
  frame i = its i-th frame) or "frames" (a glob pattern; frame i = the i-th match in natural
  order, so 2.jpg comes before 10.jpg), and exactly one of "intrinsics" (3x3, pixels, pixel
  centres at integers) or "focal_length_px" (a guess is fine; the principal point is then the
  image centre).
- "boxes": per camera one entry per frame, the same count N for every camera: the person's box
  [x0, y0, x1, y1] in that camera's frame pixels, or null where the person is not seen (from
  any person detector). The frames of all cameras must be synchronised: frame i of every camera
  shows the same instant (trim the videos to a common start first).
- "frame_step" (optional, default 1): use frames 0, step, 2 step, ... < N.

Each used frame with a box in at least `min_views` (default 2) cameras becomes one multi-view
sample: image [V, S, S, 3], camera [V, 3, 3] (K = crop matrix @ intrinsics), view_mask [V]
(False for the cameras without a box there; their image and camera are zeros, like the
pipeline's padding). V is the manifest's camera count. The crop is the square of side
`margin * max(box width, box height)` (margin 1.25) around the box centre. There are no labels
at all: the samples feed the weakly supervised "train_multiview" stream.

Prepare (see README):

    python -m experiments.prepare_data --dataset=own_multiview --manual_dir=~/my_recordings \
        --data_dir=~/posejax_data
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from posejax.data.real import crop, datasets, video

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put one JSON manifest per recording into <manual_dir>/ (any name ending in .json), with the
videos or frame folders it names (paths relative to the manifest). The schema is in the
docstring of posejax/data/real/manifest.py and in README.md ("Your own multi-view data").
"""


@dataclasses.dataclass(frozen=True)
class Camera:
  """One camera of a recording.

  Attributes:
    name: the manifest's key.
    video: the video file, or None for an image sequence.
    frames: the image files in frame order (empty for a video).
    intrinsics: [3, 3] float64, or None when only `focal_length` is known.
    focal_length: pixels (used when `intrinsics` is None).
    boxes: [N, 4] float64 (x0, y0, x1, y1), NaN rows where the person is not seen.
  """

  name: str
  video: str | None
  frames: tuple[str, ...]
  intrinsics: np.ndarray | None
  focal_length: float | None
  boxes: np.ndarray

  def camera_matrix(self, height: int, width: int) -> np.ndarray:
    """[3, 3] intrinsics for frames of this size."""
    if self.intrinsics is not None:
      return self.intrinsics
    f = self.focal_length
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]])

  def sees(self, frame: int) -> bool:
    return not np.isnan(self.boxes[frame, 0])

  def stream(self, indices: list[int]) -> Iterator[tuple[int, np.ndarray]]:
    """(index, [H, W, 3] uint8 frame) for the increasing `indices`, decoded as consumed."""
    if self.video is not None:
      return video.iter_frames(self.video, indices)
    return ((i, video.read_image(self.frames[i])) for i in indices)


@dataclasses.dataclass(frozen=True)
class Recording:
  """A parsed manifest: its path, cameras (manifest order) and the frames to use."""

  path: str
  cameras: tuple[Camera, ...]
  frame_indices: tuple[int, ...]


def _natural_key(path: str):
  return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def _number(value, where: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
    raise ValueError(f"{where}: expected a finite number, got {value!r}")
  return float(value)


def _camera(path: str, name: str, spec, boxes, where: str) -> Camera:
  if not isinstance(spec, dict):
    raise ValueError(f"{where}: expected an object, got {spec!r}")
  unknown = set(spec) - {"video", "frames", "intrinsics", "focal_length_px"}
  if unknown:
    raise ValueError(f"{where}: unknown fields {sorted(unknown)}")
  if ("video" in spec) == ("frames" in spec):
    raise ValueError(f"{where}: needs exactly one of 'video' and 'frames'")
  if ("intrinsics" in spec) == ("focal_length_px" in spec):
    raise ValueError(f"{where}: needs exactly one of 'intrinsics' and 'focal_length_px'")
  folder = os.path.dirname(path)
  video_path, frames, frame_count = None, (), 0
  if "video" in spec:
    video_path = os.path.join(folder, str(spec["video"]))
    frame_count = video.frame_count(video_path)  # names a missing or broken file
  else:
    frames = tuple(sorted(glob.glob(os.path.join(folder, str(spec["frames"]))),
                          key=_natural_key))
    frame_count = len(frames)
    if not frames:
      raise FileNotFoundError(f"{where}.frames: no file matches "
                              f"{os.path.join(folder, str(spec['frames']))!r}")
  intrinsics, focal = None, None
  if "intrinsics" in spec:
    try:
      intrinsics = np.array(spec["intrinsics"], np.float64).reshape(3, 3)
    except (TypeError, ValueError):
      raise ValueError(f"{where}.intrinsics: expected a 3x3 matrix, got "
                       f"{spec['intrinsics']!r}") from None
    if not np.isfinite(intrinsics).all() or not np.allclose(intrinsics[2], [0, 0, 1]) or (
        intrinsics[0, 0] <= 0 or intrinsics[1, 1] <= 0):
      raise ValueError(f"{where}.intrinsics: expected [[fx, s, cx], [0, fy, cy], [0, 0, 1]] "
                       f"with positive focal lengths, got {spec['intrinsics']!r}")
  else:
    focal = _number(spec["focal_length_px"], f"{where}.focal_length_px")
    if focal <= 0:
      raise ValueError(f"{where}.focal_length_px: must be positive, got {focal}")
  box_array = _boxes(boxes, f"{path}: boxes.{name}")
  if len(box_array) > frame_count:
    raise ValueError(f"{path}: boxes.{name} has {len(box_array)} frames but camera {name!r} has "
                     f"only {frame_count} ({video_path or spec['frames']})")
  return Camera(name, video_path, frames, intrinsics, focal, box_array)


def _boxes(boxes, where: str) -> np.ndarray:
  if not isinstance(boxes, list):
    raise ValueError(f"{where}: expected a list with one box or null per frame")
  array = np.full((len(boxes), 4), np.nan)
  for i, box in enumerate(boxes):
    if box is None:
      continue
    if not isinstance(box, list) or len(box) != 4:
      raise ValueError(f"{where}[{i}]: expected [x0, y0, x1, y1] or null, got {box!r}")
    array[i] = [_number(v, f"{where}[{i}]") for v in box]
    if not (array[i, 2] > array[i, 0] and array[i, 3] > array[i, 1]):
      raise ValueError(f"{where}[{i}]: expected x1 > x0 and y1 > y0, got {box!r}")
  return array


def read_manifest(path: str, min_views: int = 2) -> Recording:
  """Parses and checks a manifest (schema in the module docstring), including that every video
  or frame file it names exists and has the frames the boxes describe.

  Raises:
    FileNotFoundError / ValueError naming the manifest, the field and what is wrong.
  """
  manifest = datasets.read_json(path, "manifest file")
  if not isinstance(manifest, dict):
    raise ValueError(f"{path}: expected a JSON object with 'cameras' and 'boxes'")
  unknown = set(manifest) - {"cameras", "boxes", "frame_step"}
  if unknown:
    raise ValueError(f"{path}: unknown fields {sorted(unknown)}")
  cameras, boxes = manifest.get("cameras"), manifest.get("boxes")
  if not isinstance(cameras, dict) or len(cameras) < 2:
    raise ValueError(f"{path}: 'cameras' must be an object with at least 2 cameras, got "
                     f"{cameras!r}")
  if not isinstance(boxes, dict) or set(boxes) != set(cameras):
    raise ValueError(f"{path}: 'boxes' must have one list per camera {sorted(cameras)}, got "
                     f"{sorted(boxes) if isinstance(boxes, dict) else boxes!r}")
  step = manifest.get("frame_step", 1)
  if isinstance(step, bool) or not isinstance(step, int) or step < 1:
    raise ValueError(f"{path}: 'frame_step' must be a positive integer, got {step!r}")
  parsed = tuple(_camera(path, name, spec, boxes[name], f"{path}: cameras.{name}")
                 for name, spec in cameras.items())
  counts = {c.name: len(c.boxes) for c in parsed}
  if len(set(counts.values())) != 1:
    raise ValueError(f"{path}: 'boxes' must have the same number of frames for every camera "
                     f"(synchronised frames), got {counts}")
  seen = np.stack([~np.isnan(c.boxes[:, 0]) for c in parsed])  # [C, N]: a box in that frame
  frames = tuple(i for i in range(0, seen.shape[1], step) if seen[:, i].sum() >= min_views)
  return Recording(path, parsed, frames)


def _recording_examples(recording: Recording, image_size: int, margin: float):
  """(key, record) per used frame of one recording, streaming every camera's frames."""
  stem = os.path.splitext(os.path.basename(recording.path))[0]
  cameras = recording.cameras
  streams = [c.stream([i for i in recording.frame_indices if c.sees(i)]) for c in cameras]
  for frame in recording.frame_indices:
    images = np.zeros((len(cameras), image_size, image_size, 3), np.uint8)
    matrices = np.zeros((len(cameras), 3, 3), np.float32)
    for v, camera in enumerate(cameras):
      if not camera.sees(frame):
        continue
      _, image = next(streams[v])
      x0, y0, x1, y1 = camera.boxes[frame]
      images[v], matrices[v] = crop.crop_view(
          image, camera.camera_matrix(*image.shape[:2]), ((x0 + x1) / 2, (y0 + y1) / 2),
          margin * max(x1 - x0, y1 - y0), image_size)
    yield f"{stem}/{frame}", {"image": images, "camera": matrices,
                              "view_mask": np.array([c.sees(frame) for c in cameras]),
                              "recording": stem, "frame": frame}


def find_manifests(manual_dir: str) -> list[str]:
  """The manifests (`*.json`) directly in `manual_dir`, sorted.

  Raises:
    FileNotFoundError: there is none (names the folder).
  """
  paths = sorted(glob.glob(os.path.join(manual_dir, "*.json")))
  if not paths:
    raise FileNotFoundError(f"{manual_dir}: no *.json manifest in the manual dir; "
                            "see posejax/data/real/manifest.py for the format")
  return paths


@dataclasses.dataclass(kw_only=True)
class OwnMultiviewConfig(tfds.core.BuilderConfig):
  image_size: int = 256
  margin: float = 1.25
  min_views: int = 2


def builder_config(name: str = "default", image_size: int = 256, margin: float = 1.25,
                   min_views: int = 2) -> OwnMultiviewConfig:
  """A builder config called `name` (your name for the recordings: prepared data of different
  recordings must not share one) plus everything else that determines the data."""
  if not re.fullmatch(r"[a-z0-9_]+", name):
    raise ValueError(f"name must be lower-case letters, digits and _, got {name!r}")
  if min_views < 1:
    raise ValueError(f"min_views must be at least 1, got {min_views}")
  return OwnMultiviewConfig(
      name=f"{name}_s{image_size}_m{int(round(margin * 100))}_v{min_views}",
      image_size=image_size, margin=margin, min_views=min_views)


class PosejaxOwnMultiview(tfds.core.GeneratorBasedBuilder):
  """Your own synchronised multi-view recordings, unlabeled (see posejax.data.real.manifest)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    tensor = tfds.features.Tensor
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        "image": tensor(shape=(None, size, size, 3), dtype=np.uint8,
                        encoding=tfds.features.Encoding.ZLIB),
        "camera": tensor(shape=(None, 3, 3), dtype=np.float32),
        "view_mask": tensor(shape=(None,), dtype=np.bool_),
        "recording": tfds.features.Text(),
        "frame": np.int64,
    }), description=__doc__)

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    # Check every manifest and the files it names before writing anything.
    recordings = [read_manifest(path, self.builder_config.min_views)
                  for path in find_manifests(manual_dir)]
    return {"train": self._generate_examples(recordings)}

  def _generate_examples(self, recordings):
    config = self.builder_config
    for recording in recordings:
      yield from _recording_examples(recording, config.image_size, config.margin)


def from_record(record: dict) -> dict:
  """A stored record as a "train_multiview" sample: image, camera, view_mask (no labels)."""
  return {k: np.asarray(record[k]) for k in ("image", "camera", "view_mask")}


def builder(data_dir: str, **config) -> PosejaxOwnMultiview:
  """The builder of `builder_config(**config)` writing ArrayRecord into `data_dir`."""
  return PosejaxOwnMultiview(config=builder_config(**config),
                             data_dir=os.path.expanduser(data_dir), file_format="array_record")


def prepare(manual_dir: str, data_dir: str, **config) -> PosejaxOwnMultiview:
  """Prepares the recordings of `manual_dir` once (config: `builder_config`'s arguments)."""
  return datasets.prepare_builder(builder(data_dir, **config), manual_dir)


def prepared_source(data_dir: str, **config):
  """(stream, index) -> the index-th stored sample (wrapping around) of the
  "train_multiview" stream, the only one this data has."""
  prepared = datasets.prepared_builder(builder(data_dir, **config), "own_multiview")
  records = prepared.as_data_source(split="train")

  def source(stream: str, index: int) -> dict:
    if stream != "train_multiview":
      raise ValueError(f"Own multi-view data has unlabeled multi-view samples only (stream "
                       f"'train_multiview'), not {stream!r}")
    return from_record(records[index % len(records)])

  return source
