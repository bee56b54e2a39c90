"""CompletionMLP: a skeleton completion (refinement) network, in Flax NNX.

Input: a pose [..., J, 3] whose `replaced` joints hold a neighbour fill (`posejax.completion`);
each joint contributes [x_j, x_parent, mean(children), replaced_j] (10 values), flattened. A
residual MLP in the style of Martinez et al. (arXiv 1705.03098: Linear, LayerNorm here instead of
BatchNorm, ReLU, Dropout, twice per block) predicts a correction of 3J values that is added to
the input pose. The output layer starts at zero, so an untrained network returns its input.
Train with `posejax.completion.bert_mask` and `completion_loss` on poses alone.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from posejax import completion
from posejax.skeleton import H36M, Skeleton


class ResidualBlock(nnx.Module):
  """x + (Linear, LayerNorm, ReLU, Dropout) x 2."""

  def __init__(self, hidden: int, dropout: float, *, dtype=jnp.float32, rngs: nnx.Rngs):
    self.linear1 = nnx.Linear(hidden, hidden, dtype=dtype, rngs=rngs)
    self.norm1 = nnx.LayerNorm(hidden, dtype=dtype, rngs=rngs)
    self.dropout1 = nnx.Dropout(dropout, rngs=rngs)
    self.linear2 = nnx.Linear(hidden, hidden, dtype=dtype, rngs=rngs)
    self.norm2 = nnx.LayerNorm(hidden, dtype=dtype, rngs=rngs)
    self.dropout2 = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x):
    y = self.dropout1(nnx.relu(self.norm1(self.linear1(x))))
    y = self.dropout2(nnx.relu(self.norm2(self.linear2(y))))
    return x + y


class CompletionMLP(nnx.Module):
  """Pose [..., J, 3] + replaced flags [..., J] -> completed pose [..., J, 3].

  Args:
    skeleton: the kinematic tree (J joints).
    hidden: width of the residual MLP (1024).
    blocks: residual blocks (2).
    dropout: dropout rate inside the blocks (0.1).
    dtype: compute dtype (parameters float32; the output is float32).
  """

  def __init__(self, skeleton: Skeleton = H36M, *, hidden: int = 1024, blocks: int = 2,
               dropout: float = 0.1, dtype=jnp.float32, rngs: nnx.Rngs):
    self.skeleton = skeleton
    self.dtype = dtype
    num_joints = skeleton.num_joints
    self.input_layer = nnx.Linear(10 * num_joints, hidden, dtype=dtype, rngs=rngs)
    self.blocks = nnx.List([
        ResidualBlock(hidden, dropout, dtype=dtype, rngs=rngs) for _ in range(blocks)])
    self.output_layer = nnx.Linear(hidden, 3 * num_joints, kernel_init=nnx.initializers.zeros,
                                   dtype=dtype, rngs=rngs)

  def __call__(self, pose, replaced) -> jax.Array:
    """Completes a pose.

    Args:
      pose: [..., J, 3] (scale-normalised, root-relative), with neighbour fills where
        `replaced`.
      replaced: [..., J] bool.

    Returns:
      [..., J, 3] float32: pose + the predicted correction.
    """
    pose = jnp.asarray(pose, jnp.float32)
    features = completion.joint_features(pose, replaced, self.skeleton)
    x = features.reshape(*features.shape[:-2], -1).astype(self.dtype)
    x = self.input_layer(x)
    for block in self.blocks:
      x = block(x)
    delta = self.output_layer(x).astype(jnp.float32)
    return pose + delta.reshape(pose.shape)


def complete_undetected(model: CompletionMLP, pose, scores, threshold: float):
  """A predicted pose's undetected joints (score below `threshold`) neighbour-filled, then
  completed by `model`; the detected joints are kept as predicted.

  Args:
    model: a trained CompletionMLP (in eval mode).
    pose: [..., J, 3] scale-normalised, root-relative (the pose transformer's `pose_3d`).
    scores: [..., J] the joints' scores (its `joint_scores`).
    threshold: joints scoring below it count as undetected.

  Returns:
    (pose [..., J, 3] float32, undetected [..., J] bool).
  """
  pose = jnp.asarray(pose, jnp.float32)
  undetected = jnp.asarray(scores) < threshold
  filled = jnp.where(undetected[..., None], completion.neighbour_fill(pose, model.skeleton), pose)
  return jnp.where(undetected[..., None], model(filled, undetected), pose), undetected
