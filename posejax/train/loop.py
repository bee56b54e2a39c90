"""`train_and_evaluate(config, workdir)`: the training loop and held-out evaluation.

Resumes automatically from the latest checkpoint in `workdir`; otherwise, with
`config.init_from` set to a stage-1 workdir, starts from its weights (stage 2 of the recipe)
with a fresh optimiser. Checkpoints: every `train.checkpoint_every` steps, at the end, and on
SIGTERM (preemption). A NaN or Inf stops the run before anything is saved, so the last good
checkpoint stays intact. Each process feeds its own shard of every global batch.
"""

from __future__ import annotations

import json
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import NamedSharding
from ml_collections import config_dict

from posejax import geometry, metrics
from posejax.data import pipeline, synthetic
from posejax.models import apply, create_model
from posejax.skeleton import H36M
from posejax.train import optimizer as optim
from posejax.train import step as step_lib


class NonFiniteError(FloatingPointError):
  """A loss or gradient became NaN or Inf."""


def _objective(config) -> step_lib.Objective:
  return step_lib.Objective(mode=config.mode, **config.objective)


def _batch_spec(config) -> pipeline.BatchSpec:
  return pipeline.BatchSpec(mode=config.mode, **config.batch)


def _source(config):
  data = config.data
  synthetic_config = synthetic.config_from(data)
  if data.get("data_dir"):
    from posejax.data import synthetic_tfds  # pylint: disable=import-outside-toplevel
    return synthetic_tfds.prepared_source(synthetic_config, dict(data.sizes),
                                          os.path.expanduser(data.data_dir))
  return pipeline.synthetic_source(synthetic_config)


def _checkpoint_manager(directory: str, keep: int = 3) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(os.path.abspath(directory),
                               options=ocp.CheckpointManagerOptions(max_to_keep=keep))


def _restore(manager, state, step=None):
  step = manager.latest_step() if step is None else step
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
  try:
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))
  except Exception as error:  # orbax raises several types for damaged or foreign checkpoints
    raise RuntimeError(f"Cannot restore checkpoint {step} from {manager.directory}: it is "
                       f"damaged or was written by another model/config ({error})") from error


def _global_batch(local: dict, sharding: NamedSharding) -> dict:
  """This process's part of the batch -> global arrays split along axis 0 over the mesh."""
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local)


def _build(config):
  """(graphdef, fresh TrainState, optimiser, learning-rate schedule) of a config."""
  model = create_model(config.model.name, dtype=jnp.dtype(config.model.dtype),
                       rngs=nnx.Rngs(config.seed))
  decay = (config.optim.learning_rate, tuple(config.optim.decay_steps),
           config.optim.decay_factor)
  tx = optim.make_optimizer(*decay)
  graphdef, state = step_lib.create_train_state(model, tx)
  return graphdef, state, tx, optim.learning_rate_schedule(*decay)


def _save_config(config, workdir: str):
  """The run's config beside its checkpoints, so a workdir alone is enough to predict."""
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=1))


def restore_model(workdir: str, step: int | None = None):
  """(model in eval mode, config) of a training workdir: its config.json and its latest (or
  `step`'s) checkpoint.

  Raises:
    FileNotFoundError: the workdir has no config.json or no checkpoint.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path!r} does not exist: is {workdir!r} a training workdir "
                            "(python -m experiments.train ... --workdir=DIR)?")
  with open(path) as f:
    config = config_dict.ConfigDict(json.load(f))
  graphdef, state, _, _ = _build(config)
  manager = _checkpoint_manager(os.path.join(workdir, "checkpoints"))
  if manager.latest_step() is None:
    raise FileNotFoundError(f"No checkpoint in {manager.directory}: train first")
  state = _restore(manager, state, step)
  model = nnx.merge(graphdef, nnx.merge_state(state.params, state.rest))
  model.eval()
  return model, config


def evaluate_workdir(config, workdir: str) -> dict:
  """Evaluates the latest checkpoint of a workdir (results also written to its eval.json)."""
  graphdef, state, _, _ = _build(config)
  manager = _checkpoint_manager(os.path.join(workdir, "checkpoints"))
  if manager.latest_step() is None:
    raise FileNotFoundError(f"No checkpoint in {os.path.join(workdir, 'checkpoints')!r}: "
                            "train first (python -m experiments.train ...)")
  results = evaluate(graphdef, _restore(manager, state), config)
  with open(os.path.join(workdir, "eval.json"), "w") as f:
    json.dump(results, f, indent=1)
  print(format_results(results), flush=True)
  return results


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains per `config` (see experiments/configs/synthetic.py) and evaluates on the held-out
  test stream. Returns the evaluation results (also written to workdir/eval.json)."""
  os.makedirs(workdir, exist_ok=True)
  _save_config(config, workdir)
  graphdef, state, tx, schedule = _build(config)
  mesh = step_lib.make_mesh()
  replicated, by_example = step_lib.shardings(mesh)

  manager = _checkpoint_manager(os.path.join(workdir, "checkpoints"))
  if manager.latest_step() is not None:
    state = _restore(manager, state)
    print(f"resumed from step {int(state.step)} in {manager.directory}", flush=True)
  elif config.get("init_from"):
    stage1 = _checkpoint_manager(os.path.join(config.init_from, "checkpoints"))
    if stage1.latest_step() is None:
      raise FileNotFoundError(f"init_from={config.init_from!r} holds no checkpoint")
    previous = _restore(stage1, state)
    state = state.replace(params=previous.params, rest=previous.rest)
    print(f"initialised from {config.init_from} (step {int(previous.step)})", flush=True)
  state = jax.device_put(state, replicated)

  train_step = step_lib.jit_train_step(
      step_lib.make_train_step(graphdef, tx, _objective(config), H36M, schedule), mesh)
  spec = _batch_spec(config)
  start = int(state.step)
  total = config.train.steps
  batches = pipeline.batches(_source(config), spec, start_step=start,
                             process_index=jax.process_index(),
                             process_count=jax.process_count(), seed=config.seed,
                             workers=config.data.workers)
  images_per_step = spec.labeled + (spec.multiview * spec.num_views if config.mode != "2d"
                                    else 0)
  stop = {"signal": None}
  previous_handler = signal.signal(signal.SIGTERM,
                                   lambda signum, frame: stop.update(signal=signum))
  try:
    tick, tick_step = time.perf_counter(), start
    for step in range(start, total):
      state, step_metrics = train_step(state, _global_batch(next(batches), by_example))
      last = step + 1 == total
      log = (step + 1) % config.train.log_every == 0 or last or stop["signal"]
      save = last or stop["signal"] or (step + 1) % config.train.checkpoint_every == 0
      if log or save:  # never save without checking that the state is finite
        values = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        bad = [k for k, v in values.items() if not np.isfinite(v)]
        if bad:
          raise NonFiniteError(
              f"Non-finite {', '.join(bad)} at step {step + 1} ({values}); stopping without "
              f"saving. The last good checkpoint (step {manager.latest_step()}) in "
              f"{manager.directory} is intact.")
      if log:
        now = time.perf_counter()
        rate = (step + 1 - tick_step) * images_per_step / max(now - tick, 1e-9)
        eta = (total - step - 1) * images_per_step / max(rate, 1e-9)
        print(f"step {step + 1}/{total}  " + "  ".join(f"{k} {v:.4g}" for k, v in
                                                     sorted(values.items()))
              + f"  images/s {rate:.1f}  eta {eta / 60:.1f} min", flush=True)
        tick, tick_step = now, step + 1
      if save:
        manager.save(step + 1, args=ocp.args.StandardSave(state))
      if stop["signal"]:
        manager.wait_until_finished()
        print(f"SIGTERM: saved step {step + 1}, stopping", flush=True)
        return {}
    manager.wait_until_finished()
  finally:
    signal.signal(signal.SIGTERM, previous_handler)
    batches.close()

  results = evaluate(graphdef, state, config)
  with open(os.path.join(workdir, "eval.json"), "w") as f:
    json.dump(results, f, indent=1)
  print(format_results(results), flush=True)
  return results


def evaluate(graphdef, state, config) -> dict:
  """MPJPE, N-MPJPE, PA-MPJPE (mm) and 3D PCK / AUC over every view of the first
  `config.eval.samples` held-out test samples; each view is one single-image prediction, scaled
  to mm with the mean bone lengths (METHOD.md section 5)."""
  source = _source(config)
  model = nnx.merge(graphdef, nnx.merge_state(state.params, state.rest))
  model.eval()
  graph, model_state = nnx.split(model)

  @jax.jit
  def predict(model_state, images, cameras):
    predictions, _ = apply(graph, model_state, images, cameras, train=False)
    pose = predictions["pose_3d"]
    return pose * geometry.estimate_scale(pose)[..., None, None], predictions["valid"]

  errors = {name: [] for name in ("mpjpe", "n_mpjpe", "pa_mpjpe", "pck", "auc")}
  valid_views = 0
  for index in range(config.eval.samples):
    sample = source("test", index)
    pose, valid = jax.device_get(predict(model_state, sample["image"], sample["camera"]))
    truth = sample["joints_3d"]
    errors["mpjpe"].append(np.asarray(metrics.mpjpe(pose, truth)))
    errors["n_mpjpe"].append(np.asarray(metrics.n_mpjpe(pose, truth)))
    errors["pa_mpjpe"].append(np.asarray(metrics.pa_mpjpe(pose, truth)))
    errors["pck"].append(np.asarray(metrics.pck_3d(pose, truth)))
    errors["auc"].append(np.asarray(metrics.auc_3d(pose, truth)))
    valid_views += int(np.sum(valid))
  results = {name: float(np.mean(np.concatenate(values))) for name, values in errors.items()}
  results["views"] = int(sum(len(v) for v in errors["mpjpe"]))
  results["valid_fraction"] = valid_views / max(results["views"], 1)
  return results


def format_results(results: dict) -> str:
  return (f"held-out test, {results['views']} views: MPJPE {results['mpjpe']:.1f} mm  "
          f"N-MPJPE {results['n_mpjpe']:.1f} mm  PA-MPJPE {results['pa_mpjpe']:.1f} mm  "
          f"PCK@150 {100 * results['pck']:.1f} %  AUC {100 * results['auc']:.1f} %  "
          f"valid {100 * results['valid_fraction']:.0f} %")
