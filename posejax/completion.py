"""Skeleton completion, BERT-style: neighbour fill, random joint masking and the masked loss.

A completion (refinement) network learns, from poses alone, to repair joints that a detector
missed or got wrong. Training corrupts a pose the way BERT corrupts text (Devlin et al., arXiv
1810.04805): a fixed fraction of joints is selected; each selected joint is replaced by a guess
from its kinematic neighbours (most of the time) or left as it is; the network is trained to
restore the selected joints only. At inference the undetected joints get the same neighbour
fill before the network runs.

Pure JAX, batched over leading axes; the skeleton (`posejax.skeleton.Skeleton`) is data, any
number of joints.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from posejax.skeleton import H36M, Skeleton

_FULL_FLOAT32 = jax.lax.Precision.HIGHEST


def children(skeleton: Skeleton) -> tuple[tuple[int, ...], ...]:
  """For each joint the indices of its children in the kinematic tree (empty for leaves)."""
  kids = [[] for _ in range(skeleton.num_joints)]
  for joint, parent in enumerate(skeleton.parents):
    if parent >= 0:
      kids[parent].append(joint)
  return tuple(tuple(k) for k in kids)


def neighbour_weights(skeleton: Skeleton) -> np.ndarray:
  """The [J, J] float32 matrix W with `W @ pose` = `neighbour_fill(pose)`.

  Row j averages joint j's parent and children with equal weights (a leaf: its parent; the
  root: its children). A joint without any neighbour (a one-joint skeleton) keeps itself.
  """
  num_joints = skeleton.num_joints
  weights = np.zeros((num_joints, num_joints), np.float64)
  for joint, kids in enumerate(children(skeleton)):
    parent = skeleton.parents[joint]
    neighbours = list(kids) + ([parent] if parent >= 0 else [])
    if neighbours:
      weights[joint, neighbours] = 1.0 / len(neighbours)
    else:
      weights[joint, joint] = 1.0
  return weights.astype(np.float32)


def neighbour_fill(pose, skeleton: Skeleton = H36M):
  """Each joint guessed from its neighbours: the mean of its parent and its children.

  A leaf gets its parent; the root the mean of its children. (With one child this is the
  midpoint of parent and child.)

  Args:
    pose: [..., J, 3].
    skeleton: the kinematic tree (J joints).

  Returns:
    [..., J, 3] float32: the fill of every joint, computed from `pose` as it is.
  """
  pose = jnp.asarray(pose, jnp.float32)
  if pose.shape[-2] != skeleton.num_joints:
    raise ValueError(f"Skeleton {skeleton.name!r} has {skeleton.num_joints} joints, got pose "
                     f"of shape {pose.shape}")
  return jnp.einsum("ij,...jd->...id", neighbour_weights(skeleton), pose,
                    precision=_FULL_FLOAT32)


def joint_features(pose, replaced, skeleton: Skeleton = H36M):
  """Per-joint inputs of the completion network: [x_j, x_parent, mean(children), replaced_j].

  The root has no parent and a leaf no children: those entries are 0 (their position in the
  flattened input is fixed by the skeleton, so the network knows which they are).

  Args:
    pose: [..., J, 3].
    replaced: [..., J] bool, the joints that hold a neighbour fill (`bert_mask`'s `replaced`,
      or the undetected joints at inference).
    skeleton: the kinematic tree.

  Returns:
    [..., J, 10] float32.
  """
  pose = jnp.asarray(pose, jnp.float32)
  num_joints = skeleton.num_joints
  parent_matrix = np.zeros((num_joints, num_joints), np.float32)
  children_matrix = np.zeros((num_joints, num_joints), np.float32)
  for joint, kids in enumerate(children(skeleton)):
    if skeleton.parents[joint] >= 0:
      parent_matrix[joint, skeleton.parents[joint]] = 1.0
    if kids:
      children_matrix[joint, list(kids)] = 1.0 / len(kids)
  parent = jnp.einsum("ij,...jd->...id", parent_matrix, pose, precision=_FULL_FLOAT32)
  kids = jnp.einsum("ij,...jd->...id", children_matrix, pose, precision=_FULL_FLOAT32)
  flag = jnp.asarray(replaced, jnp.float32)[..., None]
  return jnp.concatenate([pose, parent, kids, flag], axis=-1)


def num_masked(num_joints: int, ratio: float) -> int:
  """k = max(1, round(ratio * J)) joints selected per pose (3 of 17 at 0.2)."""
  return max(1, int(round(ratio * num_joints)))


def bert_mask(key, pose, skeleton: Skeleton = H36M, ratio: float = 0.2,
              replace_probability: float = 0.8):
  """Corrupts poses for completion training.

  Exactly k = max(1, round(ratio J)) joints are selected per pose, uniformly (top-k of uniform
  noise); each selected joint is replaced by its `neighbour_fill` value (computed from the
  uncorrupted pose) with probability `replace_probability`, else kept.

  Args:
    key: a JAX PRNG key.
    pose: [..., J, 3].
    skeleton: the kinematic tree.
    ratio: fraction of the joints selected.
    replace_probability: probability that a selected joint is replaced.

  Returns:
    (masked pose [..., J, 3] float32, selected [..., J] bool, replaced [..., J] bool; replaced
     implies selected).
  """
  pose = jnp.asarray(pose, jnp.float32)
  num_joints = skeleton.num_joints
  k = num_masked(num_joints, ratio)
  select_key, replace_key = jax.random.split(key)
  noise = jax.random.uniform(select_key, pose.shape[:-1])
  _, chosen = jax.lax.top_k(noise, k)  # [..., k], distinct indices
  selected = jnp.any(chosen[..., None] == jnp.arange(num_joints), axis=-2)
  replaced = selected & jax.random.bernoulli(replace_key, replace_probability, selected.shape)
  masked = jnp.where(replaced[..., None], neighbour_fill(pose, skeleton), pose)
  return masked, selected, replaced


def completion_loss(pred, truth, selected):
  """Squared 3D error summed over the selected joints, divided by their number (batch-wide).

  Args:
    pred, truth: [..., J, 3].
    selected: [..., J] bool (from `bert_mask`).

  Returns:
    scalar float32; 0 when nothing is selected.
  """
  squared = jnp.sum(jnp.square(jnp.asarray(pred, jnp.float32) - jnp.asarray(truth, jnp.float32)),
                    axis=-1)
  selected = jnp.asarray(selected, jnp.float32)
  return jnp.sum(selected * squared) / jnp.maximum(jnp.sum(selected), 1.0)
