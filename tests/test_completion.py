"""posejax.completion (neighbour fill, BERT-style masking, masked loss), CompletionMLP, and the
completion study (experiments.studies.pose_completion) end to end at a tiny size."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver
from flax import nnx

from experiments.studies import pose_completion
from posejax import completion
from posejax.data.render import synthetic
from posejax.models.completion import CompletionMLP, complete_undetected
from posejax.skeleton import H36M, Skeleton

# A 5-joint toy tree: 0 root with children 1 and 3; 1 -> 2; 3 -> 4.
CHAIN = Skeleton(name="toy_5", joint_names=("a", "b", "c", "d", "e"),
                 parents=(-1, 0, 1, 0, 3), scale_pair=(1, 0), flip_pairs=((1, 3),),
                 mean_bone_lengths_mm=(1.0, 1.0, 1.0, 1.0), mean_scale_mm=1.0)


def h36m_pose():
  return np.random.default_rng(0).normal(size=(17, 3)).astype(np.float32)


def test_neighbour_fill_on_h36m_leaf_root_and_branching_joint():
  pose = h36m_pose()
  fill = np.asarray(completion.neighbour_fill(pose, H36M))
  head_top, neck, pelvis, thorax, spine = (H36M.index(n) for n in (
      "head_top", "neck_nose", "pelvis", "thorax", "spine"))
  # A leaf takes its parent.
  np.testing.assert_array_equal(fill[head_top], pose[neck])
  # The root: the mean of its children (right hip, left hip, spine).
  np.testing.assert_allclose(fill[pelvis], (pose[1] + pose[4] + pose[7]) / 3, rtol=1e-6,
                             atol=1e-7)
  # The thorax: its parent (spine) and its three children (neck/nose, both shoulders).
  np.testing.assert_allclose(fill[thorax], (pose[spine] + pose[neck] + pose[11] + pose[14]) / 4,
                             rtol=1e-6, atol=1e-7)
  # A joint with one child: the midpoint of parent and child (the left knee).
  np.testing.assert_allclose(fill[5], (pose[4] + pose[6]) / 2, rtol=1e-6, atol=1e-7)


def test_neighbour_fill_exact_values_and_other_skeletons():
  pose = np.array([[0, 0, 0], [2, 0, 0], [4, 2, 0], [0, 4, 0], [0, 8, 6]], np.float32)
  fill = np.asarray(completion.neighbour_fill(pose[None], CHAIN))[0]
  np.testing.assert_array_equal(fill, [[1, 2, 0], [2, 1, 0], [2, 0, 0], [0, 4, 3], [0, 4, 0]])
  with pytest.raises(ValueError, match="5 joints"):
    completion.neighbour_fill(h36m_pose(), CHAIN)


def test_bert_mask_selects_exactly_k_joints_and_replaces_80_percent():
  poses = np.broadcast_to(h36m_pose(), (10_000, 17, 3))
  masked, selected, replaced = jax.jit(completion.bert_mask, static_argnums=2)(
      jax.random.key(0), poses, H36M)
  selected, replaced, masked = np.asarray(selected), np.asarray(replaced), np.asarray(masked)
  assert completion.num_masked(17, 0.2) == 3
  np.testing.assert_array_equal(selected.sum(-1), 3)
  assert not np.any(replaced & ~selected)
  rate = replaced.sum() / selected.sum()
  assert rate == pytest.approx(0.8, abs=0.02)
  # Every joint is as likely to be selected (3/17 each; 5 sigma ~ 0.019).
  np.testing.assert_allclose(selected.mean(0), 3 / 17, atol=0.02)
  fill = np.asarray(completion.neighbour_fill(poses[:1], H36M))[0]
  np.testing.assert_array_equal(masked, np.where(replaced[..., None], fill, poses))


def test_bert_mask_other_sizes():
  assert completion.num_masked(5, 0.2) == 1
  assert completion.num_masked(2, 0.2) == 1  # at least one joint
  _, selected, _ = completion.bert_mask(jax.random.key(1), np.zeros((4, 5, 3)), CHAIN,
                                        ratio=0.4, replace_probability=1.0)
  np.testing.assert_array_equal(np.asarray(selected).sum(-1), 2)


def test_completion_loss_counts_selected_joints_only():
  truth = np.zeros((2, 17, 3), np.float32)
  pred = np.full((2, 17, 3), 100.0, np.float32)  # far off everywhere but...
  selected = np.zeros((2, 17), bool)
  selected[0, [1, 5]] = True
  selected[1, 9] = True
  pred[0, 1] = [1, 0, 0]  # squared error 1
  pred[0, 5] = [0, 2, 0]  # 4
  pred[1, 9] = [0, 0, 3]  # 9
  assert float(completion.completion_loss(pred, truth, selected)) == pytest.approx(14 / 3)
  assert float(completion.completion_loss(pred, truth, np.zeros((2, 17), bool))) == 0.0


def test_joint_features_layout():
  pose = np.array([[0, 0, 0], [2, 0, 0], [4, 2, 0], [0, 4, 0], [0, 8, 6]], np.float32)
  replaced = np.array([False, True, False, False, True])
  features = np.asarray(completion.joint_features(pose, replaced, CHAIN))
  assert features.shape == (5, 10)
  np.testing.assert_array_equal(features[0], [0, 0, 0, 0, 0, 0, 1, 2, 0, 0])  # root: no parent
  np.testing.assert_array_equal(features[1], [2, 0, 0, 0, 0, 0, 4, 2, 0, 1])
  np.testing.assert_array_equal(features[4], [0, 8, 6, 0, 4, 0, 0, 0, 0, 1])  # leaf: no child


def test_completion_mlp_starts_as_the_identity_and_trains():
  model = CompletionMLP(H36M, hidden=64, blocks=2, rngs=nnx.Rngs(0))
  truth = np.random.default_rng(1).normal(size=(8, 17, 3)).astype(np.float32)
  masked, selected, replaced = completion.bert_mask(jax.random.key(2), truth, H36M)
  model.eval()
  out = nnx.jit(lambda model: model(masked, replaced))(model)
  assert out.shape == (8, 17, 3) and out.dtype == jnp.float32
  np.testing.assert_array_equal(out, masked)

  model.train()

  def loss_fn(model):
    return completion.completion_loss(model(masked, replaced), truth, selected)

  grads = nnx.jit(nnx.grad(loss_fn))(model)
  leaves = jax.tree_util.tree_leaves(nnx.state(grads, nnx.Param))
  assert all(np.all(np.isfinite(g)) for g in leaves)
  assert np.any(np.asarray(grads.output_layer.kernel[...]) != 0)


def bone_cosines(poses):
  """[..., E, E] cosines between the bone directions of poses [..., J, 3]: unchanged by what
  placing and viewing a clip frame does (retargeting keeps directions; rotation, translation
  and scale), so they tell which frame a study pose came from."""
  children_, parents = (list(side) for side in zip(*H36M.bones))
  bones = poses[..., children_, :] - poses[..., parents, :]
  bones = bones / np.linalg.norm(bones, axis=-1, keepdims=True)
  return bones @ np.swapaxes(bones, -1, -2)


def nearest_frame_difference(poses, clips):
  """[N] for each pose, the largest cosine difference to the clips' closest frame."""
  frames = bone_cosines(np.concatenate(list(clips.values())).astype(np.float64))
  return np.abs(bone_cosines(poses.astype(np.float64))[:, None] - frames).max(axis=(-2, -1)
                                                                              ).min(axis=1)


@pytest.fixture(scope="module")
def clips():
  pytest.importorskip("pybullet")
  return pose_completion.split_clips("test")


def test_the_study_holds_out_the_renderers_test_clips_and_validates_on_training_clips(clips):
  training, test = clips
  renderer_test = synthetic._captured_clips("test")  # pylint: disable=protected-access
  assert len(test) == len(renderer_test) == 3
  for ours, theirs in zip(test.values(), renderer_test):
    np.testing.assert_array_equal(ours, theirs)
  assert not set(training) & set(test)
  assert len(training) + len(test) == len(synthetic.motion.deepmimic_clip_paths())
  kept, validation = pose_completion.split_clips("validation")
  assert set(kept) | set(validation) == set(training) and not set(kept) & set(validation)
  assert len(validation) == 3


def test_the_training_pool_is_of_training_clips(clips):
  training, test = clips
  pool = pose_completion.training_pool(training, 32, seed=0)
  assert pool.shape == (32, 17, 3) and pool.dtype == np.float32
  np.testing.assert_allclose(pool[:, H36M.root], 0, atol=1e-6)
  k, l = H36M.scale_pair
  np.testing.assert_allclose(np.linalg.norm(pool[:, k] - pool[:, l], axis=-1), 1, rtol=1e-5)
  assert np.all(nearest_frame_difference(pool, training) < 1e-4)
  assert np.all(nearest_frame_difference(pool, test) > 1e-2)


def test_pose_completion_study_end_to_end(clips, tmp_path):
  training, test = clips
  with flagsaver.flagsaver():
    argv = flags.FLAGS(["pose_completion", f"--out_dir={tmp_path}", "--train_steps=4",
                        "--batch_size=8", "--train_poses=64", "--test_poses=24", "--hidden=16",
                        "--blocks=1", "--log_every=2"])
    pose_completion.main(argv)
  results = json.loads((tmp_path / "completion.json").read_text())
  for key in ("fill_error", "fill_error_mm", "completion_error", "completion_error_mm", "ratio",
              "ratio_mm", "network_unselected_error", "completed_unselected_error", "passed",
              "bar", "evaluation_clips", "training_clips", "loss_history"):
    assert key in results
  assert results["evaluation_clips"] == list(test) and results["training_clips"] == list(training)
  assert len(results["loss_history"]) == 2 and np.all(np.isfinite(results["loss_history"]))

  with np.load(tmp_path / "evaluation.npz") as evaluation:
    truth, scale_mm, selected, completed = (evaluation[k] for k in (
        "truth", "scale_mm", "selected", "completed"))
  assert truth.shape == completed.shape == (24, 17, 3)
  np.testing.assert_array_equal(selected.sum(-1), 3)
  # The measured poses are frames of the test clips, none of a training clip.
  assert np.all(nearest_frame_difference(truth, test) < 1e-4)
  assert np.all(nearest_frame_difference(truth, training) > 1e-2)

  # Every selected joint was filled: the fill error is neighbour_fill's own on those joints.
  fill = np.asarray(completion.neighbour_fill(truth, H36M))
  fill_distance = np.linalg.norm(fill - truth, axis=-1)
  assert results["fill_error"] == pytest.approx(fill_distance[selected].mean(), rel=1e-5)
  assert results["fill_error_mm"] == pytest.approx(
      (fill_distance * scale_mm[:, None])[selected].mean(), rel=1e-5)
  completion_distance = np.linalg.norm(completed - truth, axis=-1)
  assert results["completion_error"] == pytest.approx(completion_distance[selected].mean(),
                                                      rel=1e-5)
  assert results["ratio"] == pytest.approx(results["completion_error"] / results["fill_error"])
  # The completed pose keeps the unselected joints exactly.
  np.testing.assert_array_equal(completed[~selected], truth[~selected])
  assert results["completed_unselected_error"] == 0.0

  # The saved parameters reproduce the network's completion of the filled joints.
  model = CompletionMLP(H36M, hidden=16, blocks=1, rngs=nnx.Rngs(1))
  pose_completion.restore_parameters(model, str(tmp_path / "parameters.npz"))
  model.eval()
  masked = np.where(selected[..., None], fill, truth)
  np.testing.assert_allclose(np.asarray(model(masked, selected))[selected], completed[selected],
                             atol=1e-5)
  with pytest.raises(ValueError, match="another CompletionMLP"):
    pose_completion.restore_parameters(CompletionMLP(H36M, hidden=8, blocks=1,
                                                     rngs=nnx.Rngs(1)),
                                       str(tmp_path / "parameters.npz"))


def test_complete_undetected_keeps_detected_joints_and_completes_the_others():
  model = CompletionMLP(H36M, hidden=16, blocks=1, rngs=nnx.Rngs(0))
  model.eval()
  pose = np.random.default_rng(3).normal(size=(2, 17, 3)).astype(np.float32)
  scores = np.full((2, 17), 0.9, np.float32)
  scores[0, [3, 12]] = 0.1
  scores[1, 16] = 0.29
  # An untrained network returns its input: the undetected joints get the neighbour fill.
  completed, undetected = complete_undetected(model, pose, scores, threshold=0.3)
  np.testing.assert_array_equal(undetected, scores < 0.3)
  fill = np.asarray(completion.neighbour_fill(pose, H36M))
  np.testing.assert_allclose(np.asarray(completed)[undetected], fill[undetected], atol=1e-6)
  np.testing.assert_array_equal(np.asarray(completed)[~undetected], pose[~undetected])
  # A trained one (here: any non-zero output layer) moves the undetected joints only.
  model.output_layer.kernel[...] = jnp.ones_like(model.output_layer.kernel[...])
  moved, _ = complete_undetected(model, pose, scores, threshold=0.3)
  expected = np.asarray(model(np.where(undetected[..., None], fill, pose), undetected))
  np.testing.assert_allclose(np.asarray(moved)[undetected], expected[undetected], atol=1e-5)
  assert np.abs(np.asarray(moved)[undetected] - fill[undetected]).max() > 1e-3
  np.testing.assert_array_equal(np.asarray(moved)[~undetected], pose[~undetected])
