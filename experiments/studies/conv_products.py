r"""Convolutions as matrix products on XLA:CPU: faster alone, not inside HRNet's train step.

    python -m experiments.studies.conv_products [--parts=single,step] [--conv_repeats=5]

`single`: one convolution's forward and both gradients (batch 4, float32) three ways,
alternating in one process: XLA's convolution (`lax.conv_general_dilated`), the sum of k^2
shifted dots, and one dot of the k^2 shifted views side by side (im2col).
`step`: the HRNet train step of `experiments.benchmark` (forward, MSE on the maps, backward,
Adam; batch 4) with HRNet's convolutions as XLA's and as im2col products (an `nnx.Conv`
`conv_general_dilated`), alternating, two rounds each.

Measured on the 2-core VM (BUILD_NOTES.md, session 13): alone, the products win up to 4x on
large tensors; inside the step they lose (and triple HRNet-W32's compile time), so posejax
keeps XLA's convolutions. Kept to re-measure on another jaxlib or machine.
"""

from __future__ import annotations

from unittest import mock

import jax
import jax.numpy as jnp
from absl import app, flags
from jax import lax

from experiments import benchmark, cli
from posejax import models
from posejax.models import hrnet

_PARTS = flags.DEFINE_list("parts", ["single", "step"], "single and/or step.")
_REPEATS = flags.DEFINE_integer("conv_repeats", 5, "Timed calls per measurement (median).")
_STEP_CASES = flags.DEFINE_list("step_cases", ["hrnetv2_w8_small:64", "hrnetv2_w8_small:256",
                                               "hrnet_w32:128"], "BACKBONE:SIZE of the step.")

NHWC = ("NHWC", "HWIO", "NHWC")
# (batch, height, width, in, out, kernel, stride): HRNet-W32's shapes at 256 px and smaller.
SINGLE_CASES = [(4, 128, 128, 64, 64, 3, 1), (4, 64, 64, 64, 64, 3, 1), (4, 64, 64, 32, 32, 3, 1),
                (4, 32, 32, 64, 64, 3, 1), (4, 128, 128, 64, 64, 3, 2),
                (4, 64, 64, 256, 256, 1, 1), (4, 64, 64, 32, 64, 3, 2)]


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


def im2col_for_nnx(lhs, rhs, window_strides, padding, **kwargs):
  """An `nnx.Conv(conv_general_dilated=...)` that computes HRNet's convolutions (square odd
  kernels, equal strides, "same" padding, NHWC) by `conv_im2col`."""
  del padding, kwargs  # HRNet's: (k - 1) / 2 on every side; NHWC x HWIO
  return conv_im2col(lhs, rhs, window_strides[0])


def single_section():
  formulations = dict(xla=conv_xla, shifted_dots=conv_shifted_dots, im2col=conv_im2col)
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


def step_section():
  plain_conv = hrnet._conv  # pylint: disable=protected-access

  def im2col_conv(*args):
    layer = plain_conv(*args)
    layer.conv_general_dilated = im2col_for_nnx
    return layer

  for case in _STEP_CASES.value:
    name, size = case.split(":")
    config = models.BACKBONES[name]
    for _ in range(2):
      for label, factory in (("xla", plain_conv), ("im2col", im2col_conv)):
        with mock.patch.object(hrnet, "_conv", factory):
          row = benchmark._posejax_map_step(config, int(size), 4, _REPEATS.value)  # pylint: disable=protected-access
        print(f"{name} {size}px {label}: {4 / row['seconds']:.2f} images/s, compile "
              f"{row['compile_s']:.1f} s", flush=True)


def main(argv):
  del argv
  cli.run_parts(_PARTS.value, {"single": single_section, "step": step_section})


if __name__ == "__main__":
  app.run(main)
