"""Set prediction for joint queries: matching costs, optimal assignment, class read-out, loss.

A DETR-style pose network (Carion et al., arXiv 2005.12872) predicts N >= J candidates per image,
each with a class over the J joint types plus background (index J) and a 3D position. In
training every ground-truth joint is matched to one query by the Hungarian algorithm on a cost
that mixes class probability and L1 distance (DETR's `models/matcher.py`; PRTR, Li et al.
CVPR 2021, `mlpc-ucsd/PRTR`, for keypoints); the loss is a cross-entropy on every query
(unmatched ones as background) plus an L1 term on the matched ones. At inference each joint type
takes the query most confident in it (PRTR's class-only read-out), no matching needed.

Pure JAX, float32, batched over leading axes and safe under `jax.jit`, `jax.vmap` and `jax.grad`.
Shapes: B leading axes (any number), N queries, J joints; logits [B, N, J + 1] (last class =
background), coords [B, N, 3], targets [B, J, 3] with a joint mask [B, J].

The default solver is `optax.assignment.hungarian_algorithm` (pure JAX, no host round trip);
`solver="scipy"` runs `scipy.optimize.linear_sum_assignment` on the host through
`jax.pure_callback` (scipy is a dev extra, imported only then).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

# Non-finite costs (a diverged network) are replaced by this before the solver: the Hungarian
# algorithm returns a wrong assignment on `inf`, and NaN would propagate through its potentials.
_MAX_COST = 1e6


def _as_f32(x):
  return jnp.asarray(x, jnp.float32)


def matching_cost(logits, coords, target, mask, cost_class: float = 1.0,
                  cost_coord: float = 5.0):
  """Cost of assigning each query to each ground-truth joint (DETR / PRTR matcher).

  cost[n, j] = cost_coord * ||coords_n - target_j||_1 - cost_class * p_n(j), where p_n is the
  softmax of query n's logits. A missing joint's column is 0: a constant column changes no other
  pair of the optimal assignment, and costs stay finite (the solver fails on `inf`). Computed
  from `stop_gradient` inputs: the assignment is a constant of the loss.

  Args:
    logits: [B, N, J + 1] class logits (index J = background).
    coords: [B, N, 3] predicted positions.
    target: [B, J, 3] ground-truth positions (broadcast against the leading axes of `coords`,
      e.g. [L, B, N, 3] for all decoder layers).
    mask: [B, J] bool, joints that have a label (broadcast likewise).
    cost_class: weight of the class probability.
    cost_coord: weight of the L1 distance.

  Returns:
    [B, N, J] float32.
  """
  logits = jax.lax.stop_gradient(_as_f32(logits))
  coords = jax.lax.stop_gradient(_as_f32(coords))
  target = jax.lax.stop_gradient(_as_f32(target))
  num_joints = target.shape[-2]
  if logits.shape[-1] != num_joints + 1:
    raise ValueError(f"logits need J + 1 = {num_joints + 1} classes (the last one background), "
                     f"got shape {logits.shape}")
  probabilities = jax.nn.softmax(logits, axis=-1)[..., :num_joints]
  distance = jnp.sum(jnp.abs(coords[..., :, None, :] - target[..., None, :, :]), axis=-1)
  cost = cost_coord * distance - cost_class * probabilities
  return jnp.where(jnp.asarray(mask, bool)[..., None, :], cost, 0.0)


def _check_cost(cost):
  if cost.ndim < 2:
    raise ValueError(f"cost must be [..., N, J], got shape {cost.shape}")
  num_queries, num_joints = cost.shape[-2:]
  if num_queries < num_joints:
    raise ValueError(f"Every joint needs its own query: N = {num_queries} queries < "
                     f"J = {num_joints} joints (cost shape {cost.shape})")


def _optax_assign(cost):
  """[N, J] -> query_for_joint [J] int32."""
  query_idx, joint_idx = optax.assignment.hungarian_algorithm(cost)
  # The J pairs come back in no fixed order: scatter them by joint.
  return jnp.zeros(cost.shape[-1], jnp.int32).at[joint_idx].set(query_idx.astype(jnp.int32))


@jax.jit
def _optax_assign_batched(cost):
  """[B, N, J] -> [B, J]; jitted so that eager calls compile once per shape."""
  return jax.vmap(_optax_assign)(cost)


def _scipy_assign_host(cost):
  from scipy.optimize import linear_sum_assignment  # pylint: disable=import-outside-toplevel
  cost = np.asarray(cost, np.float64)
  *batch, num_queries, num_joints = cost.shape
  flat = cost.reshape(-1, num_queries, num_joints)
  out = np.zeros((flat.shape[0], num_joints), np.int32)
  for b, matrix in enumerate(flat):
    query_idx, joint_idx = linear_sum_assignment(matrix)
    out[b, joint_idx] = query_idx
  return out.reshape(*batch, num_joints)


def assign(cost, solver: str = "optax"):
  """Minimum-cost assignment of every joint to a distinct query.

  Args:
    cost: [B, N, J] from `matching_cost` (any number of leading axes), N >= J. Non-finite
      entries are treated as a large finite cost.
    solver: "optax" (`optax.assignment.hungarian_algorithm`, pure JAX, vmapped over B) or
      "scipy" (`scipy.optimize.linear_sum_assignment` on the host via `jax.pure_callback`).

  Returns:
    query_for_joint [B, J] int32: the query matched to each joint, all distinct per image.

  Raises:
    ValueError: if N < J or the solver is unknown.
  """
  cost = jax.lax.stop_gradient(_as_f32(cost))
  _check_cost(cost)
  cost = jnp.nan_to_num(cost, nan=_MAX_COST, posinf=_MAX_COST, neginf=-_MAX_COST)
  cost = jnp.clip(cost, -_MAX_COST, _MAX_COST)
  *batch, num_queries, num_joints = cost.shape
  if solver == "optax":
    flat = cost.reshape(-1, num_queries, num_joints)
    return _optax_assign_batched(flat).reshape(*batch, num_joints)
  if solver == "scipy":
    result = jax.ShapeDtypeStruct((*batch, num_joints), jnp.int32)
    return jax.pure_callback(_scipy_assign_host, result, cost, vmap_method="expand_dims")
  raise ValueError(f"Unknown solver {solver!r}; use 'optax' or 'scipy'")


def class_assignment(logits):
  """Inference read-out by class alone (PRTR): each joint type takes its most confident query.

  No matching and no post-processing: two joint types may pick the same query.

  Args:
    logits: [B, N, J + 1] class logits (index J = background).

  Returns:
    (query_for_joint [B, J] int32: argmax over queries of p_n(j),
     scores [B, J] float32: that probability).
  """
  logits = _as_f32(logits)
  probabilities = jax.nn.softmax(logits, axis=-1)[..., :-1]  # [B, N, J]
  query_for_joint = jnp.argmax(probabilities, axis=-2).astype(jnp.int32)
  scores = jnp.max(probabilities, axis=-2)
  return query_for_joint, scores


def gather_queries(values, query_for_joint):
  """The entries of the queries chosen for each joint.

  Args:
    values: [B, N, ...] per-query values (coords [B, N, 3], ...).
    query_for_joint: [B, J] int query indices.

  Returns:
    [B, J, ...].
  """
  values = jnp.asarray(values)
  index = jnp.asarray(query_for_joint, jnp.int32)
  axis = index.ndim - 1
  index = index.reshape(index.shape + (1,) * (values.ndim - index.ndim))
  return jnp.take_along_axis(values, index, axis=axis)


def set_loss(logits, coords, query_for_joint, target, mask, *, eos_coef: float = 0.1,
             tolerance: float = 0.0):
  """Class and coordinate losses of a matched set of joint queries (DETR's SetCriterion).

  class: cross-entropy over all queries of the batch, weighted mean; a query matched to a
    labeled joint j has target class j (weight 1), an unmatched query the background J (weight
    `eos_coef`), a query matched to a missing joint weight 0.
  coord: sum_j mask_j max(0, ||c_q(j) - c_j||_1 - tolerance) / max(sum_j mask_j, 1), summed
    and normalised over the whole batch (the tolerance is the coarse-to-fine threshold of an
    intermediate decoder layer; 0 for the last).

  Args:
    logits: [B, N, J + 1].
    coords: [B, N, 3].
    query_for_joint: [B, J] int32 from `assign` (distinct queries per image).
    target: [B, J, 3], broadcast to the leading axes of `logits` (e.g. [L, B, ...] for all
      decoder layers at once: then both terms are also averaged over the layers).
    mask: [B, J] bool, broadcast likewise.
    eos_coef: weight of the background class.
    tolerance: L1 distance below which a matched joint costs nothing.

  Returns:
    {"cls": scalar float32, "coord": scalar float32}.
  """
  logits = _as_f32(logits)
  coords = _as_f32(coords)
  target = _as_f32(target)
  mask = jnp.asarray(mask, bool)
  query_for_joint = jax.lax.stop_gradient(jnp.asarray(query_for_joint, jnp.int32))
  num_queries, num_classes = logits.shape[-2:]
  num_joints = num_classes - 1
  batch = logits.shape[:-2]
  target = jnp.broadcast_to(target, batch + target.shape[-2:])
  mask = jnp.broadcast_to(mask, batch + mask.shape[-1:])
  if target.shape[-2] != num_joints or query_for_joint.shape[-1] != num_joints:
    raise ValueError(f"J = {num_joints} from logits {logits.shape}, but target "
                     f"{target.shape} and query_for_joint {query_for_joint.shape}")

  # Per-query class targets and weights: background by default, scattered by joint.
  flat_queries = query_for_joint.reshape(-1, num_joints)
  rows = jnp.arange(flat_queries.shape[0])[:, None]
  classes = jnp.full((flat_queries.shape[0], num_queries), num_joints, jnp.int32)
  classes = classes.at[rows, flat_queries].set(jnp.arange(num_joints, dtype=jnp.int32))
  weights = jnp.full((flat_queries.shape[0], num_queries), eos_coef, jnp.float32)
  weights = weights.at[rows, flat_queries].set(mask.reshape(-1, num_joints).astype(jnp.float32))
  log_probabilities = jax.nn.log_softmax(logits.reshape(-1, num_queries, num_classes), axis=-1)
  cross_entropy = -jnp.take_along_axis(log_probabilities, classes[..., None], axis=-1)[..., 0]
  total_weight = jnp.sum(weights)
  nonempty = total_weight > 0
  class_loss = jnp.where(
      nonempty, jnp.sum(weights * cross_entropy) / jnp.where(nonempty, total_weight, 1.0), 0.0)

  matched = gather_queries(coords, query_for_joint)  # [B, J, 3]
  distance = jnp.sum(jnp.abs(matched - target), axis=-1)
  hinge = jnp.maximum(distance - tolerance, 0.0)
  maskf = mask.astype(jnp.float32)
  coord_loss = jnp.sum(maskf * hinge) / jnp.maximum(jnp.sum(maskf), 1.0)
  return {"cls": class_loss, "coord": coord_loss}
