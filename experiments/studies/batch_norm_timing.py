r"""BatchNorm's written-out backward pass against Flax's autodiff one, alone and in HRNet's step.

    python -m experiments.studies.batch_norm_timing [--parts=layer,step] [--bn_repeats=15]

`layer`: BatchNorm (batch statistics) + ReLU, forward and backward, float32, at the shapes of
HRNet's large and small tensors: Flax's `nnx.BatchNorm` (two-pass variance), posejax's
(`posejax.models.batch_norm.BatchNorm`), and PyTorch's `BatchNorm2d` on this machine's threads
where torch is installed. The gradients are checked equal first.
`step`: the HRNet train step of `experiments.benchmark` (forward, MSE on the maps, backward,
Adam), built once with Flax's BatchNorm and once with posejax's, both compiled, then their
steps interleaved (A, B, A, B, ...) so that the machine's drift falls on both alike.

Measured on the 2-core VM: BUILD_NOTES.md, session 18.
"""

from __future__ import annotations

from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from experiments import benchmark, cli
from posejax import models
from posejax.models import hrnet
from posejax.models.batch_norm import BatchNorm

_PARTS = flags.DEFINE_list("parts", ["layer", "step"], "layer and/or step.")
_REPEATS = flags.DEFINE_integer("bn_repeats", 15, "Timed calls per formulation (median).")
_STEP_CASES = flags.DEFINE_list(
    "step_cases", ["hrnetv2_w8_small:64:32", "hrnetv2_w8_small:256:4"],
    "BACKBONE:SIZE:BATCH of the step (the main job's stage-1 batch is 64 px x 32).")

LAYER_SHAPES = [(4, 64, 64, 32), (4, 128, 128, 64), (4, 64, 64, 256), (32, 16, 16, 32)]
# The two classes compared: Flax's (autodiff's backward pass; HRNet's before session 18) and
# posejax's. The step section builds HRNet with each through its own `hrnet._batch_norm`.
FORMULATIONS = (("flax", nnx.BatchNorm), ("posejax", BatchNorm))


def _torch_layer(shape):
  """PyTorch's BatchNorm2d + ReLU forward and backward, or None without torch."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  x = torch.randn(shape[0], shape[3], shape[1], shape[2]) * 3 + 20
  x.requires_grad_()
  target = torch.randn_like(x)
  norm = torch.nn.BatchNorm2d(shape[3])

  def call():
    x.grad = None
    norm.zero_grad()
    torch.mean((torch.relu(norm(x)) - target) ** 2).backward()
  return call


def layer_section():
  for shape in LAYER_SHAPES:
    x = jax.random.normal(jax.random.key(0), shape) * 3 + 20
    target = jax.random.normal(jax.random.key(1), shape)
    calls, gradients = {}, {}
    for name, cls in FORMULATIONS:
      norm = cls(shape[-1], use_fast_variance=False, rngs=nnx.Rngs(0))
      graphdef, params, stats = nnx.split(norm, nnx.Param, ...)

      def loss(params, x, graphdef=graphdef, stats=stats):
        y = nnx.merge(graphdef, params, stats, copy=True)(x)
        return jnp.mean(jnp.square(jax.nn.relu(y) - target))
      grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
      gradients[name] = grad(params, x)
      calls[name] = lambda grad=grad, params=params: grad(params, x)
    for ours, theirs in zip(jax.tree.leaves(gradients["posejax"]),
                            jax.tree.leaves(gradients["flax"])):
      np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-7)
    torch_call = _torch_layer(shape)
    if torch_call is not None:
      torch_call()
      calls["pytorch"] = torch_call
    times = {name: [] for name in calls}
    for _ in range(2):
      for name, call in calls.items():
        times[name].append(1e3 * benchmark.median_seconds(
            lambda call=call: jax.block_until_ready(call()), _REPEATS.value))
    print("x".join(map(str, shape)) + ": " + "  ".join(
        f"{name} {min(v):.1f} ms" for name, v in times.items()), flush=True)


def step_section():
  for case in _STEP_CASES.value:
    name, size, batch = case.split(":")
    steps = {}
    for label, cls in FORMULATIONS:
      with mock.patch.object(hrnet, "BatchNorm", cls):
        step, compile_seconds, _ = benchmark.compiled_map_step(models.BACKBONES[name],
                                                               int(size), int(batch))
      steps[label] = step
      print(f"{name} {size} px, batch {batch}, {label}: compile {compile_seconds:.1f} s, "
            f"first loss {float(step()):.6f}", flush=True)
    medians = {label: wall for label, (wall, _) in
               benchmark.interleaved_seconds(steps, _REPEATS.value).items()}
    print(f"{name} {size} px, batch {batch}: " + "  ".join(
        f"{label} {1e3 * m:.1f} ms ({int(batch) / m:.2f} images/s)"
        for label, m in medians.items())
        + f"  speed-up {medians['flax'] / medians['posejax']:.3f}x", flush=True)


def main(argv):
  del argv
  cli.run_parts(_PARTS.value, {"layer": layer_section, "step": step_section})


if __name__ == "__main__":
  app.run(main)
