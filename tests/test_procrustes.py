"""posejax.procrustes: weighted similarity / rigid alignment without reflections."""

import jax
import numpy as np
import pytest
import scipy.linalg
from scipy.spatial.transform import Rotation

from posejax import procrustes


def random_similarity(seed, batch=8, num_points=17):
  rng = np.random.default_rng(seed)
  source = rng.normal(size=(batch, num_points, 3)).astype(np.float32)
  rotation = Rotation.random(batch, random_state=seed).as_matrix().astype(np.float32)
  scale = rng.uniform(0.3, 3.0, size=batch).astype(np.float32)
  translation = rng.normal(size=(batch, 3)).astype(np.float32) * 5
  target = (scale[:, None, None] * np.einsum("bij,bnj->bni", rotation, source)
            + translation[:, None])
  return source, target, scale, rotation, translation


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_a_similarity_transform_exactly(seed):
  source, target, scale, rotation, translation = random_similarity(seed)
  found = procrustes.similarity_transform(source, target)
  np.testing.assert_allclose(found[0], scale, rtol=1e-5)
  np.testing.assert_allclose(found[1], rotation, atol=2e-6)
  np.testing.assert_allclose(found[2], translation, atol=2e-5)
  np.testing.assert_allclose(procrustes.align(source, target), target, atol=5e-5)


def test_weights_and_zero_weight_outliers():
  source, target, scale, rotation, translation = random_similarity(3)
  rng = np.random.default_rng(3)
  weights = rng.uniform(0.1, 2.0, size=source.shape[:2]).astype(np.float32)
  weights[:, :4] = 0.0
  corrupted = target.copy()
  corrupted[:, :4] += rng.normal(size=(8, 4, 3)).astype(np.float32) * 100  # outliers
  found = procrustes.similarity_transform(source, corrupted, weights)
  np.testing.assert_allclose(found[0], scale, rtol=1e-5)
  np.testing.assert_allclose(found[1], rotation, atol=3e-6)
  np.testing.assert_allclose(found[2], translation, atol=3e-5)
  # Without the zero weights the outliers do move the answer (so the weights are what helps).
  unweighted = procrustes.similarity_transform(source, corrupted)
  assert np.abs(np.asarray(unweighted[1]) - rotation).max() > 1e-2


def test_rigid_mode_fixes_the_scale_to_one():
  source, target, _, rotation, _ = random_similarity(4)
  scale, found_rotation, _ = procrustes.similarity_transform(source, target, with_scale=False)
  np.testing.assert_array_equal(scale, 1.0)
  np.testing.assert_allclose(found_rotation, rotation, atol=2e-6)  # rotation is scale-free


def test_never_returns_a_reflection():
  rng = np.random.default_rng(5)
  source = rng.normal(size=(16, 10, 3)).astype(np.float32)
  mirrored = source * np.array([-1.0, 1.0, 1.0], np.float32)  # best orthogonal fit is a mirror
  _, rotation, _ = procrustes.similarity_transform(source, mirrored)
  np.testing.assert_allclose(np.linalg.det(np.asarray(rotation)), 1.0, atol=1e-5)
  np.testing.assert_allclose(np.einsum("bji,bjk->bik", rotation, rotation),
                             np.broadcast_to(np.eye(3), (16, 3, 3)), atol=1e-5)


def test_agrees_with_scipy_orthogonal_procrustes_for_uniform_weights():
  rng = np.random.default_rng(6)
  source = rng.normal(size=(20, 3))
  rotation = Rotation.random(random_state=6).as_matrix()
  target = source @ rotation.T + rng.normal(size=(20, 3)) * 0.05
  centered_source = source - source.mean(0)
  centered_target = target - target.mean(0)
  # scipy finds R minimising ||A R - B||: row vectors, so ours (column vectors) is its transpose.
  scipy_rotation, _ = scipy.linalg.orthogonal_procrustes(centered_source, centered_target)
  _, ours, _ = procrustes.similarity_transform(source.astype(np.float32),
                                               target.astype(np.float32), with_scale=False)
  np.testing.assert_allclose(ours, scipy_rotation.T, atol=1e-5)


def test_all_zero_weights_give_the_identity_and_jit_works():
  source, target, *_ = random_similarity(7, batch=2)
  scale, rotation, translation = jax.jit(procrustes.similarity_transform)(
      source, target, np.zeros(source.shape[:2], np.float32))
  np.testing.assert_array_equal(scale, 1.0)
  np.testing.assert_array_equal(rotation, np.broadcast_to(np.eye(3), (2, 3, 3)))
  np.testing.assert_array_equal(translation, 0.0)
