"""posejax.metrics: DeepPose's 2D metrics, PDJ and PCP (Toshev & Szegedy, arXiv 1312.4659,
section 4), on hand-built poses with exact expected values."""

import jax
import numpy as np
import pytest

from posejax import metrics
from posejax.skeleton import H36M


def test_pdj_counts_joints_within_the_fraction_of_the_diameter():
  gt = np.zeros((2, 4, 2), np.float32)
  pred = gt.copy()
  pred[0] = [[0, 0], [3, 4], [3, 4.01], [-1, 0]]  # errors 0, 5 (the edge), 5.008, 1
  pred[1] = [[0, 10], [0, 0], [0, 0], [0, 0]]  # error 10, then exact joints
  diameter = np.array([10.0, 20.0], np.float32)
  # fraction 0.5: limits 5 and 10 px; <= counts.
  np.testing.assert_allclose(metrics.pdj(pred, gt, diameter, fraction=0.5), [0.75, 1.0])
  # fraction 0.2 (the headline): limits 2 and 4 px.
  np.testing.assert_allclose(metrics.pdj(pred, gt, diameter), [0.5, 0.75])
  # Masked joints do not count; a sample without a counted joint gives 0.
  mask = np.array([[False, True, True, False], [False, False, False, False]])
  np.testing.assert_allclose(metrics.pdj(pred, gt, diameter, mask, fraction=0.5), [0.5, 0.0])


# Three joints: j0 (0, 0), j1 (10, 0), j2 (10, 20). Limb A = j0-j1 (length 10, limit 5 px at
# threshold 0.5), limb B = j1-j2 (length 20, limit 10 px).
GT = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 20.0]], np.float32)
LIMBS = ((0, 1), (1, 2))


def _moved(**offsets):
  pose = GT.copy()
  for name, offset in offsets.items():
    pose[int(name[1:])] += offset
  return pose


@pytest.mark.parametrize("pred, both, mean", [
    (_moved(j0=(3, 4)), 1.0, 1.0),  # j0 off by exactly half of A: the edge counts
    (_moved(j0=(3, 4.01)), 0.5, 1.0),  # just beyond for "both"; "mean" (2.5 px) still fine
    (_moved(j1=(7, 0)), 0.5, 1.0),  # A: 7 > 5 for "both", mean 3.5 <= 5; B: 7 <= 10
    (_moved(j2=(0, 25)), 0.5, 0.5),  # B: 25 > 10, mean 12.5 > 10
    (_moved(j1=(0, 11)), 0.0, 0.5),  # A and B fail "both"; B's mean 5.5 <= 10
])
def test_pcp_both_rules_on_a_hand_built_pose(pred, both, mean):
  assert float(metrics.pcp(pred, GT, LIMBS, rule="both")) == both
  assert float(metrics.pcp(pred, GT, LIMBS, rule="mean")) == mean


def test_pcp_masks_limbs_with_an_unlabelled_end_and_is_per_sample():
  pred = np.stack([_moved(j2=(0, 25)), _moved(j1=(7, 0)), GT])
  gt = np.broadcast_to(GT, pred.shape)
  mask = np.array([[True, True, False], [True, True, True], [False, True, False]])
  # Sample 0: B has an unlabelled end, only A counts (correct); sample 2 has no limb at all.
  np.testing.assert_allclose(metrics.pcp(pred, gt, LIMBS, mask), [1.0, 0.5, 0.0])
  correct, counted = metrics.limb_correct(pred, gt, LIMBS, mask)
  np.testing.assert_array_equal(counted, [[True, False], [True, True], [False, False]])
  np.testing.assert_array_equal(correct, [[True, False], [False, True], [True, True]])
  # Jittable with the limbs static.
  jitted = jax.jit(lambda p, g, m: metrics.pcp(p, g, LIMBS, m, rule="mean"))
  np.testing.assert_allclose(jitted(pred, gt, mask), [1.0, 1.0, 0.0])
  with pytest.raises(ValueError, match="rule must be one of"):
    metrics.pcp(pred, gt, LIMBS, rule="strict")


def test_pcp_end_points_may_be_midpoints():
  # Torso-like stick: from the midpoint of j0 (0, 0) and j1 (10, 0), i.e. (5, 0), to j2 (5, 20).
  gt = np.array([[0.0, 0.0], [10.0, 0.0], [5.0, 20.0]], np.float32)
  limbs = (((0, 1), 2),)
  on_edge = gt + [[8.0, 0.0], [0.0, 0.0], [0.0, 0.0]]  # midpoint off by 4 = 0.2 x 20
  beyond = gt + [[8.5, 0.0], [0.0, 0.0], [0.0, 0.0]]
  assert float(metrics.pcp(on_edge, gt, limbs, threshold=0.2)) == 1.0
  assert float(metrics.pcp(beyond, gt, limbs, threshold=0.2)) == 0.0
  # The midpoint needs both of its joints labelled.
  assert float(metrics.pcp(on_edge, gt, limbs, np.array([True, False, True]))) == 0.0


def test_lsp_like_limbs_by_name():
  limbs = metrics.lsp_like_limbs(H36M)
  assert len(limbs) == len(metrics.LSP_LIKE_LIMB_NAMES) == 10
  named = dict(zip(metrics.LSP_LIKE_LIMB_NAMES, limbs))
  index = H36M.index
  assert named["head"] == ((index("head_top"),), (index("neck_nose"),))
  assert named["torso"] == ((index("left_shoulder"), index("right_shoulder")),
                            (index("left_hip"), index("right_hip")))
  assert named["right_lower_arm"] == ((index("right_elbow"),), (index("right_wrist"),))
  assert named["left_upper_leg"] == ((index("left_hip"),), (index("left_knee"),))
  # Every limb counts on a pose that lacks pelvis, spine and thorax (LSP, MPII-like data).
  mask = np.ones(17, bool)
  mask[[index("pelvis"), index("spine"), index("thorax")]] = False
  rng = np.random.default_rng(0)
  gt = rng.uniform(0, 100, size=(17, 2)).astype(np.float32)
  correct, counted = metrics.limb_correct(gt, gt, limbs, mask)
  assert np.asarray(counted).all() and np.asarray(correct).all()
  assert float(metrics.pcp(gt + 1000, gt, limbs, mask)) == 0.0


def test_lsp_like_limbs_names_a_missing_joint():
  from posejax.skeleton import Skeleton  # pylint: disable=import-outside-toplevel
  hand = Skeleton(name="hand", joint_names=("wrist", "thumb"), parents=(-1, 0), scale_pair=(0, 1),
                  flip_pairs=(), mean_bone_lengths_mm=(1.0,), mean_scale_mm=1.0)
  with pytest.raises(KeyError, match="'head_top' is not a joint of skeleton 'hand'"):
    metrics.lsp_like_limbs(hand)
