r"""Prepare a dataset once into a data dir (TFDS, ArrayRecord), for long runs.

The built-in synthetic data (rendered; about 40 views/s per core at 128 px, BUILD_NOTES.md):

    python -m experiments.prepare_data --config=experiments/configs/synthetic.py \
        --data_dir=~/posejax_data --train_2d=20000 --train_multiview=20000 --test=2000

A real dataset of posejax.data.real.datasets, from the files as its owners distribute them
(README.md, "Real datasets", says which files each one expects):

    python -m experiments.prepare_data --dataset=h36m --manual_dir=~/h36m \
        --data_dir=~/posejax_data --option=image_size=256 --option=train_every=5

`--option=NAME=VALUE` sets one of the dataset's options (its builder_config arguments; values
are Python literals, else strings); training must use the same options to find the data. TFDS
shows progress and only publishes the dataset once it is complete.
"""

from __future__ import annotations

import ast
import os

from absl import app, flags
from ml_collections import config_flags

from experiments import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Configuration file (synthetic data).")
_DATASET = flags.DEFINE_string("dataset", None, "A registered real dataset, e.g. h36m.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "The dataset's files, as distributed.")
_OPTION = flags.DEFINE_multi_string("option", [], "NAME=VALUE: a dataset option.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where to write the dataset.", required=True)
_TRAIN_2D = flags.DEFINE_integer("train_2d", 20000, "Synthetic: 2D-labeled single images.")
_TRAIN_MULTIVIEW = flags.DEFINE_integer("train_multiview", 20000, "Synthetic: multi-view samples.")
_TEST = flags.DEFINE_integer("test", 2000, "Synthetic: held-out multi-view samples with 3D.")


def parse_options(options: list[str]) -> dict:
  """["image_size=256", "train_subjects=('S1',)"] -> {"image_size": 256, ...}."""
  parsed = {}
  for option in options:
    name, separator, value = option.partition("=")
    if not separator or not name:
      raise app.UsageError(f"--option must be NAME=VALUE, got {option!r}")
    try:
      parsed[name] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      parsed[name] = value
  return parsed


def main(argv):
  del argv
  data_dir = os.path.expanduser(_DATA_DIR.value)
  if (_CONFIG.value is None) == (_DATASET.value is None):
    raise app.UsageError("Give either --config=experiments/configs/synthetic.py (synthetic data) "
                         "or --dataset=NAME --manual_dir=DIR (a real dataset)")
  if _DATASET.value is not None:
    from posejax.data.real import datasets  # pylint: disable=import-outside-toplevel
    if _MANUAL_DIR.value is None:
      raise app.UsageError(f"--dataset={_DATASET.value} needs --manual_dir, the directory of "
                           "its files as distributed (README.md: Real datasets)")
    builder = datasets.prepare(_DATASET.value, _MANUAL_DIR.value, data_dir,
                               **parse_options(_OPTION.value))
  else:
    from posejax.data.render import (  # pylint: disable=import-outside-toplevel
        synthetic, synthetic_tfds)
    sizes = {"train_2d": _TRAIN_2D.value, "train_multiview": _TRAIN_MULTIVIEW.value,
             "test": _TEST.value}
    builder = synthetic_tfds.prepare(synthetic.config_from(_CONFIG.value.data), sizes, data_dir)
  print(f"prepared {builder.name}/{builder.builder_config.name} in {builder.data_dir}")


if __name__ == "__main__":
  cli.run(main, config_flags=[_CONFIG])
