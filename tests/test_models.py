"""posejax.models: HRNet size and cost, PoseNet predictions, modes, dtypes, and weight import."""

import dataclasses
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from posejax import geometry, losses
from posejax.models import (BACKBONES, HRNet, HRNetConfig, PoseNet, apply, count_parameters,
                            create_model)
from posejax.models import import_torch
from posejax.skeleton import COCO_TO_H36M, H36M, MPII_TO_H36M

# One worker builds the module's models (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("hrnet_models")

OFFICIAL_W32_KEYS = pathlib.Path(__file__).parent / "data" / "pose_hrnet_w32_keys.txt"
CAMERA = np.array([[300.0, 0, 32], [0, 300, 32], [0, 0, 1]], np.float32)


def official_state_dict(num_joints=17, seed=0):
  """Random values in the exact key layout (names and shapes) of the authors' W32 checkpoint,
  as listed by their pose_hrnet.py (tests/data/pose_hrnet_w32_keys.txt)."""
  rng = np.random.default_rng(seed)
  state_dict = {}
  for line in OFFICIAL_W32_KEYS.read_text().splitlines():
    name, shape = line.split(" ", 1)
    shape = [int(s) for s in shape.strip("[]").split(",") if s.strip()]
    if name.startswith("final_layer"):
      shape[0] = num_joints
    state_dict[name] = rng.normal(size=shape).astype(np.float32)
  return state_dict


@pytest.fixture(scope="session")  # built once: tests/conftest.py
def w32_model():
  # RBG keys: threefry's initialisers compiled for minutes here, one program per shape.
  rngs = lambda seed: nnx.Rngs(jax.random.key(seed, impl="rbg"))  # noqa: E731
  return PoseNet(HRNet(HRNetConfig(width=32), rngs=rngs(0)), rngs=rngs(1))


def small_model(dtype=jnp.float32, seed=0, name="hrnetv2_w4_micro"):
  # Small HRNets of the registry: these tests check shapes, dtypes and wiring, which do not
  # depend on the width; building and compiling is their cost. The two-branch micro HRNet
  # where the structure does not matter either; the minimal one (every structure of the
  # published HRNet) where a dtype or a gradient must pass through all of it.
  return create_model(name, dtype=dtype, rngs=nnx.Rngs(seed))


# A model's forward pass, compiled: run eagerly, each of an HRNet's hundreds of ops is a
# program of its own (tens of seconds).
call = nnx.jit(lambda model, *inputs: model(*inputs))


def test_hrnet_w32_parameters_and_flops_match_the_paper(w32_model):
  # Published: 28.5M parameters, 7.1 GFLOPs at 256x192 (the paper's FLOPs are multiply-adds;
  # XLA counts 2 FLOPs per multiply-add). Our head has 2J = 34 output channels instead of 17.
  assert count_parameters(w32_model) == pytest.approx(28.5e6, rel=0.01)
  w32_model.eval()
  graphdef, state = nnx.split(w32_model)
  forward = jax.jit(lambda state, x: nnx.merge(graphdef, state).maps(x))
  # Counted on the lowered program: compiling W32 at 256 px only to count it took minutes.
  cost = forward.lower(state, jnp.zeros((1, 256, 192, 3))).cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  assert cost["flops"] / 2 == pytest.approx(7.1e9, rel=0.10)


def test_importing_the_official_key_layout_puts_every_tensor_in_place(w32_model):
  state_dict = official_state_dict(num_joints=16)  # an MPII checkpoint: 16 heatmaps
  depth_kernel_before = np.array(w32_model.head.kernel[...][..., 17:])
  spine_before = np.array(w32_model.head.kernel[...][..., H36M.index("spine")])
  report = import_torch.import_hrnet_weights(w32_model, state_dict, source="pose",
                                             joint_mapping=MPII_TO_H36M)
  backbone = w32_model.backbone
  assert len(report.copied) == 1462 and all(k.endswith("num_batches_tracked")
                                             for k in report.ignored)

  def oihw_to_hwio(name):
    return state_dict[name].transpose(2, 3, 1, 0)

  np.testing.assert_array_equal(backbone.conv1.kernel[...], oihw_to_hwio("conv1.weight"))
  np.testing.assert_array_equal(backbone.bn1.scale[...], state_dict["bn1.weight"])
  np.testing.assert_array_equal(backbone.bn1.bias[...], state_dict["bn1.bias"])
  np.testing.assert_array_equal(backbone.bn1.mean[...], state_dict["bn1.running_mean"])
  np.testing.assert_array_equal(backbone.bn1.var[...], state_dict["bn1.running_var"])
  np.testing.assert_array_equal(backbone.layer1[0].downsample.conv.kernel[...],
                                oihw_to_hwio("layer1.0.downsample.0.weight"))
  np.testing.assert_array_equal(backbone.transition1[1][0].bn.mean[...],
                                state_dict["transition1.1.0.1.running_mean"])
  np.testing.assert_array_equal(backbone.stage3[2].branches[1][3].conv2.kernel[...],
                                oihw_to_hwio("stage3.2.branches.1.3.conv2.weight"))
  np.testing.assert_array_equal(backbone.stage4[0].fuse_layers[3][0][2].conv.kernel[...],
                                oihw_to_hwio("stage4.0.fuse_layers.3.0.2.0.weight"))
  np.testing.assert_array_equal(backbone.stage4[2].fuse_layers[0][3].bn.var[...],
                                state_dict["stage4.2.fuse_layers.0.3.1.running_var"])
  # Head: heatmap channel of H36M joint j = MPII channel mapped to it; depth half untouched.
  kernel = np.asarray(w32_model.head.kernel[...])
  final = oihw_to_hwio("final_layer.weight")
  for joint, source in enumerate(MPII_TO_H36M.source_indices):
    if source >= 0:
      np.testing.assert_array_equal(kernel[..., joint], final[..., source])
      assert float(w32_model.head.bias[...][joint]) == state_dict["final_layer.bias"][source]
  np.testing.assert_array_equal(kernel[..., H36M.index("right_ankle")], final[..., 0])
  np.testing.assert_array_equal(kernel[..., H36M.index("spine")], spine_before)  # MPII: none
  np.testing.assert_array_equal(kernel[..., 17:], depth_kernel_before)
  assert any("spine" in note for note in report.kept_initialisation)


def test_incomplete_or_foreign_checkpoints_fail_listing_the_keys(w32_model):
  before = np.array(w32_model.backbone.conv1.kernel[...])
  incomplete = official_state_dict()
  del incomplete["stage2.0.fuse_layers.1.0.0.1.running_var"]
  del incomplete["layer1.3.conv2.weight"]
  with pytest.raises(import_torch.CheckpointError,
                     match=r"2 keys missing.*layer1\.3\.conv2\.weight.*running_var"):
    import_torch.import_hrnet_weights(w32_model, incomplete, joint_mapping="identity")
  np.testing.assert_array_equal(w32_model.backbone.conv1.kernel[...], before)  # untouched

  extra = official_state_dict()
  extra["stage5.0.weight"] = np.zeros(3, np.float32)
  with pytest.raises(import_torch.CheckpointError, match=r"unexpected keys.*stage5\.0\.weight"):
    import_torch.import_hrnet_weights(w32_model, extra, joint_mapping="identity")
  import_torch.import_hrnet_weights(w32_model, extra, joint_mapping="identity",
                                    allow_unexpected=["stage5.*"])

  wrong_shape = official_state_dict()
  wrong_shape["conv2.weight"] = np.zeros((64, 64, 5, 5), np.float32)
  with pytest.raises(import_torch.CheckpointError, match=r"shape mismatch.*conv2\.weight"):
    import_torch.import_hrnet_weights(w32_model, wrong_shape, joint_mapping="identity")

  # COCO's 17 heatmaps are not H36M's 17 joints: the caller must say which joints they are.
  with pytest.raises(ValueError, match="COCO_TO_H36M"):
    import_torch.import_hrnet_weights(w32_model, official_state_dict())
  with pytest.raises(import_torch.CheckpointError, match="mpii_16 maps 16"):
    import_torch.import_hrnet_weights(w32_model, official_state_dict(17),
                                      joint_mapping=MPII_TO_H36M)
  report = import_torch.import_hrnet_weights(w32_model, official_state_dict(17),
                                             joint_mapping=COCO_TO_H36M)
  assert any("pelvis" in note for note in report.kept_initialisation)


def test_imagenet_backbone_import_ignores_the_classifier(w32_model):
  state_dict = {k: v for k, v in official_state_dict().items()
                if not k.startswith("final_layer")}
  # The classifier's last module fuses into all four resolutions, and it has its own head.
  state_dict["stage4.2.fuse_layers.1.0.0.0.weight"] = np.zeros((64, 32, 3, 3), np.float32)
  state_dict["incre_modules.0.0.conv1.weight"] = np.zeros((32, 32, 1, 1), np.float32)
  state_dict["classifier.weight"] = np.zeros((1000, 2048), np.float32)
  head_before = np.array(w32_model.head.kernel[...])
  report = import_torch.import_hrnet_weights(w32_model, state_dict, source="imagenet")
  assert "classifier.weight" in report.ignored and len(report.copied) == 1460
  np.testing.assert_array_equal(w32_model.head.kernel[...], head_before)
  with pytest.raises(import_torch.CheckpointError, match="unexpected.*classifier"):
    import_torch.import_hrnet_weights(w32_model, state_dict, joint_mapping="identity")


def test_load_torch_checkpoint_reads_pth_files(tmp_path):
  torch = pytest.importorskip("torch", reason="the optional torch extra is not installed")
  weights = {"conv1.weight": torch.randn(4, 3, 3, 3), "bn1.num_batches_tracked": torch.tensor(3)}
  torch.save({"state_dict": {f"module.{k}": v for k, v in weights.items()}},
             tmp_path / "wrapped.pth")
  loaded = import_torch.load_torch_checkpoint(tmp_path / "wrapped.pth")
  assert set(loaded) == set(weights)
  np.testing.assert_array_equal(loaded["conv1.weight"], weights["conv1.weight"].numpy())
  (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint")
  with pytest.raises(import_torch.CheckpointError, match="corrupt.pth"):
    import_torch.load_torch_checkpoint(tmp_path / "corrupt.pth")
  with pytest.raises(FileNotFoundError, match="missing.pth"):
    import_torch.load_torch_checkpoint(tmp_path / "missing.pth")


def test_load_torch_checkpoint_without_torch_says_how_to_install(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
  with pytest.raises(ImportError, match=r"posejax\[torch\]"):
    import_torch.load_torch_checkpoint(tmp_path / "weights.pth")


def test_registry():
  assert {"hrnet_w32", "hrnet_w48", "hrnet_w16_small", "hrnet_w8_small"} <= set(BACKBONES)
  with pytest.raises(ValueError, match="hrnet_w32"):
    create_model("hrnet_w31", rngs=nnx.Rngs(0))


def test_concatenated_branches_give_every_resolution_to_the_head():
  from posejax.models import HRNet
  config = BACKBONES["hrnetv2_w4_minimal"]
  backbone = HRNet(config, rngs=nnx.Rngs(0))
  assert backbone.out_channels == 4 + 8 + 16 + 32
  features = call(backbone, jnp.zeros((1, 64, 64, 3)))
  assert features.shape == (1, 16, 16, 60)
  # The lowest-resolution channels are 8x8-cell blocks (nearest upsampling of 2x2).
  low = np.asarray(features[0, :, :, -32:])
  np.testing.assert_array_equal(low, np.repeat(np.repeat(low[::8, ::8], 8, 0), 8, 1))
  model = create_model("hrnetv2_w4_minimal", rngs=nnx.Rngs(0))
  maps = nnx.jit(lambda model, images: model.maps(images))
  assert maps(model, np.zeros((2, 64, 64, 3), np.uint8))[0].shape == (2, 16, 16, 17)


def test_branch_widths_set_each_branch_and_must_start_at_width():
  config = dataclasses.replace(BACKBONES["hrnetv2_w4_minimal"], width=8,
                               branch_widths=(8, 6, 16, 32))
  backbone = HRNet(config, rngs=nnx.Rngs(0))
  shapes = [x.shape for x in nnx.jit(lambda b, x: b.branches(x))(backbone,
                                                                  jnp.zeros((1, 64, 64, 3)))]
  assert shapes == [(1, 16, 16, 8), (1, 8, 8, 6), (1, 4, 4, 16), (1, 2, 2, 32)]
  assert backbone.out_channels == 8 + 6 + 16 + 32
  for widths in [(4, 6, 16, 32), (8, 6, 16)]:  # the first is not width; one branch missing
    with pytest.raises(ValueError, match=r"branch_widths=.*expected 4 widths"):
      dataclasses.replace(config, branch_widths=widths)


@pytest.mark.parametrize("name, size, multiple", [("hrnetv2_w4_minimal", 80, 32),
                                                   ("hrnetv2_w4_micro", 36, 8)])
def test_an_input_size_the_branches_cannot_fuse_is_a_clear_error(name, size, multiple):
  # 80 px: the stride-32 branch would be 2.5 cells wide; XLA's own error named two shapes only.
  backbone = HRNet(BACKBONES[name], rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=f"multiple of {multiple} px .* got {size} x {size}"):
    backbone(jnp.zeros((1, size, size, 3)))
  valid = size + multiple - size % multiple
  with pytest.raises(ValueError, match=f"got {valid} x {size}"):  # the width alone, too
    backbone(jnp.zeros((1, valid, size, 3)))


def _batch(num_samples=2, num_views=3, size=64, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, size=(num_samples, num_views, size, size, 3), dtype=np.uint8)
  cameras = np.broadcast_to(CAMERA, (num_samples, num_views, 3, 3))
  return images, cameras


def test_posenet_predictions_have_the_documented_shapes_and_dtypes():
  model = small_model()
  images, cameras = _batch()
  predictions = call(model, images, cameras)
  j = H36M.num_joints
  expected = {
      "heatmaps": ((2, 3, 16, 16, j), jnp.float32), "depthmaps": ((2, 3, 16, 16, j), jnp.float32),
      "probabilities": ((2, 3, 16, 16, j), jnp.float32),
      "joints_2d": ((2, 3, j, 2), jnp.float32), "rel_depth": ((2, 3, j), jnp.float32),
      "confidence": ((2, 3, j), jnp.float32), "root_depth": ((2, 3), jnp.float32),
      "pose_3d": ((2, 3, j, 3), jnp.float32), "valid": ((2, 3), jnp.bool_),
  }
  assert set(predictions) == set(expected)
  for name, (shape, dtype) in expected.items():
    assert predictions[name].shape == shape and predictions[name].dtype == dtype, name
  # The wiring: the 3D pose is the reconstruction of the predicted 2.5D through the cameras
  # (the 2D inside the grid is not checked: a soft-argmax is a convex mix of cell centres).
  pose, root_depth, valid = geometry.reconstruct(predictions["joints_2d"],
                                                 predictions["rel_depth"], cameras, H36M)
  # To float32 rounding, not bit for bit: the model's call is compiled as one program, and on
  # an AVX-512 CPU its fused ops rounded 1 ulp away from these op-by-op ones (session 22).
  np.testing.assert_allclose(predictions["pose_3d"], pose, rtol=1e-6, atol=0)
  np.testing.assert_allclose(predictions["root_depth"], root_depth, rtol=1e-6, atol=0)
  np.testing.assert_array_equal(predictions["valid"], valid)


def _loss(predictions):
  views = predictions["pose_3d"].shape[:2]
  return (losses.multiview_consistency_loss(predictions["pose_3d"], predictions["confidence"],
                                            jnp.ones(views, bool))
          + jnp.mean(jnp.square(predictions["heatmaps"])))


def test_gradient_through_the_whole_model_is_finite_in_float32_and_bfloat16():
  images, cameras = _batch()
  for dtype in (jnp.float32, jnp.bfloat16):
    model = small_model(dtype, name="hrnetv2_w4_minimal")
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(params, rest):
      predictions, _ = apply(graphdef, nnx.merge_state(params, rest), images, cameras,
                             train=True)
      return _loss(predictions)

    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params, rest)
    leaves = jax.tree_util.tree_leaves(grads)
    assert bool(jnp.isfinite(loss)), dtype
    assert all(leaf.dtype == jnp.float32 for leaf in leaves)  # parameters stay float32
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in leaves), dtype
    assert float(jnp.abs(grads["backbone"]["conv1"]["kernel"][...]).max()) > 0, dtype


def test_bfloat16_compute_keeps_geometry_in_float32_and_close_to_float32():
  images, cameras = _batch(1, 2)
  full = small_model(jnp.float32, name="hrnetv2_w4_minimal")
  half = small_model(jnp.bfloat16, name="hrnetv2_w4_minimal")
  nnx.update(half, nnx.state(full))  # same float32 parameters
  full.eval()
  half.eval()
  out_full, out_half = call(full, images, cameras), call(half, images, cameras)
  for name in ("joints_2d", "rel_depth", "pose_3d", "heatmaps"):
    assert out_half[name].dtype == jnp.float32
  assert half.backbone.conv1.kernel[...].dtype == jnp.float32
  scale = float(jnp.abs(out_full["heatmaps"]).max())
  assert float(jnp.abs(out_half["heatmaps"] - out_full["heatmaps"]).max()) < 0.05 * scale


def test_train_mode_uses_batch_statistics_and_updates_them_eval_mode_does_not():
  model = small_model()
  graphdef, state = nnx.split(model)
  images, cameras = _batch(4, 1, seed=3)
  step = jax.jit(apply, static_argnames="train", static_argnums=0)

  eval_out, eval_state = step(graphdef, state, images, cameras, train=False)
  jax.tree_util.tree_map(np.testing.assert_array_equal, eval_state, state)
  # Eval mode: a sample's prediction does not depend on the rest of the batch.
  alone, _ = step(graphdef, state, images[:1], cameras[:1], train=False)
  np.testing.assert_allclose(alone["heatmaps"], eval_out["heatmaps"][:1], atol=1e-5)

  train_out, train_state = step(graphdef, state, images, cameras, train=True)
  old = nnx.to_flat_state(nnx.state(nnx.merge(graphdef, state), nnx.BatchStat))
  new = nnx.to_flat_state(nnx.state(nnx.merge(graphdef, train_state), nnx.BatchStat))
  changed = [p for (p, a), (_, b) in zip(old, new)
             if not np.array_equal(a.get_value(), b.get_value())]
  assert len(changed) == len(old)  # every running mean / var moved
  # Train mode: batch statistics, so the outputs differ from eval mode and depend on the batch.
  assert float(jnp.abs(train_out["heatmaps"] - eval_out["heatmaps"]).max()) > 1e-4
  alone_train, _ = step(graphdef, state, images[:1], cameras[:1], train=True)
  assert float(jnp.abs(alone_train["heatmaps"] - train_out["heatmaps"][:1]).max()) > 1e-4
