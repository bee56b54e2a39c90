"""posejax.models.pose_transformer: sine encoding, HRNet branches, outputs, fixed queries, grads."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from posejax import matching
from posejax.models import BACKBONES, HRNet
from posejax.models import pose_transformer as pt
from posejax.skeleton import H36M

J = H36M.num_joints
TINY = dict(d_model=32, num_heads=2, ffn_dim=64, encoder_layers=1, decoder_layers=2)


@pytest.fixture(scope="module")
def backbone():
  return HRNet(BACKBONES["hrnetv2_w8_small"], rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def model(backbone):
  return pt.PoseTransformer(backbone, H36M, num_queries=20, dropout=0.1, rngs=nnx.Rngs(1),
                            **TINY)


@pytest.fixture(scope="module")
def images():
  return np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)


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


def test_hrnet_branches_are_the_four_resolutions_before_concatenation(backbone, images):
  backbone.eval()
  x = jnp.asarray(images, jnp.float32) / 255.0

  @nnx.jit
  def run(backbone, x):
    return backbone.branches(x), backbone(x)

  branches, concatenated = run(backbone, x)
  assert [b.shape for b in branches] == [(2, 16, 16, 8), (2, 8, 8, 16), (2, 4, 4, 32),
                                         (2, 2, 2, 64)]
  upsampled = [jnp.repeat(jnp.repeat(b, 2**i, axis=1), 2**i, axis=2)
               for i, b in enumerate(branches)]
  np.testing.assert_array_equal(concatenated, jnp.concatenate(upsampled, axis=-1))
  pose_hrnet = nnx.eval_shape(lambda: HRNet(dataclasses.replace(
      BACKBONES["hrnetv2_w8_small"], concat_branches=False), rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match="concat_branches=True"):
    pose_hrnet.branches(x)


def test_outputs_for_a_tiny_config(model, images):
  model.eval()
  out = nnx.jit(lambda model, images: model(images, None))(model, images)
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


def test_fixed_variant_has_one_query_per_joint(backbone, images):
  fixed = pt.PoseTransformer(backbone, H36M, matching="fixed", num_queries=100, num_levels=1,
                             refine_from_previous=False, rngs=nnx.Rngs(2), **TINY)
  assert fixed.num_queries == J
  fixed.eval()
  out = nnx.jit(lambda model, images: model(images, None))(fixed, images)
  assert out["logits"].shape == (2, 2, J, J + 1) and out["coords"].shape == (2, 2, J, 3)
  np.testing.assert_array_equal(out["pose_3d"], out["coords"][-1])
  np.testing.assert_array_equal(out["joint_scores"], np.ones((2, J)))


def test_set_loss_gradients_through_the_model_are_finite(model, images):
  target = np.random.default_rng(3).normal(size=(2, J, 3)).astype(np.float32)
  mask = np.ones((2, J), bool)
  mask[0, 4] = False
  model.train()

  def loss_fn(model):
    out = model(images, None)
    # Every decoder layer matched anew; target and mask broadcast over the layer axis.
    cost = matching.matching_cost(out["logits"], out["coords"], target, mask)
    query_for_joint = matching.assign(cost)
    terms = matching.set_loss(out["logits"], out["coords"], query_for_joint, target, mask,
                              tolerance=0.1)
    return terms["class"] + 5.0 * terms["coord"]

  loss, grads = nnx.jit(nnx.value_and_grad(loss_fn))(model)
  assert np.isfinite(float(loss)) and float(loss) > 0
  leaves = jax.tree_util.tree_leaves(nnx.state(grads, nnx.Param))
  assert all(np.all(np.isfinite(g)) for g in leaves)
  assert np.any(np.asarray(grads.backbone.conv1.kernel[...]) != 0)
  assert np.any(np.asarray(grads.decoder.query_pos[...]) != 0)
  assert np.any(np.asarray(grads.decoder.reference[...]) != 0)


def test_factory_and_bad_arguments():
  abstract = nnx.eval_shape(lambda: pt.create_pose_transformer(
      "hrnet_w8_small", num_queries=30, rngs=nnx.Rngs(0), **TINY))
  assert abstract.backbone.config.concat_branches and abstract.num_queries == 30
  assert abstract.multi_scale.level_embed.shape == (4, 32)
  with pytest.raises(ValueError, match="num_queries = 10 < 17"):
    nnx.eval_shape(lambda: pt.create_pose_transformer(num_queries=10, rngs=nnx.Rngs(0),
                                                      **TINY))
  with pytest.raises(NotImplementedError):
    nnx.eval_shape(lambda: pt.create_pose_transformer(attention="deformable",
                                                      rngs=nnx.Rngs(0), **TINY))
