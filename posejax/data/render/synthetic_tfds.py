r"""The synthetic data as a TFDS dataset, prepared once into a data dir so long runs don't re-render.

    python -m experiments.prepare_data --config=experiments/configs/synthetic.py \
        --data_dir=~/posejax_data --train_2d=20000 --train_multiview=20000 --test=2000

Stored as ArrayRecord (random access, no TensorFlow needed to write or read). One record per
sample with a view axis: train_2d samples have one view. Records hold exactly what
`synthetic.sample` returns for their `index`, so a prepared set and on-the-fly rendering give
the same samples.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from posejax.data.render import synthetic

J = synthetic.J


@dataclasses.dataclass(kw_only=True)
class SyntheticBuilderConfig(tfds.core.BuilderConfig):
  synthetic: synthetic.SyntheticConfig = synthetic.SyntheticConfig()
  sizes: tuple[tuple[str, int], ...] = (("train_2d", 1000), ("train_multiview", 1000),
                                        ("test", 200))


def builder_config(config: synthetic.SyntheticConfig, sizes: dict[str, int]):
  """A builder config named after everything that determines the data."""
  unknown = set(sizes) - set(synthetic.STREAMS)
  if unknown:
    raise ValueError(f"Unknown streams {sorted(unknown)}; choose from {synthetic.STREAMS}")
  motion = os.path.basename(config.motion).replace(".", "_")
  name = (f"s{config.image_size}_v{config.num_views}_seed{config.seed}_{motion}"
          f"_occ{int(round(config.occluder_probability * 100))}"
          f"_m{int(round(config.crop_margin * 100))}_" + "_".join(
              f"{k}{v}" for k, v in sorted(sizes.items())))
  return SyntheticBuilderConfig(name=name, synthetic=config, sizes=tuple(sorted(sizes.items())))


class PosejaxSynthetic(tfds.core.GeneratorBasedBuilder):
  """posejax's synthetic multi-view humans (see posejax.data.render.synthetic)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.synthetic.image_size
    zlib = tfds.features.Encoding.ZLIB
    tensor = tfds.features.Tensor
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        "index": np.int64,
        "image": tensor(shape=(None, size, size, 3), dtype=np.uint8, encoding=zlib),
        "camera": tensor(shape=(None, 3, 3), dtype=np.float32),
        "joints_2d": tensor(shape=(None, J, 2), dtype=np.float32),
        "joints_2d_mask": tensor(shape=(None, J), dtype=np.bool_),
        "joints_3d": tensor(shape=(None, J, 3), dtype=np.float32),
        "view_mask": tensor(shape=(None,), dtype=np.bool_),
        "world_to_camera_rotation": tensor(shape=(None, 3, 3), dtype=np.float32),
        "world_to_camera_translation": tensor(shape=(None, 3), dtype=np.float32),
        "joints_world": tensor(shape=(J, 3), dtype=np.float32),
    }), description=__doc__)

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {stream: self._generate_examples(stream, count)
            for stream, count in self.builder_config.sizes}

  def _generate_examples(self, stream: str, count: int):
    for index in range(count):
      yield index, to_record(synthetic.sample(self.builder_config.synthetic, stream, index),
                             index)


def to_record(sample: dict, index: int) -> dict:
  """A synthetic sample with a view axis on every per-view key (train_2d: one view)."""
  if sample["image"].ndim == 3:  # single view
    sample = {k: v[None] for k, v in sample.items()}
    sample["view_mask"] = np.ones(1, bool)
    sample["world_to_camera_rotation"] = np.zeros((1, 3, 3), np.float32)  # not kept for 2D
    sample["world_to_camera_translation"] = np.zeros((1, 3), np.float32)
    sample["joints_world"] = np.zeros((J, 3), np.float32)
  return dict(sample, index=index)


def from_record(record: dict, stream: str) -> dict:
  """Inverse of `to_record` (drops the bookkeeping of single views)."""
  record = {k: np.asarray(v) for k, v in record.items() if k != "index"}
  if stream == "train_2d":
    return {k: record[k][0] for k in ("image", "camera", "joints_2d", "joints_2d_mask",
                                      "joints_3d")}
  return record


def prepare(config: synthetic.SyntheticConfig, sizes: dict[str, int], data_dir: str):
  """Renders and writes the dataset once (TFDS writes into a temporary directory and renames it
  when complete, so an interrupted run leaves nothing half-written). Returns the builder."""
  builder = PosejaxSynthetic(config=builder_config(config, sizes), data_dir=data_dir,
                             file_format="array_record")
  builder.download_and_prepare()
  return builder


def prepared_source(config: synthetic.SyntheticConfig, sizes: dict[str, int], data_dir: str):
  """(stream, index) -> the index-th stored record of the stream (wrapping around). TFDS stores
  records in a fixed shuffled order, so this is deterministic; a record's own sample index is in
  its "index" field.

  Raises:
    FileNotFoundError: the data dir holds no prepared dataset for this config (names the
      command that prepares it).
  """
  builder = PosejaxSynthetic(config=builder_config(config, sizes), data_dir=data_dir,
                             file_format="array_record")
  if not builder.is_prepared():
    raise FileNotFoundError(
        f"No prepared synthetic dataset {builder.builder_config.name!r} in {data_dir!r}. "
        "Prepare it with: python -m experiments.prepare_data --config=... "
        f"--data_dir={data_dir} (with the same sizes)")
  sources = {stream: builder.as_data_source(split=stream) for stream, _ in
             builder.builder_config.sizes}

  def source(stream: str, index: int) -> dict:
    return from_record(sources[stream][index % len(sources[stream])], stream)

  source.sizes = {stream: len(records) for stream, records in sources.items()}
  return source
