"""posejax.train.loop: resume gives identical parameters, stage 2 from stage 1, clear failures."""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from experiments.configs import synthetic as synthetic_config
from posejax.data.batching.sources import make_source
from posejax.evaluators import pose3d
from posejax.tasks import get_task
from posejax.train import checkpoints, loop
from tests.checkpoints_read import restored


def tiny_config(stages, stage_steps, **train):
  """The synthetic config's `stages` ("2d", "2d+ws", ...), each of `stage_steps` steps (an int,
  or one per stage), on tiny data; `train` overrides config.train (steps=N stops early)."""
  config = synthetic_config.get_config(stages)
  if isinstance(stage_steps, int):
    stage_steps = [stage_steps] * len(config.stages)
  for stage, count in zip(config.stages.values(), stage_steps):
    stage.steps = count
    if "optim" in stage:  # the config's warm-ups are longer than these stages
      stage.optim.warmup_steps = 0
  config.data.update(image_size=32, num_views=2, motion="procedural", workers=0,
                     occluder_probability=0.0)
  config.batch.update(labeled=8, multiview=8, num_views=2)
  config.model.name = "hrnetv2_w4_micro"  # tracing the step is these tests' cost
  config.train.update(**dict(dict(log_every=1, checkpoint_every=2), **train))
  config.eval.update(samples=1, validation_samples=1)
  return config


def plain_2d_config(steps):
  """Stage 1 alone with plain Adam (no clipping, unlike stage 2: another optimiser state)."""
  config = tiny_config("2d", steps)
  config.optim.clip_norm = 0.0
  return config


@pytest.fixture(scope="session")  # built once per worker: tests/conftest.py
def trained_2d(tmp_path_factory):
  """A workdir of plain_2d_config(2), trained once; a test that writes into it copies it."""
  path = tmp_path_factory.mktemp("trained_2d")
  loop.train_and_evaluate(plain_2d_config(2), str(path))
  return path


def final_params(workdir):
  manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")))
  restored = manager.restore(manager.latest_step())
  return manager.latest_step(), jax.tree_util.tree_leaves(restored["params"])


def test_interrupted_and_resumed_training_equals_straight_training(tmp_path, capsys):
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  loop.train_and_evaluate(tiny_config("2d+ws", (2, 2)), str(straight))
  # "Killed" at the stage boundary (stage 1 done), then again inside stage 2.
  loop.train_and_evaluate(tiny_config("2d+ws", (2, 2), steps=2), str(resumed))
  loop.train_and_evaluate(tiny_config("2d+ws", (2, 2), steps=3, checkpoint_every=1),
                          str(resumed))
  capsys.readouterr()
  results = loop.train_and_evaluate(tiny_config("2d+ws", (2, 2)), str(resumed))
  out = capsys.readouterr().out
  assert f"resumed from step 3 in {resumed / 'checkpoints'} (stage stage2)" in out
  assert re.findall(r"step (\d+)/4", out) == ["4"]  # only the remaining step ran
  assert final_params(straight)[0] == final_params(resumed)[0] == 4
  a, b = restored(straight, 4), restored(resumed, 4)
  for key in ("params", "rest", "opt_state"):
    np.testing.assert_array_equal(_flat(a[key]), _flat(b[key]))
  assert results["views"] == 2 and np.isfinite(results["mpjpe"])
  assert (resumed / "eval.json").exists()
  # Evaluating the workdir later gives the same numbers as the end of training.
  assert loop.evaluate_workdir(tiny_config("2d+ws", (2, 2)), str(resumed)) == results
  with pytest.raises(FileNotFoundError, match="train first"):
    loop.evaluate_workdir(tiny_config("2d", 4), str(tmp_path / "untrained"))



def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])


def test_stage_two_starts_from_stage_one_weights_with_a_fresh_optimiser(trained_2d, tmp_path,
                                                                        capsys):
  config = tiny_config("ws", 1)  # stage 2 clips its gradient: another optimiser state
  config.init_from = str(trained_2d)
  config.stages.stage1.optim.learning_rate = 0.0  # the weights stay where stage 1 left them
  loop.train_and_evaluate(config, str(tmp_path / "stage2"))
  assert f"initialised the model from {trained_2d} (step 2)" in capsys.readouterr().out
  first, second = restored(trained_2d, 2), restored(tmp_path / "stage2", 1)
  np.testing.assert_array_equal(_flat(second["params"]), _flat(first["params"]))
  # BatchNorm statistics moved one momentum step from stage 1's, far less than from a fresh
  # model's (the one stage 2 would have had without init_from).
  fresh = nnx.state(get_task(config).create_model(nnx.Rngs(0)), nnx.BatchStat)
  moved = np.abs(_flat(second["rest"]) - _flat(first["rest"])).max()
  assert moved < 0.5 * np.abs(_flat(second["rest"]) - _flat(fresh)).max()
  # A fresh optimiser: Adam has counted one step, not three (stage 1's two and this one).
  counts = [int(np.ravel(x)[0]) for x in jax.tree_util.tree_leaves(second["opt_state"])
            if np.ndim(x) == 0 and np.issubdtype(np.asarray(x).dtype, np.integer)]
  assert counts and set(counts) == {1}
  config.init_from = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="nowhere"):
    loop.train_and_evaluate(config, str(tmp_path / "stage2b"))


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(trained_2d, tmp_path):
  workdir = shutil.copytree(trained_2d, tmp_path / "run")
  good_step, good_params = final_params(workdir)
  config = plain_2d_config(6)
  config.optim.learning_rate = float("nan")
  with pytest.raises(loop.NonFiniteError, match="last good checkpoint \\(step 2\\)"):
    loop.train_and_evaluate(config, str(workdir))
  step, params = final_params(workdir)
  assert step == good_step == 2
  for a, b in zip(params, good_params):
    np.testing.assert_array_equal(a, b)


def test_damaged_checkpoint_is_a_clear_error(trained_2d, tmp_path):
  workdir = shutil.copytree(trained_2d, tmp_path / "run")
  for path in (workdir / "checkpoints" / "2").rglob("*"):
    if path.is_file():
      path.write_bytes(b"garbage")
  with pytest.raises(RuntimeError, match="Cannot restore checkpoint 2"):
    loop.train_and_evaluate(plain_2d_config(4), str(workdir))


def test_stage_one_then_weak_supervision_in_one_run_keeps_the_best_and_writes_tensorboard(
    tmp_path, capsys):
  config = tiny_config("2d+ws", (2, 1), validate_every=1)
  loop.train_and_evaluate(config, str(tmp_path))
  out = capsys.readouterr().out
  assert "step 0: stage 'stage1' (objective '2d', steps 0-2" in out
  assert ("step 2: stage 'stage2' (objective 'ws', steps 2-3, adam at learning rate 0.0001, "
          "cosine to 0 at step 1 of the stage)") in out
  assert out.count("images per step") == 2 and "), 24 images per step" in out
  validation = {int(step): float(mm) for step, mm in
                re.findall(r"step (\d+): validation mpjpe ([\d.]+)", out)}
  assert sorted(validation) == [1, 2, 3]
  best = ocp.CheckpointManager(os.path.abspath(tmp_path / "best"))
  assert best.all_steps() == [min(validation, key=validation.get)]
  events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  assert len(events) == 1
  # Read back with TensorBoard's own reader (no TensorFlow): every term and the validation.
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=import-outside-toplevel
  scalars = event_accumulator.EventAccumulator(str(events[0]))
  scalars.Reload()
  tags = set(scalars.Tags()["scalars"])
  assert {"loss", "heatmap", "multiview", "limb", "validation/mpjpe", "learning_rate",
          "images_per_second", "input_wait_fraction"} <= tags
  assert [e.step for e in scalars.Scalars("loss")] == [1, 2, 3]
  assert [e.value for e in scalars.Scalars("learning_rate")] == pytest.approx([5e-4, 5e-4, 1e-4])
  results = loop.evaluate_workdir(checkpoints.load_config(str(tmp_path)), str(tmp_path), "best")
  assert json.loads((tmp_path / "eval_best.json").read_text())["step"] == best.all_steps()[0]
  assert np.isfinite(results["mpjpe"])
  # On the validation stream the best checkpoint scores what the training printed for it.
  results = loop.evaluate_workdir(checkpoints.load_config(str(tmp_path)), str(tmp_path), "best",
                                  stream="validation")
  assert f"{results['mpjpe']:.4g}" == f"{min(validation.values()):.4g}"
  assert (tmp_path / "eval_best_validation.json").exists()


def test_best_keeps_the_weights_and_saves_only_on_improvement_across_a_resume(
    tmp_path, monkeypatch, capsys):
  # Validation scores scripted per step: 1, 2, 4 and 6 improve; 3 and 5 (after the resume,
  # worse than step 4's, which only best/ remembers) do not.
  scripted = {1: 3.0, 2: 1.0, 3: 2.0, 4: 0.5, 5: 0.7, 6: 0.4}
  make_task, steps = loop.get_task, iter(sorted(scripted))  # one order over both runs

  def scripted_task(config):
    task = make_task(config)
    evaluate = task.evaluate

    def scored(model, source, stream, samples):
      if stream != "validation":
        return evaluate(model, source, stream=stream, samples=samples)
      return {task.best_metric: scripted[next(steps)]}

    task.evaluate = scored
    return task

  monkeypatch.setattr(loop, "get_task", scripted_task)
  saves = []
  monkeypatch.setattr(ocp.CheckpointManager, "save", lambda self, step, *a, _save=(
      ocp.CheckpointManager.save), **k: saves.append((os.path.basename(self.directory), step))
      or _save(self, step, *a, **k))
  loop.train_and_evaluate(tiny_config("2d", 6, validate_every=1, steps=4), str(tmp_path))
  loop.train_and_evaluate(tiny_config("2d", 6, validate_every=1), str(tmp_path))
  assert [step for name, step in saves if name == "best"] == [1, 2, 4, 6]
  out = capsys.readouterr().out
  assert "step 3: validation mpjpe 2\n" in out and "step 5: validation mpjpe 0.7\n" in out
  assert f"step 4: validation mpjpe 0.5 (the best so far, kept in {tmp_path / 'best'})" in out
  best = ocp.CheckpointManager(os.path.abspath(tmp_path / "best"))
  assert best.all_steps() == [6]
  assert set(best.restore(6)) == {"params", "rest"}  # no optimiser state
  model, _ = checkpoints.restore_model(str(tmp_path), checkpoint="best")
  weights = restored(tmp_path, 6)  # the TrainState of step 6 in checkpoints/
  np.testing.assert_array_equal(_flat(nnx.state(model, nnx.Param)), _flat(weights["params"]))


def test_evaluation_per_action_weights_views_like_the_whole(trained_2d):
  model, config = checkpoints.restore_model(str(trained_2d))
  plain = make_source(config.data)

  def with_actions(stream, index):
    sample = dict(plain(stream, index))
    sample["view_mask"] = np.array([True, index != 1])  # a masked view must not count
    return dict(sample, action=b"jump" if index % 2 else b"walk")

  results = get_task(config).evaluate(model, with_actions, stream="test", samples=3)
  assert results["views"] == 5
  walk, jump = results["per_action"]["walk"], results["per_action"]["jump"]
  np.testing.assert_allclose(results["mpjpe"], (4 * walk["mpjpe"] + jump["mpjpe"]) / 5,
                             rtol=1e-6)
  table = pose3d.format_results(results)
  assert "walk" in table and "jump" in table and "mean of actions" in table


def _run_cli(module, *args):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=pathlib.Path(__file__).parents[1],
                        capture_output=True, text=True, timeout=180,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))


def test_a_users_mistakes_are_one_line_errors(tmp_path):
  cases = {
      "the config has no field 'stepz' (did you mean 'steps'?)": (
          "experiments.train", "--config=experiments/configs/synthetic.py:2d",
          f"--workdir={tmp_path}", "--config.train.stepz=1"),
      "no such config file: experiments/configs/nope.py": (
          "experiments.train", "--config=experiments/configs/nope.py", f"--workdir={tmp_path}"),
      "config.train.cpu_fusions='ynnpack': expected one of ['xla', 'ynn']": (
          "experiments.train", "--config=experiments/configs/synthetic.py:2d",
          f"--workdir={tmp_path}", "--config.train.cpu_fusions=ynnpack"),
      "Unknown or repeated stage(s) ['wz']": (
          "experiments.train", "--config=experiments/configs/synthetic.py:wz",
          f"--workdir={tmp_path}"),
      f"is {str(tmp_path)!r} a training workdir": (
          "experiments.evaluate", f"--workdir={tmp_path}"),
  }
  for message, (module, *args) in cases.items():
    result = _run_cli(module, *args)
    assert result.returncode == 2, (args, result.stderr[-2000:])
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
  # --debug brings the traceback back.
  result = _run_cli("experiments.evaluate", f"--workdir={tmp_path}", "--debug")
  assert result.returncode != 0 and "Traceback" in result.stderr


def test_a_sigterm_while_a_step_logs_saves_the_next_step_before_stopping(tmp_path, monkeypatch,
                                                                          capsys):
  # The signal lands after the step decided not to save (steps between checkpoints): the run
  # must not stop without a checkpoint of the step it reports (it once did).
  make_writer = loop.MetricWriter

  def signalling_writer(*args, **kwargs):
    writer = make_writer(*args, **kwargs)
    write_scalars = writer.write_scalars

    def write(step, scalars):
      write_scalars(step, scalars)
      if step == 2 and "loss" in scalars:
        os.kill(os.getpid(), signal.SIGTERM)

    writer.write_scalars = write
    return writer

  monkeypatch.setattr(loop, "MetricWriter", signalling_writer)
  assert loop.train_and_evaluate(tiny_config("2d", 6, checkpoint_every=100), str(tmp_path)) == {}
  assert "SIGTERM: saved step 3, stopping" in capsys.readouterr().out
  assert final_params(tmp_path)[0] == 3


def test_the_signal_at_step_testing_aid_refuses_a_malformed_value(monkeypatch):
  monkeypatch.setenv("POSEJAX_SIGNAL_AT_STEP", "13:SIGTERM")
  assert loop._signal_at_step() == (13, signal.SIGTERM)
  for bad in ("SIGTERM", "13:TERM", "x:SIGKILL"):
    monkeypatch.setenv("POSEJAX_SIGNAL_AT_STEP", bad)
    with pytest.raises(ValueError, match="expected STEP:SIGNAL"):
      loop._signal_at_step()


def test_training_imports_no_tensorflow():
  code = ("import sys, experiments.train, posejax.train.loop, posejax.tasks.pose25d; "
          "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
  subprocess.run([sys.executable, "-c", code], cwd=pathlib.Path(__file__).parents[1],
                 check=True, timeout=120)


def test_the_progress_line_says_how_long_the_loop_waited_for_batches(monkeypatch, tmp_path,
                                                                      capsys):
  real_batches = loop.pipeline.batches

  def slow_batches(*args, **kwargs):  # an input pipeline that needs 0.5 s per batch
    for batch in real_batches(*args, **kwargs):
      time.sleep(0.5)
      yield batch

  monkeypatch.setattr(loop.pipeline, "batches", slow_batches)
  loop.train_and_evaluate(tiny_config("2d", 4, checkpoint_every=100, validate_every=0),
                          str(tmp_path))
  waits = {int(step): int(percent) for step, percent in re.findall(
      r"step (\d+)/4 .* input wait (\d+) %", capsys.readouterr().out)}
  assert sorted(waits) == [1, 2, 3, 4]
  # Step 1's interval holds the step's compile; after it the tiny step takes a fraction of the
  # 0.5 s that every batch waits.
  assert all(50 <= waits[step] <= 100 for step in (2, 3, 4)), waits
