"""A new pose system is a Task defined in its own module: here, in this test module alone, a tiny
2D regression of joint coordinates, trained through the real loop (stages, checkpoints, exact
resume, best checkpoint, evaluation), and a distillation task whose frozen teacher never
changes. Nothing in posejax/train knows these tasks."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from ml_collections import config_dict

from posejax.data.batching.pipeline import BatchSpec
from posejax.tasks import TASKS, Task, get_task, register
from posejax.train import checkpoints, loop

NUM_JOINTS = 17


class Regressor(nnx.Module):
  """image -> [J, 2] joint pixels: a conv, a global average, a linear head."""

  def __init__(self, rngs: nnx.Rngs):
    self.conv = nnx.Conv(3, 8, (3, 3), strides=(2, 2), rngs=rngs)
    self.norm = nnx.BatchNorm(8, rngs=rngs)
    self.head = nnx.Linear(8, 2 * NUM_JOINTS, rngs=rngs)

  def __call__(self, images):
    size = images.shape[-2]
    x = self.norm(nnx.relu(self.conv(images.astype(jnp.float32) / 255.0)))
    out = self.head(x.mean(axis=(-3, -2)))
    return (0.5 + out.reshape(out.shape[:-1] + (NUM_JOINTS, 2))) * size


def _pixel_error(model, images, joints_2d, mask):
  error = jnp.linalg.norm(model(images) - joints_2d, axis=-1)
  return jnp.sum(error * mask) / jnp.maximum(jnp.sum(mask), 1)


@register("test_regression_2d")
class Regression2D(Task):
  objectives = ("l2",)
  best_metric = "error_px"

  def create_model(self, rngs):
    return Regressor(rngs)

  def batch_spec(self, objective):
    self.check_objective(objective)
    return BatchSpec(labeled=self.config.batch.labeled, multiview=0, augment=False)

  def loss_terms(self, objective):
    def terms(model, batch, frozen):
      del frozen
      stream = batch["labeled"]
      predicted = model(stream["image"]) / stream["image"].shape[-2]
      target = stream["joints_2d"] / stream["image"].shape[-2]
      mask = stream["joints_2d_mask"][..., None]
      return {"l2": jnp.sum(mask * (predicted - target) ** 2) / jnp.maximum(jnp.sum(mask), 1)}
    return terms

  def evaluate(self, model, source, *, stream, samples):
    errors = [float(_pixel_error(model, s["image"], s["joints_2d"], s["joints_2d_mask"]))
              for s in (source(stream, i) for i in range(samples))]
    return {"error_px": float(np.mean(errors)), "views": samples}

  def format_results(self, results, title="held-out test"):
    return f"{title}: 2D error {results['error_px']:.2f} px over {results['views']} samples"

  def predict(self, model, images, cameras):
    return {"joints_2d": np.asarray(model(images))}


@register("test_distill_2d")
class Distill2D(Regression2D):
  """Matches a frozen teacher's joints (a fixed, randomly initialised Regressor)."""

  objectives = ("distill",)

  def create_frozen(self):
    return Regressor(nnx.Rngs(123))

  def loss_terms(self, objective):
    def terms(model, batch, frozen):
      images = batch["labeled"]["image"]
      return {"distill": jnp.mean((model(images) - frozen(images)) ** 2)}
    return terms


def config_of(task: str, objective: str, stage_steps: int, **train) -> config_dict.ConfigDict:
  config = config_dict.ConfigDict()
  config.task = task
  config.seed = 0
  config.stages = dict(stage1=dict(objective=objective, steps=stage_steps))
  config.data = dict(source="synthetic", image_size=32, num_views=1, motion="procedural",
                     occluder_probability=0.0, seed=0, workers=0, in_memory=True,
                     sizes=dict(train_2d=32, train_multiview=1, validation=2, test=2))
  config.batch = dict(labeled=8)
  config.optim = dict(name="adamw", learning_rate=1e-2, weight_decay=1e-4, warmup_steps=1)
  config.loss_weights = {objective: 1.0}
  config.train = dict(dict(steps=0, log_every=1, checkpoint_every=2, validate_every=2), **train)
  config.eval = dict(samples=2, validation_samples=2)
  return config


def _leaves(workdir, step, key):
  manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")))
  restored = manager.restore(step)
  return jax.tree_util.tree_leaves(restored[key])


def test_a_task_defined_in_a_test_module_trains_checkpoints_and_resumes_exactly(tmp_path):
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  results = loop.train_and_evaluate(config_of("test_regression_2d", "l2", 6), str(straight))
  # "Killed" after 3 steps (a checkpoint at 2 and at 3, the stop), then resumed to 6.
  loop.train_and_evaluate(config_of("test_regression_2d", "l2", 6, steps=3), str(resumed))
  assert sorted(int(p.name) for p in (resumed / "checkpoints").iterdir()) == [2, 3]
  assert loop.train_and_evaluate(config_of("test_regression_2d", "l2", 6),
                                 str(resumed)) == results
  for key in ("params", "rest", "opt_state"):
    for a, b in zip(_leaves(straight, 6, key), _leaves(resumed, 6, key)):
      np.testing.assert_array_equal(a, b)
  assert json.loads((straight / "eval.json").read_text()) == results
  assert list((straight / "best").iterdir())  # picked by the task's own metric, error_px
  model, config = checkpoints.restore_model(str(straight))
  assert config.task == "test_regression_2d" and isinstance(model, Regressor)
  sample = get_task(config)  # the registry builds the task from the saved config
  assert isinstance(sample, Regression2D)


def test_the_loss_falls_and_an_unweighted_term_is_refused(tmp_path):
  config = config_of("test_regression_2d", "l2", 8, validate_every=0)
  first = loop.train_and_evaluate(config_of("test_regression_2d", "l2", 1, validate_every=0),
                                  str(tmp_path / "one"))
  assert loop.train_and_evaluate(config, str(tmp_path / "eight"))["error_px"] < first["error_px"]
  config.loss_weights = {"l1": 1.0}
  with pytest.raises(ValueError, match=r"No weight for loss term\(s\) \['l2'\]"):
    loop.train_and_evaluate(config, str(tmp_path / "typo"))


def test_a_frozen_teacher_is_never_updated_and_a_multiplier_of_zero_freezes_a_group(tmp_path):
  config = config_of("test_distill_2d", "distill", 3, validate_every=0)
  config.optim.multipliers = {"head": 0.0}  # train the conv and norm only
  loop.train_and_evaluate(config, str(tmp_path))
  teacher = nnx.state(Regressor(nnx.Rngs(123)))
  for saved, fresh in zip(_leaves(tmp_path, 3, "frozen"), jax.tree_util.tree_leaves(teacher)):
    np.testing.assert_array_equal(saved, fresh)
  initial = nnx.state(Regressor(nnx.Rngs(0)), nnx.Param)
  trained = ocp.CheckpointManager(os.path.abspath(tmp_path / "checkpoints")).restore(3)
  np.testing.assert_array_equal(trained["params"]["head"]["kernel"]["value"],
                                initial["head"]["kernel"][...])
  assert not np.array_equal(trained["params"]["conv"]["kernel"]["value"],
                            initial["conv"]["kernel"][...])


def test_unknown_task_objective_and_stage_fields_are_named():
  with pytest.raises(ValueError, match="Unknown task 'nope'"):
    get_task(config_dict.ConfigDict(dict(task="nope")))
  with pytest.raises(ValueError, match="has no objective 'ws'"):
    loop.train_and_evaluate(config_of("test_regression_2d", "ws", 2), "/tmp/unused")
  config = config_of("test_regression_2d", "l2", 2)
  config.stages.stage1.stepz = 3
  with pytest.raises(ValueError, match=r"unknown field\(s\) \['stepz'\]"):
    loop.stages_of(config)
  assert "pose25d" not in TASKS or TASKS["pose25d"].objectives == ("2d", "fs", "ws")
