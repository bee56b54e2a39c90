"""Every training config loads in every mode and names only registered datasets."""

import importlib

import pytest

from posejax.data.real import datasets
from posejax.data.batching import pipeline

CONFIGS = ("synthetic", "h36m", "mpi_inf_3dhp")


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("mode", pipeline.MODES)
def test_config_loads_and_is_consistent(name, mode):
  config = importlib.import_module(f"experiments.configs.{name}").get_config(mode)
  assert config.mode == mode
  pipeline.BatchSpec(mode=mode, **config.batch)  # a valid batch
  assert config.train.stage1_steps < config.train.steps
  if config.data.source == "datasets":
    for stream, spec in config.data.streams.items():
      dataset, _, own_stream = spec.partition(":")
      assert (own_stream or stream) in datasets.DATASETS[dataset].streams, (stream, spec)
    assert set(config.data.options) <= set(datasets.DATASETS)


def test_paper_recipe():
  config = importlib.import_module("experiments.configs.h36m").get_config("ws")
  assert (config.batch.labeled, config.batch.multiview, config.batch.num_views) == (128, 32, 4)
  assert config.model.name == "hrnet_w32" and config.data.options.h36m.image_size == 256
  assert (config.optim.learning_rate, tuple(config.optim.decay_steps), config.train.steps) == (
      5e-4, (50_000,), 60_000)
  assert config.optim.clip_norm == 0 and config.batch.flip_probability == 0.5
  assert config.objective.losses_3d_move_2d and config.objective.root_depth_gradient
  assert config.pseudo_labels.enabled and config.pseudo_labels.threshold == 0.5  # studio data


def test_unknown_mode_is_an_error():
  with pytest.raises(ValueError, match="Unknown mode 'wz'"):
    importlib.import_module("experiments.configs.synthetic").get_config("wz")
