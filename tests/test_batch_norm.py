"""posejax.models.batch_norm: BatchNorm's written-out backward pass against Flax's and autodiff's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from posejax.models import batch_norm


def _pair(dtype=jnp.float32, channels=6):
  """Flax's BatchNorm and ours, the same settings as HRNet's (two-pass variance)."""
  make = lambda cls: cls(channels, momentum=0.9, epsilon=1e-5, use_fast_variance=False,
                         dtype=dtype, rngs=nnx.Rngs(0))
  flax_norm, ours = make(nnx.BatchNorm), make(batch_norm.BatchNorm)
  for norm in (flax_norm, ours):  # learned scale and bias, not 1 and 0
    norm.scale[...] = jnp.linspace(0.5, 2.0, channels)
    norm.bias[...] = jnp.linspace(-1.0, 1.0, channels)
  return flax_norm, ours


def _inputs(shape=(4, 5, 5, 6), offset=20.0):
  # A mean far above the spread: where a one-pass variance would lose it to cancellation.
  return jax.random.normal(jax.random.key(0), shape) * 3.0 + offset


def _loss(norm, x):
  return jnp.sum(jnp.sin(norm(x).astype(jnp.float32)))


def test_training_pass_matches_flax_values_gradients_and_running_statistics():
  flax_norm, ours = _pair()
  x = _inputs()
  (flax_value, (flax_grads, flax_dx)) = nnx.value_and_grad(_loss, argnums=(0, 1))(flax_norm, x)
  (value, (grads, dx)) = nnx.value_and_grad(_loss, argnums=(0, 1))(ours, x)
  np.testing.assert_allclose(value, flax_value, rtol=1e-6)
  np.testing.assert_allclose(dx, flax_dx, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grads.scale[...], flax_grads.scale[...], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(grads.bias[...], flax_grads.bias[...], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ours.mean[...], flax_norm.mean[...], rtol=1e-6)
  np.testing.assert_allclose(ours.var[...], flax_norm.var[...], rtol=1e-5)
  assert float(ours.mean[...].mean()) > 1.0  # the statistics moved: the update ran


def test_evaluation_is_flax_own_on_the_running_statistics():
  flax_norm, ours = _pair()
  x = _inputs()
  flax_norm(x), ours(x)  # one training call moves both running averages alike
  flax_norm.eval(), ours.eval()
  np.testing.assert_allclose(ours(x), flax_norm(x), rtol=1e-5, atol=1e-5)


def test_written_out_gradient_is_the_derivative_including_the_statistics_outputs():
  x = _inputs((3, 4, 2, 5), offset=2.0)
  scale, bias = jnp.linspace(0.5, 2.0, 5), jnp.linspace(-1.0, 1.0, 5)

  def everything(x, scale, bias):  # y and both statistics reach the loss
    y, mean, var = batch_norm.batch_norm_train(x, scale, bias, 1e-5)
    return jnp.sum(jnp.sin(y)) + jnp.sum(mean ** 2) + jnp.sum(jnp.sqrt(var))

  def reference(x, scale, bias):  # the same, by autodiff of the textbook two-pass formula
    mean = x.mean((0, 1, 2))
    var = jnp.square(x - mean).mean((0, 1, 2))
    y = (x - mean) / jnp.sqrt(var + 1e-5) * scale + bias
    return jnp.sum(jnp.sin(y)) + jnp.sum(mean ** 2) + jnp.sum(jnp.sqrt(var))

  ours = jax.grad(everything, argnums=(0, 1, 2))(x, scale, bias)
  expected = jax.grad(reference, argnums=(0, 1, 2))(x, scale, bias)
  for got, want in zip(ours, expected):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_bfloat16_computes_statistics_in_float32_and_returns_bfloat16():
  _, ours = _pair(jnp.bfloat16)
  flax_float32, _ = _pair(jnp.float32)
  x = _inputs().astype(jnp.bfloat16)
  y = ours(x)
  assert y.dtype == jnp.bfloat16 and ours.mean[...].dtype == jnp.float32
  # Only the output is rounded: the float32 result on the same (bfloat16) inputs, to bfloat16's
  # 8 bits.
  np.testing.assert_allclose(y.astype(jnp.float32), flax_float32(x.astype(jnp.float32)),
                             rtol=1e-2, atol=1e-2)
  dx = nnx.grad(_loss, argnums=1)(ours, x)
  assert dx.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(dx.astype(jnp.float32))))


def test_hrnet_uses_it():
  from posejax.models import BACKBONES, HRNet
  model = HRNet(BACKBONES["hrnetv2_w4_micro"], rngs=nnx.Rngs(0))
  norms = [node for _, node in nnx.iter_graph(model) if isinstance(node, nnx.BatchNorm)]
  assert norms and all(isinstance(norm, batch_norm.BatchNorm) for norm in norms)
