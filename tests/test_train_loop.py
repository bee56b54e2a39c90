"""posejax.train.loop: resume gives identical parameters, stage 2 from stage 1, clear failures."""

import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments.configs import synthetic as synthetic_config
from posejax.train import loop


def tiny_config(mode, steps, **train):
  config = synthetic_config.get_config(mode)
  config.data.update(image_size=64, num_views=2, motion="procedural", workers=0,
                     occluder_probability=0.0)
  config.batch.update(labeled=8, multiview=8, num_views=2)
  config.train.update(steps=steps, log_every=1, checkpoint_every=2, **train)
  config.eval.samples = 1
  return config


def final_params(workdir):
  manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")))
  restored = manager.restore(manager.latest_step())
  return manager.latest_step(), jax.tree_util.tree_leaves(restored["params"])


def test_interrupted_and_resumed_training_equals_straight_training(tmp_path):
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  loop.train_and_evaluate(tiny_config("2d", 4), str(straight))
  loop.train_and_evaluate(tiny_config("2d", 2), str(resumed))  # "killed" after 2 steps
  results = loop.train_and_evaluate(tiny_config("2d", 4), str(resumed))  # resumes at 2
  step_a, params_a = final_params(straight)
  step_b, params_b = final_params(resumed)
  assert step_a == step_b == 4
  for a, b in zip(params_a, params_b):
    np.testing.assert_array_equal(a, b)
  assert results["views"] == 2 and np.isfinite(results["mpjpe"])
  assert (resumed / "eval.json").exists()
  # Evaluating the workdir later gives the same numbers as the end of training.
  assert loop.evaluate_workdir(tiny_config("2d", 4), str(resumed)) == results
  with pytest.raises(FileNotFoundError, match="train first"):
    loop.evaluate_workdir(tiny_config("2d", 4), str(tmp_path / "untrained"))


def test_stage_two_starts_from_stage_one_and_refuses_nothing_to_start_from(tmp_path):
  loop.train_and_evaluate(tiny_config("2d", 2), str(tmp_path / "stage1"))
  config = tiny_config("ws", 2)
  config.init_from = str(tmp_path / "stage1")
  loop.train_and_evaluate(config, str(tmp_path / "stage2"))
  assert final_params(tmp_path / "stage2")[0] == 2
  config.init_from = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="nowhere"):
    loop.train_and_evaluate(config, str(tmp_path / "stage2b"))


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
  loop.train_and_evaluate(tiny_config("2d", 2), str(tmp_path))
  good_step, good_params = final_params(tmp_path)
  config = tiny_config("2d", 6)
  config.optim.learning_rate = float("nan")
  with pytest.raises(loop.NonFiniteError, match="last good checkpoint \\(step 2\\)"):
    loop.train_and_evaluate(config, str(tmp_path))
  step, params = final_params(tmp_path)
  assert step == good_step == 2
  for a, b in zip(params, good_params):
    np.testing.assert_array_equal(a, b)


def test_damaged_checkpoint_is_a_clear_error(tmp_path):
  loop.train_and_evaluate(tiny_config("2d", 2), str(tmp_path))
  for path in (tmp_path / "checkpoints" / "2").rglob("*"):
    if path.is_file():
      path.write_bytes(b"garbage")
  with pytest.raises(RuntimeError, match="Cannot restore checkpoint 2"):
    loop.train_and_evaluate(tiny_config("2d", 4), str(tmp_path))


def test_config_typo_names_the_field(tmp_path):
  root = pathlib.Path(__file__).parents[1]
  result = subprocess.run(
      [sys.executable, "-m", "experiments.train",
       "--config=experiments/configs/synthetic.py:2d", f"--workdir={tmp_path}",
       "--config.train.stepz=1"], cwd=root, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode != 0
  assert "stepz" in result.stderr
