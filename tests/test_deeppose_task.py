"""Task "deeppose" (posejax/tasks/deeppose) through the real loop, at tiny sizes (32-px crops, a
32-px stage 1, 16-px refiners): a stage-1 run, then a stage-2 run on its workdir (the frozen
stage 1, the displacement statistics computed once and read on resume, an exact resume), the
evaluation table (a row per stage and the mean pose), the loss falling on a fixed batch, the
refiner's step on 8 devices as on 1, the masks, the box randomness and the configs."""


import jax
import numpy as np
import optax
import pytest
from flax import nnx

from experiments.configs import deeppose_mpii, deeppose_synthetic
from posejax.data.batching import pipeline
from posejax.data.batching.sources import make_source
from posejax.models.regression import SmallRegressor
from posejax.skeleton import H36M
from posejax.tasks import get_task
from posejax.tasks.deeppose import DeepPose, displacements, evaluation, objective
from posejax.train import checkpoints, loop
from posejax.train import step as step_lib
from tests.checkpoints_read import numbers, restored
from tests.tiny_runs import shrink

J = H36M.num_joints


def _config(stage, previous="", steps=3, **train):
  config = deeppose_synthetic.get_config(str(stage))
  config.deeppose.update(stage1_size=32, refine_size=16, samples_per_image=2, previous=previous,
                         predict_batch_size=8)
  config.model.dropout = 0.0
  return shrink(config, steps=steps, samples=2, train_images=16, **train)




def _rows(table: str) -> list[str]:
  return [line[:10].strip() for line in table.splitlines()[2:]]


@pytest.fixture(scope="session")  # built once: tests/conftest.py
def stage1(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("deeppose") / "stage1"
  return workdir, loop.train_and_evaluate(_config(1, validate_every=3), str(workdir))


def test_stage1_trains_checkpoints_and_reports_itself_beside_the_mean_pose(stage1):
  workdir, results = stage1
  assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [2, 3]
  assert list((workdir / "best").iterdir())  # by error_px
  assert len(results["stages"]) == 1 and results["error_px"] == results["stages"][0]["error_px"]
  assert results["views"] == 4  # 2 samples x 2 views
  assert results["joints"] == results["visible_joints"] + results["hidden_joints"] > 0
  for row in results["stages"] + [results["baseline"]]:
    assert {"error_px", "error_visible_px", "error_hidden_px", "pdj_0.05", "pdj_0.1", "pdj_0.2",
            "pcp_both", "pcp_mean"} <= set(row)
    assert len(row["per_joint_error_px"]) == J
  model, config = checkpoints.restore_model(str(workdir))
  task = get_task(config)
  assert isinstance(task, DeepPose) and isinstance(model, SmallRegressor)
  assert _rows(task.format_results(results)) == ["mean pose", "stage 1"]
  sample = make_source(config.data)("test", 0)
  predictions = task.predict(model, sample["image"], sample["camera"])
  assert predictions["joints_2d_stages"].shape == (2, 1, J, 2)
  np.testing.assert_array_equal(predictions["joints_2d"], predictions["joints_2d_stages"][:, 0])


def test_other_models_rows_follow_the_stages(stage1):
  _, results = stage1
  table = evaluation.format_results(dict(results, other_rows={"heatmap": results["baseline"]}))
  assert _rows(table) == ["mean pose", "stage 1", "heatmap"]
  lines = table.splitlines()
  assert lines[-1][10:] == lines[2][10:]  # the row's cells, formatted as the others


def test_stage2_computes_its_displacements_once_and_resumes_exactly(stage1, tmp_path, capsys):
  previous, stage1_results = str(stage1[0]), stage1[1]
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  results = loop.train_and_evaluate(_config(2, previous, steps=4), str(straight))
  stopped = _config(2, previous, steps=4)
  stopped.train.steps = 2  # "killed" after 2 steps
  loop.train_and_evaluate(stopped, str(resumed))
  assert "stage 1 predicts 16 training images" in capsys.readouterr().out
  stats_path = resumed / displacements.FILENAME
  written = stats_path.stat().st_mtime_ns
  assert loop.train_and_evaluate(_config(2, previous, steps=4), str(resumed)) == results
  out = capsys.readouterr().out
  assert f"displacements: read {stats_path}" in out and "predicts" not in out
  assert stats_path.stat().st_mtime_ns == written
  straight_state, resumed_state = restored(straight, 4), restored(resumed, 4)
  for key in ("params", "rest", "opt_state", "frozen"):
    for a, b in zip(jax.tree_util.tree_leaves(straight_state[key]),
                    jax.tree_util.tree_leaves(resumed_state[key])):
      np.testing.assert_array_equal(numbers(a), numbers(b))
  # The frozen model is stage 1 as its run ended, never updated.
  stage1_params = restored(previous, 3)["params"]
  frozen = straight_state["frozen"]["stages"]["0"]
  for layer, weights in stage1_params.items():
    for name, value in weights.items():
      np.testing.assert_array_equal(frozen[layer][name]["value"], value["value"])
  stats = displacements.load(straight / displacements.FILENAME)
  assert stats["mean"].shape == stats["std"].shape == (J, 2)
  assert int(stats["count"]) == 16 and np.all(stats["std"] > 0)
  # The cascade: stage 1's row is the stage-1 run's own; stage 2 is the new one.
  assert len(results["stages"]) == 2
  assert results["stages"][0] == stage1_results["stages"][0]
  assert results["baseline"] == stage1_results["baseline"]
  assert results["error_px"] == results["stages"][1]["error_px"]
  task = get_task(_config(2, previous))
  assert _rows(task.format_results(results)) == ["mean pose", "stage 1", "stage 2"]


def test_a_synthetic_refiner_starts_from_the_stage_before_it(stage1):
  """The recipe's `--config.init_from=STAGE1` for stage 2: deeppose_small (stage 1) and
  deeppose_small_fine (the refiners) have the same parameter shapes, so the house's init_from
  reads every stage-1 weight into the refiner (as `loop._initial_state` does)."""
  previous = str(stage1[0])
  config = _config(2, previous)
  assert config.model.name == "deeppose_small_fine" and config.deeppose.context_weight > 0
  task = get_task(config)
  tx = optax.adam(1e-3)
  _, state = step_lib.create_train_state(task.create_model(nnx.Rngs(7)), tx)
  manager = checkpoints.manager(str(stage1[0] / "checkpoints"))
  params, _ = checkpoints.restore_weights(manager, state.params, state.rest)
  stage1_params = restored(previous, 3)["params"]
  for layer, weights in stage1_params.items():
    for name, value in weights.items():
      np.testing.assert_array_equal(numbers(params[layer][name]), value["value"])
      assert not np.array_equal(numbers(state.params[layer][name]), value["value"])


def test_a_refiner_needs_the_right_previous_stages(stage1):
  previous = str(stage1[0])
  with pytest.raises(ValueError, match=r"deeppose.stage=2 needs the workdirs of stages 1..1"):
    get_task(_config(2))
  with pytest.raises(ValueError, match="is not a DeepPose stage-2 workdir"):
    get_task(_config(3, f"{previous},{previous}")).create_frozen()
  config = _config(2, previous)
  config.deeppose.stage1_size = 16
  with pytest.raises(ValueError, match=r"trained with stage1_size 32 \(not 16\)"):
    get_task(config).create_frozen()
  with pytest.raises(ValueError, match="trains objective 'refine', not 'regress'"):
    get_task(_config(2, previous)).batch_spec("regress")


# ------------------------------------------------------------------------ steps, on a batch


def _step_setup(stage, tx, **deeppose):
  """(task, state, step, batch) of a DeepPose stage on the first batch of the tiny data."""
  config = _config(stage, "unused" if stage > 1 else "")
  config.deeppose.update(deeppose)
  task = get_task(config)
  objective_name = task.settings.objective
  if objective_name == "refine":  # what stage_source reads from the previous stages
    task.displacements = {"mean": np.full((J, 2), 0.05, np.float32),
                          "std": np.full((J, 2), 0.1, np.float32)}
  model = task.create_model(nnx.Rngs(0))
  graphdef, state = step_lib.create_train_state(model, tx)
  step = step_lib.make_train_step(
      graphdef, tx, task.loss_terms(objective_name), config.loss_weights,
      batch_keys=task.batch_keys(objective_name), prepare=task.prepare_batch(objective_name))
  source = objective.with_sample_index(make_source(config.data))
  batch = pipeline.make_batch(source, task.batch_spec(objective_name), step=0)
  return task, state, step, batch


@pytest.mark.parametrize("stage, term", [(1, "joints"), (2, "refine")])
def test_the_loss_falls_on_a_fixed_batch(stage, term):
  _, state, step, batch = _step_setup(stage, optax.adam(1e-3))
  jitted = jax.jit(step)
  losses = []
  for _ in range(25):
    state, metrics = jitted(state, batch)
    losses.append(float(metrics[term]))
  assert np.all(np.isfinite(losses))
  assert min(losses[-3:]) < 0.5 * losses[0], losses


def _on_devices(state, step, batch, devices, num_steps):
  before = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(state.params)])
  mesh = step_lib.make_mesh(devices)
  jitted = step_lib.jit_train_step(step, mesh)
  state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  for _ in range(num_steps):
    state, metrics = jitted(state, step_lib.shard_batch(batch, mesh))
  after = np.concatenate([np.ravel(x) for x in
                          jax.tree_util.tree_leaves(jax.device_get(state.params))])
  return after - before, float(metrics["loss"])


# Summation order differs between 1 and 8 devices; plain SGD passes that float noise on
# linearly (tests/test_train_step.py).
def test_eight_devices_train_the_refiner_like_one():
  assert jax.device_count() == 8
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    _, state, step, batch = _step_setup(2, optax.sgd(1e-2))
    results.append(_on_devices(state, step, batch, devices, 3))
  (single, single_loss), (eight, eight_loss) = results
  assert eight_loss == pytest.approx(single_loss, rel=1e-5)
  assert np.linalg.norm(eight - single) / np.linalg.norm(single) < 1e-4


def test_refiner_boxes_are_a_function_of_each_sample_index():
  task, _, _, batch = _step_setup(2, optax.sgd(0.0), samples_per_image=3)
  prepare = jax.jit(task.prepare_batch("refine"))
  first = jax.device_get(prepare(batch))["labeled"]
  again = jax.device_get(prepare(batch))["labeled"]
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  halves = [jax.device_get(prepare({"labeled": {k: v[part] for k, v in batch["labeled"].items()}}))
            ["labeled"] for part in (slice(0, 4), slice(4, 8))]
  for key in first:  # a sample's boxes do not depend on the rest of the batch
    np.testing.assert_array_equal(first[key], np.concatenate([h[key] for h in halves]))
  moved = dict(batch["labeled"], sample_index=batch["labeled"]["sample_index"] + 8)
  other = jax.device_get(prepare({"labeled": moved}))["labeled"]
  assert not np.array_equal(first["target"], other["target"])
  assert first["image"].shape == (8, 3, 16, 16, 3) and first["joint"].shape == (8, 3)
  # Each target is the drawn joint's truth in its box's frame: within the box's reach.
  assert np.all(first["weight"] == 1) and np.all(np.abs(first["target"]) < 3)


# ------------------------------------------------------------------------------------ masks


def test_hidden_joints_inside_the_crop_train_and_joints_outside_do_not():
  joints = np.full((1, J, 2), 16.0, np.float32)
  joints[0, 0] = (40.0, 16.0)  # outside the 32-px crop
  joints[0, 1] = (31.4, -0.5)  # inside: the crop spans [-0.5, 31.5)
  labelled = np.ones((1, J), bool)
  labelled[0, 2] = False  # hidden (synthetic) or unlabelled (real data)
  batch = {"labeled": {"image": np.zeros((1, 32, 32, 3), np.uint8), "joints_2d": joints,
                       "joints_2d_mask": labelled}}
  for label_mask, hidden_counts in (("in_crop", True), ("labelled", False)):
    settings = objective.Settings(stage1_size=16, label_mask=label_mask)
    prepared = objective.regress_preparer(settings, H36M)(batch)["labeled"]
    mask = np.asarray(prepared["mask"])[0]
    assert not mask[0] and mask[1] and mask[2] == hidden_counts and mask[3:].all()
    assert prepared["image"].shape == (1, 16, 16, 3)
    # The crop's centre (15.5, 15.5) is the box frame's 0; the crop's side is 1.
    np.testing.assert_allclose(np.asarray(prepared["target"])[0, 3], [0.5 / 32, 0.5 / 32])


def test_a_batch_without_a_counted_joint_has_a_finite_zero_loss_and_gradient():
  labelled = np.zeros((2, J), bool)  # real data, nothing labelled
  batch = {"labeled": {"image": np.zeros((2, 32, 32, 3), np.uint8),
                       "joints_2d": np.full((2, J, 2), 16.0, np.float32),
                       "joints_2d_mask": labelled, "sample_index": np.arange(2)}}
  zeros = np.zeros((J, 2), np.float32)
  regress = objective.Settings(stage1_size=16, label_mask="labelled")
  refine = objective.Settings(stage=2, previous=("a",), refine_size=16, samples_per_image=2,
                              label_mask="labelled")
  for name, settings, prepare in (
      ("regress", regress, objective.regress_preparer(regress, H36M)),
      ("refine", refine, objective.refine_preparer(refine, H36M, zeros, zeros))):
    term = objective.loss_terms(name, settings)
    loss_of = lambda model, batch, term=term, name=name: term(model, batch, None)[
        objective.TERMS[name]]
    loss, grads = nnx.jit(lambda model, batch, prepare=prepare, loss_of=loss_of:
                          nnx.value_and_grad(loss_of)(model, prepare(batch)))(
                              SmallRegressor(J, image_size=16, rngs=nnx.Rngs(0)), batch)
    assert float(loss) == 0.0
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))


def test_the_context_term_trains_every_row_on_the_joints_inside_its_box():
  """context_weight > 0: besides row `joint` (the paper's term), every row whose joint counts
  and lies inside the box is trained on that joint's place in the box; 0 is the paper alone."""
  rng = np.random.default_rng(3)
  joints = rng.uniform(0.0, 31.0, (2, J, 2)).astype(np.float32)
  labelled = np.ones((2, J), bool)
  labelled[1, 4] = False  # not counted: never a context target
  batch = {"labeled": {"image": np.zeros((2, 32, 32, 3), np.uint8), "joints_2d": joints,
                       "joints_2d_mask": labelled, "sample_index": np.arange(2)}}
  zeros = np.zeros((J, 2), np.float32)
  stds = np.full((J, 2), 0.1, np.float32)
  outputs = rng.normal(0.0, 0.3, (2, 3, J, 2)).astype(np.float32)
  model = lambda images: outputs  # noqa: E731  [B, k, J, 2] whatever the images
  losses = {}
  for weight in (0.0, 0.5):
    settings = objective.Settings(stage=2, previous=("a",), refine_size=16,
                                  samples_per_image=3, label_mask="labelled",
                                  context_weight=weight)
    prepared = jax.device_get(objective.refine_preparer(settings, H36M, zeros, stds)(batch))
    losses[weight] = float(objective.loss_terms("refine", settings)(model, prepared, None)
                           ["refine"])
  stream = prepared["labeled"]
  joint, target = stream["joint"], stream["target"]
  own = np.take_along_axis(outputs, joint[..., None, None], axis=-2)[..., 0, :]
  paper = np.mean(np.sum((own - target) ** 2, axis=-1))
  assert losses[0.0] == pytest.approx(paper, rel=1e-5)
  context_target, context_mask = stream["context_target"], stream["context_mask"]
  rows = np.arange(J)
  for b in range(2):
    for i in range(3):  # the own row's context target is the paper's target
      np.testing.assert_allclose(context_target[b, i, joint[b, i]], target[b, i], atol=1e-6)
      inside = np.all(np.abs(context_target[b, i]) <= 0.5, axis=-1) & labelled[b]
      np.testing.assert_array_equal(context_mask[b, i], inside)
      # Two joints' targets differ by their pixel offset over the box side.
      side = (joints[b, 0, 0] - joints[b, 1, 0]) / (context_target[b, i, 0, 0]
                                                     - context_target[b, i, 1, 0])
      np.testing.assert_allclose((joints[b, rows] - joints[b, 0]) / side,
                                 context_target[b, i] - context_target[b, i, 0], atol=1e-5)
  assert not context_mask[1, :, 4].any() and context_mask.any()
  context = np.sum(np.where(context_mask, np.sum((outputs - context_target) ** 2, -1), 0.0)) / 6
  assert losses[0.5] == pytest.approx(paper + 0.5 * context, rel=1e-5)


def test_a_mirrored_crop_swaps_left_and_right_joints():
  joints = np.arange(J * 2, dtype=np.float32).reshape(1, J, 2)
  mask = np.arange(J) % 2 == 0
  flip = np.array([[[-1.0, 0.0, 31.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]], np.float32)
  moved, moved_mask = objective.augment_joints(joints, mask[None], flip, H36M)
  perm = np.asarray(H36M.flip_permutation)
  np.testing.assert_allclose(np.asarray(moved)[0, :, 0], 31.0 - joints[0, perm, 0])
  np.testing.assert_array_equal(np.asarray(moved_mask)[0], mask[perm])


# ---------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("module", [deeppose_synthetic, deeppose_mpii])
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_configs_load_for_every_stage(module, stage):
  config = module.get_config(str(stage))
  config.deeppose.previous = ",".join(f"/runs/dp{s}" for s in range(1, stage))
  task = get_task(config)
  (only,) = loop.stages_of(config)  # one DeepPose stage per run
  assert only.objective == ("regress" if stage == 1 else "refine")
  spec = task.batch_spec(only.objective)
  assert spec.multiview == 0 and spec.labeled == config.batch.labeled
  assert ("sample_index" in spec.labeled_keys) == (stage > 1)
  assert set(objective.TERMS.values()) <= set(config.loss_weights)
  task.loss_terms(only.objective)
  if module is deeppose_synthetic:  # (the AlexNet has 58 M parameters: not built here)
    assert task.create_model(nnx.Rngs(0)).image_size == task.settings.input_size
  with pytest.raises(ValueError, match="Unknown DeepPose stage 'x'"):
    module.get_config("x")


def test_the_heatmap_baseline_sees_the_cascades_data_augmentation_and_batch():
  heatmap, cascade = deeppose_synthetic.get_config("heatmap"), deeppose_synthetic.get_config("1")
  assert heatmap.task == "pose25d"
  assert [s.objective for s in loop.stages_of(heatmap)] == ["2d"]
  assert heatmap.data.to_dict() == cascade.data.to_dict()  # the same held-out views
  mine, theirs = get_task(heatmap).batch_spec("2d"), get_task(cascade).batch_spec("regress")
  for field in ("labeled", "augment", "scale_range", "max_rotation_deg", "flip_probability"):
    assert getattr(mine, field) == getattr(theirs, field), field


def test_the_paper_recipe():
  config = deeppose_mpii.get_config("1")
  assert (config.model.name, config.model.dropout, config.deeppose.stage1_size) == (
      "alexnet_deeppose", 0.6, 220)
  assert (config.optim.name, config.optim.learning_rate, config.batch.labeled) == (
      "adagrad", 5e-4, 128)
  assert config.data.source == "datasets" and config.data.streams.train_2d == "lsp"
  assert deeppose_mpii.get_config("2").stages.stage1.steps == 6016  # 40 x 11000 x 14 / (128 x 8)
