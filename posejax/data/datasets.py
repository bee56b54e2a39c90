"""The registry of real datasets: one name per TFDS builder, prepared once, then read as a Source.

    from posejax.data import datasets
    datasets.prepare("h36m", manual_dir="~/h36m", data_dir="~/posejax_data", image_size=256)
    source = datasets.source("h36m", data_dir="~/posejax_data", image_size=256)
    sample = source("test", 0)  # the DESIGN.md keys, like the synthetic data

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
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable

Source = Callable[[str, int], dict]


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
    "mpii": DatasetInfo("posejax.data.mpii", ("train_2d",), "http://human-pose.mpi-inf.mpg.de/"),
    "coco": DatasetInfo("posejax.data.coco", ("train_2d",), "https://cocodataset.org/"),
    "own_multiview": DatasetInfo("posejax.data.manifest", ("train_multiview",),
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
