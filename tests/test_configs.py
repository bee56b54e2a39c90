"""Every training config loads for every valid stage list, its stages are consistent, and it
names only registered datasets."""

import importlib

import numpy as np
import pytest

from experiments.studies import softargmax_temperature
from posejax.data.batching import pipeline
from posejax.data.real import datasets
from posejax.errors import ConfigError
from posejax.tasks import get_task
from posejax.tasks.pose25d.objective import OBJECTIVES, Objective
from posejax.train import loop
from posejax.train import optimizer as optim
from posejax.train import step as step_lib

CONFIGS = ("synthetic", "synthetic_gpu", "h36m", "mpi_inf_3dhp")
# The colon arguments: stage objectives joined by "+" (None: the config's default, "2d+ws").
STAGE_ARGS = (None, "2d+ws", "2d+fs", "2d", "ws", "fs")
LOSS_TERMS = ("heatmap", "depth", "multiview", "limb", "knee", "scale_bone", "scale_tilt")


def _config(name, arg=None):
  return importlib.import_module(f"experiments.configs.{name}").get_config(arg)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("arg", STAGE_ARGS)
def test_config_loads_and_is_consistent(name, arg):
  config = _config(name, arg)
  task = get_task(config)
  stages = loop.stages_of(config)  # every stage has an objective, steps > 0, an optimiser
  assert [s.objective for s in stages] == (arg or "2d+ws").split("+")
  assert [s.name for s in stages] == [f"stage{i + 1}" for i in range(len(stages))]
  assert set(task.objectives) == set(OBJECTIVES)
  for previous, stage in zip(stages, stages[1:]):
    assert previous.end == stage.start  # the stages follow one another
  assert 0 < loop.total_steps(config, stages) <= stages[-1].end
  for stage in stages:
    task.check_objective(stage.objective)
    assert stage.end > stage.start
    optim.make_optimizer(stage.optim)  # the config's optim with the stage's overrides
    spec = task.batch_spec(stage.objective)  # a valid batch
    assert isinstance(spec, pipeline.BatchSpec) and spec.labeled > 0
    assert (spec.multiview == 0) == (stage.objective == "2d")
    task.loss_terms(stage.objective)  # the objective's settings are valid
  assert set(LOSS_TERMS) <= set(config.loss_weights)  # a weight for every term
  step_lib.check_cpu_fusions(config.train.cpu_fusions)
  if config.data.source == "datasets":
    for stream, spec in config.data.streams.items():
      dataset, _, own_stream = spec.partition(":")
      assert (own_stream or stream) in datasets.DATASETS[dataset].streams, (stream, spec)
    assert set(config.data.options) <= set(datasets.DATASETS)


def test_paper_recipe():
  config = _config("h36m")
  stages = loop.stages_of(config)
  assert [s.objective for s in stages] == ["2d", "ws"]
  assert (config.batch.labeled, config.batch.multiview, config.batch.num_views) == (128, 32, 4)
  assert config.model.name == "hrnet_w32" and config.data.options.h36m.image_size == 256
  for stage in stages:  # each stage: Adam 5e-4, x0.1 at 50k of its 60k steps
    assert (stage.optim["name"], stage.optim["learning_rate"], tuple(stage.optim["decay_steps"]),
            stage.optim["decay_factor"], stage.end - stage.start) == (
                "adam", 5e-4, (50_000,), 0.1, 60_000)
  assert config.train.steps == 0  # both stages in full: 120k steps
  assert config.train.cpu_fusions == "ynn"  # HRNet-W32's faster step on a CPU
  assert config.model.temperature == 50.0  # lambda
  assert config.loss_weights.knee == 0.0  # ours, not the method's
  spec = get_task(config).batch_spec("ws")  # scale +-20 %, rotation +-30 degrees
  assert (spec.augment, spec.scale_range, spec.max_rotation_deg) == (True, 0.2, 30.0)
  assert config.optim.clip_norm == 0 and config.batch.flip_probability == 0.5
  assert config.objective.losses_3d_move_2d and config.objective.root_depth_gradient
  assert config.pseudo_labels.enabled and config.pseudo_labels.threshold == 0.5  # studio data
  assert get_task(config).batch_spec("ws").pseudo_labels_as_2d


def test_schedule_fields_can_be_set_on_the_command_line():
  # The fields exist in the config (a locked ConfigDict refuses an override of a missing one)
  # and reach every stage's optimiser that does not set its own (ws sets its warm-up): a
  # cosine schedule ends at 0.
  config = _config("synthetic", "2d+fs")
  config.lock()  # as config_flags does
  config.optim.update(schedule="cosine", warmup_steps=10, total_steps=100)
  for stage in loop.stages_of(config):
    _, schedule = optim.make_optimizer(stage.optim)
    assert float(schedule(0)) == 0 and float(schedule(100)) == 0
    assert float(schedule(10)) == pytest.approx(stage.optim["learning_rate"])


def test_a_cosine_stage_without_total_steps_decays_to_zero_at_its_own_end():
  config = _config("synthetic", "2d+ws")
  config.stages.stage1.steps, config.stages.stage2.steps = 100, 40
  config.stages.stage2.optim = dict(learning_rate=1e-3, schedule="cosine")
  first, second = loop.stages_of(config)
  _, schedule = optim.make_optimizer(second.optim)
  assert float(schedule(0)) == pytest.approx(1e-3) and float(schedule(40)) == 0
  assert 0 < float(schedule(20)) < 1e-3
  _, schedule = optim.make_optimizer(first.optim)  # stage 1 keeps the config's constant rate
  assert float(schedule(0)) == float(schedule(100)) == pytest.approx(5e-4)


def test_the_main_jobs_weak_stage_warms_up_then_decays_to_zero_at_its_end():
  # A fast start let the first multi-view batches send some poses' depth to its mirror image
  # in two of four batch orders (BUILD_NOTES.md, sessions 21 and 22).
  first, second = loop.stages_of(_config("synthetic"))
  _, schedule = optim.make_optimizer(second.optim)
  assert second.objective == "ws" and second.end - second.start == 500
  assert float(schedule(0)) == 0 and float(schedule(500)) == 0
  assert float(schedule(125)) == pytest.approx(5e-5) and float(schedule(250)) == pytest.approx(1e-4)
  _, schedule = optim.make_optimizer(first.optim)
  assert float(schedule(0)) == pytest.approx(5e-4)


def test_a_stage_shorter_than_its_warm_up_stops_the_run_before_anything_is_built(tmp_path):
  config = _config("synthetic")
  config.stages.stage2.steps = 50
  with pytest.raises(ConfigError, match=r"stages\.stage2: a cosine schedule needs more steps "
                     r"than its warm-up: total_steps=50 .*warmup_steps=250"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()  # stage 1 did not train for nothing


def test_augmentation_ranges_can_be_set_on_the_command_line():
  config = _config("synthetic", "2d+ws")
  config.lock()  # as config_flags does
  config.batch.update(max_rotation_deg=0.0, scale_range=0.1)
  for objective in ("2d", "ws", "fs"):
    spec = get_task(config).batch_spec(objective)
    assert (spec.max_rotation_deg, spec.scale_range) == (0.0, 0.1)


def test_the_synthetic_temperature_reads_joints_between_cell_centres():
  # The synthetic config's 16 x 16 heatmaps (64 px, stride 4): its soft-argmax temperature must
  # read a perfect Gaussian target (the heatmap loss's sigma) to well under a pixel, where the
  # method's lambda = 50 snaps towards cell centres (BUILD_NOTES.md, session 16).
  config = _config("synthetic")
  assert config.data.image_size == 16 * softargmax_temperature.STRIDE
  sigma = Objective().heatmap_sigma
  joints = softargmax_temperature.random_joints(500)

  def mean_error(temperature):
    return float(np.mean(softargmax_temperature.decoding_error(temperature, sigma, joints)))

  assert mean_error(config.model.temperature) < 0.15
  assert mean_error(50.0) > 0.5


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("arg", ["wz", "2d+wz"])
def test_unknown_stage_objective_is_an_error(name, arg):
  with pytest.raises(ValueError, match="Unknown .*'wz'"):
    _config(name, arg)


def _flat(config) -> dict:
  def items(prefix, value):
    if hasattr(value, "items"):
      for key, item in value.items():
        yield from items(f"{prefix}{key}.", item)
    else:
      yield prefix.rstrip("."), value
  return dict(items("", config.to_dict()))


def test_the_gpu_config_is_the_main_job_with_more_compute():
  # What synthetic_gpu.py's docstring says it changes, and nothing else: the same method,
  # data, losses and learning rates as the main job.
  main, gpu = _flat(_config("synthetic")), _flat(_config("synthetic_gpu"))
  assert main.keys() == gpu.keys()
  changed = {key: gpu[key] for key in main if main[key] != gpu[key]}
  assert changed == {
      "model.name": "hrnet_w32", "model.dtype": "bfloat16", "data.image_size": 128,
      "data.workers": 16, "data.render_processes": 16, "batch.labeled": 64, "batch.multiview": 16,
      "stages.stage1.steps": 3000, "stages.stage2.steps": 1000,
      "data.sizes.train_2d": 8000, "data.sizes.train_multiview": 2000,
      "train.log_every": 250, "train.checkpoint_every": 500, "train.validate_every": 500}
