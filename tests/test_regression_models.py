"""posejax.models.regression and posejax.models.deeppose_cascade: DeepPose's networks and its
cascade at prediction time."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from posejax import deeppose
from posejax.models import deeppose_cascade, regression
from posejax.skeleton import H36M

J = H36M.num_joints
_call = nnx.jit(lambda model, images: model(images))


def _images(shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_local_response_norm_is_krizhevskys_formula():
  x = np.arange(1.0, 8.0, dtype=np.float32).reshape(1, 1, 7) * 30
  out = np.asarray(regression.local_response_norm(x))
  for c in range(7):
    window = x[0, 0, max(0, c - 2):c + 3]
    expected = x[0, 0, c] / (2.0 + 1e-4 * np.sum(window**2))**0.75
    assert out[0, 0, c] == pytest.approx(expected, rel=1e-5)
  assert regression.local_response_norm(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16


@pytest.fixture(scope="session")  # built once: tests/conftest.py
def small():
  """A SmallRegressor at 32 px, in evaluation mode (building one costs seconds of compiling)."""
  model = regression.SmallRegressor(J, image_size=32, rngs=nnx.Rngs(0))
  model.eval()
  return model


def _abstract(build, images_shape):
  """(model, output) without computing: shapes only."""
  model = nnx.eval_shape(build)
  model.eval()
  images = jax.ShapeDtypeStruct(images_shape, jnp.uint8)
  return model, nnx.eval_shape(lambda m, x: m(x), model, images)


def test_alexnet_has_the_papers_layout():
  model, out = _abstract(lambda: regression.create_regressor("alexnet_deeppose", J,
                                                             rngs=nnx.Rngs(0)),
                         (2, 220, 220, 3))
  assert out.shape == (2, J, 2) and out.dtype == jnp.float32
  # 220 px: C(55x55x96) - P - C(27x27x256) - P - C(13x13x...) - P: 6x6x256 into F(4096).
  assert model.fc6.kernel.shape == (6 * 6 * 256, 4096)
  assert model.fc7.kernel.shape == (4096, 4096) and model.fc8.kernel.shape == (4096, 2 * J)
  assert model.conv1.kernel.shape == (11, 11, 3, 96) and model.conv1.strides == (4, 4)
  assert model.conv2.kernel.shape == (5, 5, 96, 256) and model.conv5.kernel.shape[-1] == 256
  assert model.dropout.rate == 0.6
  with pytest.raises(ValueError, match="at least 57 px"):
    nnx.eval_shape(lambda: regression.AlexNetRegressor(J, image_size=48, rngs=nnx.Rngs(0)))


def test_hrnet_regressor_shapes():
  # (hrnet_w32_regress is the same with HRNet-W32; even tracing its construction takes long.)
  model, out = _abstract(lambda: regression.create_regressor("hrnet_w8_small_regress", J,
                                                             rngs=nnx.Rngs(0)),
                         (2, 3, 64, 64, 3))  # any leading axes
  assert out.shape == (2, 3, J, 2) and out.dtype == jnp.float32
  assert model.head.kernel.shape == (model.backbone.out_channels, 2 * J) == (8, 2 * J)


class _TinyBackbone(nnx.Module):
  """Stride-4 features with 4 channels, standing in for HRNet (cheap to build)."""

  out_channels = 4

  def __init__(self, rngs):
    self.conv = nnx.Conv(3, 4, (4, 4), (4, 4), rngs=rngs)

  def __call__(self, x):
    return nnx.relu(self.conv(x))


def test_backbone_regressor_pools_and_starts_near_zero():
  model = regression.BackboneRegressor(_TinyBackbone(nnx.Rngs(0)), J, image_size=16,
                                       rngs=nnx.Rngs(1))
  model.eval()
  out = _call(model, _images((2, 3, 16, 16, 3)))
  assert out.shape == (2, 3, J, 2) and out.dtype == jnp.float32
  assert model.head.kernel.shape == (4, 2 * J)  # global average pooling
  assert 0 < float(jnp.abs(out).max()) < 1e-2
  flat, flat_out = _abstract(lambda: regression.BackboneRegressor(
      _TinyBackbone(nnx.Rngs(0)), J, pool="flatten", image_size=16, rngs=nnx.Rngs(1)),
                             (2, 16, 16, 3))
  assert flat.head.kernel.shape == (4 * 4 * 4, 2 * J) and flat_out.shape == (2, J, 2)
  with pytest.raises(ValueError, match="needs the image_size"):
    regression.BackboneRegressor(_TinyBackbone(nnx.Rngs(0)), J, pool="flatten",
                                 rngs=nnx.Rngs(1))


def test_small_regressor_shapes_and_near_zero_initial_outputs(small):
  # One image shape for every concrete call of `small` in this file: each new one compiles.
  out = _call(small, _images((4, 32, 32, 3)))
  assert out.shape == (4, J, 2) and out.dtype == jnp.float32
  # Every joint starts on the box centre (within 1 % of the box).
  assert 0 < float(jnp.abs(out).max()) < 1e-2
  assert small.fc1.in_features == 2 * 2 * 128  # 32 px: 16, 8, 4, 2
  leading = nnx.eval_shape(lambda m, x: m(x), small,
                           jax.ShapeDtypeStruct((2, 3, 32, 32, 3), jnp.uint8))
  assert leading.shape == (2, 3, J, 2)  # any leading axes
  _, abstract_64 = _abstract(lambda: regression.create_regressor("deeppose_small", J,
                                                                 rngs=nnx.Rngs(0)),
                             (1, 64, 64, 3))
  assert abstract_64.shape == (1, J, 2)
  # The refiners' variant keeps the 4 x 4 map (no last pool) for the F layers.
  fine, abstract_fine = _abstract(lambda: regression.create_regressor(
      "deeppose_small_fine", J, image_size=32, rngs=nnx.Rngs(0)), (1, 32, 32, 3))
  assert fine.fc1.in_features == 4 * 4 * 128 and abstract_fine.shape == (1, J, 2)


def test_registry_names_and_unknown_names():
  assert {"alexnet_deeppose", "deeppose_small", "deeppose_small_fine", "hrnet_w32_regress",
          "hrnet_w8_small_regress"} <= set(regression.REGRESSORS)
  with pytest.raises(ValueError, match="Unknown regressor 'deeppose'"):
    regression.create_regressor("deeppose", J, rngs=nnx.Rngs(0))
  model = nnx.eval_shape(lambda: regression.create_regressor(
      "deeppose_small", 5, dropout=0.5, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)))
  assert model.dropout.rate == 0.5 and model.fc3.kernel.shape == (512, 10)
  assert model.conv1.kernel.dtype == jnp.float32  # parameters stay float32
  assert model.conv1.dtype == jnp.bfloat16


def test_dropout_only_in_train_mode_and_the_functional_apply(small):
  images = _images((4, 32, 32, 3))
  first, second = _call(small, images), _call(small, images)
  np.testing.assert_array_equal(first, second)
  graphdef, state = nnx.split(small)
  out, _ = regression.apply(graphdef, state, images, train=False)
  np.testing.assert_allclose(out, first, rtol=1e-6, atol=1e-9)
  # The functional train call has dropout on, and its dropout key advances.
  train_step = jax.jit(lambda s: regression.apply(graphdef, s, images, train=True))
  out_train, new_state = train_step(state)
  out_again, _ = train_step(new_state)
  assert not np.allclose(out_train, first) and not np.allclose(out_again, out_train)
  # The module itself in train mode, then back.
  small.train()
  try:
    noisy, noisier = _call(small, images), _call(small, images)
  finally:
    small.eval()
  assert not np.allclose(noisy, first) and not np.allclose(noisy, noisier)
  np.testing.assert_array_equal(_call(small, images), first)


def test_stage1_and_refinement_are_exact_box_maps():
  images = _images((2, 20, 20, 3))

  def constant(value):
    return lambda crops: jnp.broadcast_to(jnp.asarray(value, jnp.float32),
                                          (crops.shape[0], J, 2))

  # Stage 1: the box frame of the whole image; 0 is its centre, +-0.5 its edges.
  stage1 = jax.jit(lambda value: deeppose_cascade.stage1_predict(constant(value), images,
                                                                 stage1_size=8))
  np.testing.assert_allclose(stage1(0.0), 9.5)
  np.testing.assert_allclose(stage1(0.5), 19.5)
  # A refiner whose sub-image n reports (n, j) in row j: joint i of image b must move by
  # side * (b * J + i, i), its OWN sub-image's own row.
  previous = np.random.default_rng(3).uniform(2, 18, size=(2, J, 2)).astype(np.float32)
  counting = lambda subimages: jnp.stack(jnp.broadcast_arrays(
      jnp.arange(subimages.shape[0], dtype=jnp.float32)[:, None],
      jnp.arange(J, dtype=jnp.float32)[None, :]), axis=-1)
  refined = jax.jit(lambda p: deeppose_cascade.refine(counting, images, p, H36M, sigma=0.5,
                                                      refine_size=6))(previous)
  side = np.maximum(0.5 * np.asarray(deeppose.torso_diameter(previous)), deeppose.MIN_SIDE)
  moves = np.stack(np.broadcast_arrays(np.arange(2)[:, None] * J + np.arange(J)[None],
                                       np.arange(J)[None]), axis=-1)
  np.testing.assert_allclose(refined, previous + side[:, None, None] * moves, rtol=1e-6)


def test_cascade_with_a_zero_refiner_reproduces_stage_1(small):
  refiner = regression.SmallRegressor(J, image_size=16, rngs=nnx.Rngs(1))
  refiner.fc3.kernel[...] = jnp.zeros_like(refiner.fc3.kernel[...])
  refiner.fc3.bias[...] = jnp.zeros_like(refiner.fc3.bias[...])
  refiner.eval()
  images = _images((4, 48, 48, 3), seed=1)
  predict = nnx.jit(lambda first, second, images: deeppose_cascade.cascade_predict(
      [first, second, second], images, H36M, sigma=2.0, stage1_size=32, refine_size=16))
  predictions = predict(small, refiner, images)
  assert len(predictions) == 3 and all(p.shape == (4, J, 2) for p in predictions)
  np.testing.assert_array_equal(predictions[1], predictions[0])
  np.testing.assert_array_equal(predictions[2], predictions[0])
  # Stage 1 alone, the same numbers up to float32 rounding: the jitted cascade and the eager
  # stage 1 are different programs (at XLA's -O0, tests/conftest.py, 5 of 136 coordinates near
  # 23 px differed by up to 4.8e-5 px; a float32 ulp there is 1.9e-6).
  np.testing.assert_allclose(
      deeppose_cascade.stage1_predict(lambda x: _call(small, x), images, stage1_size=32),
      predictions[0], rtol=0, atol=1e-4)
  # A refiner that is not zero moves the joints.
  refiner.fc3.bias[...] = jnp.full_like(refiner.fc3.bias[...], 0.25)
  moved = predict(small, refiner, images)
  assert not np.allclose(moved[1], predictions[0])
