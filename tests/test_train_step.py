"""posejax.train: optimisers and schedules, the train step with every objective of task pose25d,
weak supervision without 3D, devices."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from posejax import geometry, losses
from posejax.data.batching import pipeline
from posejax.data.batching.sources import synthetic_source
from posejax.data.render import synthetic
from posejax.errors import ConfigError
from posejax.models import create_model
from posejax.skeleton import H36M
from posejax.tasks.pose25d import objective as objective_lib
from posejax.train import optimizer as optim
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
  optim_config = dict(learning_rate=1e-3, decay_steps=(10,), decay_factor=0.1, clip_norm=1.0)
  tx, schedule = optim.make_optimizer(optim_config)
  assert float(schedule(9)) == pytest.approx(1e-3) and float(schedule(10)) == pytest.approx(1e-4)
  params = {"w": np.zeros(3, np.float32)}
  # float32 gradients, as a train step's are (float64 would be truncated with a warning).
  big = {"w": np.array([300.0, -400.0, 0.0], np.float32)}
  small = {"w": np.array([0.3, 0.4, 0.5], np.float32)}
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
  optim_config["clip_norm"] = 0.0  # off: plain Adam
  np.testing.assert_allclose(updates(optim.make_optimizer(optim_config)[0], [big, small]),
                             updates(adam, [big, small]), rtol=1e-6)


def test_warmup_then_step_decay_and_cosine():
  schedule = optim.learning_rate_schedule(1.0, (10,), 0.1, warmup_steps=4)
  assert [float(schedule(s)) for s in (0, 2, 4, 9, 10)] == pytest.approx([0, 0.5, 1, 1, 0.1])
  cosine = optim.learning_rate_schedule(1.0, schedule="cosine", warmup_steps=2, total_steps=12)
  assert [float(cosine(s)) for s in (0, 1, 2, 7, 12)] == pytest.approx([0, 0.5, 1, 0.5, 0],
                                                                       abs=1e-6)
  with pytest.raises(ValueError, match="schedule must be one of"):
    optim.learning_rate_schedule(schedule="linear")


def test_the_schedule_in_words_matches_the_settings():
  assert optim.describe({}) == "adam at learning rate 0.0005"  # the defaults: constant
  assert optim.describe(dict(name="adamw", learning_rate=1e-3, warmup_steps=10,
                             decay_steps=(50, 80), decay_factor=0.5)) == (
      "adamw at learning rate 0.001, warm-up 10 steps, x 0.5 at step 50, 80 of the stage")
  assert optim.describe(dict(learning_rate=1e-4, schedule="cosine", total_steps=500)) == (
      "adam at learning rate 0.0001, cosine to 0 at step 500 of the stage")


PARAMS = {"backbone": {"conv": {"kernel": np.ones((2, 2), np.float32),
                                "bias": np.ones(2, np.float32)}},
          "head": {"kernel": np.ones((2, 2), np.float32)}}


def _one_update(settings, grads=None):
  tx, _ = optim.make_optimizer(settings)
  grads = grads or jax.tree_util.tree_map(np.ones_like, PARAMS)
  updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
  return updates


@pytest.mark.parametrize("name", optim.NAMES)
def test_every_optimiser_matches_its_optax_twin(name):
  settings = dict(name=name, learning_rate=0.1, weight_decay=0.01, momentum=0.9)
  twin = {"adam": optax.adam(0.1), "adagrad": optax.adagrad(0.1),
          "adamw": optax.adamw(0.1, weight_decay=0.01, mask=optim._decay_mask),  # pylint: disable=protected-access
          "sgd": optax.chain(optax.add_decayed_weights(0.01, optim._decay_mask),  # pylint: disable=protected-access
                             optax.sgd(0.1, momentum=0.9))}[name]
  grads = jax.tree_util.tree_map(lambda p: np.full_like(p, 0.5), PARAMS)
  expected, _ = twin.update(grads, twin.init(PARAMS), PARAMS)
  for a, b in zip(jax.tree_util.tree_leaves(_one_update(settings, grads)),
                  jax.tree_util.tree_leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_adamw_decays_kernels_not_biases():
  zero = jax.tree_util.tree_map(np.zeros_like, PARAMS)
  updates = _one_update(dict(name="adamw", learning_rate=0.1, weight_decay=0.5), zero)
  np.testing.assert_allclose(updates["backbone"]["conv"]["kernel"], -0.05)  # -lr wd p
  np.testing.assert_array_equal(updates["backbone"]["conv"]["bias"], 0.0)


def test_group_multipliers_scale_and_freeze():
  plain = _one_update(dict(learning_rate=0.1))
  scaled = _one_update(dict(learning_rate=0.1, multipliers={"backbone": 0.1, "head": 0.0}))
  np.testing.assert_allclose(scaled["backbone"]["conv"]["kernel"],
                             0.1 * plain["backbone"]["conv"]["kernel"], rtol=1e-6)
  np.testing.assert_array_equal(scaled["head"]["kernel"], 0.0)
  assert optim.parameter_groups(PARAMS, {"backbone/conv": 1, "backbone": 2})["backbone"][
      "conv"]["kernel"] == "backbone/conv"
  with pytest.raises(ValueError, match=r"Unknown optim field\(s\) \['learning_rat'\]"):
    optim.make_optimizer(dict(learning_rat=0.1))
  with pytest.raises(ValueError, match="optim.name must be one of"):
    optim.make_optimizer(dict(name="lamb"))


WEIGHTS = dict(heatmap=1.0, depth=5.0, multiview=10.0, limb=100.0, knee=0.0, scale_bone=1.0,
               scale_tilt=1.0)


def _spec(mode, labeled=4, multiview=2):
  keys = {"2d": {"multiview": 0}, "ws": {},
          "fs": {"multiview_keys": pipeline.IMAGE_KEYS + pipeline.LABEL_2D_KEYS + ("joints_3d",)}}
  return pipeline.BatchSpec(**dict(dict(labeled=labeled, multiview=multiview, num_views=2),
                                   **keys[mode]))


def _setup(mode, labeled=4, multiview=2, seed=0, tx=None, **objective):
  model = create_model("hrnetv2_w4_micro", rngs=nnx.Rngs(seed))
  tx = tx or optim.make_optimizer(dict(learning_rate=2e-3))[0]
  graphdef, state = train_step_lib.create_train_state(model, tx)
  spec = _spec(mode, labeled, multiview)
  keys = {"labeled": spec.labeled_keys,
          "multiview": spec.multiview_keys + ("view_mask",)} if mode != "2d" else {
              "labeled": spec.labeled_keys}
  step = train_step_lib.make_train_step(
      graphdef, tx, objective_lib.loss_terms(objective_lib.Objective(mode=mode, **objective),
                                             H36M), WEIGHTS, batch_keys=keys,
      prepare=objective_lib.augmenter(H36M))
  batch = pipeline.make_batch(synthetic_source(DATA), spec, step=0)
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
  batch = _fixed(pipeline.make_batch(synthetic_source(DATA), _spec("ws"), step=0))
  state, _, _ = _fit(state, pretrain, {"labeled": batch["labeled"]}, 15)
  _, weak, _ = _setup("ws")
  jitted = jax.jit(weak)
  history = []
  for _ in range(10):
    state, metrics = jitted(state, batch)
    history.append({k: float(v) for k, v in metrics.items()})
  assert {"heatmap", "multiview", "limb"} <= set(metrics)
  assert history[0]["multiview"] > 0 and history[0]["limb"] > 0  # views are valid now
  losses = [h["loss"] for h in history]
  assert min(losses[-3:]) < 0.8 * losses[0], losses
  # The weak terms themselves fall, not only the total (the heatmap term could carry it).
  for term in ("multiview", "limb"):
    values = [h[term] for h in history]
    assert min(values[-3:]) < 0.8 * values[0], (term, values)


def test_weak_supervision_refuses_3d_labels():
  state, step, _ = _setup("ws")
  fs_batch = pipeline.make_batch(synthetic_source(DATA), _spec("fs"), step=0)
  with pytest.raises(ValueError, match=r"carries \['joints_2d', 'joints_2d_mask', "
                     r"'joints_3d'\], which this objective must not read"):
    step(state, fs_batch)
  # Whatever key a source adds (the synthetic joints_world, MPI-INF-3DHP's joints_3d_camera),
  # a batch that carries it is refused: the check is an allow-list.
  for key in ("joints_world", "joints_3d_camera", "has_3d"):
    batch = pipeline.make_batch(synthetic_source(DATA), _spec("ws"), step=0)
    batch["multiview"][key] = np.zeros(batch["multiview"]["view_mask"].shape)
    with pytest.raises(ValueError, match=key):
      step(state, batch)


def test_the_step_on_leaves_is_the_step_on_the_train_state():
  # The loop calls the step on the state's leaves (step_lib.on_leaves) to spare the host a
  # TrainState flatten and unflatten per step: the same step, to the bit.
  state, step, batch = _setup("2d")
  leaves, state_def = jax.tree_util.tree_flatten(jax.tree_util.tree_map(np.array, state))
  expected, expected_metrics = jax.jit(step)(state, batch)
  new_leaves, metrics = jax.jit(train_step_lib.on_leaves(step, state_def))(leaves, batch)
  assert isinstance(new_leaves, list) and len(new_leaves) == len(leaves)
  for got, want in zip(new_leaves, jax.tree_util.tree_leaves(expected)):
    np.testing.assert_array_equal(got, want)
  assert jax.tree_util.tree_map(float, metrics) == jax.tree_util.tree_map(
      float, expected_metrics)
  assert int(jax.tree_util.tree_unflatten(state_def, new_leaves).step) == 1
  # A step that returns another structure is refused where it is traced.
  grows = lambda state, batch: ((state, state.step), {})  # noqa: E731
  with pytest.raises(ValueError, match="changed the state's structure"):
    train_step_lib.on_leaves(grows, state_def)(leaves, batch)


def _on_devices(state, step, batch, devices, num_steps, cpu_fusions="xla"):
  """`num_steps` jitted steps over a mesh of `devices`: (parameter update, last loss)."""
  before = _flat(state.params)
  mesh = train_step_lib.make_mesh(devices)
  jitted = train_step_lib.jit_train_step(step, mesh, cpu_fusions)
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
                                      opt_state=optax.sgd(1.0).init(params), frozen=None)
    updates.append(_on_devices(state, step, ws_batch, devices, 1)[0])
  single, eight = updates
  assert np.linalg.norm(eight - single) / np.linalg.norm(single) < 1e-4


def _objective_and_gradients(objective, weight_2d=1.0):
  """(loss, d loss / d heatmaps, d loss / d depth maps) of `objective` on two views of a
  synthetic sample, with ground-truth heatmaps and depths 0.1 off."""
  mode = objective.mode
  sample = synthetic.sample(synthetic.SyntheticConfig(image_size=64, num_views=2,
                                                      motion="procedural"), "test", 0)
  camera = jax.numpy.asarray(sample["camera"])
  stream = {"camera": camera[None], "view_mask": np.ones((1, 2), bool)}
  if mode == "fs":
    stream.update(joints_3d=sample["joints_3d"][None], joints_2d=sample["joints_2d"][None],
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
    terms = objective_lib.objective_terms(predictions, batch, objective, H36M, 0)
    return train_step_lib.weighted_sum(terms, dict(WEIGHTS, heatmap=weight_2d))

  # Jitted: one program compiles faster than the geometry's ops compile one by one.
  loss, grads = jax.jit(jax.value_and_grad(objective_of, argnums=(0, 1)))(heatmaps, depthmaps)
  return (loss, *grads)


@pytest.mark.parametrize("mode", ["fs", "ws"])
@pytest.mark.parametrize("moves_2d", [True, False])
def test_3d_losses_move_the_2d_only_when_allowed(mode, moves_2d):
  # heatmap_weight 0: only the 3D losses can reach the heatmaps.
  _, grad_heatmaps, grad_depthmaps = _objective_and_gradients(objective_lib.Objective(
      mode=mode, losses_3d_move_2d=moves_2d), weight_2d=0.0)
  assert np.abs(grad_depthmaps).max() > 0
  assert (np.abs(grad_heatmaps).max() > 0) == moves_2d


def test_root_depth_gradient_changes_the_gradient_not_the_loss():
  held, full = (_objective_and_gradients(objective_lib.Objective(
      mode="ws", losses_3d_move_2d=False, root_depth_gradient=flag)) for flag in (False, True))
  assert float(full[0]) > 0
  # Two programs (the stop_gradient changes XLA's fusions): the same loss up to float32 rounding.
  np.testing.assert_allclose(held[0], full[0], rtol=1e-5)
  difference = np.abs(held[2] - full[2]).max()
  assert difference > 1e-3 * np.abs(full[2]).max()


def test_compiler_options_are_cpu_only_and_a_typo_names_the_choices():
  assert train_step_lib.compiler_options("xla", "cpu") is None  # XLA's defaults
  ynn = train_step_lib.compiler_options("ynn", "cpu")
  assert ynn == train_step_lib.CPU_FUSIONS["ynn"] and ynn
  assert train_step_lib.compiler_options("ynn", "gpu") is None
  with pytest.raises(ConfigError, match=r"cpu_fusions='YNN': expected one of \['xla', 'ynn'\]"):
    train_step_lib.compiler_options("YNN", "cpu")


@pytest.mark.parametrize("mode", ["2d", "fs"])
def test_ynnpack_fusions_train_like_xlas(mode):
  # The option reaches the compiler (another executable), and the numbers are the same to
  # float32 rounding: 1.4e-6 relative on the update, here and at -O3. On a fixed batch: with
  # the on-device augmentation, the tests' -O0 flags alone move the update by 2 % from -O3's
  # (XLA's fusions both times; 1.4e-6 without it), which would hide what is compared here.
  results, executables = {}, {}
  for cpu_fusions in ("xla", "ynn"):
    state, step, batch = _setup(mode, tx=optax.sgd(1e-3))
    batch = _fixed(batch)
    mesh = train_step_lib.make_mesh(jax.devices()[:1])
    jitted = train_step_lib.jit_train_step(step, mesh, cpu_fusions)
    executables[cpu_fusions] = jitted.lower(
        state, train_step_lib.shard_batch(batch, mesh)).compile().as_text()
    results[cpu_fusions] = _on_devices(state, step, batch, jax.devices()[:1], 3,
                                       cpu_fusions=cpu_fusions)
  assert executables["xla"] != executables["ynn"]
  (xla, xla_loss), (ynn, ynn_loss) = results["xla"], results["ynn"]
  assert ynn_loss == pytest.approx(xla_loss, rel=1e-5)
  assert np.linalg.norm(ynn - xla) / np.linalg.norm(xla) < 1e-4
