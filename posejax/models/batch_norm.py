"""BatchNorm with its training gradient written out, as cuDNN and PyTorch compute it.

`BatchNorm` computes what Flax's `nnx.BatchNorm` (two-pass variance) computes; only its backward
pass differs: the input's gradient in one expression over two per-channel sums,
dx = scale / sigma * (dy - mean(dy) - x_hat * mean(dy * x_hat)), where autodiff of the two-pass
variance differentiates through the mean twice and reads the tensor more often. On the 2-core
CPU: forward + backward (+ ReLU) of a 4 x 128 x 128 x 64 batch 13.9 ms against 35.6 ms; the
whole HRNet train step 0-5 % faster, convolutions being most of it (BUILD_NOTES.md, session 18;
`python -m experiments.studies.batch_norm_timing`).

Statistics and gradients are computed in float32 whatever the compute dtype.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x, scale, bias, epsilon: float):
  """BatchNorm over all axes but the last with the batch's statistics.

  Returns (y, mean, var): y = (x - mean) / sqrt(var + epsilon) * scale + bias in x's dtype, and
  the batch's float32 mean and (biased, two-pass) variance for the running averages."""
  return _batch_norm_forward(x, scale, bias, epsilon)[0]


def _batch_norm_forward(x, scale, bias, epsilon):
  axes = tuple(range(x.ndim - 1))
  x32 = x.astype(jnp.float32)
  mean = x32.mean(axes)
  var = jnp.square(x32 - mean).mean(axes)
  inverse = lax.rsqrt(var + epsilon)
  y = ((x32 - mean) * (inverse * scale) + bias).astype(x.dtype)
  return (y, mean, var), (x, mean, inverse, scale)


def _batch_norm_backward(epsilon, residuals, cotangents):
  del epsilon  # in `inverse`
  x, mean, inverse, scale = residuals
  dy, dmean, dvar = cotangents
  axes = tuple(range(x.ndim - 1))
  count = x.size // x.shape[-1]
  centred = x.astype(jnp.float32) - mean
  normalised = centred * inverse
  dy = dy.astype(jnp.float32)
  dbias = dy.sum(axes)
  dscale = (dy * normalised).sum(axes)
  dx = (scale * inverse) * (dy - (dbias + normalised * dscale) / count)
  # The statistics' own cotangents (zero when they only feed the running averages).
  dx = dx + (dmean + 2.0 * dvar * centred) / count
  return dx.astype(x.dtype), dscale, dbias


batch_norm_train.defvjp(_batch_norm_forward, _batch_norm_backward)


class BatchNorm(nnx.BatchNorm):
  """`nnx.BatchNorm` over the last axis whose training pass is `batch_norm_train`.

  Evaluation (running averages) is Flax's own. Statistics are over the whole (global) batch, as
  Flax's: under `jit` with a sharded batch the sums are all-reduced across devices."""

  def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
    use_running = self.use_running_average if use_running_average is None else use_running_average
    if use_running is not False or mask is not None or self.axis_name is not None or (
        self.axis not in (-1, x.ndim - 1)) or self.scale is None or self.bias is None:
      return super().__call__(x, use_running_average, mask=mask)  # Flax's, and its errors
    dtype = self.dtype or jnp.promote_types(x.dtype, self.scale.dtype)
    y, mean, var = batch_norm_train(x.astype(dtype), self.scale[...], self.bias[...],
                                    self.epsilon)
    self.mean[...] = lax.stop_gradient(self.momentum * self.mean[...] + (1 - self.momentum) * mean)
    self.var[...] = lax.stop_gradient(self.momentum * self.var[...] + (1 - self.momentum) * var)
    return y
