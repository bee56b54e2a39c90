"""Render the synthetic dataset once into a data dir (TFDS, ArrayRecord), for long runs.

    python -m experiments.prepare_data --config=experiments/configs/synthetic.py \
        --data_dir=~/posejax_data --train_2d=20000 --train_multiview=20000 --test=2000

Rendering runs at about 40 views/s per core at 128 px (BUILD_NOTES.md); TFDS shows progress
and only publishes the dataset once it is complete. Training reads it when the config's
data.data_dir is set to the same directory (and the sizes match).
"""

from __future__ import annotations

import os

from absl import app, flags
from ml_collections import config_flags

from posejax.data import synthetic

_CONFIG = config_flags.DEFINE_config_file("config", None, "Configuration file.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where to write the dataset.", required=True)
_TRAIN_2D = flags.DEFINE_integer("train_2d", 20000, "2D-labeled single images.")
_TRAIN_MULTIVIEW = flags.DEFINE_integer("train_multiview", 20000, "Multi-view samples.")
_TEST = flags.DEFINE_integer("test", 2000, "Held-out multi-view samples with 3D ground truth.")


def main(argv):
  del argv
  if _CONFIG.value is None:
    raise app.UsageError("--config is required, e.g. --config=experiments/configs/synthetic.py")
  from posejax.data import synthetic_tfds  # pylint: disable=import-outside-toplevel
  sizes = {"train_2d": _TRAIN_2D.value, "train_multiview": _TRAIN_MULTIVIEW.value,
           "test": _TEST.value}
  data_dir = os.path.expanduser(_DATA_DIR.value)
  builder = synthetic_tfds.prepare(synthetic.config_from(_CONFIG.value.data), sizes, data_dir)
  print(f"prepared {builder.builder_config.name} in {builder.data_dir}")


if __name__ == "__main__":
  app.run(main)
