"""posejax.models.pose_transformer: sine encoding, HRNet branches, outputs, fixed queries, grads.

Compiling HRNet dominates the cost: the documented tiny config (hrnetv2_w8_small) is checked
abstractly (`nnx.eval_shape`, no compilation), and the values and gradients come from one
compilation of a model on an even smaller HRNet (one block per branch), which also returns its
backbone's branches. Parameters are drawn with RBG keys: threefry initialisers compile several
times slower.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from posejax import matching
from posejax.models import HRNet, HRNetConfig
from posejax.models import pose_transformer as pt
from posejax.skeleton import H36M

# One worker builds the module's models (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("pose_transformer_model")

J = H36M.num_joints
TINY = dict(d_model=32, num_heads=2, ffn_dim=64, encoder_layers=1, decoder_layers=2)
MINIMAL_HRNET = HRNetConfig(width=4, stem_channels=8, stage1_planes=4, stage1_blocks=1,
                            stage_modules=(1, 1, 1), stage_blocks=1, concat_branches=True)


def rngs(seed):
  return nnx.Rngs(jax.random.key(seed, impl="rbg"))


@pytest.fixture(scope="session")  # built once: tests/conftest.py
def model():
  backbone = HRNet(MINIMAL_HRNET, rngs=rngs(0))
  return pt.PoseTransformer(backbone, H36M, num_queries=20, dropout=0.1, rngs=rngs(1), **TINY)


@pytest.fixture(scope="session")
def batch():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
  target = rng.normal(size=(2, J, 3)).astype(np.float32)
  mask = np.ones((2, J), bool)
  mask[0, 4] = False
  return images, target, mask


@pytest.fixture(scope="session")
def train_step(model, batch):
  """The set loss of every decoder layer in train mode: (loss, aux, grads); aux holds the
  outputs, and the backbone's branches and concatenated output for the same input."""
  images, target, mask = batch
  model.train()

  def loss_fn(model):
    out = model(images, None)
    # Every decoder layer matched anew; target and mask broadcast over the layer axis.
    cost = matching.matching_cost(out["logits"], out["coords"], target, mask)
    query_for_joint = matching.assign(cost)
    terms = matching.set_loss(out["logits"], out["coords"], query_for_joint, target, mask,
                              tolerance=0.1)
    x = jnp.asarray(images, jnp.float32) / 255.0
    backbone = jax.lax.stop_gradient((model.backbone.branches(x), model.backbone(x)))
    return terms["cls"] + 5.0 * terms["coord"], (out, backbone)

  (loss, aux), grads = nnx.jit(nnx.value_and_grad(loss_fn, has_aux=True))(model)
  return loss, aux, grads


def test_sine_position_encoding_shape_and_values():
  encoding = np.asarray(pt.sine_position_encoding(4, 6, 8))
  assert encoding.shape == (4, 6, 8) and encoding.dtype == np.float32
  # DETR: y = (i + 1) / h * 2 pi, x = (j + 1) / w * 2 pi; 4 channels each, frequencies
  # 1e4^(2 floor(k / 2) / 4) = 1, 1, 100, 100; sin on even channels, cos on odd; y first.
  y, x = 2 / 4 * 2 * math.pi, 3 / 6 * 2 * math.pi  # cell (i, j) = (1, 2)
  expected = [math.sin(y), math.cos(y), math.sin(y / 100), math.cos(y / 100),
              math.sin(x), math.cos(x), math.sin(x / 100), math.cos(x / 100)]
  np.testing.assert_allclose(encoding[1, 2], expected, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="multiple of 4"):
    pt.sine_position_encoding(2, 2, 6)


def test_hrnet_branches_are_the_four_resolutions_before_concatenation(train_step):
  _, (_, (branches, concatenated)), _ = train_step
  assert [b.shape for b in branches] == [(2, 16, 16, 4), (2, 8, 8, 8), (2, 4, 4, 16),
                                         (2, 2, 2, 32)]
  upsampled = [jnp.repeat(jnp.repeat(b, 2**i, axis=1), 2**i, axis=2)
               for i, b in enumerate(branches)]
  np.testing.assert_array_equal(concatenated, jnp.concatenate(upsampled, axis=-1))
  pose_hrnet = nnx.eval_shape(lambda: HRNet(
      dataclasses.replace(MINIMAL_HRNET, concat_branches=False), rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match="concat_branches=True"):
    pose_hrnet.branches(np.zeros((1, 32, 32, 3), np.float32))


def test_output_shapes_of_the_tiny_config_and_bad_arguments(batch):
  images, _, _ = batch
  abstract = nnx.eval_shape(lambda: pt.create_pose_transformer(
      "hrnetv2_w8_small", num_queries=20, rngs=nnx.Rngs(0), **TINY))
  assert abstract.multi_scale.level_embed.shape == (4, 32)
  out = nnx.eval_shape(lambda model: model(images, None), abstract)
  shapes = {k: (v.shape, v.dtype) for k, v in out.items()}
  assert shapes == dict(logits=((2, 2, 20, J + 1), jnp.float32),
                        coords=((2, 2, 20, 3), jnp.float32), pose_3d=((2, J, 3), jnp.float32),
                        joint_scores=((2, J), jnp.float32))
  backbone = abstract.backbone
  with pytest.raises(ValueError, match="num_queries = 10 < 17"):
    pt.PoseTransformer(backbone, num_queries=10, rngs=nnx.Rngs(0), **TINY)
  with pytest.raises(NotImplementedError):
    pt.PoseTransformer(backbone, attention="deformable", rngs=nnx.Rngs(0), **TINY)
  with pytest.raises(ValueError, match="Unknown matching"):
    pt.PoseTransformer(backbone, matching="greedy", rngs=nnx.Rngs(0), **TINY)
  with pytest.raises(ValueError, match="Unknown backbone"):
    pt.create_pose_transformer("resnet50", rngs=nnx.Rngs(0))


def test_outputs_are_read_from_the_last_layer(model, train_step):
  _, (out, _), _ = train_step
  shapes = {k: v.shape for k, v in out.items()}
  assert shapes == dict(logits=(2, 2, 20, J + 1), coords=(2, 2, 20, 3), pose_3d=(2, J, 3),
                        joint_scores=(2, J))
  assert all(v.dtype == jnp.float32 and np.all(np.isfinite(v)) for v in out.values())
  query_for_joint, scores = matching.class_assignment(out["logits"][-1])
  np.testing.assert_array_equal(out["joint_scores"], scores)
  np.testing.assert_array_equal(out["pose_3d"],
                                matching.gather_queries(out["coords"][-1], query_for_joint))
  # Refinement: the coordinate heads start at zero, so every layer starts at the reference.
  np.testing.assert_allclose(out["coords"][0], np.broadcast_to(model.decoder.reference[...],
                                                               (2, 20, 3)), atol=1e-6)


def test_set_loss_gradients_through_the_model_are_finite(train_step):
  loss, _, grads = train_step
  assert np.isfinite(float(loss)) and float(loss) > 0
  leaves = jax.tree_util.tree_leaves(nnx.state(grads, nnx.Param))
  assert all(np.all(np.isfinite(g)) for g in leaves)
  assert np.any(np.asarray(grads.backbone.conv1.kernel[...]) != 0)
  assert np.any(np.asarray(grads.multi_scale.level_embed[...]) != 0)
  assert np.any(np.asarray(grads.decoder.query_pos[...]) != 0)
  assert np.any(np.asarray(grads.decoder.reference[...]) != 0)


@pytest.mark.parametrize("detach", [True, False])
def test_refinement_detaches_the_previous_layers_estimate(detach):
  decoder = pt.Decoder(8, 1, 16, 2, 5, 4, 0.0, refine_from_previous=True, detach_previous=detach,
                       rngs=rngs(4))
  rng = np.random.default_rng(5)
  memory = rng.normal(size=(1, 6, 8)).astype(np.float32)
  for head in decoder.coord_heads:  # open the paths that the zero initialisation closes
    head.layers[2].kernel[...] = jnp.asarray(rng.normal(size=(8, 3)), jnp.float32)

  def last_layer_loss(decoder):
    _, coords = decoder(memory, np.zeros((6, 8), np.float32))
    return jnp.sum(coords[-1])

  grads = nnx.jit(nnx.grad(last_layer_loss))(decoder)
  first_head = np.asarray(grads.coord_heads[0].layers[2].kernel[...])
  assert np.all(first_head == 0) if detach else np.any(first_head != 0)
  assert np.any(np.asarray(grads.coord_heads[1].layers[2].kernel[...]) != 0)
  # p_0 is a parameter, learned either way (through the hidden states when detached).
  assert np.any(np.asarray(grads.reference[...]) != 0)


def test_fixed_variant_has_one_query_per_joint(batch):
  images, _, _ = batch
  abstract = nnx.eval_shape(lambda: pt.PoseTransformer(
      HRNet(MINIMAL_HRNET, rngs=nnx.Rngs(0)), matching="fixed", num_queries=100, num_levels=1,
      refine_from_previous=False, rngs=nnx.Rngs(1), **TINY))
  assert abstract.num_queries == J
  out = nnx.eval_shape(lambda model: model(images, None), abstract)
  assert out["logits"].shape == (2, 2, J, J + 1) and out["coords"].shape == (2, 2, J, 3)
  assert out["pose_3d"].shape == (2, J, 3) and out["joint_scores"].shape == (2, J)
  # The read-out: query j is joint j.
  coords = np.random.default_rng(2).normal(size=(2, J, 3)).astype(np.float32)
  logits = np.random.default_rng(3).normal(size=(2, J, J + 1)).astype(np.float32)
  pose, scores = pt.read_out(logits, coords, "fixed")
  np.testing.assert_array_equal(pose, coords)
  np.testing.assert_array_equal(scores, np.ones((2, J)))
  pose, scores = pt.read_out(logits, coords, "hungarian")
  q, expected_scores = matching.class_assignment(logits)
  np.testing.assert_array_equal(pose, coords[np.arange(2)[:, None], np.asarray(q)])
  np.testing.assert_array_equal(scores, expected_scores)
