"""`train_and_evaluate(config, workdir)`: the training loop of every task, and evaluation.

A run is a sequence of stages (`config.stages`, in order): each names an objective of the
task, its number of steps and its optimiser (the config's `optim`, updated by the stage's own
`optim` fields). A stage starts from the weights where the previous one ended, with a fresh
optimiser state (a schedule that starts at 0; a cosine one without `total_steps` ends with
the stage), and its batches count from its own first step,
so stage 2 of one run is exactly stage 2 of a separate run started from stage 1's workdir
(`config.init_from`). `config.train.steps` stops the run early (default: every stage).

Resumes automatically from the latest checkpoint in `workdir`, in whichever stage it was;
otherwise, with `config.init_from` set to another workdir, the first stage starts from its
weights (with `config.init_from_part`, a submodule's alone: "backbone"). Checkpoints: every `train.checkpoint_every` steps, at the end of every stage, and on
SIGTERM (preemption). A NaN or Inf stops the run before anything is saved, so the last good
checkpoint stays intact. Each process feeds its own shard of every global batch.

For tests of preemption and crashes, `POSEJAX_SIGNAL_AT_STEP="13:SIGTERM"` (or SIGKILL) makes
the run send itself that signal once step 13 is done (after its checkpoints have finished
writing), so a test stops a run at a chosen step instead of racing a log it polls.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding

from posejax.data.batching import pipeline
from posejax.data.batching.sources import make_source
from posejax.errors import ConfigError
from posejax.tasks import get_task
from posejax.train import checkpoints
from posejax.train import optimizer as optim
from posejax.train import step as step_lib
from posejax.train.writers import MetricWriter


class NonFiniteError(FloatingPointError):
  """A loss or gradient became NaN or Inf."""


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stage of a run: global steps [start, end) of `objective`, optimised by `optim`."""

  name: str
  objective: str
  start: int
  end: int
  optim: dict


def stages_of(config) -> list[Stage]:
  """The run's stages in order, with their global step ranges (`config.stages`)."""
  stages, start = [], 0
  for name, stage in config.stages.items():
    unknown = set(stage) - {"objective", "steps", "optim"}
    if unknown:
      raise ConfigError(f"stages.{name} has unknown field(s) {sorted(unknown)}; a stage has "
                        "objective, steps and optim")
    if stage.steps <= 0:
      raise ConfigError(f"stages.{name}.steps must be positive, got {stage.steps}")
    settings = dict(config.optim)
    settings.update(dict(stage.get("optim", {})))
    if settings.get("schedule") == "cosine" and not settings.get("total_steps"):
      settings["total_steps"] = stage.steps  # the stage's own schedule ends with the stage
    try:  # every stage's schedule is checked now, not after the stages before it have trained
      optim.make_optimizer(settings)
    except ValueError as error:
      raise ConfigError(f"stages.{name}: {error}") from None
    stages.append(Stage(name, stage.objective, start, start + stage.steps, settings))
    start += stage.steps
  if not stages:
    raise ConfigError("config.stages is empty: a run needs at least one stage")
  return stages


def total_steps(config, stages: list[Stage]) -> int:
  """`train.steps` when set (a run stopped early), else every stage's steps."""
  steps = config.train.get("steps") or stages[-1].end
  if steps > stages[-1].end:
    raise ValueError(f"train.steps={steps} is more than the stages hold ({stages[-1].end}); "
                     "lengthen a stage (stages.NAME.steps) instead")
  return steps


def _signal_at_step() -> tuple[int, signal.Signals] | None:
  """The testing aid of the module docstring: (step, signal), or None when it is not set."""
  value = os.environ.get("POSEJAX_SIGNAL_AT_STEP")
  if not value:
    return None
  step, _, name = value.partition(":")
  if not step.isdigit() or name not in signal.Signals.__members__:
    raise ValueError(f"POSEJAX_SIGNAL_AT_STEP={value!r}: expected STEP:SIGNAL, e.g. 13:SIGTERM")
  return int(step), signal.Signals[name]


def _stage_at(stages: list[Stage], step: int) -> Stage:
  return next(s for s in stages if s.start <= step < s.end)


def _global_batch(local: dict, sharding: NamedSharding) -> dict:
  """This process's part of the batch -> global arrays split along axis 0 over the mesh."""
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local)


def _initial_state(config, manager, state, stages: list[Stage]):
  """Resume from the workdir (the optimiser of the stage the checkpoint was saved in), else
  start from another workdir's weights (`init_from`), else fresh."""
  latest = manager.latest_step()
  if latest is not None:
    stage = _stage_at(stages, max(latest - 1, 0))
    tx, _ = optim.make_optimizer(stage.optim)
    state = checkpoints.restore(manager, state.replace(opt_state=tx.init(state.params)))
    print(f"resumed from step {int(state.step)} in {manager.directory} (stage {stage.name})",
          flush=True)
  elif config.get("init_from"):
    directory = os.path.join(os.path.expanduser(config.init_from), "checkpoints")
    previous = checkpoints.manager(directory)
    if previous.latest_step() is None:
      raise FileNotFoundError(f"init_from={config.init_from!r} holds no checkpoint")
    part = config.get("init_from_part", "")
    params, rest = checkpoints.restore_weights(previous, state.params, state.rest, part=part)
    state = state.replace(params=params, rest=rest)
    print(f"initialised {part or 'the model'} from {config.init_from} "
          f"(step {previous.latest_step()})", flush=True)
  return state


class _OwnInfoOnly(logging.Filter):
  """Lets through INFO records of posejax; the libraries' INFO bookkeeping (orbax logs a dozen
  lines per checkpoint) is dropped. Warnings and errors all pass."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno > logging.INFO or "/posejax/" in record.pathname


def quiet_library_logs():
  """Console logging for the command-line programs: our lines, not the libraries' chatter."""
  absl_logging.get_absl_handler().addFilter(_OwnInfoOnly())


def _progress(step: int, total: int, loss: float, rate: float, input_wait: float,
              eta_s: float) -> str:
  done = int(20 * step / max(total, 1))
  return (f"[{'#' * done}{'.' * (20 - done)}] step {step}/{total}  loss {loss:.4g}  "
          f"images/s {rate:.1f}  input wait {100 * input_wait:.0f} %  ETA {eta_s / 60:.1f} min")


def _check_finite(values: dict, step: int, manager):
  bad = [k for k, v in values.items() if not np.isfinite(v)]
  if bad:
    raise NonFiniteError(
        f"Non-finite {', '.join(bad)} at step {step} ({values}); stopping without saving. "
        f"The last good checkpoint (step {manager.latest_step()}) in {manager.directory} is "
        "intact.")


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains the config's task through its stages and evaluates the final state on the
  held-out test stream. Returns the evaluation results (also written to workdir/eval.json);
  {} when stopped by SIGTERM.

  Every `train.validate_every` steps the validation stream is evaluated, and the weights of
  the step with the best validation metric (the task's `best_metric`) are kept in
  workdir/best. Metrics go to the console and to TensorBoard event files
  (workdir/tensorboard).
  """
  workdir = os.path.expanduser(workdir)
  task = get_task(config)
  stages = stages_of(config)
  for stage in stages:
    task.check_objective(stage.objective)
  total = total_steps(config, stages)
  cpu_fusions = config.train.get("cpu_fusions", "xla")
  step_lib.check_cpu_fusions(cpu_fusions)  # a typo stops the run before anything is built
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    checkpoints.save_config(config, workdir)
  model, frozen = task.create_model(nnx.Rngs(config.seed)), task.create_frozen()
  tx, _ = optim.make_optimizer(stages[0].optim)
  graphdef, state = step_lib.create_train_state(model, tx, frozen)
  frozen_graphdef = step_lib.frozen_graphdef(frozen)
  del model, frozen
  mesh = step_lib.make_mesh()
  replicated, by_example = step_lib.shardings(mesh)
  manager = checkpoints.manager(os.path.join(workdir, "checkpoints"))
  # best/ holds the weights alone (what an evaluation reads: a third of the TrainState's
  # arrays, and orbax's cost is per array), saved only when validation improves on it.
  best = checkpoints.manager(os.path.join(workdir, "best"), keep=1,
                             best_metric=task.best_metric)
  best_score = checkpoints.best_score(best, task.best_metric)
  state = jax.device_put(_initial_state(config, manager, state, stages), replicated)
  source = make_source(config.data, for_training=True)
  task.check_source([s.objective for s in stages], source)
  writer = MetricWriter(os.path.join(workdir, "tensorboard"),
                        enabled=jax.process_index() == 0)
  model_of = lambda s: checkpoints.eval_model(graphdef, s.params, s.rest)  # noqa: E731

  start = int(state.step)
  validate_every = config.train.get("validate_every", config.train.checkpoint_every)
  batches, stage, images_per_step = None, None, 0
  # Between steps the state lives as its leaves (`step_lib.on_leaves`: a jitted call on the
  # TrainState itself costs the host more than a small model's step); `state` is rebuilt from
  # them where the TrainState is needed: a new stage, a checkpoint, an evaluation.
  leaves, state_def = None, None
  stop = {"signal": None}
  # Saving is collective, so all processes must stop at the same step. With several, JAX's
  # preemption service (started by jax.distributed.initialize; it catches SIGTERM) agrees on
  # one; a handler of our own would replace it and stop only the signalled process.
  multi_process = jax.process_count() > 1
  signal_at = _signal_at_step()
  if not multi_process:
    previous_handler = signal.signal(signal.SIGTERM,
                                     lambda signum, frame: stop.update(signal=signum))
  try:
    # Seconds the loop waited for batches since the last log: steps are dispatched without
    # waiting for the device, so a large share means the input pipeline is what limits.
    tick, tick_step, input_wait = time.perf_counter(), start, 0.0
    for step in range(start, total):
      if stage is None or step >= stage.end:  # a new stage: its optimiser, step and batches
        if leaves is not None:
          state = jax.tree_util.tree_unflatten(state_def, leaves)
        stage = _stage_at(stages, step)
        tx, schedule = optim.make_optimizer(stage.optim)
        if step == stage.start:  # entering the stage (not resuming inside it)
          state = state.replace(opt_state=jax.device_put(tx.init(state.params), replicated))
        if batches is not None:
          batches.close()
        leaves, state_def = jax.tree_util.tree_flatten(state)
        spec = task.batch_spec(stage.objective)
        stage_source = task.stage_source(stage.objective, source, model_of(state), workdir)
        batches = pipeline.batches(stage_source, spec, start_step=step - stage.start,
                                   process_index=jax.process_index(),
                                   process_count=jax.process_count(), seed=config.seed,
                                   workers=config.data.workers)
        train_step = step_lib.jit_train_step(step_lib.on_leaves(step_lib.make_train_step(
            graphdef, tx, task.loss_terms(stage.objective), config.loss_weights,
            batch_keys=task.batch_keys(stage.objective), frozen_graphdef=frozen_graphdef,
            prepare=task.prepare_batch(stage.objective), learning_rate=schedule,
            stage_start=stage.start), state_def), mesh, cpu_fusions)
        images_per_step = spec.images_per_step()
        print(f"step {step}: stage {stage.name!r} (objective {stage.objective!r}, steps "
              f"{stage.start}-{stage.end}, {optim.describe(stage.optim)}), "
              f"{images_per_step} images per step",
              flush=True)
      waiting = time.perf_counter()
      local_batch = next(batches)
      input_wait += time.perf_counter() - waiting
      leaves, step_metrics = train_step(leaves, _global_batch(local_batch, by_example))
      done = step + 1
      if signal_at and done == signal_at[0]:
        manager.wait_until_finished()
        os.kill(os.getpid(), signal_at[1])
      if multi_process and manager.reached_preemption(done):  # called at every step
        stop["signal"] = signal.SIGTERM
      # Read once: a SIGTERM arriving while this step logs or saves is handled at the next
      # step (read twice, it once skipped the save and still stopped, losing the step).
      stopping = stop["signal"] is not None
      last = done == total
      log = done % config.train.log_every == 0 or last or stopping
      save = (last or stopping or done == stage.end
              or done % config.train.checkpoint_every == 0)
      validate = bool(validate_every) and (done % validate_every == 0 or last)
      if save or validate:
        state = jax.tree_util.tree_unflatten(state_def, leaves)
      if log or save:  # never save without checking that the state is finite
        values = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        _check_finite(values, done, manager)
      if log:
        now = time.perf_counter()
        elapsed = max(now - tick, 1e-9)
        rate = (done - tick_step) * images_per_step / elapsed
        wait_fraction = input_wait / elapsed
        eta = (total - done) * images_per_step / max(rate, 1e-9)
        writer.write_scalars(done, dict(values, images_per_second=rate,
                                        input_wait_fraction=wait_fraction))
        print(_progress(done, total, values["loss"], rate, wait_fraction, eta) + "\n", end="",
              flush=True)
        tick, tick_step, input_wait = now, done, 0.0
      if save:
        manager.save(done, args=ocp.args.StandardSave(state))
      if validate:
        scores = task.evaluate(model_of(state), source, stream="validation",
                               samples=config.eval.validation_samples)
        writer.write_scalars(done, {f"validation/{k}": v for k, v in scores.items()
                                    if isinstance(v, float)})
        score = scores[task.best_metric]
        if multi_process:  # saving is collective: every process takes process 0's decision
          score = float(multihost_utils.broadcast_one_to_all(np.float32(score)))
        kept = ""
        if score < best_score:
          best.save(done, args=ocp.args.StandardSave(checkpoints.weights_of(state)),
                    metrics={task.best_metric: score})
          best_score, kept = score, f" (the best so far, kept in {best.directory})"
        print(f"step {done}: validation {task.best_metric} {score:.4g}{kept}", flush=True)
        tick, input_wait = time.perf_counter(), 0.0  # the rate is the training rate
      if stopping:
        manager.wait_until_finished()
        print(f"SIGTERM: saved step {done}, stopping", flush=True)
        return {}
    manager.wait_until_finished()
    best.wait_until_finished()
  finally:
    if not multi_process:
      signal.signal(signal.SIGTERM, previous_handler)
    if batches is not None:
      batches.close()
    writer.close()

  results = task.evaluate(model_of(state), source, stream="test", samples=config.eval.samples)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "eval.json"), "w") as f:
      json.dump(results, f, indent=1)
  print(task.format_results(results), flush=True)
  return results


def evaluate_workdir(config, workdir: str, checkpoint: str = "latest",
                     stream: str = "test") -> dict:
  """Evaluates the latest or the best checkpoint of a workdir on the test stream (or on the
  validation stream, for choices that must not see the test set: the samples the training's
  validation used); results also go to workdir/eval_{checkpoint}.json (_validation.json)."""
  if stream not in ("test", "validation"):
    raise ValueError(f"stream must be 'test' or 'validation', got {stream!r}")
  task = get_task(config)
  model, step = checkpoints.restore_task_model(task, checkpoints.checkpoint_dir(workdir,
                                                                                checkpoint))
  samples = config.eval.samples if stream == "test" else config.eval.validation_samples
  results = task.evaluate(model, make_source(config.data), stream=stream, samples=samples)
  suffix = "" if stream == "test" else "_validation"
  with open(os.path.join(os.path.expanduser(workdir), f"eval_{checkpoint}{suffix}.json"),
            "w") as f:
    json.dump(dict(results, step=int(step)), f, indent=1)
  title = "held-out test" if stream == "test" else "validation"
  print(task.format_results(results, f"{title}, {checkpoint} checkpoint (step {step})"),
        flush=True)
  return results
