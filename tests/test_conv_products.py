"""experiments.studies.conv_products: every formulation is XLA's convolution, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments.studies import conv_products

# (batch, height, width, in, out, kernel, stride): odd and even widths, so that the wide image's
# blocks are padded up to a multiple of the stride in some cases and not in others.
CASES = [(3, 6, 10, 2, 4, 3, 1), (3, 6, 10, 2, 4, 3, 2), (2, 5, 9, 3, 2, 3, 2),
         (2, 4, 7, 3, 5, 1, 1), (1, 6, 6, 2, 3, 3, 1)]


@pytest.mark.parametrize("name", sorted(set(conv_products.FORMULATIONS) - {"xla"}))
@pytest.mark.parametrize("case", CASES, ids=str)
def test_each_formulation_is_xlas_convolution_with_its_gradients(name, case):
  n, h, w_, c, o, k, s = case
  x = jax.random.normal(jax.random.key(0), (n, h, w_, c))
  w = jax.random.normal(jax.random.key(1), (k, k, c, o))
  cotangent = jax.random.normal(jax.random.key(2), conv_products.conv_xla(x, w, s).shape)

  def value_and_grads(formulation):
    y, pullback = jax.vjp(lambda x, w: formulation(x, w, s), x, w)
    return (y, *pullback(cotangent))

  expected = value_and_grads(conv_products.conv_xla)
  for ours, theirs in zip(value_and_grads(conv_products.FORMULATIONS[name]), expected):
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_the_wide_image_keeps_each_image_to_itself():
  # One image non-zero: a window straddling two images would leak it into its neighbours.
  x = jnp.zeros((3, 4, 6, 1)).at[1].set(1.0)
  y = conv_products.conv_batch_in_width(x, jnp.ones((3, 3, 1, 1)), 1)
  assert float(jnp.abs(y[0]).max()) == 0 and float(jnp.abs(y[2]).max()) == 0
  assert float(y[1, 1, 0, 0]) == 6  # a left-edge pixel sees 2 x 3 ones, not the zeros beside it


def test_an_nnx_conv_computes_with_the_formulation_it_is_given():
  layer = nnx.Conv(2, 3, (3, 3), (2, 2), padding=((1, 1), (1, 1)), use_bias=False,
                   rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 2))
  expected = layer(x)
  calls = []

  def counted(x, w, stride):
    calls.append(stride)
    return conv_products.conv_batch_in_width(x, w, stride)

  layer.conv_general_dilated = conv_products.for_nnx(counted)
  np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-6)
  assert calls == [2]
