"""posejax.matching: optimal assignment (against scipy), its invariances, set loss, read-out."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from posejax import matching

J = 17


def random_costs(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def optimal_total(cost):
  """scipy's minimum total cost per matrix of [B, N, J]."""
  return np.array([matrix[linear_sum_assignment(matrix)].sum() for matrix in cost])


def total(cost, query_for_joint):
  cost = np.asarray(cost)
  q = np.asarray(query_for_joint)
  return np.array([cost[b, q[b], np.arange(cost.shape[-1])].sum() for b in range(len(cost))])


def assert_injective(query_for_joint):
  for row in np.asarray(query_for_joint).reshape(-1, query_for_joint.shape[-1]):
    assert len(set(row.tolist())) == len(row)


@pytest.mark.parametrize("num_queries", [17, 40, 100])
@pytest.mark.parametrize("solver", ["optax", "scipy"])
def test_assign_reaches_scipys_optimal_cost_under_jit(num_queries, solver):
  cost = random_costs((4, num_queries, J), seed=num_queries)
  q = jax.jit(matching.assign, static_argnames="solver")(cost, solver=solver)
  assert q.shape == (4, J) and q.dtype == jnp.int32
  assert_injective(q)
  assert np.all((np.asarray(q) >= 0) & (np.asarray(q) < num_queries))
  np.testing.assert_allclose(total(cost, q), optimal_total(cost), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("solver", ["optax", "scipy"])
def test_assign_under_vmap_equals_the_batched_call(solver):
  cost = random_costs((2, 2, 40, J), seed=1)  # e.g. [layers, B, N, J]
  vmapped = jax.jit(jax.vmap(lambda c: matching.assign(c, solver=solver)))(cost)
  batched = matching.assign(cost, solver=solver)
  np.testing.assert_array_equal(vmapped, batched)
  np.testing.assert_allclose(total(cost.reshape(4, 40, J), np.asarray(vmapped).reshape(4, J)),
                             optimal_total(cost.reshape(4, 40, J)), rtol=1e-5, atol=1e-5)


def test_a_missing_joint_leaves_the_others_assignment_as_without_it():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(4, 40, J + 1)).astype(np.float32)
  coords = rng.normal(size=(4, 40, 3)).astype(np.float32)
  target = rng.normal(size=(4, J, 3)).astype(np.float32)
  missing = 5
  mask = np.ones((4, J), bool)
  mask[:, missing] = False
  cost = matching.matching_cost(logits, coords, target, mask)
  np.testing.assert_array_equal(cost[:, :, missing], 0.0)
  q = np.asarray(matching.assign(cost))
  others = np.delete(np.arange(J), missing)
  full = np.asarray(matching.matching_cost(logits, coords, target, np.ones((4, J), bool)))
  for b in range(4):
    rows, cols = linear_sum_assignment(full[b][:, others])
    np.testing.assert_array_equal(q[b, others[cols]], rows)
  assert_injective(q)


def test_assign_is_equivariant_to_permuting_the_queries():
  cost = random_costs((4, 40, J), seed=3)
  perm = np.random.default_rng(4).permutation(40)
  q = np.asarray(matching.assign(cost))
  q_permuted = np.asarray(matching.assign(cost[:, perm]))
  assert not np.array_equal(q_permuted, q)
  np.testing.assert_array_equal(perm[q_permuted], q)


def test_fewer_queries_than_joints_is_rejected():
  with pytest.raises(ValueError, match="N = 10 queries < J = 17"):
    matching.assign(random_costs((2, 10, J)))


def test_assign_on_8_devices_equals_1():
  if jax.device_count() < 8:
    pytest.skip("needs 8 (simulated) devices")
  cost = random_costs((8, 40, J), seed=5)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]), ("data",))
  sharded = jax.device_put(cost, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
      "data")))
  np.testing.assert_array_equal(jax.jit(matching.assign)(sharded), matching.assign(cost))


def test_matching_cost_is_weighted_l1_minus_class_probability():
  logits = np.log(np.array([[[0.5, 0.25, 0.25], [0.1, 0.6, 0.3]]], np.float32))  # N 2, J 2
  coords = np.array([[[0, 0, 0], [1, 2, 3]]], np.float32)
  target = np.array([[[1, 0, 0], [1, 2, 4]]], np.float32)
  cost = matching.matching_cost(logits, coords, target, np.array([[True, True]]),
                                cost_class=2.0, cost_coord=5.0)
  expected = np.array([[[5 * 1 - 2 * 0.5, 5 * 7 - 2 * 0.25],
                        [5 * 5 - 2 * 0.1, 5 * 1 - 2 * 0.6]]], np.float32)
  np.testing.assert_allclose(cost, expected, rtol=1e-6)


def perfect_case():
  """N 5, J 3: queries 4, 0, 2 hold joints 0, 1, 2 exactly; 1 and 3 are confident background."""
  q = np.array([[4, 0, 2]], np.int32)
  target = np.array([[[0.1, 0.2, 0.3], [1.0, -1.0, 0.5], [-0.4, 0.0, 2.0]]], np.float32)
  logits = np.full((1, 5, 4), -20.0, np.float32)
  coords = np.random.default_rng(6).normal(size=(1, 5, 3)).astype(np.float32)
  for joint, query in enumerate(q[0]):
    logits[0, query, joint] = 20.0
    coords[0, query] = target[0, joint]
  logits[0, [1, 3], 3] = 20.0
  return logits, coords, q, target


def test_set_loss_is_zero_for_a_perfect_prediction():
  logits, coords, q, target = perfect_case()
  mask = np.ones((1, 3), bool)
  loss = matching.set_loss(logits, coords, q, target, mask)
  assert float(loss["cls"]) == pytest.approx(0.0, abs=1e-7)
  assert float(loss["coord"]) == 0.0
  # And the optimal assignment of that prediction is the one it was built for.
  np.testing.assert_array_equal(
      matching.assign(matching.matching_cost(logits, coords, target, mask)), q)


def log_softmax(x):
  x = np.asarray(x, np.float64)
  return x - np.log(np.sum(np.exp(x)))


def test_set_loss_eos_weighting_and_hinge_match_hand_computation():
  rng = np.random.default_rng(7)
  logits = rng.normal(size=(1, 3, 3)).astype(np.float32)  # N 3, J 2
  coords = np.array([[[0, 0, 0], [5, 5, 5], [1, 1, 1]]], np.float32)
  target = np.array([[[1.5, 1.0, 0.7], [9, 9, 9]]], np.float32)
  q = np.array([[2, 0]], np.int32)  # joint 0 <- query 2, joint 1 (missing) <- query 0
  mask = np.array([[True, False]])
  loss = matching.set_loss(logits, coords, q, target, mask, eos_coef=0.1, tolerance=0.5)
  # Query 2: class 0, weight 1; query 0: matched to a missing joint, weight 0; query 1:
  # background (class 2), weight 0.1.
  expected_class = -(log_softmax(logits[0, 2])[0] + 0.1 * log_softmax(logits[0, 1])[2]) / 1.1
  assert float(loss["cls"]) == pytest.approx(expected_class, rel=1e-5)
  # |1 - 1.5| + |1 - 1| + |1 - 0.7| = 0.8 -> hinge 0.3; joint 1 is masked; one labeled joint.
  assert float(loss["coord"]) == pytest.approx(0.3, rel=1e-5)
  loose = matching.set_loss(logits, coords, q, target, mask, tolerance=1.0)
  assert float(loose["coord"]) == 0.0


def test_set_loss_coord_is_normalised_over_the_batch():
  coords = np.zeros((2, 2, 3), np.float32)
  target = np.array([[[1, 0, 0]], [[0, 2, 0]]], np.float32)  # J 1
  logits = np.zeros((2, 2, 2), np.float32)
  q = np.zeros((2, 1), np.int32)
  loss = matching.set_loss(logits, coords, q, target, np.array([[True], [True]]))
  assert float(loss["coord"]) == pytest.approx(1.5)
  none = matching.set_loss(logits, coords, q, target, np.array([[False], [False]]))
  assert float(none["coord"]) == 0.0 and np.isfinite(float(none["cls"]))


def test_coordinate_gradients_reach_matched_queries_only():
  rng = np.random.default_rng(8)
  logits = rng.normal(size=(2, 30, J + 1)).astype(np.float32)
  coords = rng.normal(size=(2, 30, 3)).astype(np.float32)
  target = rng.normal(size=(2, J, 3)).astype(np.float32)
  mask = np.ones((2, J), bool)
  mask[1, 3] = False

  @jax.jit
  def loss_fn(logits, coords):
    q = matching.assign(matching.matching_cost(logits, coords, target, mask))
    loss = matching.set_loss(logits, coords, q, target, mask)
    return loss["cls"] + 5 * loss["coord"], q

  (grad_logits, grad_coords), q = jax.grad(loss_fn, argnums=(0, 1), has_aux=True)(logits,
                                                                                   coords)
  grad_coords, q = np.asarray(grad_coords), np.asarray(q)
  assert np.all(np.isfinite(grad_coords)) and np.all(np.isfinite(grad_logits))
  for b in range(2):
    labeled = set(q[b, mask[b]].tolist())
    for n in range(30):
      if n in labeled:
        assert np.all(grad_coords[b, n] != 0)
      else:
        np.testing.assert_array_equal(grad_coords[b, n], 0.0)
  # Every query gets a class gradient but the one matched to the missing joint (weight 0).
  has_class_gradient = np.abs(np.asarray(grad_logits)).sum(-1) > 0
  assert not has_class_gradient[1, q[1, 3]]
  has_class_gradient[1, q[1, 3]] = True
  assert np.all(has_class_gradient)


def test_class_assignment_reads_each_joint_from_its_most_confident_query():
  probabilities = np.array([[
      [0.7, 0.1, 0.1, 0.1],  # query 0: joint 0
      [0.1, 0.2, 0.6, 0.1],  # query 1: joint 2
      [0.2, 0.5, 0.1, 0.2],  # query 2: joint 1
      [0.05, 0.05, 0.05, 0.85],  # query 3: background
      [0.1, 0.1, 0.75, 0.05],  # query 4: joint 2, more confident than query 1
  ]], np.float32)  # N 5, J 3
  q, scores = matching.class_assignment(np.log(probabilities))
  np.testing.assert_array_equal(q, [[0, 2, 4]])
  np.testing.assert_allclose(scores, [[0.7, 0.5, 0.75]], rtol=1e-6)
  # No matching: two joints may read the same query.
  q, _ = matching.class_assignment(np.log(np.array([[[0.45, 0.45, 0.1], [0.3, 0.3, 0.4]]])))
  np.testing.assert_array_equal(q, [[0, 0]])
