"""`train_and_evaluate(config, workdir)`: the training loop and held-out evaluation.

Resumes automatically from the latest checkpoint in `workdir`; otherwise, with
`config.init_from` set to a stage-1 workdir, starts from its weights (stage 2 of the recipe)
with a fresh optimiser. Checkpoints: every `train.checkpoint_every` steps, at the end, and on
SIGTERM (preemption). A NaN or Inf stops the run before anything is saved, so the last good
checkpoint stays intact. Each process feeds its own shard of every global batch.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from flax import nnx
from jax.sharding import NamedSharding
from ml_collections import config_dict

from posejax import metrics
from posejax.data import pipeline, synthetic
from posejax.models import create_model
from posejax.models.inference import predict_metric
from posejax.skeleton import H36M
from posejax.train import optimizer as optim
from posejax.train import pseudo_labels
from posejax.train import step as step_lib


class NonFiniteError(FloatingPointError):
  """A loss or gradient became NaN or Inf."""


def make_source(config):
  """The config's data: registered real datasets (`data.source` = "datasets": `data.streams`
  and `data.options` as in `datasets.streams_source`), or the synthetic data from a prepared
  data dir, or rendered on the fly (kept in memory with `data.in_memory`: a finite set of
  `data.sizes` samples)."""
  data = config.data
  if data.source == "datasets":
    from posejax.data import datasets  # pylint: disable=import-outside-toplevel
    return datasets.streams_source(dict(data.streams), data.data_dir,
                                   {k: dict(v) for k, v in data.get("options", {}).items()})
  if data.source != "synthetic":
    raise ValueError(f"data.source must be 'synthetic' or 'datasets', got {data.source!r}")
  synthetic_config = synthetic.config_from(data)
  if data.get("data_dir"):
    from posejax.data import synthetic_tfds  # pylint: disable=import-outside-toplevel
    return synthetic_tfds.prepared_source(synthetic_config, dict(data.sizes),
                                          os.path.expanduser(data.data_dir))
  source = pipeline.synthetic_source(synthetic_config)
  return pipeline.finite_source(source, dict(data.sizes)) if data.get("in_memory") else source


def _checkpoint_manager(directory: str, keep: int = 3,
                        best_metric: str | None = None) -> ocp.CheckpointManager:
  """Keeps the `keep` latest checkpoints, or with `best_metric` the `keep` lowest ones."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, best_mode="min",
      best_fn=(lambda scores: scores[best_metric]) if best_metric else None)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def _restore(manager, state, step=None, weights_only: bool = False):
  """The TrainState of a checkpoint; with `weights_only` a dict of its params and rest alone
  (stage 2 from a stage-1 checkpoint whose optimiser may differ)."""
  step = manager.latest_step() if step is None else step
  if weights_only:
    state = {"params": state.params, "rest": state.rest}
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
  try:
    args = (ocp.args.PyTreeRestore(
        abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
        partial_restore=True) if weights_only else ocp.args.StandardRestore(abstract))
    return manager.restore(step, args=args)
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
  tx, schedule = optim.from_config(config.optim)
  graphdef, state = step_lib.create_train_state(model, tx)
  return graphdef, state, tx, schedule


def _save_config(config, workdir: str):
  """The run's config beside its checkpoints, so a workdir alone is enough to predict."""
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=1))


def _restored(config, directory: str, step: int | None = None):
  """(graphdef, TrainState) of `config` restored from the latest (or `step`'s) checkpoint in
  `directory`.

  Raises:
    FileNotFoundError: `directory` holds no checkpoint.
  """
  graphdef, state, _, _ = _build(config)
  manager = _checkpoint_manager(directory)
  if manager.latest_step() is None:
    raise FileNotFoundError(f"No checkpoint in {directory!r}: train first "
                            "(python -m experiments.train ...)")
  return graphdef, _restore(manager, state, step)


def load_config(workdir: str) -> config_dict.ConfigDict:
  """The config a workdir was trained with (its config.json)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path!r} does not exist: is {workdir!r} a training workdir "
                            "(python -m experiments.train ... --workdir=DIR)?")
  with open(path) as f:
    return config_dict.ConfigDict(json.load(f))


def restore_model(workdir: str, step: int | None = None):
  """(model in eval mode, config) of a training workdir: its config.json and its latest (or
  `step`'s) checkpoint.

  Raises:
    FileNotFoundError: the workdir has no config.json or no checkpoint.
  """
  config = load_config(workdir)
  graphdef, state = _restored(config, os.path.join(workdir, "checkpoints"), step)
  return _model(graphdef, state), config


def _model(graphdef, state) -> nnx.Module:
  """The model of a TrainState, in eval mode (BatchNorm running averages)."""
  model = nnx.merge(graphdef, nnx.merge_state(state.params, state.rest))
  model.eval()
  return model


def evaluate_workdir(config, workdir: str, checkpoint: str = "latest") -> dict:
  """Evaluates the latest or the best (lowest validation MPJPE) checkpoint of a workdir on the
  test stream; results also go to workdir/eval_{checkpoint}.json."""
  if checkpoint not in ("latest", "best"):
    raise ValueError(f"checkpoint must be 'latest' or 'best', got {checkpoint!r}")
  graphdef, state = _restored(
      config, os.path.join(workdir, "checkpoints" if checkpoint == "latest" else "best"))
  results = evaluate(graphdef, state, config)
  with open(os.path.join(workdir, f"eval_{checkpoint}.json"), "w") as f:
    json.dump(dict(results, step=int(state.step)), f, indent=1)
  print(format_results(results, f"held-out test, {checkpoint} checkpoint (step "
                                f"{int(state.step)})"), flush=True)
  return results


class _OwnInfoOnly(logging.Filter):
  """Lets through INFO records of posejax and of CLU's console metric writer; the libraries'
  INFO bookkeeping (orbax logs a dozen lines per checkpoint) is dropped. Warnings and errors
  all pass."""

  def filter(self, record: logging.LogRecord) -> bool:
    return (record.levelno > logging.INFO or "/clu/" in record.pathname
            or "/posejax/" in record.pathname)


def quiet_library_logs():
  """Console logging for the command-line programs: our metrics, not the libraries' chatter."""
  absl_logging.get_absl_handler().addFilter(_OwnInfoOnly())


def _mode_at(config, step: int) -> str:
  """The objective of a step: the 2D warm-up (stage 1) for the first `train.stage1_steps`
  steps, the config's mode afterwards."""
  return "2d" if step < config.train.get("stage1_steps", 0) else config.mode


def _initial_state(config, manager, state):
  """Resume from the workdir, else start from a stage-1 workdir (`init_from`), else fresh."""
  if manager.latest_step() is not None:
    state = _restore(manager, state)
    print(f"resumed from step {int(state.step)} in {manager.directory}", flush=True)
  elif config.get("init_from"):
    stage1 = _checkpoint_manager(os.path.join(config.init_from, "checkpoints"))
    if stage1.latest_step() is None:
      raise FileNotFoundError(f"init_from={config.init_from!r} holds no checkpoint")
    previous = _restore(stage1, state, weights_only=True)
    state = state.replace(params=previous["params"], rest=previous["rest"])
    print(f"initialised from {config.init_from} (step {stage1.latest_step()})", flush=True)
  return state


def _train_source(config, mode: str, source, graphdef, state, workdir: str):
  """The source that a phase trains on: in mode "ws" with `pseudo_labels.enabled`, its
  multi-view samples carry the 2D pseudo labels of the model at the start of the phase (the
  stage-1 model; a resumed run reads the ones it made then from the workdir)."""
  settings = config.get("pseudo_labels", {})
  if mode != "ws" or not settings.get("enabled"):
    return source
  labels = pseudo_labels.load_or_predict(
      workdir, _model(graphdef, state), source, threshold=settings.threshold,
      batch_size=settings.batch_size, write=jax.process_index() == 0)
  return pipeline.with_pseudo_labels(source, labels["joints_2d"], labels["joints_2d_mask"])


def _metric_writer(workdir: str):
  """CLU writers: console (absl logging) and TensorBoard in workdir/tensorboard; on hosts other
  than the first, the console only."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tf.config.set_visible_devices([], "GPU")  # TensorFlow only writes summaries: GPUs stay JAX's
  from clu import metric_writers  # pylint: disable=import-outside-toplevel
  return metric_writers.create_default_writer(os.path.join(workdir, "tensorboard"),
                                              just_logging=jax.process_index() > 0)


def _progress(step: int, total: int, loss: float, rate: float, eta_s: float) -> str:
  done = int(20 * step / max(total, 1))
  return (f"[{'#' * done}{'.' * (20 - done)}] step {step}/{total}  loss {loss:.4g}  "
          f"images/s {rate:.1f}  ETA {eta_s / 60:.1f} min")


def _check_finite(values: dict, step: int, manager):
  bad = [k for k, v in values.items() if not np.isfinite(v)]
  if bad:
    raise NonFiniteError(
        f"Non-finite {', '.join(bad)} at step {step} ({values}); stopping without saving. "
        f"The last good checkpoint (step {manager.latest_step()}) in {manager.directory} is "
        "intact.")


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains per `config` (see experiments/configs/synthetic.py) and evaluates the final state on
  the held-out test stream. Returns the evaluation results (also written to workdir/eval.json).

  Every `train.validate_every` steps the validation stream is evaluated and the checkpoint with
  the lowest validation MPJPE is kept in workdir/best. Metrics go to the console and to
  TensorBoard (workdir/tensorboard).
  """
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    _save_config(config, workdir)
  graphdef, state, tx, schedule = _build(config)
  mesh = step_lib.make_mesh()
  replicated, by_example = step_lib.shardings(mesh)
  manager = _checkpoint_manager(os.path.join(workdir, "checkpoints"))
  best = _checkpoint_manager(os.path.join(workdir, "best"), keep=1, best_metric="mpjpe")
  state = jax.device_put(_initial_state(config, manager, state), replicated)
  source = make_source(config)
  if config.mode == "ws" and config.get("pseudo_labels", {}).get("enabled"):
    pseudo_labels.stream_size(source)  # a source that cannot have them fails before stage 1
  writer = _metric_writer(workdir)

  start, total = int(state.step), config.train.steps
  validate_every = config.train.get("validate_every", config.train.checkpoint_every)
  steps, batches, mode = {}, None, None
  stop = {"signal": None}
  # Saving is collective, so all processes must stop at the same step. With several, JAX's
  # preemption service (started by jax.distributed.initialize; it catches SIGTERM) agrees on
  # one; a handler of our own would replace it and stop only the signalled process.
  multi_process = jax.process_count() > 1
  if not multi_process:
    previous_handler = signal.signal(signal.SIGTERM,
                                     lambda signum, frame: stop.update(signal=signum))
  try:
    tick, tick_step = time.perf_counter(), start
    for step in range(start, total):
      if _mode_at(config, step) != mode:  # a new phase: its own step function and batches
        mode = _mode_at(config, step)
        if batches is not None:
          batches.close()
        spec = pipeline.BatchSpec(mode=mode, **config.batch)
        batches = pipeline.batches(_train_source(config, mode, source, graphdef, state,
                                                 workdir), spec, start_step=step,
                                   process_index=jax.process_index(),
                                   process_count=jax.process_count(), seed=config.seed,
                                   workers=config.data.workers)
        if mode not in steps:
          steps[mode] = step_lib.jit_train_step(step_lib.make_train_step(
              graphdef, tx, step_lib.Objective(mode=mode, **config.objective), H36M,
              schedule), mesh)
        images_per_step = spec.labeled + (spec.multiview * spec.num_views if mode != "2d"
                                          else 0)
        print(f"step {step}: training mode {mode!r}, {images_per_step} images per step",
              flush=True)
      state, step_metrics = steps[mode](state, _global_batch(next(batches), by_example))
      done = step + 1
      if multi_process and manager.reached_preemption(done):  # called at every step
        stop["signal"] = signal.SIGTERM
      # Read once: a SIGTERM arriving while this step logs or saves is handled at the next
      # step (read twice, it once skipped the save and still stopped, losing the step).
      stopping = stop["signal"] is not None
      last = done == total
      log = done % config.train.log_every == 0 or last or stopping
      save = last or stopping or done % config.train.checkpoint_every == 0
      if log or save:  # never save without checking that the state is finite
        values = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        _check_finite(values, done, manager)
      if log:
        now = time.perf_counter()
        rate = (done - tick_step) * images_per_step / max(now - tick, 1e-9)
        eta = (total - done) * images_per_step / max(rate, 1e-9)
        writer.write_scalars(done, dict(values, images_per_second=rate))
        # One write per line: the absl metric lines on stderr cannot land inside it.
        print(_progress(done, total, values["loss"], rate, eta) + "\n", end="", flush=True)
        tick, tick_step = now, done
      if save:
        manager.save(done, args=ocp.args.StandardSave(state))
      if validate_every and (done % validate_every == 0 or last):
        scores = evaluate(graphdef, state, config, stream="validation",
                          samples=config.eval.validation_samples, source=source)
        writer.write_scalars(done, {f"validation/{k}": v for k, v in scores.items()
                                    if isinstance(v, float)})
        best.save(done, args=ocp.args.StandardSave(state), metrics={"mpjpe": scores["mpjpe"]})
        print(f"step {done}: validation MPJPE {scores['mpjpe']:.1f} mm (best kept in "
              f"{best.directory})", flush=True)
        tick = time.perf_counter()  # the rate is the training rate
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

  results = evaluate(graphdef, state, config, source=source)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "eval.json"), "w") as f:
      json.dump(results, f, indent=1)
  print(format_results(results), flush=True)
  return results


def _metrics_of(poses, truths) -> dict[str, np.ndarray]:
  """Per-view errors (mm) and 3D PCK / AUC of [N, J, 3] predictions and ground truths."""
  return {"mpjpe": np.asarray(metrics.mpjpe(poses, truths)),
          "n_mpjpe": np.asarray(metrics.n_mpjpe(poses, truths)),
          "pa_mpjpe": np.asarray(metrics.pa_mpjpe(poses, truths)),
          "pck": np.asarray(metrics.pck_3d(poses, truths)),
          "auc": np.asarray(metrics.auc_3d(poses, truths))}


def _action_name(action) -> str:
  action = np.asarray(action).reshape(-1)[0] if np.ndim(action) else action
  return action.decode() if isinstance(action, bytes) else str(action)


def evaluate(graphdef, state, config, *, stream: str = "test", samples: int | None = None,
             source=None) -> dict:
  """MPJPE, N-MPJPE, PA-MPJPE (mm) and 3D PCK / AUC over every view of the first `samples`
  (default `config.eval.samples`; 0: all of a dataset's) samples of a held-out stream; each
  view is one single-image prediction, scaled to mm with the mean bone lengths (METHOD.md
  section 5). When samples carry an "action", the same metrics per action go to
  results["per_action"]."""
  source = make_source(config) if source is None else source
  model = _model(graphdef, state)
  count = config.eval.samples if samples is None else samples
  size = getattr(source, "sizes", {}).get(stream)  # datasets know how many samples they hold
  if size is not None:
    count = min(count, size) if count > 0 else size
  elif count <= 0:
    raise ValueError(f"Evaluating all samples of {stream!r} needs a source that knows its size; "
                     "set config.eval.samples > 0")
  per_view, actions, valid_views = [], [], 0
  for index in range(count):
    sample = source(stream, index)
    view_mask = sample.get("view_mask", np.ones(len(sample["image"]), bool))
    predictions = predict_metric(model, sample["image"], sample["camera"])
    pose, valid = predictions["pose_3d_mm"], predictions["valid"]
    per_view.append(_metrics_of(pose[view_mask], sample["joints_3d"][view_mask]))
    if "joints_2d" in sample:  # the 2D stage's share of the error
      per_view[-1]["error_2d_px"] = np.asarray(metrics.pixel_error(
          predictions["joints_2d"][view_mask], sample["joints_2d"][view_mask],
          sample["joints_2d_mask"][view_mask]))
    actions += [_action_name(sample["action"])] * int(view_mask.sum()) if "action" in sample \
        else []
    valid_views += int(np.sum(valid[view_mask]))
  errors = {k: np.concatenate([v[k] for v in per_view]) for k in per_view[0]}
  results = {name: float(np.mean(values)) for name, values in errors.items()}
  results["views"] = len(errors["mpjpe"])
  results["valid_fraction"] = valid_views / max(results["views"], 1)
  if actions:
    actions = np.array(actions)
    results["per_action"] = {
        name: {k: float(np.mean(v[actions == name])) for k, v in errors.items()}
        for name in sorted(set(actions))}
  return results


def format_results(results: dict, title: str = "held-out test") -> str:
  """A console table: all views, then one row per action when there are actions (their
  unweighted mean is the usual Human3.6M figure)."""
  header = f"{'':<16}{'MPJPE':>8}{'N-MPJPE':>9}{'PA-MPJPE':>10}{'PCK@150':>9}{'AUC':>7}"
  row = lambda name, r: (f"{name:<16}{r['mpjpe']:>8.1f}{r['n_mpjpe']:>9.1f}"  # noqa: E731
                         f"{r['pa_mpjpe']:>10.1f}{100 * r['pck']:>8.1f}%{100 * r['auc']:>6.1f}%")
  error_2d = (f", 2D error {results['error_2d_px']:.1f} px" if "error_2d_px" in results
              else "")
  lines = [f"{title}: {results['views']} views, valid reconstructions "
           f"{100 * results['valid_fraction']:.0f} %{error_2d}  (errors in mm)", header,
           row("all views", results)]
  per_action = results.get("per_action", {})
  if per_action:
    lines += [row(name, r) for name, r in per_action.items()]
    lines.append(row("mean of actions", {k: float(np.mean([r[k] for r in per_action.values()]))
                                         for k in ("mpjpe", "n_mpjpe", "pa_mpjpe", "pck",
                                                   "auc")}))
  return "\n".join(lines)
