r"""The completion network's acceptance run: can CompletionMLP repair neighbour-filled joints?

    python -m experiments.studies.pose_completion --out_dir=RUNS/completion

Trains `CompletionMLP` (`posejax.models.completion`) on poses alone and measures it on poses of
motion it never saw. The poses are the pose transformer's targets: frames of pybullet's
DeepMimic clips (`posejax.data.render.motion`) placed and viewed as the renderer does
(`synthetic.place_subject` for a random subject, one of `synthetic.random_cameras`), in the
camera frame, root-relative and scale-normalised (`objective.target_pose`, thorax-pelvis = 1).
The clips are split as the renderer splits them: every 4th by name is a test clip, and test
poses are seen by the renderer's held-out cameras. Training batches are BERT-masked
(`completion.bert_mask`: 3 of 17 joints selected, 80 % of those neighbour-filled) afresh each
step from a pool of training poses drawn once.

The measurement: on test-clip poses with 3 of 17 joints neighbour-filled (`bert_mask` with
replace_probability 1, a fixed key), the mean Euclidean error of the filled joints before
(`neighbour_fill` itself) and after the network, in normalised units and in mm (each pose's
own scale: the thorax-pelvis length), and their ratio; the acceptance bar is a ratio <= 0.6.
The completed pose takes the network's output at the filled joints and keeps the others as
they were (the loss never asks the network for them); how far the network's own output moves
those kept joints is reported too.

--evaluate_on=validation chooses settings without looking at the test clips: every 4th
training clip by name is held out of training and measured instead, with the same cameras.

With --transformer=WORKDIR (a pose transformer's run), the acceptance's second half: on that
model's predictions of its held-out test stream, the joints scoring below --detect_threshold
(0.3) are neighbour-filled and completed (`models.completion.complete_undetected`), and the
MPJPE before and after is reported, overall (the bar: at most +1 mm) and on those joints.

Writes OUT_DIR/completion.json (the figures, the settings, the clips of each side),
OUT_DIR/parameters.npz (the trained parameters, `restore_parameters` reads them into a
`CompletionMLP` of the same --hidden and --blocks) and OUT_DIR/evaluation.npz (the evaluated
poses: truth [M, J, 3], scale_mm [M], selected [M, J], completed [M, J, 3]).

Procedural motion, the renderer's other pose source, is left out: it has no clip to hold out,
and drawing it costs tens of ms a pose.
"""

from __future__ import annotations

import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from experiments import cli
from posejax import completion
from posejax.data.render import motion, synthetic
from posejax.errors import UserError
from posejax.data.batching.sources import make_source
from posejax.evaluators import pose3d
from posejax.models.completion import CompletionMLP, complete_undetected
from posejax.tasks import get_task
from posejax.tasks.pose_transformer import evaluation
from posejax.train import checkpoints
from posejax.skeleton import H36M
from posejax.tasks.pose_transformer.objective import target_pose
from posejax.train.optimizer import make_optimizer

_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where completion.json, parameters.npz and "
                               "evaluation.npz are written.")
_STEPS = flags.DEFINE_integer("train_steps", 3000, "Training steps.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Poses per training step.", lower_bound=1)
_TRAIN_POSES = flags.DEFINE_integer("train_poses", 20_000, "Poses in the training pool.",
                                    lower_bound=1)
_TEST_POSES = flags.DEFINE_integer("test_poses", 5000, "Poses measured (of the validation "
                                   "clips with --evaluate_on=validation).", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the training pool, the initialisation and the "
                             "batches (the measured poses and their mask are fixed).")
_HIDDEN = flags.DEFINE_integer("hidden", 512, "Width of the residual MLP.", lower_bound=1)
_BLOCKS = flags.DEFINE_integer("blocks", 2, "Residual blocks of the MLP.", lower_bound=0)
_LEARNING_RATE = flags.DEFINE_float("peak_learning_rate", 1e-3, "AdamW's peak learning rate "
                                    "(cosine decay to 0).", lower_bound=0.0)
_EVALUATE_ON = flags.DEFINE_enum("evaluate_on", "test", ["test", "validation"],
                                 "test: train on every training clip, measure the test clips; "
                                 "validation: hold every 4th training clip out and measure it.")
_TRANSFORMER = flags.DEFINE_string(
    "transformer", None, "A pose transformer's workdir: also measure the completion on its "
    "predictions of the held-out test stream (the acceptance's overall MPJPE, at most +1 mm).")
_DETECT_THRESHOLD = flags.DEFINE_float(
    "detect_threshold", 0.3, "With --transformer: joints whose class score is below it count "
    "as undetected and are neighbour-filled, then completed.")
_LOG_EVERY = flags.DEFINE_integer("log_every", 250, "Print the mean loss every N steps.",
                                  lower_bound=1)

BAR = 0.6  # the acceptance bar: filled joints' error after / before the network
_WEIGHT_DECAY = 1e-4
# The measured poses and their masks do not depend on --seed, so that runs of different
# seeds (and settings) are measured on the same poses with the same joints filled.
_EVALUATION_SEED = 0
_EVALUATION_MASK_KEY = 0
# Which rng stream of `_EVALUATION_SEED` / --seed draws which pool.
_TRAIN_STREAM, _EVALUATION_STREAM = 0, 1


# Jitted: one compiled program per pool size, where op by op target_pose would compile each of
# its ~15 ops for each size (20 s of the run on 2 busy cores).
_jitted_target_pose = jax.jit(target_pose, static_argnums=1)


@functools.cache
def _deepmimic_clips() -> tuple[tuple[str, np.ndarray], ...]:
  """(name, frames [T, J, 3] mm, world frame) of every DeepMimic clip, sorted by file name."""
  paths = motion.deepmimic_clip_paths()
  if not paths:
    raise UserError("The completion study draws its poses from pybullet's DeepMimic clips, and "
                    "pybullet is not installed: pip install pybullet")
  return tuple((path.stem.removeprefix("humanoid3d_"), motion.load_deepmimic_clip(path))
               for path in paths)


def split_clips(evaluate_on: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """(training clips, evaluation clips), each {name: frames [T, J, 3] mm, world frame}.

  The test clips are the renderer's (every 4th clip by file name, as `synthetic.draw_pose`
  holds them out); "test" trains on all the others, "validation" holds every 4th of those
  out of training (by name again) and evaluates on them.
  """
  clips = _deepmimic_clips()
  training = [clip for i, clip in enumerate(clips) if i % 4 != 3]
  if evaluate_on == "test":
    evaluated = [clip for i, clip in enumerate(clips) if i % 4 == 3]
  elif evaluate_on == "validation":
    evaluated = [clip for i, clip in enumerate(training) if i % 4 == 3]
    training = [clip for i, clip in enumerate(training) if i % 4 != 3]
  else:
    raise ValueError(f"evaluate_on must be 'test' or 'validation', got {evaluate_on!r}")
  return dict(training), dict(evaluated)


def view_poses(clips, count: int, rng: np.random.Generator,
               held_out: bool) -> tuple[np.ndarray, np.ndarray]:
  """Clip frames placed and viewed like the renderer's samples, as the transformer's targets.

  Each pose: a clip uniformly, a frame of it uniformly (as `synthetic.draw_pose` picks a
  captured pose), retargeted to a random subject and turned and centred on the floor
  (`synthetic.place_subject`), seen by one camera of `synthetic.random_cameras` (each view of
  a renderer's sample is distributed like this one camera; a sample's views are only spread
  around the subject).

  Args:
    clips: sequence of clips, frames [T, J, 3] mm, world frame.
    count: N poses.
    rng: the only source of randomness.
    held_out: the cameras of the renderer's validation and test streams (other heights and
      focal lengths).

  Returns:
    (pose [N, J, 3] float32: root-relative and scale-normalised, `target_pose` of the
     camera-frame joints; scale_mm [N] float32: each pose's thorax-pelvis length, so that
     pose x scale_mm is its root-relative pose in mm).
  """
  joints_camera = np.empty((count, H36M.num_joints, 3))
  for n in range(count):
    clip = clips[rng.integers(len(clips))]
    frame = clip[rng.integers(len(clip))].astype(np.float64)
    world = synthetic.place_subject(frame, synthetic.random_subject(rng), rng)
    camera, = synthetic.random_cameras(rng, 1, world.mean(0), held_out=held_out)
    joints_camera[n] = world @ camera.rotation.T + camera.translation
  k, l = H36M.scale_pair
  scale_mm = np.linalg.norm(joints_camera[:, k] - joints_camera[:, l], axis=-1)
  return np.asarray(_jitted_target_pose(joints_camera, H36M)), scale_mm.astype(np.float32)


def training_pool(clips, count: int, seed: int) -> np.ndarray:
  """[N, J, 3] training poses (`view_poses` with the training cameras), deterministic by seed."""
  rng = np.random.default_rng([seed, _TRAIN_STREAM])
  return view_poses(list(clips.values()), count, rng, held_out=False)[0]


def evaluation_poses(clips, count: int) -> tuple[np.ndarray, np.ndarray]:
  """(pose [M, J, 3], scale_mm [M]) of the measured clips, with the held-out cameras: the same
  poses whatever the run's seed."""
  rng = np.random.default_rng([_EVALUATION_SEED, _EVALUATION_STREAM])
  return view_poses(list(clips.values()), count, rng, held_out=True)


@functools.partial(nnx.jit, static_argnames="batch_size")
def train_step(model: CompletionMLP, optimizer: nnx.Optimizer, pool, key, *, batch_size: int):
  """One AdamW step on a fresh batch of the pool [P, J, 3], BERT-masked; returns the loss."""
  batch_key, mask_key = jax.random.split(key)
  truth = pool[jax.random.randint(batch_key, (batch_size,), 0, pool.shape[0])]
  masked, selected, replaced = completion.bert_mask(mask_key, truth, H36M)

  def loss_fn(model):
    return completion.completion_loss(model(masked, replaced), truth, selected)

  loss, grads = nnx.value_and_grad(loss_fn)(model)
  optimizer.update(model, grads)
  return loss


def train(model: CompletionMLP, pool: np.ndarray, *, steps: int, batch_size: int,
          learning_rate: float, seed: int, log_every: int) -> list[float]:
  """Trains `model` in place on the pool [P, J, 3]; returns the mean loss of every
  `log_every` steps (the last stretch may be shorter), printed as it goes."""
  warmup_steps = min(100, steps // 10)  # Adam's first steps are large without a warm-up
  tx, _ = make_optimizer(dict(name="adamw", learning_rate=learning_rate, schedule="cosine",
                              warmup_steps=warmup_steps, total_steps=steps,
                              weight_decay=_WEIGHT_DECAY))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  model.train()
  pool = jnp.asarray(pool)
  key = jax.random.key(seed)
  history, losses, start = [], [], time.perf_counter()
  for step in range(1, steps + 1):
    losses.append(train_step(model, optimizer, pool, jax.random.fold_in(key, step),
                             batch_size=batch_size))
    if step % log_every == 0 or step == steps:
      history.append(float(np.mean(jax.device_get(losses))))
      losses = []
      print(f"step {step}/{steps}: loss {history[-1]:.5f} "
            f"({time.perf_counter() - start:.0f} s)", flush=True)
  return history


def mean_distance(a, b, where, scale=None) -> float:
  """Mean Euclidean distance between a and b [N, J, 3] over the joints where [N, J] is true,
  each distance times its pose's scale [N] if given."""
  distance = np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1)
  if scale is not None:
    distance = distance * np.asarray(scale, np.float64)[:, None]
  return float(distance[np.asarray(where)].mean())


def measure(model: CompletionMLP, truth: np.ndarray, scale_mm: np.ndarray):
  """The acceptance figures on poses [M, J, 3] with 3 of J joints neighbour-filled.

  Returns:
    (figures: a dict of floats, see the module docstring; arrays: selected [M, J] and
     completed [M, J, 3] for evaluation.npz).
  """
  masked, selected, _ = completion.bert_mask(jax.random.key(_EVALUATION_MASK_KEY), truth, H36M,
                                             replace_probability=1.0)
  model.eval()
  network = nnx.jit(lambda model, masked, replaced: model(masked, replaced))(
      model, masked, selected)
  completed = np.asarray(jnp.where(selected[..., None], network, masked))
  selected, masked, network = np.asarray(selected), np.asarray(masked), np.asarray(network)
  figures = {"filled_joints": int(selected.sum())}
  for unit, scale in (("", None), ("_mm", scale_mm)):
    figures["fill_error" + unit] = mean_distance(masked, truth, selected, scale)
    figures["completion_error" + unit] = mean_distance(completed, truth, selected, scale)
    figures["ratio" + unit] = figures["completion_error" + unit] / figures["fill_error" + unit]
    # The kept joints are the truth; this is how far the network's residual moves them.
    figures["network_unselected_error" + unit] = mean_distance(network, truth, ~selected, scale)
    figures["completed_unselected_error" + unit] = mean_distance(completed, truth, ~selected,
                                                                 scale)
  figures["passed"] = figures["ratio"] <= BAR
  return figures, {"selected": selected, "completed": completed}


def on_transformer_predictions(model: CompletionMLP, workdir: str,
                               threshold: float) -> dict:
  """The completion on a pose transformer's predictions of its own held-out test stream (its
  config's data and eval.samples): MPJPE (mm, root-aligned) of every present view before and
  after completing the joints scoring below `threshold`, overall and on those joints; each
  pose in mm by its own bone-length scale, the same before and after."""
  transformer, config = checkpoints.restore_model(workdir)
  if config.get("task") != "pose_transformer":
    raise UserError(f"--transformer={workdir} is a {config.get('task', 'pose25d')!r} workdir, "
                    "not a 'pose_transformer' one")
  task = get_task(config)
  source = make_source(config.data)
  model.eval()
  before, after, truth, undetected = [], [], [], []
  for index in range(pose3d.sample_count(source, "test", config.eval.samples)):
    sample = source("test", index)
    present = np.asarray(sample.get("view_mask", np.ones(len(sample["image"]), bool)))
    predictions = task.predict(transformer, sample["image"], sample["camera"])
    completed, missing = complete_undetected(model, predictions["pose_3d"],
                                             predictions["joint_scores"], threshold)
    scale = predictions["scale_mm"][:, None, None]
    before.append((predictions["pose_3d"] * scale)[present])
    after.append((np.asarray(completed) * scale)[present])
    truth.append(np.asarray(sample["joints_3d"])[present])
    undetected.append(np.asarray(missing)[present])
  before, after, truth = (np.concatenate(x).astype(np.float32) for x in (before, after, truth))
  undetected = np.concatenate(undetected)

  def mpjpe(poses, mask) -> float | None:  # over the joints of mask [M, J], root-aligned
    return evaluation.pooled_mpjpe(poses, truth, mask)

  everywhere = np.ones_like(undetected)
  return dict(workdir=workdir, detect_threshold=threshold, views=int(len(truth)),
              undetected_fraction=float(undetected.mean()),
              mpjpe_before=mpjpe(before, everywhere), mpjpe_after=mpjpe(after, everywhere),
              undetected_mpjpe_before=mpjpe(before, undetected),
              undetected_mpjpe_after=mpjpe(after, undetected))


def save_parameters(model: CompletionMLP, path: str):
  """The model's parameters to an .npz, one array per parameter path ("blocks/0/linear1/kernel")."""
  flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
  np.savez(path, **{"/".join(map(str, keys)): np.asarray(param[...]) for keys, param in flat})


def restore_parameters(model: CompletionMLP, path: str):
  """Reads `save_parameters`' file into `model` (of the same hidden width and blocks)."""
  flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
  with np.load(path) as saved:
    arrays = {name: saved[name] for name in saved.files}
  expected = {"/".join(map(str, keys)): param.shape for keys, param in flat}
  if {name: array.shape for name, array in arrays.items()} != expected:
    raise ValueError(f"{path} holds the parameters of another CompletionMLP (other --hidden "
                     "or --blocks?)")
  nnx.update(model, nnx.from_flat_state([
      (keys, param.replace(jnp.asarray(arrays["/".join(map(str, keys))])))
      for keys, param in flat]))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _OUT_DIR.value:
    raise app.UsageError("--out_dir is required")
  workdir = os.path.expanduser(_OUT_DIR.value)
  os.makedirs(workdir, exist_ok=True)
  start = time.perf_counter()
  training_clips, evaluation_clips = split_clips(_EVALUATE_ON.value)
  pool = training_pool(training_clips, _TRAIN_POSES.value, _SEED.value)
  truth, scale_mm = evaluation_poses(evaluation_clips, _TEST_POSES.value)
  print(f"{len(pool)} training poses of {len(training_clips)} clips, {len(truth)} "
        f"{_EVALUATE_ON.value} poses of {', '.join(evaluation_clips)} "
        f"({time.perf_counter() - start:.0f} s)", flush=True)

  model = CompletionMLP(H36M, hidden=_HIDDEN.value, blocks=_BLOCKS.value,
                        rngs=nnx.Rngs(_SEED.value))
  history = train(model, pool, steps=_STEPS.value, batch_size=_BATCH_SIZE.value,
                  learning_rate=_LEARNING_RATE.value, seed=_SEED.value,
                  log_every=_LOG_EVERY.value)
  figures, arrays = measure(model, truth, scale_mm)

  results = dict(
      figures, bar=BAR, evaluated_on=_EVALUATE_ON.value,
      training_clips=list(training_clips), evaluation_clips=list(evaluation_clips),
      train_poses=len(pool), test_poses=len(truth), steps=_STEPS.value,
      batch_size=_BATCH_SIZE.value, learning_rate=_LEARNING_RATE.value, seed=_SEED.value,
      hidden=_HIDDEN.value, blocks=_BLOCKS.value, loss_history=history,
      seconds=time.perf_counter() - start)
  if _TRANSFORMER.value:
    results["transformer"] = on_transformer_predictions(
        model, os.path.expanduser(_TRANSFORMER.value), _DETECT_THRESHOLD.value)
  with open(os.path.join(workdir, "completion.json"), "w") as f:
    json.dump(results, f, indent=1)
  save_parameters(model, os.path.join(workdir, "parameters.npz"))
  np.savez(os.path.join(workdir, "evaluation.npz"), truth=truth, scale_mm=scale_mm, **arrays)
  print(f"Filled joints ({figures['filled_joints']}): neighbour fill "
        f"{figures['fill_error']:.4f} ({figures['fill_error_mm']:.1f} mm), completed "
        f"{figures['completion_error']:.4f} ({figures['completion_error_mm']:.1f} mm), ratio "
        f"{figures['ratio']:.3f} ({figures['ratio_mm']:.3f} in mm; bar {BAR}: "
        f"{'passed' if figures['passed'] else 'FAILED'})")
  print(f"Unselected joints: the network moves them {figures['network_unselected_error']:.4f} "
        f"({figures['network_unselected_error_mm']:.1f} mm); the completed pose keeps them")
  if "transformer" in results:
    on_transformer = results["transformer"]
    print(f"On the transformer's {on_transformer['views']} test views, "
          f"{100 * on_transformer['undetected_fraction']:.1f} % of joints scored below "
          f"{on_transformer['detect_threshold']}: MPJPE {on_transformer['mpjpe_before']:.1f} -> "
          f"{on_transformer['mpjpe_after']:.1f} mm (those joints: "
          f"{_mm(on_transformer['undetected_mpjpe_before'])} -> "
          f"{_mm(on_transformer['undetected_mpjpe_after'])} mm)")
  print(f"Written to {workdir} ({time.perf_counter() - start:.0f} s)")


def _mm(value: float | None) -> str:
  return "-" if value is None else f"{value:.1f}"


if __name__ == "__main__":
  cli.run(main)
