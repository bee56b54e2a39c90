"""Orbax checkpoints of a TrainState, the run config beside them, and models of a workdir.

A workdir holds config.json (the run's config), checkpoints/ (the latest few TrainStates),
best/ (the weights of the step with the best validation metric), eval.json and tensorboard/.
"""

from __future__ import annotations

import functools
import json
import os

import jax
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx
from ml_collections import config_dict
# The store orbax's default jax.Array handler keeps (no public alias in orbax 0.12).
from orbax.checkpoint._src.metadata import array_metadata_store

from posejax.tasks import get_task


@functools.cache  # once per process
def _save_replicated_arrays_whole_on_cpu():
  """On CPU, orbax's default saves a replicated array in slices, one per device ("replica
  parallel", meant for TPU hosts that each write a share): one eager slice op per device and
  array. With 8 simulated devices that was ~6300 ops and 5 s per save of the tests' tiny HRNet
  (BUILD_NOTES.md, session 9). On GPU orbax already saves whole arrays by default."""
  if jax.default_backend() == "cpu" and jax.device_count() > 1:
    handler = ocp.type_handlers.ArrayHandler(use_replica_parallel=False,
                                             array_metadata_store=array_metadata_store.Store())
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # orbax warns of every override
    try:
      ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
    finally:
      logging.set_verbosity(verbosity)


def manager(directory: str, keep: int = 3,
            best_metric: str | None = None) -> ocp.CheckpointManager:
  """Keeps the `keep` latest checkpoints, or with `best_metric` the `keep` lowest ones."""
  _save_replicated_arrays_whole_on_cpu()
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, best_mode="min",
      best_fn=(lambda scores: scores[best_metric]) if best_metric else None)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def weights_of(state) -> dict:
  """What a model needs (its params and the rest: BatchNorm statistics), without the optimiser
  state or a frozen teacher: the form of best/, which `restore_weights` reads as it reads a
  whole TrainState."""
  return {"params": state.params, "rest": state.rest}


def best_score(checkpoints: ocp.CheckpointManager, metric: str) -> float:
  """The metric of the best checkpoint kept by `checkpoints` (+inf when it keeps none)."""
  step = checkpoints.best_step()
  metrics = None if step is None else checkpoints.metrics(step)
  return float("inf") if not metrics else float(metrics[metric])


def _restore(checkpoints: ocp.CheckpointManager, target, step: int | None, partial: bool):
  step = checkpoints.latest_step() if step is None else step
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
  try:
    args = (ocp.args.PyTreeRestore(
        abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
        partial_restore=True) if partial else ocp.args.StandardRestore(abstract))
    return checkpoints.restore(step, args=args)
  except Exception as error:  # orbax raises several types for damaged or foreign checkpoints
    raise RuntimeError(f"Cannot restore checkpoint {step} from {checkpoints.directory}: it is "
                       f"damaged or was written by another model/config ({error})") from error


def restore(checkpoints: ocp.CheckpointManager, state, step: int | None = None):
  """The TrainState of the latest (or `step`'s) checkpoint, shaped like `state`."""
  return _restore(checkpoints, state, step, partial=False)


def restore_weights(checkpoints: ocp.CheckpointManager, params, rest,
                    step: int | None = None, part: str = "") -> tuple[nnx.State, nnx.State]:
  """(params, rest) alone of a checkpoint, shaped like those given: a model to evaluate, or
  the start of a run from another run's weights (whose optimiser may differ).

  `part`, the attribute name of a submodule (e.g. "backbone"): that submodule's weights alone
  are read, the rest of `params` and `rest` kept as given; the checkpoint may then be of
  another task's model holding the same submodule (a pose transformer's backbone from a
  PoseNet's 2D stage)."""
  if not part:
    weights = _restore(checkpoints, {"params": params, "rest": rest}, step, partial=True)
    return weights["params"], weights["rest"]
  if part not in params:
    raise ValueError(f"The model has no submodule {part!r} to initialise; its top-level "
                     f"parts: {sorted(params)}")
  given = {"params": params, "rest": rest}
  target = {name: {part: tree[part]} for name, tree in given.items() if part in tree}
  weights = _restore(checkpoints, target, step, partial=True)
  for name, tree in weights.items():
    given[name] = nnx.State({**given[name], part: tree[part]})
  return given["params"], given["rest"]


def save_config(config, workdir: str):
  """The run's config beside its checkpoints, so a workdir alone is enough to predict."""
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=1))


def load_config(workdir: str) -> config_dict.ConfigDict:
  """The config a workdir was trained with (its config.json)."""
  path = os.path.join(os.path.expanduser(workdir), "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path!r} does not exist: is {workdir!r} a training workdir "
                            "(python -m experiments.train ... --workdir=DIR)?")
  with open(path) as f:
    return config_dict.ConfigDict(json.load(f))


def eval_model(graphdef, params, rest) -> nnx.Module:
  """The model of a graph and its weights, in eval mode (BatchNorm running averages)."""
  model = nnx.merge(graphdef, nnx.merge_state(params, rest))
  model.eval()
  return model


def restore_task_model(task, directory: str, step: int | None = None):
  """(model in eval mode, step) of the task's model restored from the latest (or `step`'s)
  checkpoint in `directory`.

  Raises:
    FileNotFoundError: `directory` holds no checkpoint.
  """
  graphdef, params, rest = nnx.split(task.create_model(nnx.Rngs(0)), nnx.Param, ...)
  checkpoints = manager(directory)
  if checkpoints.latest_step() is None:
    raise FileNotFoundError(f"No checkpoint in {directory!r}: train first "
                            "(python -m experiments.train ...)")
  step = checkpoints.latest_step() if step is None else step
  return eval_model(graphdef, *restore_weights(checkpoints, params, rest, step)), step


def restore_model(workdir: str, step: int | None = None, checkpoint: str = "latest"):
  """(model in eval mode, config) of a training workdir: its config.json and its latest (or
  `step`'s) checkpoint, or with `checkpoint="best"` the one kept in best/.

  Raises:
    FileNotFoundError: the workdir has no config.json or no checkpoint.
  """
  config = load_config(workdir)
  model, _ = restore_task_model(get_task(config), checkpoint_dir(workdir, checkpoint), step)
  return model, config


def checkpoint_dir(workdir: str, checkpoint: str = "latest") -> str:
  if checkpoint not in ("latest", "best"):
    raise ValueError(f"checkpoint must be 'latest' or 'best', got {checkpoint!r}")
  return os.path.join(os.path.expanduser(workdir),
                      "checkpoints" if checkpoint == "latest" else "best")
