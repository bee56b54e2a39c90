"""The registry of real datasets: one name per TFDS builder, prepared once, then read as a Source.

    from posejax.data.real import datasets
    datasets.prepare("h36m", manual_dir="~/h36m", data_dir="~/posejax_data", image_size=256)
    source = datasets.source("h36m", data_dir="~/posejax_data", image_size=256)
    sample = source("test", 0)  # the docs/design.md keys, like the synthetic data

or from the shell: `python -m experiments.prepare_data --dataset=h36m --manual_dir=~/h36m
--data_dir=~/posejax_data --option=image_size=256`.

A dataset module (`DatasetInfo.module`) provides three functions, all taking the dataset's
options (its builder config's fields) as keyword arguments:

- `builder(data_dir, **options)`: its TFDS builder (ArrayRecord files under `data_dir`);
- `prepare(manual_dir, data_dir, **options)`: reads the files in `manual_dir`, as the dataset's
  owners distribute them, and writes the dataset (usually `prepare_builder(builder(...), ...)`);
- `prepared_source(data_dir, **options)`: the pipeline's Source, (stream, index) -> sample, of
  the prepared dataset (usually starting from `prepared_builder(builder(...), name)`).

Each dataset names the streams it serves; `combine` makes one Source of several datasets (e.g.
MPII's 2D labels with Human3.6M's multi-view images).

Multi-view datasets store one record per sample with a view axis; the crops are stored as JPEG
(quality 95: the sources are compressed video already, and a photo crop is about 10x smaller
than as raw pixels; `multiview_features`, `encode_jpegs`, `decode_jpegs`).
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import json
import os

import numpy as np
from PIL import Image

from posejax.data.batching.sources import Source  # noqa: F401  (the one Source type)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """A registered dataset.

  Attributes:
    module: the module that provides builder, prepare and prepared_source.
    streams: the pipeline streams its Source serves.
    homepage: where users get the files.
  """

  module: str
  streams: tuple[str, ...]
  homepage: str


# Add a dataset here with its module (the builders land one by one).
DATASETS: dict[str, DatasetInfo] = {
    "h36m": DatasetInfo("posejax.data.real.h36m", ("train_multiview", "train_2d", "test"),
                        "http://vision.imar.ro/human3.6m/"),
    "mpi_inf_3dhp": DatasetInfo("posejax.data.real.mpi_inf_3dhp",
                                ("train_multiview", "train_2d", "test"),
                                "https://vcai.mpi-inf.mpg.de/3dhp-dataset/"),
    "mpii": DatasetInfo("posejax.data.real.mpii", ("train_2d",),
                        "http://human-pose.mpi-inf.mpg.de/"),
    "coco": DatasetInfo("posejax.data.real.coco", ("train_2d",), "https://cocodataset.org/"),
    "lsp": DatasetInfo("posejax.data.real.lsp", ("train_2d", "test"),
                       "http://sam.johnson.io/research/lsp.html"),
    "own_multiview": DatasetInfo("posejax.data.real.manifest", ("train_multiview",),
                                 "your own recordings (README.md: Your own multi-view data)"),
}


def dataset_module(name: str):
  """The module of the registered dataset `name`."""
  if name not in DATASETS:
    raise KeyError(f"Unknown dataset {name!r}; registered: {sorted(DATASETS)}")
  return importlib.import_module(DATASETS[name].module)


def builder(name: str, data_dir: str, **options):
  """The TFDS builder of dataset `name` with `options`, writing/reading under `data_dir`."""
  return dataset_module(name).builder(os.path.expanduser(data_dir), **options)


def prepare(name: str, manual_dir: str, data_dir: str, **options):
  """Prepares dataset `name` from the files in `manual_dir` into `data_dir`; returns the
  builder. Nothing is published in `data_dir` unless preparation completes."""
  return dataset_module(name).prepare(os.path.expanduser(manual_dir),
                                      os.path.expanduser(data_dir), **options)


def source(name: str, data_dir: str, **options) -> Source:
  """The Source (stream, index) -> sample of the prepared dataset `name`.

  Raises:
    FileNotFoundError: it is not prepared in `data_dir` with these options (the message names
      the command that prepares it).
  """
  return dataset_module(name).prepared_source(os.path.expanduser(data_dir), **options)


def combine(sources: dict[str, Source]) -> Source:
  """One Source that reads each stream from its own Source: {stream: source}."""

  def combined(stream: str, index: int) -> dict:
    if stream not in sources:
      raise KeyError(f"No source for stream {stream!r}; streams: {sorted(sources)}")
    return sources[stream](stream, index)

  return combined


def streams_source(streams: dict[str, str], data_dir: str,
                   options: dict[str, dict] | None = None) -> Source:
  """The Source of a training config: each pipeline stream read from a registered dataset.

  Args:
    streams: {pipeline stream: "dataset" or "dataset:its_stream"}, e.g. {"train_2d": "mpii",
      "train_multiview": "h36m", "validation": "h36m:test", "test": "h36m"}.
    data_dir: where the datasets were prepared.
    options: {dataset: its options}, the same as when it was prepared.

  Samples with an integer "action" get the action's name from the module's ACTIONS, so that
  results are reported per named action.
  """
  options = options or {}
  opened, sources, sizes = {}, {}, {}
  for stream, spec in streams.items():
    name, _, own_stream = spec.partition(":")
    own_stream = own_stream or stream
    if name not in opened:
      opened[name] = source(name, data_dir, **options.get(name, {}))
    sources[stream] = _reading(opened[name], own_stream,
                               getattr(dataset_module(name), "ACTIONS", None))
    if own_stream in getattr(opened[name], "sizes", {}):
      sizes[stream] = opened[name].sizes[own_stream]
  combined = combine(sources)
  combined.sizes = sizes  # lets evaluation cover a whole held-out stream
  return combined


def _reading(dataset: Source, stream: str, actions) -> Source:
  def read(_, index: int) -> dict:
    sample = dataset(stream, index)
    if actions is not None and "action" in sample:
      sample = dict(sample, action=actions[int(np.asarray(sample["action"]).reshape(-1)[0])])
    return sample

  return read


def read_json(path: str, what: str = "file"):
  """The parsed JSON file at `path`.

  Raises:
    FileNotFoundError: "{path}: {what} not found".
    ValueError: the file is truncated or not JSON (the message names it).
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: {what} not found")
  try:
    with open(path) as f:
      return json.load(f)
  except (ValueError, UnicodeDecodeError) as error:
    raise ValueError(f"{path}: not a complete JSON file ({error})") from None


def prepare_builder(builder, manual_dir: str):
  """Runs `builder.download_and_prepare` on the files in `manual_dir`; returns the builder.

  TFDS writes into a temporary directory and renames it only when complete, so a failure
  leaves no dataset behind.

  Raises:
    FileNotFoundError: `manual_dir` is missing or empty (with the builder's instructions).
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  manual_dir = os.path.expanduser(os.fspath(manual_dir))
  if not os.path.isdir(manual_dir) or not os.listdir(manual_dir):
    raise FileNotFoundError(f"{manual_dir}: manual dir not found or empty. {builder.name} "
                            f"expects:\n{builder.MANUAL_DOWNLOAD_INSTRUCTIONS}")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir, try_download_gcs=False))
  return builder


def prepared_builder(builder, name: str):
  """`builder` if its dataset is prepared, else FileNotFoundError naming the command."""
  if not builder.is_prepared():
    raise FileNotFoundError(
        f"No prepared {name} dataset {builder.builder_config.name!r} in "
        f"{builder.data_dir_root!r}. Prepare it with: python -m experiments.prepare_data "
        f"--dataset={name} --manual_dir=... --data_dir={builder.data_dir_root} (same options)")
  return builder


JPEG_QUALITY = 95


def encode_jpegs(images) -> tuple[np.ndarray, np.ndarray]:
  """Images [V, H, W, 3] uint8 as (concatenated JPEG bytes [N] uint8, end offsets [V] int64)."""
  encoded = []
  for image in images:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="JPEG",
                                                      quality=JPEG_QUALITY)
    encoded.append(np.frombuffer(buffer.getvalue(), np.uint8))
  return np.concatenate(encoded), np.cumsum([len(e) for e in encoded]).astype(np.int64)


def decode_jpegs(data, ends) -> np.ndarray:
  """Inverse of `encode_jpegs`: [V, H, W, 3] uint8."""
  data = np.asarray(data, np.uint8).tobytes()
  starts = np.concatenate([[0], ends[:-1]])
  return np.stack([np.asarray(Image.open(io.BytesIO(data[a:b])).convert("RGB"))
                   for a, b in zip(starts, ends)])


def multiview_features(num_joints: int, **extra):
  """The TFDS features of a multi-view record (V views, any V): JPEG crops, crop cameras,
  2D joints and mask, camera-frame 3D joints (mm), view_mask, plus `extra` features."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  tensor = tfds.features.Tensor
  return tfds.features.FeaturesDict({
      "jpeg": tensor(shape=(None,), dtype=np.uint8),
      "jpeg_ends": tensor(shape=(None,), dtype=np.int64),
      "camera": tensor(shape=(None, 3, 3), dtype=np.float32),
      "joints_2d": tensor(shape=(None, num_joints, 2), dtype=np.float32),
      "joints_2d_mask": tensor(shape=(None, num_joints), dtype=np.bool_),
      "joints_3d": tensor(shape=(None, num_joints, 3), dtype=np.float32),
      "view_mask": tensor(shape=(None,), dtype=np.bool_),
      **extra,
  })


_VIEW_KEYS = ("camera", "joints_2d", "joints_2d_mask", "joints_3d", "view_mask")


def multiview_record(views: list[dict], **extra) -> dict:
  """A record of `multiview_features` from per-view dicts (image [S, S, 3], camera, joints_2d,
  joints_2d_mask, joints_3d); every view is present (view_mask True)."""
  jpeg, ends = encode_jpegs([v["image"] for v in views])
  record = {k: np.stack([v[k] for v in views]) for k in _VIEW_KEYS if k != "view_mask"}
  return dict(record, jpeg=jpeg, jpeg_ends=ends, view_mask=np.ones(len(views), bool), **extra)


def multiview_sample(record: dict) -> dict:
  """A stored multi-view record as a sample: the docs/design.md keys with a view axis (has_3d [V]
  True where the view is present) plus the record's other fields."""
  sample = {k: v.decode() if isinstance(v, bytes) else np.asarray(v)  # text features: str
            for k, v in record.items() if k not in ("jpeg", "jpeg_ends")}
  sample["image"] = decode_jpegs(record["jpeg"], np.asarray(record["jpeg_ends"]))
  sample["has_3d"] = sample["view_mask"].copy()
  return sample


def single_view_sample(sample: dict, view: int) -> dict:
  """View `view` of a multi-view sample as a single-image ("train_2d") sample."""
  keys = ("image", "camera", "joints_2d", "joints_2d_mask", "joints_3d", "has_3d")
  return {k: sample[k][view] for k in keys}


def multiview_source(builder, splits: dict[str, str]) -> Source:
  """The Source of a prepared multi-view dataset: {stream: split}; index i of a stream reads
  record i of its split (wrapping around); the stream "train_2d" reads single views: index i is
  view i mod V of record i // V of its split."""
  records = {stream: builder.as_data_source(split=split) for stream, split in splits.items()}
  train_2d = records.get("train_2d", ())
  num_views = len(train_2d[0]["view_mask"]) if len(train_2d) else 0

  def source(stream: str, index: int) -> dict:
    if stream not in records:
      raise KeyError(f"{builder.name} has no stream {stream!r}; streams: {sorted(records)}")
    data = records[stream]
    if not len(data):
      raise ValueError(f"{builder.name}: the split {splits[stream]!r} of stream {stream!r} is "
                       "empty")
    if stream != "train_2d":
      return multiview_sample(data[index % len(data)])
    sample = multiview_sample(data[(index // num_views) % len(data)])
    return single_view_sample(sample, index % num_views)

  # How many samples each held-out stream has, so that evaluation can cover all of them.
  source.sizes = {stream: len(data) for stream, data in records.items() if stream != "train_2d"}
  return source
