r"""Other formulations of HRNet's convolutions on XLA:CPU: faster alone, not inside the train step.

    python -m experiments.studies.conv_products [--parts=single,forward,step] [--conv_repeats=5]
    python -m experiments.studies.conv_products --parts=step --step_cases=hrnet_w32:256 \
        --step_formulations=batch_in_width,pointwise_dots --cpu_fusions=ynn

The formulations, each the same function as XLA's convolution (`lax.conv_general_dilated`,
"same" padding, NHWC; tests/test_conv_products.py): the sum of k^2 shifted dots
(`shifted_dots`), one dot of the k^2 shifted views side by side (`im2col`), the batch laid
side by side along the width as one wide image (`batch_in_width`), and 1x1 convolutions as
dots with XLA's for the others (`pointwise_dots`, the step only).

`single`: one convolution's forward and both gradients (batch 4, float32), the formulations
alternating in one process. `forward`: the forward pass alone of XLA's convolution and of
`batch_in_width`, with the cores it keeps busy (CPU seconds / wall seconds): XLA:CPU's
convolution library splits a convolution over threads along the output's width and channels,
so HRNet's batch-4 branch convolutions run on one core. `step`: the HRNet train step of
`experiments.benchmark` (forward, MSE on the maps, backward, Adam; batch 4) with HRNet's
convolutions as XLA's and in each of --step_formulations (an `nnx.Conv`
`conv_general_dilated`), each compiled once, their steps interleaved; once per --cpu_fusions.

Measured on the 2-core VMs (BUILD_NOTES.md, sessions 13 and 28): alone, the products win up to
4x on large tensors and the wide image up to 1.9x on a forward pass; inside the step none wins
(the products lose and triple HRNet-W32's compile time), so posejax keeps XLA's convolutions.
Kept to re-measure on another jaxlib or machine.
"""

from __future__ import annotations

import itertools
from unittest import mock

import jax
import jax.numpy as jnp
from absl import app, flags
from jax import lax

from experiments import benchmark, cli
from posejax import models
from posejax.models import hrnet

_PARTS = flags.DEFINE_list("parts", ["single", "step"], "Of single, forward and step.")
_REPEATS = flags.DEFINE_integer("conv_repeats", 5, "Timed calls per measurement (median).")
_STEP_CASES = flags.DEFINE_list("step_cases", ["hrnetv2_w8_small:64", "hrnetv2_w8_small:256",
                                               "hrnet_w32:128"], "BACKBONE:SIZE of the step.")

NHWC = ("NHWC", "HWIO", "NHWC")
# (batch, height, width, in, out, kernel, stride): HRNet-W32's shapes at 256 px and smaller.
SINGLE_CASES = [(4, 128, 128, 64, 64, 3, 1), (4, 64, 64, 64, 64, 3, 1), (4, 64, 64, 32, 32, 3, 1),
                (4, 32, 32, 64, 64, 3, 1), (4, 128, 128, 64, 64, 3, 2),
                (4, 64, 64, 256, 256, 1, 1), (4, 64, 64, 32, 64, 3, 2), (4, 16, 16, 128, 128, 3, 1),
                (4, 8, 8, 256, 256, 3, 1)]


def _views(x, size: int, stride: int):
  """The size^2 shifted, strided views of the zero-padded x ("same" padding)."""
  pad = (size - 1) // 2
  x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  n, h, w, c = x.shape
  out_h, out_w = (h - size) // stride + 1, (w - size) // stride + 1
  return [lax.slice(x, (0, dy, dx, 0),
                    (n, dy + (out_h - 1) * stride + 1, dx + (out_w - 1) * stride + 1, c),
                    (1, stride, stride, 1)) for dy in range(size) for dx in range(size)]


def conv_xla(x, w, stride):
  pad = (w.shape[0] - 1) // 2
  return lax.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)),
                                  dimension_numbers=NHWC)


def conv_shifted_dots(x, w, stride):
  taps = [w[dy, dx] for dy in range(w.shape[0]) for dx in range(w.shape[1])]
  return sum(jnp.einsum("nhwc,co->nhwo", v, t) for v, t in zip(_views(x, w.shape[0], stride),
                                                               taps))


def conv_im2col(x, w, stride):
  patches = jnp.concatenate(_views(x, w.shape[0], stride), axis=-1)  # (dy, dx) major, c minor
  return jnp.einsum("nhwk,ko->nhwo", patches, w.reshape(-1, w.shape[-1]))  # HWIO alike


def conv_batch_in_width(x, w, stride):
  """XLA's convolution of one wide image: the batch side by side along the width, each image
  between its own zero columns (its padding, and up to a multiple of the stride), so that a
  library that splits a convolution over threads along the width has more to split."""
  size = w.shape[0]
  pad = (size - 1) // 2
  n, h, width, c = x.shape
  out_width = (width + 2 * pad - size) // stride + 1
  block = -(-(width + 2 * pad) // stride) * stride  # one image's columns in the wide one
  x = jnp.pad(x, ((0, 0), (0, 0), (pad, block - width - pad), (0, 0)))
  wide = x.transpose(1, 0, 2, 3).reshape(1, h, n * block, c)
  # Padding along the height only: the width has its zeros. Output column j of image b is
  # column b * block / stride + j of the wide output, whose windows stay inside image b.
  y = lax.conv_general_dilated(wide, w, (stride, stride), ((pad, pad), (0, 0)),
                               dimension_numbers=NHWC)
  y = jnp.pad(y, ((0, 0), (0, 0), (0, n * block // stride - y.shape[2]), (0, 0)))
  y = y.reshape(y.shape[1], n, block // stride, y.shape[3])[:, :, :out_width]
  return y.transpose(1, 0, 2, 3)


def conv_pointwise_dots(x, w, stride):
  """1x1 convolutions as one dot, the others XLA's."""
  if w.shape[:2] == (1, 1) and stride == 1:
    return conv_shifted_dots(x, w, stride)
  return conv_xla(x, w, stride)


FORMULATIONS = dict(xla=conv_xla, shifted_dots=conv_shifted_dots, im2col=conv_im2col,
                    batch_in_width=conv_batch_in_width, pointwise_dots=conv_pointwise_dots)
_SINGLE_FORMULATIONS = ("xla", "shifted_dots", "im2col", "batch_in_width")
_STEP_FORMULATIONS = flags.DEFINE_list(
    "step_formulations", ["im2col"], "Formulations the step compares with XLA's convolution, of "
    f"{', '.join(name for name in FORMULATIONS if name != 'xla')}.")
flags.register_validator("step_formulations",
                         lambda names: set(names) <= set(FORMULATIONS) - {"xla"},
                         message="--step_formulations takes "
                                 f"{', '.join(name for name in FORMULATIONS if name != 'xla')} "
                                 "(XLA's convolution is measured beside them)")


def for_nnx(formulation):
  """An `nnx.Conv(conv_general_dilated=...)` that computes HRNet's convolutions (square odd
  kernels, equal strides, "same" padding, NHWC) by `formulation`."""

  def conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs):
    del padding, kwargs  # HRNet's: (k - 1) / 2 on every side; NHWC x HWIO
    return formulation(lhs, rhs, window_strides[0])

  return conv_general_dilated


def _gflop(n, h, w_, c, o, k, s) -> float:
  return n * (h // s) * (w_ // s) * k * k * c * o * 2 / 1e9


def single_section():
  formulations = {name: FORMULATIONS[name] for name in _SINGLE_FORMULATIONS}
  for n, h, w_, c, o, k, s in SINGLE_CASES:
    x = jax.random.normal(jax.random.key(0), (n, h, w_, c))
    w = jax.random.normal(jax.random.key(1), (k, k, c, o)) * 0.05
    steps = {name: jax.jit(jax.grad(lambda x, w, f=f: jnp.sum(f(x, w, s) ** 2), argnums=(0, 1)))
             for name, f in formulations.items()}
    reference = steps["xla"](x, w)
    for name, step in steps.items():  # compiled, and the same gradients
      for ours, theirs in zip(step(x, w), reference):
        error = float(jnp.max(jnp.abs(ours - theirs)) / jnp.max(jnp.abs(theirs)))
        if error > 1e-4:
          raise AssertionError(f"{name} differs from XLA's convolution by {error:.1e}")
    times = {name: [] for name in steps}
    for _ in range(2):
      for name, step in steps.items():
        times[name].append(1e3 * benchmark.median_seconds(
            lambda step=step: jax.block_until_ready(step(x, w)), _REPEATS.value))
    print(f"{n}x{h}x{w_} {c}->{o} {k}x{k}/{s}: " + "  ".join(
        f"{name} {min(v):.1f} ms" for name, v in times.items()), flush=True)


def forward_section():
  for n, h, w_, c, o, k, s in SINGLE_CASES:
    x = jax.random.normal(jax.random.key(0), (n, h, w_, c))
    w = jax.random.normal(jax.random.key(1), (k, k, c, o)) * 0.05
    runs = {}
    for name in ("xla", "batch_in_width"):
      forward = jax.jit(FORMULATIONS[name], static_argnums=2)
      jax.block_until_ready(forward(x, w, s))
      runs[name] = lambda forward=forward: [jax.block_until_ready(forward(x, w, s))
                                            for _ in range(_REPEATS.value)]
    timed = benchmark.interleaved_seconds(runs, rounds=3)
    print(f"{n}x{h}x{w_} {c}->{o} {k}x{k}/{s} forward: " + "  ".join(
        f"{name} {1e3 * wall / _REPEATS.value:.2f} ms "
        f"({_gflop(n, h, w_, c, o, k, s) * _REPEATS.value / wall:.0f} GFLOP/s, "
        f"{cpu / wall:.2f} cores)" for name, (wall, cpu) in timed.items()), flush=True)


def step_section():
  plain_conv = hrnet._conv  # pylint: disable=protected-access

  def conv_factory(formulation):
    if formulation == "xla":
      return plain_conv  # the model as it is

    def conv(*args):
      layer = plain_conv(*args)
      layer.conv_general_dilated = for_nnx(FORMULATIONS[formulation])
      return layer
    return conv

  for case, cpu_fusions in itertools.product(_STEP_CASES.value, flags.FLAGS.cpu_fusions):
    name, size = case.split(":")
    steps = {}
    for label in ["xla", *_STEP_FORMULATIONS.value]:
      with mock.patch.object(hrnet, "_conv", conv_factory(label)):
        step, compile_s, _ = benchmark.compiled_map_step(models.BACKBONES[name], int(size), 4,
                                                         cpu_fusions=cpu_fusions)
      print(f"{name} {size}px {cpu_fusions} fusions, {label}: compile {compile_s:.1f} s, first "
            f"loss {float(step()):.8f}", flush=True)
      steps[label] = lambda step=step: jax.block_until_ready(step())
    for label, (wall, cpu) in benchmark.interleaved_seconds(steps, _REPEATS.value).items():
      print(f"{name} {size}px {cpu_fusions} fusions, {label}: {4 / wall:.3f} images/s, "
            f"{cpu / wall:.2f} cores", flush=True)


def main(argv):
  del argv
  cli.run_parts(_PARTS.value, {"single": single_section, "forward": forward_section,
                               "step": step_section})


if __name__ == "__main__":
  app.run(main)
