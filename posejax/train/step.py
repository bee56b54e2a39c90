"""The train step of any task, as a pure function of pytrees, and its jit over a device mesh.

One step: the task's loss terms (a dict keyed by term name) of the model in train mode on the
batch, their weighted sum (weights keyed by the same names, from the config), its gradient with
respect to the trained parameters, an Optax update. A term without a weight is an error, and so
is a batch key that the objective did not ask for (weak supervision must not be able to read a
3D label that slipped into its batch).

A TrainState may carry a frozen model beside the trained one (a distillation teacher): its
state is an input of every step, never differentiated nor updated, and the task sees it in
eval mode (BatchNorm running averages).

Sharding: `jit_train_step` replicates the state and shards every batch array along its first
axis over the mesh axis "data"; XLA turns the batch means (BatchNorm, losses) into global ones.

Compiler: on CPU meshes `jit_train_step` compiles with the options of one of `CPU_FUSIONS`
(`config.train.cpu_fusions`); other platforms compile with XLA's defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from posejax.errors import ConfigError

# (model in train mode, batch, frozen model in eval mode or None) -> {term name: scalar}
LossTerms = Callable[[nnx.Module, dict, nnx.Module | None], dict[str, jax.Array]]
# Keys every stream may carry besides the objective's: the sampled augmentation matrices.
_ALWAYS_ALLOWED = ("augmentation",)


def library_fusion_types(*kinds: str) -> str:
  """An XLA:CPU `*_fusion_type` option's value as `compiler_options` takes it: the enum names
  of XLA's proto (LIBRARY_FUSION_TYPE_ELTWISE, ...), not the XLA_FLAGS spelling (eltwise)."""
  return ",".join(f"LIBRARY_FUSION_TYPE_{kind}" for kind in kinds)


# XLA:CPU compiler options of the train step, by name. "ynn" hands element-wise ops,
# reductions and dots to YNNPACK fusions. On a 2-core AVX2 CPU, HRNet-W32's float32 step at
# 256 px ran 2.4-3.3x faster with it (XLA's own fusions recompute the residual stream's
# BatchNorm and ReLU inside every large transpose) and compiled 2.7x faster, while the main
# job's small model ran at 0.59-0.95x: hence a choice per config (docs/results.md 3.5).
CPU_FUSIONS = {
    "xla": {},
    "ynn": {"xla_cpu_experimental_ynn_fusion_type": library_fusion_types(
        "DOT", "ELTWISE", "REDUCE", "INDIVIDUAL_DOT", "INDIVIDUAL_CONVOLUTION")},
}


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: nnx.State  # nnx.Param
  rest: nnx.State  # BatchNorm statistics and anything else that is not trained
  opt_state: optax.OptState
  frozen: nnx.State | None = None  # a frozen model's whole state (a teacher), or None


def create_train_state(model: nnx.Module, optimizer: optax.GradientTransformation,
                       frozen: nnx.Module | None = None):
  """(graphdef, TrainState) of a model, with a frozen model beside it when given (its graphdef
  is `frozen_graphdef(frozen)`)."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  return graphdef, TrainState(step=jnp.zeros((), jnp.int32), params=params, rest=rest,
                              opt_state=optimizer.init(params),
                              frozen=None if frozen is None else nnx.split(frozen)[1])


def frozen_graphdef(frozen: nnx.Module | None) -> nnx.GraphDef | None:
  return None if frozen is None else nnx.split(frozen)[0]


def check_batch_keys(batch: dict, allowed: Mapping[str, tuple[str, ...]]):
  """Raises ValueError if the batch has a stream or a key that `allowed` ({stream: keys}) does
  not list."""
  for stream, arrays in batch.items():
    if stream not in allowed:
      raise ValueError(f"This objective reads no stream {stream!r}; it reads {sorted(allowed)}")
    extra = sorted(set(arrays) - set(allowed[stream]) - set(_ALWAYS_ALLOWED))
    if extra:
      raise ValueError(f"The batch's {stream!r} stream carries {extra}, which this objective "
                       f"must not read (allowed: {sorted(allowed[stream])})")


def weighted_sum(terms: Mapping[str, jax.Array], weights: Mapping[str, float]) -> jax.Array:
  """sum_k weights[k] terms[k]; a term without a weight is an error (a typo in a config's
  weights would otherwise silently train without it)."""
  missing = sorted(set(terms) - set(weights))
  if missing:
    raise ValueError(f"No weight for loss term(s) {missing}; weights given: {sorted(weights)}")
  return sum(weights[name] * value for name, value in terms.items())


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                    loss_terms: LossTerms, weights: Mapping[str, float], *,
                    batch_keys: Mapping[str, tuple[str, ...]] | None = None,
                    frozen_graphdef: nnx.GraphDef | None = None,
                    prepare: Callable[[dict], dict] | None = None,
                    learning_rate: optax.Schedule | None = None,
                    stage_start: int = 0) -> Callable:
  """The pure step: (TrainState, batch) -> (TrainState, metrics).

  Args:
    graphdef: the trained model's graph.
    optimizer: its Optax transformation (the state's opt_state is this optimiser's).
    loss_terms: the task's objective, see `LossTerms`.
    weights: a weight per term name.
    batch_keys: {stream: keys} the objective may read; checked at trace time when given.
    frozen_graphdef: the graph of the state's frozen model, if it has one.
    prepare: batch -> batch before the loss, outside the gradient (the task's augmentation on
      the device, say).
    learning_rate: the schedule, reported as a metric at the stage's own step.
    stage_start: the global step at which this optimiser started (its schedule counts from it).
  """
  weights = dict(weights)

  def train_step(state: TrainState, batch: dict):
    if batch_keys is not None:
      check_batch_keys(batch, batch_keys)
    if prepare is not None:
      batch = prepare(batch)
    frozen = None
    if frozen_graphdef is not None:
      frozen = nnx.merge(frozen_graphdef, jax.lax.stop_gradient(state.frozen), copy=True)
      frozen.eval()

    def loss_fn(params):
      # copy=True: fresh Variables at the current trace level, so BatchNorm can update its
      # statistics inside jax.grad.
      model = nnx.merge(graphdef, nnx.merge_state(params, state.rest), copy=True)
      model.train()
      terms = loss_terms(model, batch, frozen)
      # Keep only what is not a parameter (the new BatchNorm statistics): the model's copy of
      # the parameters is the pre-update one and must not shadow the update.
      _, new_rest = nnx.split_state(nnx.state(model), nnx.Param, ...)
      return weighted_sum(terms, weights), (terms, new_rest)

    (loss, (terms, new_rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # param_norm: a NaN update shows up here one step before it reaches the loss.
    metrics = dict(loss=loss, grad_norm=optax.tree.norm(grads),
                   param_norm=optax.tree.norm(params), **terms)
    if learning_rate is not None:
      metrics["learning_rate"] = learning_rate(state.step - stage_start)
    new_state = state.replace(step=state.step + 1, params=params, rest=new_rest,
                              opt_state=opt_state)
    return new_state, metrics

  return train_step


def on_leaves(train_step: Callable, state_def: jax.tree_util.PyTreeDef) -> Callable:
  """`train_step` as a function of the state's leaves: (leaves, batch) -> (leaves, metrics),
  `state_def` the state's tree structure (`jax.tree_util.tree_flatten(state)[1]`).

  Why: a jitted call flattens its inputs and unflattens its outputs on the host, every step,
  and a TrainState of nnx.States (Variables in nested States, Adam's moments of them) is slow
  to walk. HRNet-W32's step (3221 arrays) on the H200 took 131 ms of host time per call on the
  TrainState and 71 ms on its leaves, and the loop ran twice as fast; the main job's (790
  arrays) on the 2-core VM 10.8 and 2.8 ms (docs/results.md 3.8). The loop keeps the leaves
  between steps and rebuilds the TrainState to start a stage, save or evaluate.
  """

  def leaves_step(leaves: list, batch: dict):
    state, metrics = train_step(jax.tree_util.tree_unflatten(state_def, leaves), batch)
    new_leaves, new_def = jax.tree_util.tree_flatten(state)
    if new_def != state_def:
      raise ValueError(f"The train step changed the state's structure: {state_def} -> "
                       f"{new_def}")
    return new_leaves, metrics

  return leaves_step


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


def check_cpu_fusions(cpu_fusions: str) -> None:
  if cpu_fusions not in CPU_FUSIONS:
    raise ConfigError(f"config.train.cpu_fusions={cpu_fusions!r}: expected one of "
                      f"{sorted(CPU_FUSIONS)}")


def compiler_options(cpu_fusions: str, platform: str) -> dict | None:
  """The XLA options `CPU_FUSIONS[cpu_fusions]` for platform "cpu"; None (XLA's defaults)
  for the others."""
  check_cpu_fusions(cpu_fusions)
  if platform != "cpu":
    return None
  return CPU_FUSIONS[cpu_fusions] or None


def jit_train_step(train_step: Callable, mesh: Mesh, cpu_fusions: str = "xla") -> Callable:
  """jit with the state replicated (and donated) and every batch array split along axis 0;
  on a CPU mesh, compiled with the options of `CPU_FUSIONS[cpu_fusions]`. With options ("ynn"
  on a CPU) the result cannot be traced inside another jit or `make_jaxpr` (JAX refuses
  compiler options on a nested jit): trace the step before jit instead."""
  replicated, by_example = shardings(mesh)
  return jax.jit(train_step, in_shardings=(replicated, by_example),
                 out_shardings=(replicated, replicated), donate_argnums=0,
                 compiler_options=compiler_options(cpu_fusions, mesh.devices.flat[0].platform))


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """Puts a (single-process, global) batch on the mesh, split along axis 0."""
  return jax.device_put(batch, shardings(mesh)[1])
