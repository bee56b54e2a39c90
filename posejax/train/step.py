"""The train step as a pure function of pytrees, and its jit over a device mesh.

One step: augment both streams on the device (`augment.augment_batch`), run the network ONCE
on the labeled images and all multi-view views together (so BatchNorm normalises with the
statistics of the whole global batch), compute the objective of the mode, update with Optax.

Modes (METHOD.md section 4):
  "2d": L_H on the 2D-labeled stream (stage-1 pretraining).
  "fs": L_H + psi L_Z; the multi-view views carry 2D and 3D labels in this mode.
  "ws": L_H + alpha L_MC + beta L_B; the multi-view stream has no labels (the step refuses a
        batch that carries 3D labels: weak supervision must not be able to read them), or
        only 2D pseudo labels of the stage-1 model, on which L_H applies too (the regulariser
        of METHOD.md section 4; `posejax.train.pseudo_labels`).
Ablations are weights of zero (`heatmap_weight`, `alpha`, `beta`).

Sharding: `jit_train_step` replicates the state and shards every batch array along its first
axis over the mesh axis "data"; XLA turns the batch means (BatchNorm, losses) into global ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from posejax import geometry, losses
from posejax.data import augment
from posejax.models import apply
from posejax.skeleton import H36M, Skeleton

MODES = ("2d", "fs", "ws")
_3D_KEYS = ("joints_3d", "has_3d")


@dataclasses.dataclass(frozen=True)
class Objective:
  """Which losses, with which weights (see losses.py for their normalisation)."""

  mode: str = "ws"
  heatmap_weight: float = 1.0
  psi: float = 5.0
  alpha: float = 10.0
  beta: float = 100.0
  with_scale: bool = False  # multi-view alignment: rigid (False) or similarity
  # Whether the 3D losses (L_Z; L_MC, L_B) may move the 2D: the joints and the softmax weights
  # that read the depth maps (METHOD.md lets them). False: they train the depth maps only, the
  # 2D learns from L_H alone. At a small budget the 3D losses otherwise undo the 2D stage
  # (through the softmax, whose gradient carries the temperature, 50): BUILD_NOTES.md, issue 6.
  losses_3d_move_2d: bool = True
  # Weight of `losses.scale_bone_loss` (zero at every solvable reconstruction; it keeps the
  # depths where the root-depth quadratic has a root) and `losses.scale_pair_tilt_loss` (the
  # torso across the line of sight). Not part of L_B: ablations keep them.
  scale_weight: float = 1.0
  max_scale_pair_gap: float = 0.7  # `losses.scale_pair_tilt_loss`'s max_gap
  # Whether L_MC, L_B and the scale terms differentiate through the root-depth solve
  # (METHOD.md: they do). Its gradient couples every joint to the scale pair's depths and is
  # unbounded where the discriminant nears 0; with it, free per-view depths fitted to ground-
  # truth 2D drift away from the true depths (BUILD_NOTES.md, issue 6, session 4).
  root_depth_gradient: bool = True
  heatmap_sigma: float = 2.0  # Gaussian targets, in heatmap cells

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: nnx.State  # nnx.Param
  rest: nnx.State  # BatchNorm statistics and anything else that is not trained
  opt_state: optax.OptState


def create_train_state(model: nnx.Module, optimizer: optax.GradientTransformation):
  """(graphdef, TrainState) of a model."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  return graphdef, TrainState(step=jnp.zeros((), jnp.int32), params=params, rest=rest,
                              opt_state=optimizer.init(params))


def _flatten_views(stream: dict) -> dict:
  """[S, V, ...] -> [S * V, ...] for the per-view keys of a multi-view stream."""
  return {k: v.reshape((-1,) + v.shape[2:]) for k, v in stream.items() if k != "view_mask"}


def objective_terms(predictions: dict, batch: dict, objective: Objective, skeleton: Skeleton,
                    num_labeled: int) -> dict[str, jax.Array]:
  """Every loss term of the objective for predictions on [labeled; flattened multi-view]."""
  heatmaps = predictions["heatmaps"]
  size = heatmaps.shape[-3:-1]
  stride = batch["image_size"] // size[0]
  terms = {}

  supervised_2d = [batch["labeled"]] if "labeled" in batch else []
  # The multi-view views' 2D labels: the dataset's in mode "fs", pseudo labels in mode "ws".
  if objective.mode != "2d" and "joints_2d" in batch.get("multiview", {}):
    supervised_2d.append(_flatten_views(batch["multiview"]))
  count = sum(len(s["joints_2d"]) for s in supervised_2d)
  if supervised_2d:
    joints_2d = jnp.concatenate([s["joints_2d"] for s in supervised_2d])
    mask = jnp.concatenate([s["joints_2d_mask"] for s in supervised_2d])
    targets = losses.heatmap_targets(joints_2d, size, stride=stride,
                                     sigma=objective.heatmap_sigma)
    terms["heatmap"] = losses.heatmap_loss(heatmaps[:count], targets, mask)

  if "multiview" in batch and objective.mode != "2d":
    view_mask = batch["multiview"]["view_mask"]
    shape = view_mask.shape
    view = lambda x: x[num_labeled:].reshape(shape + x.shape[1:])  # noqa: E731
    rel_depth = view(predictions["rel_depth"])
    if not objective.losses_3d_move_2d:  # same values, gradients to the depth maps only
      rel_depth = geometry.relative_depth(jax.lax.stop_gradient(view(predictions["probabilities"])),
                                          view(predictions["depthmaps"]))
    if objective.mode == "fs":
      stream = batch["multiview"]
      target = geometry.relative_depth_target(stream["joints_3d"], skeleton)
      depth_mask = (stream["has_3d"] & view_mask)[..., None] & jnp.ones_like(target, bool)
      terms["depth"] = losses.depth_loss(rel_depth, target, depth_mask)
    else:
      joints_2d = view(predictions["joints_2d"])
      if not objective.losses_3d_move_2d:
        joints_2d = jax.lax.stop_gradient(joints_2d)
      poses, root_depth, _ = geometry.reconstruct(
          joints_2d, rel_depth, batch["multiview"]["camera"], skeleton,
          root_gradient=objective.root_depth_gradient)
      confidence = view(predictions["confidence"])
      # Poses in front of the camera count, including those whose discriminant is negative
      # (reconstructed at the vertex, the scale bone as close to C as it gets): dropping them
      # would let the network escape L_MC and L_B by making every reconstruction "invalid",
      # which it learnt to do (BUILD_NOTES.md, issue 6).
      present = view_mask & (root_depth > 0)
      terms["multiview"] = losses.multiview_consistency_loss(
          poses, confidence, present, with_scale=objective.with_scale)
      terms["limb"] = losses.limb_length_loss(
          poses, confidence * present[..., None].astype(jnp.float32), skeleton)
      # Every view, even one reconstructed behind the camera: its bone is too long all the same.
      terms["scale_bone"] = losses.scale_bone_loss(poses, view_mask, skeleton)
      terms["scale_tilt"] = losses.scale_pair_tilt_loss(
          rel_depth, view_mask, skeleton, max_gap=objective.max_scale_pair_gap)
  return terms


def total_loss(terms: dict[str, jax.Array], objective: Objective) -> jax.Array:
  weights = {"heatmap": objective.heatmap_weight, "depth": objective.psi,
             "multiview": objective.alpha, "limb": objective.beta,
             "scale_bone": objective.scale_weight, "scale_tilt": objective.scale_weight}
  return sum(weights[name] * value for name, value in terms.items())


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                    objective: Objective, skeleton: Skeleton = H36M,
                    learning_rate: optax.Schedule | None = None) -> Callable:
  """The pure step: (TrainState, batch) -> (TrainState, metrics)."""

  def train_step(state: TrainState, batch: dict):
    if objective.mode == "ws" and any(k in s for s in batch.values() for k in _3D_KEYS):
      raise ValueError("A weakly supervised batch must not carry 3D labels "
                       f"({', '.join(_3D_KEYS)}); build it with BatchSpec(mode='ws')")
    batch = {name: augment.augment_batch(stream, stream["augmentation"], skeleton=skeleton)
             if "augmentation" in stream else stream for name, stream in batch.items()}
    streams = [batch["labeled"]] if "labeled" in batch else []
    if "multiview" in batch and objective.mode != "2d":
      streams.append(_flatten_views(batch["multiview"]))
    images = jnp.concatenate([s["image"] for s in streams])
    cameras = jnp.concatenate([s["camera"] for s in streams])
    num_labeled = len(batch["labeled"]["image"]) if "labeled" in batch else 0

    def loss_fn(params):
      predictions, new_state = apply(graphdef, nnx.merge_state(params, state.rest), images,
                                     cameras, train=True)
      terms = objective_terms(predictions, dict(batch, image_size=images.shape[-3]),
                              objective, skeleton, num_labeled)
      # Keep only what is not a parameter (the new BatchNorm statistics): the full state's
      # copy of the parameters is the pre-update one and must not shadow the update.
      _, new_rest = nnx.split_state(new_state, nnx.Param, ...)
      return total_loss(terms, objective), (terms, new_rest)

    (loss, (terms, new_rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # param_norm: a NaN update shows up here one step before it reaches the loss.
    metrics = dict(loss=loss, grad_norm=optax.tree.norm(grads),
                   param_norm=optax.tree.norm(params), **terms)
    if learning_rate is not None:
      metrics["learning_rate"] = learning_rate(state.step)
    new_state = TrainState(step=state.step + 1, params=params, rest=new_rest,
                           opt_state=opt_state)
    return new_state, metrics

  return train_step


def make_mesh(devices=None) -> Mesh:
  """A 1D mesh with axis "data" over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  # Auto axes: XLA propagates the batch sharding through reshapes and concatenations (JAX's
  # default, Explicit, would ask every such op for an output sharding).
  return jax.make_mesh((len(devices),), ("data",), (jax.sharding.AxisType.Auto,),
                       devices=devices)


def shardings(mesh: Mesh) -> tuple[NamedSharding, NamedSharding]:
  """(replicated, split along axis 0 over "data"): the state's and the batch's placements."""
  return NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))


def jit_train_step(train_step: Callable, mesh: Mesh) -> Callable:
  """jit with the state replicated (and donated) and every batch array split along axis 0."""
  replicated, by_example = shardings(mesh)
  return jax.jit(train_step, in_shardings=(replicated, by_example),
                 out_shardings=(replicated, replicated), donate_argnums=0)


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """Puts a (single-process, global) batch on the mesh, split along axis 0."""
  return jax.device_put(batch, shardings(mesh)[1])
