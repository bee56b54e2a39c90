"""posejax.metrics: hand-computed values of the evaluation protocols, masks, ordering and jit."""

import jax
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from posejax import metrics
from posejax.skeleton import Skeleton


def chain(parents):
  """A 3-joint skeleton with the given parents (its root is where the parent is -1)."""
  return Skeleton(name="chain3", joint_names=("tip", "base", "end"), parents=parents,
                  scale_pair=(0, 2), flip_pairs=(), mean_bone_lengths_mm=(1.0, 1.0),
                  mean_scale_mm=2.0)


ROOT_LAST = chain((1, 2, -1))  # root = joint 2
ROOT_FIRST = chain((-1, 0, 1))  # root = joint 0
STAR4 = Skeleton(name="star4", joint_names=("a", "b", "c", "d"), parents=(-1, 0, 0, 0),
                 scale_pair=(0, 1), flip_pairs=(), mean_bone_lengths_mm=(1.0,) * 3,
                 mean_scale_mm=1.0)
ZEROS = np.zeros((3, 3), np.float32)
# Root-aligned (root = joint 2) errors against ZEROS: 150, 100 and 0 mm.
ERRORS_150_100_0 = np.array([[97.0, 127.0, 7.0], [7.0, 7.0, 107.0], [7.0, 7.0, 7.0]], np.float32)


# --- MPJPE -------------------------------------------------------------------------------------

def test_mpjpe_aligns_the_skeletons_root():
  """Errors are taken after subtracting the root of the given skeleton, not joint 0."""
  pred = np.array([[13.0, 14.0, 10.0], [10.0, 10.0, 22.0], [10.0, 10.0, 10.0]])
  # Root 2: aligned pred (3,4,0), (0,0,12), 0 -> errors 5, 12, 0.
  assert float(metrics.mpjpe(pred, ZEROS, skeleton=ROOT_LAST)) == pytest.approx(17 / 3)
  # Root 0: aligned pred 0, (-3,-4,12), (-3,-4,0) -> errors 0, 13, 5.
  assert float(metrics.mpjpe(pred, ZEROS, skeleton=ROOT_FIRST)) == pytest.approx(6.0)


def test_mpjpe_h36m_translation_and_batch():
  """On H36M arrays a translated prediction scores 0 and one 170 mm joint error scores 170/17."""
  gt = np.arange(51, dtype=np.float32).reshape(17, 3) * 10
  translated = gt + np.array([100.0, -250.0, 3000.0], np.float32)
  one_off = np.full((17, 3), 100.0, np.float32)
  one_off[16, 0] += 170.0
  pred = np.stack([translated, one_off])
  gts = np.stack([gt, np.zeros((17, 3), np.float32)])
  result = metrics.mpjpe(pred, gts)
  assert result.shape == (2,)
  np.testing.assert_allclose(result, [0.0, 10.0], atol=1e-5)


def test_mpjpe_joint_mask():
  """Masked joints do not count, whatever their error; the root still anchors the alignment."""
  pred = np.array([[13.0, 14.0, 10.0], [10.0, 10.0, 22.0], [10.0, 10.0, 10.0]])
  mask = np.array([True, False, True])
  assert float(metrics.mpjpe(pred, ZEROS, mask, ROOT_LAST)) == pytest.approx(2.5)  # (5 + 0) / 2
  pred[1] = 1e6
  assert float(metrics.mpjpe(pred, ZEROS, mask, ROOT_LAST)) == pytest.approx(2.5)


# --- N-MPJPE ------------------------------------------------------------------------------------

def test_n_mpjpe_removes_a_global_scale():
  """A 2x scaled, translated prediction: N-MPJPE 0, MPJPE = mean |gt - root| = (5 + 12) / 3."""
  gt = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 12.0], [0.0, 0.0, 0.0]])
  pred = 2 * gt + 1.0
  assert float(metrics.n_mpjpe(pred, gt, skeleton=ROOT_LAST)) == pytest.approx(0.0, abs=1e-6)
  assert float(metrics.mpjpe(pred, gt, skeleton=ROOT_LAST)) == pytest.approx(17 / 3)


def test_n_mpjpe_hand_value_and_mask():
  """s* = <p,g>/<p,p> = 5/13 gives errors 3/13, 2/13, 0; a mask changes s* to 1/2."""
  gt = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
  pred = np.array([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
  assert float(metrics.n_mpjpe(pred, gt, skeleton=ROOT_LAST)) == pytest.approx(5 / 39)
  assert float(metrics.mpjpe(pred, gt, skeleton=ROOT_LAST)) == pytest.approx(1.0)
  mask = np.array([True, False, True])  # s* from joint 0 alone: 2/4, a perfect fit
  assert float(metrics.n_mpjpe(pred, gt, mask, ROOT_LAST)) == pytest.approx(0.0, abs=1e-6)


def test_n_mpjpe_matches_float64_reference():
  """On random data N-MPJPE equals a direct float64 evaluation of the formula, per sample."""
  rng = np.random.default_rng(3)
  gt = rng.normal(size=(20, 17, 3)) * 200
  pred = gt * rng.uniform(0.5, 2.0, size=(20, 1, 1)) + rng.normal(size=gt.shape) * 50
  p, g = pred - pred[:, :1], gt - gt[:, :1]
  scale = np.sum(p * g, axis=(1, 2)) / np.sum(p * p, axis=(1, 2))
  expected = np.mean(np.linalg.norm(scale[:, None, None] * p - g, axis=-1), axis=-1)
  np.testing.assert_allclose(metrics.n_mpjpe(pred, gt), expected, rtol=1e-4)


# --- PA-MPJPE -----------------------------------------------------------------------------------

def test_pa_mpjpe_removes_a_similarity_transform():
  """A rotated (90 deg about z), 3x scaled and translated prediction has PA-MPJPE ~0."""
  gt = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 20.0, 0.0], [0.0, 0.0, 30.0]])
  rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
  pred = 3 * gt @ rotation.T + np.array([10.0, 20.0, 30.0])
  assert float(metrics.pa_mpjpe(pred, gt)) == pytest.approx(0.0, abs=1e-4)
  assert float(metrics.mpjpe(pred, gt, skeleton=STAR4)) > 10


def test_pa_mpjpe_hand_value_and_mask():
  """Square vs. square with z = +-1: best fit is R = I, s = 1/2, so every error is sqrt(1/2)."""
  gt = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0],
                 [5.0, 5.0, 5.0]])
  pred = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, -1.0], [-1.0, 0.0, 1.0], [0.0, -1.0, -1.0],
                   [900.0, -700.0, 800.0]])
  mask = np.array([True, True, True, True, False])  # joint 4 is a masked outlier
  # The result does not depend on a similarity transform of pred (second sample).
  preds = np.stack([pred, 10 * pred + 3.0])
  np.testing.assert_allclose(metrics.pa_mpjpe(preds, np.stack([gt, gt]), mask),
                             [np.sqrt(0.5)] * 2, rtol=1e-5)


# --- 3D PCK and AUC -----------------------------------------------------------------------------

def test_pck_3d_is_strict_at_the_threshold():
  """Errors 150, 100, 0 mm: 150 does not count at 150 mm, 100 does not count at 100 mm."""
  pck = lambda **kw: float(metrics.pck_3d(ERRORS_150_100_0, ZEROS, skeleton=ROOT_LAST, **kw))
  assert metrics.PCK_THRESHOLD_MM == 150.0
  assert pck() == pytest.approx(2 / 3)
  assert pck(threshold=150.5) == pytest.approx(1.0)
  assert pck(threshold=100.0) == pytest.approx(1 / 3)
  assert pck(threshold=100.5) == pytest.approx(2 / 3)
  assert pck(joint_mask=np.array([False, True, True])) == pytest.approx(1.0)


def test_auc_3d_hand_values():
  """Fractions of the 31 thresholds 0..150 an error is strictly below, averaged over joints."""
  assert metrics.AUC_THRESHOLDS_MM == tuple(5.0 * i for i in range(31))
  small = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0]], np.float32)  # 5, 2, 0
  pred = np.stack([ERRORS_150_100_0, small])
  # Error 150: 0 thresholds; 100: 105..150 = 10; 5: 10..150 = 29; 2 or 0: 5..150 = 30.
  np.testing.assert_allclose(metrics.auc_3d(pred, np.stack([ZEROS, ZEROS]), skeleton=ROOT_LAST),
                             [(0 + 10 + 30) / 93, (29 + 30 + 30) / 93], rtol=1e-6)
  mask = np.array([False, True, True])
  assert float(metrics.auc_3d(ERRORS_150_100_0, ZEROS, mask, ROOT_LAST)) == pytest.approx(40 / 62)


# --- 2D metrics ---------------------------------------------------------------------------------

def test_pckh_2d_uses_head_size_and_less_or_equal():
  """Errors 5, 6, 0 px: head 10 -> 5 px counts (<=), 6 not; head 12 -> all count."""
  pred = np.array([[[3.0, 4.0], [0.0, 6.0], [0.0, 0.0]]] * 2)
  gt = np.zeros((2, 3, 2))
  np.testing.assert_allclose(metrics.pckh_2d(pred, gt, np.array([10.0, 12.0])), [2 / 3, 1.0],
                             rtol=1e-6)
  assert float(metrics.pckh_2d(pred[0], gt[0], 10.0, threshold=0.4)) == pytest.approx(1 / 3)
  mask = np.array([True, False, True])
  assert float(metrics.pckh_2d(pred[0], gt[0], 10.0, mask)) == pytest.approx(1.0)


def test_pixel_error():
  """Errors 5, 13, 0 px: mean 6; with joint 0 masked, a huge error there changes nothing: 6.5."""
  pred = np.array([[3.0, 4.0], [5.0, 12.0], [0.0, 0.0]])
  gt = np.zeros((3, 2))
  assert float(metrics.pixel_error(pred, gt)) == pytest.approx(6.0)
  pred[0] = 1e6
  mask = np.array([False, True, True])
  assert float(metrics.pixel_error(pred, gt, mask)) == pytest.approx(6.5)


# --- Shared behaviour ---------------------------------------------------------------------------

THREE_D = {
    "mpjpe": lambda p, g, m: metrics.mpjpe(p, g, m, ROOT_LAST),
    "n_mpjpe": lambda p, g, m: metrics.n_mpjpe(p, g, m, ROOT_LAST),
    "pa_mpjpe": metrics.pa_mpjpe,
    "pck_3d": lambda p, g, m: metrics.pck_3d(p, g, m, skeleton=ROOT_LAST),
    "auc_3d": lambda p, g, m: metrics.auc_3d(p, g, m, ROOT_LAST),
}
TWO_D = {
    "pixel_error": metrics.pixel_error,
    "pckh_2d": lambda p, g, m: metrics.pckh_2d(p, g, np.full(p.shape[:-2], 10.0), m),
}


@pytest.mark.parametrize("name", list(THREE_D) + list(TWO_D))
def test_no_valid_joint_gives_zero(name):
  """A sample whose joints are all masked scores 0, both for a perfect and a bad prediction."""
  metric, dim = (THREE_D[name], 3) if name in THREE_D else (TWO_D[name], 2)
  gt = np.arange(2 * 3 * dim, dtype=np.float32).reshape(2, 3, dim)
  pred = gt.copy()
  pred[1, :2] += np.array([400.0, -300.0, 250.0][:dim], np.float32)
  none = metric(pred, gt, np.zeros((2, 3), bool))
  assert np.all(np.isfinite(none))
  np.testing.assert_array_equal(none, [0.0, 0.0])
  # Unmasked, the same samples score differently, so the zeros above come from the mask.
  assert not np.allclose(metric(pred, gt, np.ones((2, 3), bool)), 0.0)


def test_error_ordering_pa_le_n_le_mpjpe():
  """PA-MPJPE <= N-MPJPE <= MPJPE per sample on predictions off by a scale and a rotation.

  For MEAN (not RMS) errors this ordering is not a theorem, only typical: with a scale near 1 it
  can fail by a fraction of a percent. Here scale and rotation errors dominate the noise.
  """
  rng = np.random.default_rng(0)
  gt = rng.normal(size=(50, 17, 3)) * 200
  axes = rng.normal(size=(50, 3))
  rotvecs = axes / np.linalg.norm(axes, axis=-1, keepdims=True) * rng.uniform(0.2, 0.4, (50, 1))
  scale = rng.uniform(1.6, 2.5, size=(50, 1, 1)) ** rng.choice([-1, 1], size=(50, 1, 1))
  pred = (scale * np.einsum("sij,snj->sni", Rotation.from_rotvec(rotvecs).as_matrix(), gt)
          + rng.normal(size=(50, 1, 3)) * 500 + rng.normal(size=gt.shape) * 10)
  mpjpe, n_mpjpe, pa_mpjpe = (np.asarray(f(pred, gt))
                              for f in (metrics.mpjpe, metrics.n_mpjpe, metrics.pa_mpjpe))
  assert mpjpe.shape == (50,)
  assert np.all(pa_mpjpe <= n_mpjpe * (1 + 1e-4))
  assert np.all(n_mpjpe <= mpjpe * (1 + 1e-4))
  assert np.all(pa_mpjpe > 0)


@pytest.mark.parametrize("name", list(THREE_D) + list(TWO_D))
def test_metrics_are_jit_compatible(name):
  """jax.jit of each metric gives the eager values on batched random data with a mask."""
  metric, dim = (THREE_D[name], 3) if name in THREE_D else (TWO_D[name], 2)
  rng = np.random.default_rng(1)
  gt = rng.normal(size=(4, 3, dim)).astype(np.float32) * 100
  pred = gt + rng.normal(size=gt.shape).astype(np.float32) * 60
  mask = rng.uniform(size=(4, 3)) < 0.8
  np.testing.assert_allclose(jax.jit(metric)(pred, gt, mask), metric(pred, gt, mask),
                             rtol=1e-5, atol=1e-5)


def test_jit_of_the_public_function():
  """jax.jit(metrics.mpjpe) itself, including a Skeleton passed as an argument."""
  rng = np.random.default_rng(2)
  gt = rng.normal(size=(5, 17, 3)).astype(np.float32) * 100
  pred = gt + rng.normal(size=gt.shape).astype(np.float32) * 30
  np.testing.assert_allclose(jax.jit(metrics.mpjpe)(pred, gt), metrics.mpjpe(pred, gt),
                             rtol=1e-6)
  pred3, gt3 = pred[:, :3], gt[:, :3]
  np.testing.assert_allclose(jax.jit(metrics.mpjpe)(pred3, gt3, None, ROOT_LAST),
                             metrics.mpjpe(pred3, gt3, skeleton=ROOT_LAST), rtol=1e-6)


def test_fractional_joint_weights_are_a_weighted_mean():
  """Non-bool masks act as weights: 0.25 and 0.25 on errors 1 and 3 average to 2."""
  pred = np.zeros((1, 3, 2), np.float32)
  gt = np.array([[[1.0, 0], [3.0, 0], [100.0, 0]]], np.float32)
  np.testing.assert_allclose(metrics.pixel_error(pred, gt, np.array([[0.25, 0.25, 0.0]])), [2.0])
