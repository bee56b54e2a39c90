"""posejax.train: schedule, the train step in every mode, weak supervision without 3D, devices."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from posejax import geometry, losses
from posejax.data.batching import pipeline
from posejax.data.render import synthetic
from posejax.models import create_model
from posejax.train import optimizer as optim
from posejax.skeleton import H36M
from posejax.train import step as train_step_lib

DATA = synthetic.SyntheticConfig(image_size=64, num_views=2, seed=1, motion="procedural",
                                 occluder_probability=0.0)


def test_learning_rate_schedule_is_the_recipe():
  schedule = optim.learning_rate_schedule()
  assert float(schedule(0)) == pytest.approx(5e-4)
  assert float(schedule(49_999)) == pytest.approx(5e-4)
  assert float(schedule(50_000)) == pytest.approx(5e-5)
  with pytest.raises(ValueError, match="increase"):
    optim.learning_rate_schedule(decay_steps=(10, 5))


def test_optimizer_from_config_clips_the_gradient_norm_when_asked():
  from ml_collections import config_dict
  optim_config = config_dict.ConfigDict(dict(learning_rate=1e-3, decay_steps=(10,),
                                             decay_factor=0.1, clip_norm=1.0))
  tx, schedule = optim.from_config(optim_config)
  assert float(schedule(9)) == pytest.approx(1e-3) and float(schedule(10)) == pytest.approx(1e-4)
  params = {"w": np.zeros(3, np.float32)}
  big, small = {"w": np.array([300.0, -400.0, 0.0])}, {"w": np.array([0.3, 0.4, 0.5])}
  clipped = {"w": big["w"] / 500.0}  # norm 500 -> 1

  def updates(tx, gradients):
    state = tx.init(params)
    for g in gradients:
      out, state = tx.update(g, state, params)
    return out["w"]

  adam = optax.adam(schedule)
  np.testing.assert_allclose(updates(tx, [big, small]), updates(adam, [clipped, small]),
                             rtol=1e-6)
  assert not np.allclose(updates(adam, [big, small]), updates(adam, [clipped, small]))
  optim_config.clip_norm = 0.0  # off: plain Adam
  np.testing.assert_allclose(updates(optim.from_config(optim_config)[0], [big, small]),
                             updates(adam, [big, small]), rtol=1e-6)


def _setup(mode, labeled=4, multiview=2, seed=0, tx=None, **objective):
  model = create_model("hrnet_w8_small", rngs=nnx.Rngs(seed))
  tx = tx or optim.make_optimizer(base=2e-3)
  graphdef, state = train_step_lib.create_train_state(model, tx)
  step = train_step_lib.make_train_step(graphdef, tx, train_step_lib.Objective(mode=mode,
                                                                               **objective))
  spec = pipeline.BatchSpec(labeled=labeled, multiview=multiview, num_views=2, mode=mode)
  batch = pipeline.make_batch(pipeline.synthetic_source(DATA), spec, step=0)
  return state, step, batch


def _fit(state, step, batch, num_steps):
  jitted = jax.jit(step)
  losses = []
  for _ in range(num_steps):
    state, metrics = jitted(state, batch)
    losses.append(float(metrics["loss"]))
    assert all(np.isfinite(float(v)) for v in metrics.values())
  # Only BatchNorm statistics live outside the parameters (a stale copy of the parameters
  # there once shadowed every update).
  assert not jax.tree_util.tree_leaves(nnx.split_state(state.rest, nnx.Param, ...)[0])
  return state, metrics, losses


def _fixed(batch):
  for name in ("labeled", "multiview"):  # a fixed batch without augmentation: it can be fitted
    batch.get(name, {}).pop("augmentation", None)
  return batch


@pytest.mark.parametrize("mode", ["2d", "fs"])
def test_loss_goes_down(mode):
  state, step, batch = _setup(mode)
  state, metrics, losses = _fit(state, step, _fixed(batch), 6)
  assert losses[-1] < 0.9 * losses[0], losses
  assert {"2d": {"heatmap"}, "fs": {"heatmap", "depth"}}[mode] <= set(metrics)
  assert int(state.step) == 6


def test_weakly_supervised_loss_goes_down_after_2d_pretraining():
  # From random weights every reconstruction is invalid (all joints at the crop centre, the
  # scale pair on one pixel), so L_MC and L_B only switch on during training: the recipe's
  # stage 1 (2D pretraining) comes first, as in docs/method.md section 5.
  state, pretrain, batch = _setup("2d")
  batch = _fixed(pipeline.make_batch(pipeline.synthetic_source(DATA), pipeline.BatchSpec(
      labeled=4, multiview=2, num_views=2, mode="ws"), step=0))
  state, _, _ = _fit(state, pretrain, {"labeled": batch["labeled"]}, 15)
  _, weak, _ = _setup("ws")
  state, metrics, losses = _fit(state, weak, batch, 10)
  assert {"heatmap", "multiview", "limb"} <= set(metrics)
  assert float(metrics["multiview"]) > 0 and float(metrics["limb"]) > 0  # views are valid now
  assert min(losses[-3:]) < 0.8 * losses[0], losses


def test_weak_supervision_refuses_3d_labels():
  state, step, _ = _setup("ws")
  fs_batch = pipeline.make_batch(pipeline.synthetic_source(DATA),
                                 pipeline.BatchSpec(labeled=4, multiview=2, num_views=2,
                                                    mode="fs"), step=0)
  with pytest.raises(ValueError, match="must not carry 3D labels"):
    step(state, fs_batch)


def _on_devices(state, step, batch, devices, num_steps):
  """`num_steps` jitted steps over a mesh of `devices`: (parameter update, last loss)."""
  before = _flat(state.params)
  mesh = train_step_lib.make_mesh(devices)
  jitted = train_step_lib.jit_train_step(step, mesh)
  state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  for _ in range(num_steps):
    state, metrics = jitted(state, train_step_lib.shard_batch(batch, mesh))
  return _flat(jax.device_get(state.params)) - before, float(metrics["loss"])


def _flat(params):
  return np.concatenate([np.asarray(x).ravel() for x in jax.tree_util.tree_leaves(params)])


# Summation order differs between 1 and 8 devices; plain SGD passes that float noise on
# linearly (Adam's ~lr sign(g) update would flip on near-zero gradients and compound).
def test_eight_devices_train_like_one_2d():
  assert jax.device_count() == 8  # tests/conftest.py simulates 8 CPU devices
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    state, step, batch = _setup("2d", labeled=8, multiview=8, tx=optax.sgd(1e-3))
    results.append(_on_devices(state, step, batch, devices, 3))
  (single, single_loss), (eight, eight_loss) = results
  assert eight_loss == pytest.approx(single_loss, rel=1e-5)
  assert np.linalg.norm(eight - single) / np.linalg.norm(single) < 1e-4  # measured 1e-6


def test_eight_devices_train_like_one_weakly_supervised():
  # From random weights the weak objective is ill-conditioned (every joint near the crop
  # centre: Procrustes of near-coincident points), and 1 and 8 devices gave updates 3.6 %
  # apart; after 15 2D steps, as in training (stage 1 first), they agree to 1.5e-5.
  state, pretrain, batch = _setup("2d", labeled=8, multiview=8)
  state, _, _ = _fit(state, pretrain, {"labeled": batch["labeled"]}, 15)
  pretrained = jax.device_get((state.params, state.rest))
  updates = []
  for devices in (jax.devices()[:1], jax.devices()):
    _, step, ws_batch = _setup("ws", labeled=8, multiview=8, tx=optax.sgd(1.0))
    params, rest = jax.tree_util.tree_map(np.array, pretrained)
    state = train_step_lib.TrainState(step=np.int32(0), params=params, rest=rest,
                                      opt_state=optax.sgd(1.0).init(params))
    updates.append(_on_devices(state, step, ws_batch, devices, 1)[0])
  single, eight = updates
  assert np.linalg.norm(eight - single) / np.linalg.norm(single) < 1e-4


def _objective_and_gradients(objective):
  """(loss, d loss / d heatmaps, d loss / d depth maps) of `objective` on two views of a
  synthetic sample, with ground-truth heatmaps and depths 0.1 off."""
  mode = objective.mode
  sample = synthetic.sample(synthetic.SyntheticConfig(image_size=64, num_views=2,
                                                      motion="procedural"), "test", 0)
  camera = jax.numpy.asarray(sample["camera"])
  stream = {"camera": camera[None], "view_mask": np.ones((1, 2), bool)}
  if mode == "fs":
    stream.update(joints_3d=sample["joints_3d"][None], has_3d=np.ones((1, 2), bool),
                  joints_2d=sample["joints_2d"][None],
                  joints_2d_mask=sample["joints_2d_mask"][None])
  batch = {"multiview": stream, "image_size": 64}
  heatmaps = losses.heatmap_targets(sample["joints_2d"], (16, 16))
  depth = geometry.relative_depth_target(sample["joints_3d"]) + 0.1  # an imperfect guess
  depthmaps = jax.numpy.broadcast_to(depth[:, None, None, :], heatmaps.shape)

  def objective_of(heatmaps, depthmaps):  # as PoseNet decodes its maps
    joints_2d, probabilities = geometry.softargmax(heatmaps)
    rel_depth = geometry.relative_depth(probabilities, depthmaps)
    pose, root_depth, valid = geometry.reconstruct(joints_2d, rel_depth, camera)
    predictions = dict(heatmaps=heatmaps, depthmaps=depthmaps, probabilities=probabilities,
                       joints_2d=joints_2d, rel_depth=rel_depth, pose_3d=pose,
                       root_depth=root_depth, valid=valid,
                       confidence=geometry.confidence(heatmaps, joints_2d))
    terms = train_step_lib.objective_terms(predictions, batch, objective, H36M, 0)
    return train_step_lib.total_loss(terms, objective)

  loss, grads = jax.value_and_grad(objective_of, argnums=(0, 1))(heatmaps, depthmaps)
  return (loss, *grads)


@pytest.mark.parametrize("mode", ["fs", "ws"])
@pytest.mark.parametrize("moves_2d", [True, False])
def test_3d_losses_move_the_2d_only_when_allowed(mode, moves_2d):
  # heatmap_weight 0: only the 3D losses can reach the heatmaps.
  _, grad_heatmaps, grad_depthmaps = _objective_and_gradients(train_step_lib.Objective(
      mode=mode, heatmap_weight=0.0, losses_3d_move_2d=moves_2d))
  assert np.abs(grad_depthmaps).max() > 0
  assert (np.abs(grad_heatmaps).max() > 0) == moves_2d


def test_root_depth_gradient_changes_the_gradient_not_the_loss():
  held, full = (_objective_and_gradients(train_step_lib.Objective(
      mode="ws", losses_3d_move_2d=False, root_depth_gradient=flag)) for flag in (False, True))
  assert float(full[0]) > 0
  np.testing.assert_allclose(held[0], full[0], rtol=1e-6)
  difference = np.abs(held[2] - full[2]).max()
  assert difference > 1e-3 * np.abs(full[2]).max()
