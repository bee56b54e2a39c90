"""PoseNet: image + crop camera -> every prediction of the method (docs/method.md sections 2-3).

backbone (e.g. HRNet, stride 4) -> 1x1 conv to 2J channels (J heatmaps, J latent depth maps)
-> layer 1 (soft-argmax, relative depth, confidence) -> layer 2 (root depth, reconstruction).
The network may compute in bfloat16; its outputs are cast to float32 before the geometry.

`apply` is the pure functional form for train steps: (graphdef, state, inputs) -> (predictions,
new state), with BatchNorm in batch-statistics mode when `train` is True.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from posejax import geometry
from posejax.skeleton import H36M, Skeleton

# ImageNet statistics in 0..255 pixel units: what the published HRNet weights expect.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


class PoseNet(nnx.Module):
  """Backbone + 2.5D head + differentiable reconstruction.

  Args:
    backbone: an nnx.Module mapping [B, H, W, 3] images to [B, H/s, W/s, C] features with an
      `out_channels` attribute (C).
    skeleton: the keypoint structure (J joints, scale pair for the reconstruction).
    temperature: lambda of the soft-argmax.
    dtype: compute dtype of the head (the backbone has its own).
  """

  def __init__(self, backbone: nnx.Module, skeleton: Skeleton = H36M, *,
               temperature: float = 50.0, dtype=jnp.float32, rngs: nnx.Rngs):
    self.backbone = backbone
    self.skeleton = skeleton
    self.temperature = temperature
    self.dtype = dtype
    self.head = nnx.Conv(backbone.out_channels, 2 * skeleton.num_joints, (1, 1), dtype=dtype,
                         kernel_init=nnx.initializers.normal(0.001), rngs=rngs)

  def maps(self, images):
    """Raw network output: (heatmaps, depthmaps), each [..., h, w, J] float32.

    Args:
      images: [..., H, W, 3] RGB in 0..255 (uint8 or float); normalised here with the ImageNet
        statistics the published weights were trained with.
    """
    images = jnp.asarray(images)
    *batch, height, width, channels = images.shape
    x = (images.reshape(-1, height, width, channels).astype(jnp.float32)
         - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    features = self.backbone(x.astype(self.dtype))
    out = self.head(features).astype(jnp.float32)
    out = out.reshape(*batch, *out.shape[1:])
    num_joints = self.skeleton.num_joints
    return out[..., :num_joints], out[..., num_joints:]

  def __call__(self, images, cameras) -> dict[str, jax.Array]:
    """All predictions for a batch of crops.

    Args:
      images: [..., H, W, 3] RGB crops in 0..255.
      cameras: [..., 3, 3] crop cameras K (same leading axes).

    Returns:
      dict of float32 arrays (bool for `valid`): heatmaps [..., h, w, J], depthmaps
      [..., h, w, J], probabilities [..., h, w, J] (the spatial softmax), joints_2d [..., J, 2]
      (crop pixels), rel_depth [..., J], confidence [..., J], root_depth [...], pose_3d
      [..., J, 3] (scale-normalised), valid [...].
    """
    heatmaps, depthmaps = self.maps(images)
    stride = images.shape[-3] // heatmaps.shape[-3]
    # geometry.decode_25d, keeping the softmax weights (a train step may hold them constant).
    joints_2d, probabilities = geometry.softargmax(heatmaps, temperature=self.temperature,
                                                   stride=stride)
    rel_depth = geometry.relative_depth(probabilities, depthmaps)
    confidence = geometry.confidence(heatmaps, joints_2d, stride=stride)
    pose_3d, root_depth, valid = geometry.reconstruct(joints_2d, rel_depth, cameras,
                                                      self.skeleton)
    return dict(heatmaps=heatmaps, depthmaps=depthmaps, probabilities=probabilities,
                joints_2d=joints_2d, rel_depth=rel_depth, confidence=confidence,
                root_depth=root_depth, pose_3d=pose_3d, valid=valid)


def apply(graphdef: nnx.GraphDef, state: nnx.State, images, cameras, *, train: bool):
  """Pure functional call: (predictions, new_state).

  With `train`, BatchNorm normalises with the batch statistics (over the whole, possibly
  sharded, batch) and the returned state carries the updated running averages; otherwise the
  running averages are used and the state comes back unchanged.
  """
  # copy=True: fresh Variables at the current trace level, so BatchNorm can update its
  # statistics when `state` was created outside (e.g. under jit, inside jax.grad).
  model = nnx.merge(graphdef, state, copy=True)
  if train:
    model.train()
  else:
    model.eval()
  predictions = model(images, cameras)
  return predictions, nnx.state(model)
