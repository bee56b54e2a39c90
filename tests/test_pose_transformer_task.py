"""Task "pose_transformer" (posejax/tasks/pose_transformer) through the real loop, on a
transformer over a two-branch HRNet smaller still than the minimal one of
tests/test_pose_transformer.py (registered as a backbone for this module only: compiling the
step dominates the cost) and tiny data (32-px crops): training, an exact resume, the evaluation
and its table, predict; the loop's step on 8 devices as on 1 (Hungarian matching inside the
sharded step); the force-aligned variant's loss; the evaluation's figures on hand-made
predictions; the configs and their errors."""


import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from absl import flags
from flax import nnx

from experiments.configs import pose_transformer_h36m, pose_transformer_synthetic
from experiments.configs import synthetic as synthetic_config
from experiments.studies import pose_transformer_table
from posejax import geometry, matching
from posejax.data.batching import pipeline
from posejax.data.batching.sources import make_source
from posejax.models.pose_transformer import PoseTransformer
from posejax.skeleton import H36M
from posejax.tasks import get_task
from posejax.tasks.pose_transformer import PoseTransformerTask, evaluation, objective
from posejax.train import checkpoints, loop
from posejax.train import optimizer as optim
from posejax.train import step as step_lib
from tests.checkpoints_read import numbers, restored
from tests.tiny_runs import shrink

# One xdist worker for the module: its trained-workdir fixture is then built once, not twice.
pytestmark = pytest.mark.xdist_group("pose_transformer_task")

J = H36M.num_joints
MINIMAL = "hrnetv2_w4_micro"  # two branches (strides 4 and 8): two levels for the transformer



def _config(matching="hungarian", steps=3, **train):
  config = pose_transformer_synthetic.get_config(matching)
  config.model.update(name=MINIMAL, d_model=16, num_heads=2, ffn_dim=32, encoder_layers=1,
                      decoder_layers=2, num_queries=20, num_levels=2, dropout=0.0)
  config.objective.tolerances = (0.1, 0.0)
  return shrink(config, steps=steps, samples=2, train_images=16, **train)




@pytest.fixture(scope="session")  # built once: tests/conftest.py
def trained(tmp_path_factory):
  """A run of 4 steps straight, and one stopped after 2 then resumed to 4."""
  root = tmp_path_factory.mktemp("pose_transformer")
  straight, resumed = root / "straight", root / "resumed"
  results = loop.train_and_evaluate(_config(steps=4), str(straight))
  stopped = _config(steps=4)
  stopped.train.steps = 2  # "killed" after 2 steps
  loop.train_and_evaluate(stopped, str(resumed))
  resumed_results = loop.train_and_evaluate(_config(steps=4), str(resumed))
  return straight, resumed, results, resumed_results


def test_trains_and_resumes_exactly(trained):
  straight, resumed, results, resumed_results = trained
  assert resumed_results == results
  for key in ("params", "rest", "opt_state"):
    for a, b in zip(jax.tree_util.tree_leaves(restored(straight, 4)[key]),
                    jax.tree_util.tree_leaves(restored(resumed, 4)[key])):
      np.testing.assert_array_equal(numbers(a), numbers(b))


def test_evaluation_reports_every_layer_and_the_hidden_joints(trained):
  _, _, results, _ = trained
  assert results["views"] == 4  # 2 test samples x 2 views
  for name in ("mpjpe", "n_mpjpe", "pa_mpjpe", "pck", "auc", "class_matches_oracle"):
    assert np.isfinite(results[name])
  assert len(results["mpjpe_per_layer"]) == len(results["oracle_mpjpe_per_layer"]) == 2
  assert results["mpjpe"] == results["mpjpe_per_layer"][-1]
  assert 0 <= results["class_matches_oracle"] <= 1
  assert 0 < results["hidden_joints"] < 4 * J  # synthetic people hide some joints
  assert results["mpjpe_hidden"] > 0 and results["mpjpe_visible"] > 0
  table = get_task(_config()).format_results(results)
  assert "MPJPE per decoder layer, oracle matching" in table and "hidden joints" in table


def test_the_acceptance_table_sets_the_mean_pose_beside_the_model(trained, tmp_path):
  straight, _, results, _ = trained
  config = checkpoints.load_config(str(straight))
  source = make_source(config.data)
  mean = pose_transformer_table.mean_pose(source, H36M, 4)
  flags.FLAGS(["table", f"--hungarian={straight}", "--mean_pose_samples=4"])
  try:
    pose_transformer_table.main(["table"])
  finally:
    flags.FLAGS.unparse_flags()
  rows = json.loads((straight / "table.json").read_text())
  assert list(rows) == ["mean pose", "Hungarian transformer"]
  assert rows["Hungarian transformer"] == results  # the run's own evaluation
  # The mean pose's MPJPE by hand: the same pose, scaled by its bones, for every test view.
  mean_mm = mean * np.asarray(geometry.estimate_scale(mean))
  truths = np.concatenate([np.asarray(source("test", i)["joints_3d"]).reshape(-1, J, 3)
                           for i in range(config.eval.samples)])
  truths = truths - truths[:, H36M.root:H36M.root + 1]
  by_hand = np.mean(np.linalg.norm(mean_mm - truths, axis=-1))
  assert rows["mean pose"]["mpjpe"] == pytest.approx(by_hand, rel=1e-5)
  # Another task's workdir in the wrong slot is refused, naming it.
  flags.FLAGS(["table", f"--hungarian={straight}", f"--fs={straight}"])
  try:
    with pytest.raises(ValueError, match="is a 'pose_transformer' workdir; fs 2.5D"):
      pose_transformer_table.main(["table"])
  finally:
    flags.FLAGS.unparse_flags()


def test_predict_returns_the_documented_shapes(trained):
  straight = trained[0]
  model, config = checkpoints.restore_model(str(straight))
  task = get_task(config)
  assert isinstance(task, PoseTransformerTask) and isinstance(model, PoseTransformer)
  sample = make_source(config.data)("test", 0)
  predictions = task.predict(model, sample["image"], sample["camera"])
  shapes = {k: v.shape for k, v in predictions.items()}
  assert shapes == dict(pose_3d=(2, J, 3), joint_scores=(2, J), scale_mm=(2,),
                        pose_3d_mm=(2, J, 3), valid=(2,), pose_3d_layers=(2, 2, J, 3))
  np.testing.assert_array_equal(predictions["pose_3d"], predictions["pose_3d_layers"][:, -1])
  np.testing.assert_allclose(predictions["pose_3d_mm"],
                             predictions["pose_3d"] * predictions["scale_mm"][:, None, None])


# ------------------------------------------------------------------------ steps, on a batch


def _step_setup(matching):
  """(task, state, the loop's own train step, batch) of the objective on the first batch."""
  config = _config(matching)
  task = get_task(config)
  (stage,) = loop.stages_of(config)
  tx, schedule = optim.make_optimizer(stage.optim)
  graphdef, state = step_lib.create_train_state(task.create_model(nnx.Rngs(config.seed)), tx)
  step = step_lib.make_train_step(
      graphdef, tx, task.loss_terms("matched"), config.loss_weights,
      batch_keys=task.batch_keys("matched"), prepare=task.prepare_batch("matched"),
      learning_rate=schedule)
  batch = pipeline.make_batch(make_source(config.data), task.batch_spec("matched"), step=0)
  return task, state, step, batch


def _one_step_on(devices):
  """(parameter update, metrics) of the loop's first step on `devices`."""
  _, state, step, batch = _step_setup("hungarian")
  before = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(state.params)])
  mesh = step_lib.make_mesh(devices)
  state = jax.device_put(state, step_lib.shardings(mesh)[0])
  state, metrics = step_lib.jit_train_step(step, mesh)(state, step_lib.shard_batch(batch, mesh))
  after = np.concatenate([np.ravel(x) for x in
                          jax.tree_util.tree_leaves(jax.device_get(state.params))])
  return after - before, {k: float(v) for k, v in metrics.items()}


# The step of the loop itself (AdamW, clipping, the backbone's multiplier): on 8 devices it is
# the program the runs above compiled. Summation order differs between 1 and 8 devices; the
# losses agree to float noise, and Adam's first update, ~ lr x sign(gradient), to where that
# noise can flip the sign of a near-zero gradient. The matching is a function of the costs
# alone, so both meshes match alike.
def test_eight_devices_train_like_one(trained):
  del trained  # (its runs compiled the 8-device step)
  assert jax.device_count() == 8
  (single, single_metrics), (eight, eight_metrics) = (
      _one_step_on(devices) for devices in (jax.devices()[:1], jax.devices()))
  for term in ("loss", "cls", "coord"):
    assert eight_metrics[term] == pytest.approx(single_metrics[term], rel=1e-5)
  assert np.linalg.norm(eight - single) / np.linalg.norm(single) < 1e-3


def _values(tree) -> np.ndarray:
  return np.concatenate([numbers(x).ravel() for x in jax.tree_util.tree_leaves(tree)])


def test_the_backbone_alone_starts_from_a_2d_models_checkpoint(tmp_path):
  # A PoseNet (task pose25d) on the same backbone stands for the 2D stage's run.
  posenet_config = synthetic_config.get_config("2d")
  posenet_config.model.name = MINIMAL
  posenet = get_task(posenet_config).create_model(nnx.Rngs(1))
  _, posenet_params, posenet_rest = nnx.split(posenet, nnx.Param, ...)
  posenet_rest = jax.tree_util.tree_map(lambda x: x + 1.0, posenet_rest)  # not fresh statistics
  manager = checkpoints.manager(str(tmp_path / "checkpoints"))
  manager.save(7, args=ocp.args.StandardSave({"params": posenet_params, "rest": posenet_rest}))
  manager.wait_until_finished()
  manager = checkpoints.manager(str(tmp_path / "checkpoints"))  # a reader, as the loop's

  _, params, rest = nnx.split(get_task(_config()).create_model(nnx.Rngs(0)), nnx.Param, ...)
  new_params, new_rest = checkpoints.restore_weights(manager, params, rest, part="backbone")
  for new, old in ((new_params, posenet_params), (new_rest, posenet_rest)):
    np.testing.assert_array_equal(_values(new["backbone"]), _values(old["backbone"]))
  for new, before in ((new_params, params), (new_rest, rest)):
    assert sorted(new) == sorted(before)
    for name in set(before) - {"backbone"}:
      np.testing.assert_array_equal(_values(new[name]), _values(before[name]))
  with pytest.raises(ValueError, match="no submodule 'trunk'.*'backbone'"):
    checkpoints.restore_weights(manager, params, rest, part="trunk")


def test_the_force_aligned_variant_trains_coordinates_only():
  task, state, step, batch = _step_setup("fixed")
  assert task.matching == "fixed"
  metrics = jax.eval_shape(step, state, batch)[1]  # abstractly: nothing compiles
  assert "coord" in metrics and "cls" not in metrics
  assert state.params["decoder"]["query_pos"][...].shape == (J, 16)


# -------------------------------------------------------------------------------- the maths


def test_fixed_terms_equal_the_l1_of_query_j_to_joint_j():
  rng = np.random.default_rng(0)
  coords = rng.normal(size=(2, 3, J, 3)).astype(np.float32)  # [L, B, N = J, 3]
  logits = rng.normal(size=(2, 3, J, J + 1)).astype(np.float32)
  target = rng.normal(size=(3, J, 3)).astype(np.float32)
  settings = objective.Settings(tolerances=(0.5, 0.0), layer_gamma=0.5)
  terms = objective.matched_terms(logits, coords, target, np.ones((3, J), bool), settings,
                                  "fixed")
  l1 = np.abs(coords - target).sum(-1)  # [L, B, J]
  expected = 0.5 * np.maximum(l1[0] - 0.5, 0).mean() + l1[1].mean()
  assert set(terms) == {"coord"}
  np.testing.assert_allclose(terms["coord"], expected, rtol=1e-5)


@pytest.mark.parametrize("aux_loss", [True, False])
def test_hungarian_terms_match_every_trained_layer_on_its_own(aux_loss):
  """All layers matched in one optax call = each layer matched alone by scipy, its set loss
  at its tolerance, weighted gamma^(L - l); without aux_loss the last layer alone."""
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(3, 2, 20, J + 1)).astype(np.float32)  # [L, B, N, J + 1]
  coords = rng.normal(size=(3, 2, 20, 3)).astype(np.float32)
  target = rng.normal(size=(2, J, 3)).astype(np.float32)
  mask = np.ones((2, J), bool)  # a missing joint's column ties: solvers may break it apart
  settings = objective.Settings(tolerances=(0.4, 0.2, 0.0), layer_gamma=0.5, aux_loss=aux_loss)
  terms = objective.matched_terms(logits, coords, target, mask, settings, "hungarian")
  expected = {"cls": 0.0, "coord": 0.0}
  for layer, weight in enumerate((0.25, 0.5, 1.0) if aux_loss else (0.0, 0.0, 1.0)):
    cost = matching.matching_cost(logits[layer], coords[layer], target, mask)
    query_for_joint = matching.assign(cost, solver="scipy")  # the test oracle, per layer
    layer_terms = matching.set_loss(logits[layer], coords[layer], query_for_joint, target, mask,
                                    tolerance=settings.tolerances[layer])
    expected = {k: expected[k] + weight * float(layer_terms[k]) for k in expected}
  for name in ("cls", "coord"):
    np.testing.assert_allclose(terms[name], expected[name], rtol=1e-5)


def test_the_matched_loss_is_zero_for_perfect_candidates_among_distractors():
  """Layer-by-layer Hungarian matching finds the J right candidates wherever they sit."""
  rng = np.random.default_rng(1)
  target = rng.normal(size=(2, J, 3)).astype(np.float32)
  coords = rng.normal(size=(1, 2, 30, 3)).astype(np.float32) + 10
  queries = np.stack([rng.permutation(30)[:J] for _ in range(2)])
  coords[0, np.arange(2)[:, None], queries] = target
  logits = np.full((1, 2, 30, J + 1), -30.0, np.float32)
  logits[..., J] = 30.0  # background everywhere...
  logits[0, np.arange(2)[:, None], queries, np.arange(J)] = 30.0  # ...but on the joints
  logits[0, np.arange(2)[:, None], queries, J] = -30.0
  terms = objective.matched_terms(logits, coords, target, np.ones((2, J), bool),
                                  objective.Settings(), "hungarian")
  assert float(terms["coord"]) == 0.0 and float(terms["cls"]) < 1e-6


def _pose_with_mean_bones(rng):
  """A random pose [J, 3] (mm), 4 m in front of the camera, whose bones have the skeleton's mean
  lengths: `geometry.estimate_scale` recovers its scale exactly."""
  length = {child: mm for (child, _), mm in zip(H36M.bones, H36M.mean_bone_lengths_mm)}
  pose = {H36M.root: np.array([0.0, 0.0, 4000.0])}
  while len(pose) < J:
    for joint, parent in H36M.bones:
      if parent in pose and joint not in pose:
        direction = rng.normal(size=3)
        pose[joint] = pose[parent] + length[joint] * direction / np.linalg.norm(direction)
  return np.stack([pose[j] for j in range(J)]).astype(np.float32)


def test_readout_disagreements_tell_duplicates_from_other_joints():
  # Joint 0 agrees; joint 1's class query 1 is matched to no joint (a duplicate); joint 2's
  # class query 2 is the oracle's query for joint 1 (another joint's).
  split = evaluation.readout_disagreements([[0, 1, 2]], [[0, 2, 5]])
  assert split == pytest.approx(dict(duplicate=1 / 3, other_joint=1 / 3))
  assert evaluation.readout_disagreements([[3, 4]], [[3, 4]]) == dict(duplicate=0.0,
                                                                       other_joint=0.0)


def test_evaluation_of_hand_made_predictions():
  """Query j is joint j, exactly, in both views. In view 1 a distractor is surer of the left
  wrist (hidden there) than query j: the class read-out takes it, the oracle does not. The
  distractor is the wrist turned 90 degrees about the elbow: the bone keeps its length, so the
  scale estimate and the other joints stay exact and the wrist is off by sqrt(2) x its bone."""
  rng = np.random.default_rng(2)
  wrist, elbow = H36M.index("left_wrist"), H36M.index("left_elbow")
  truth = np.stack([_pose_with_mean_bones(rng) for _ in range(2)])
  target = np.asarray(objective.target_pose(truth, H36M))
  coords = rng.normal(size=(1, 2, 20, 3)).astype(np.float32) + 5  # [L = 1, V, N, 3]
  coords[0, :, :J] = target
  bone = target[1, wrist] - target[1, elbow]
  turn = np.cross(bone, [0.0, 0.0, 1.0])
  coords[0, 1, 19] = target[1, elbow] + np.linalg.norm(bone) * turn / np.linalg.norm(turn)
  logits = np.zeros((1, 2, 20, J + 1), np.float32)
  logits[..., J] = 5.0  # background...
  for joint in range(J):  # ...but query j is joint j (probability 0.9)
    logits[0, :, joint, joint], logits[0, :, joint, J] = 5.0, 0.0
  logits[0, 1, 19, wrist], logits[0, 1, 19, J] = 10.0, 0.0  # probability 0.999
  visible = np.ones((2, J), bool)
  visible[1, wrist] = False
  sample = dict(image=np.zeros((2, 8, 8, 3), np.uint8), joints_3d=truth,
                joints_2d_mask=visible, view_mask=np.ones(2, bool))
  results = evaluation.evaluate(lambda images: (logits, coords), lambda stream, i: sample,
                                stream="test", count=1, settings=objective.Settings(),
                                model_matching="hungarian", skeleton=H36M)
  assert results["views"] == 2 and results["hidden_joints"] == 1
  assert results["class_matches_oracle"] == pytest.approx((2 * J - 1) / (2 * J))
  # The distractor is a query the oracle matched to no joint.
  assert results["class_query_elsewhere"] == pytest.approx(
      dict(duplicate=1 / (2 * J), other_joint=0.0))
  assert results["oracle_mpjpe_per_layer"][0] == pytest.approx(0.0, abs=0.01)
  wrist_error = np.sqrt(2) * H36M.mean_bone_lengths_mm[wrist - 1]  # bones: joints 1..J-1
  assert results["mpjpe_hidden"] == pytest.approx(wrist_error, rel=1e-4)
  assert results["mpjpe_visible"] == pytest.approx(0.0, abs=0.01)
  assert results["mpjpe_per_layer"] == [results["mpjpe"]]
  assert results["mpjpe"] == pytest.approx(wrist_error / (2 * J), rel=1e-4)
  assert evaluation.pooled_mpjpe(truth, truth, np.zeros((2, J), bool)) is None


# ---------------------------------------------------------------------------------- configs

# ml_collections (1.1) loads a config file with importlib's deprecated load_module().
@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")
def test_a_command_line_sets_both_loss_weights(monkeypatch):
  # The class term was once named "class", which ml_collections' override parser refuses.
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  argv = ["prog", f"--config={pose_transformer_synthetic.__file__}",
          "--config.loss_weights.cls=2.5", "--config.loss_weights.coord=3"]
  monkeypatch.setattr("sys.argv", argv)  # where config_flags reads the overrides from
  values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file("config", None, "", flag_values=values)
  values(argv)
  assert dict(holder.value.loss_weights) == {"cls": 2.5, "coord": 3.0}



@pytest.mark.parametrize("module", [pose_transformer_synthetic, pose_transformer_h36m])
@pytest.mark.parametrize("matching", ["hungarian", "fixed"])
def test_configs_load(module, matching):
  config = module.get_config(matching)
  task = get_task(config)
  (only,) = loop.stages_of(config)
  assert only.objective == "matched" and task.matching == matching
  spec = task.batch_spec("matched")
  assert spec.multiview == 0 and spec.max_rotation_deg == 0 and "joints_3d" in spec.labeled_keys
  assert {"cls", "coord"} <= set(config.loss_weights)
  assert config.optim.name == "adamw" and config.optim.multipliers.backbone == 0.1
  assert len(config.objective.tolerances) == config.model.decoder_layers
  task.loss_terms("matched")
  if module is pose_transformer_synthetic:  # abstractly: nothing compiles
    model = nnx.eval_shape(lambda: task.create_model(nnx.Rngs(0)))
    assert model.num_queries == {"hungarian": 17, "fixed": J}[matching]
    assert config.objective.cost_class == {"hungarian": 5.0, "fixed": 1.0}[matching]


def test_bad_config_values_are_clear_errors():
  with pytest.raises(ValueError, match="Unknown queries 'greedy' after the colon"):
    pose_transformer_synthetic.get_config("greedy")
  cases = [
      (lambda c: c.model.update(matching="greedy"), "model.matching must be one of"),
      (lambda c: c.model.update(layers=3), r"Unknown model field\(s\) \['layers'\]"),
      (lambda c: c.objective.update(gamma=0.5), r"Unknown objective field\(s\) \['gamma'\]"),
      (lambda c: c.objective.update(solver="auction"), "objective.solver must be one of"),
      (lambda c: c.objective.update(tolerances=(0.1,)),
       r"objective.tolerances has 1 values for 2 decoder layers"),
      (lambda c: c.batch.update(max_rotation_deg=30.0), "batch.max_rotation_deg must be 0"),
  ]
  for change, message in cases:
    config = _config()
    change(config)
    with pytest.raises(ValueError, match=message):
      get_task(config)
  with pytest.raises(ValueError, match="has no objective 'fs'"):
    get_task(_config()).batch_spec("fs")
