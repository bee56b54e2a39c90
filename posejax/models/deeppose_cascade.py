"""DeepPose's cascade of regressors at prediction time (Toshev & Szegedy, arXiv 1312.4659, 3.2).

Stage 1 sees the whole (square) image resized to `stage1_size` and predicts every joint in the
image's box frame. Each later stage s cuts, for every joint i, the square sub-box
b_i = (y_i^(s-1), sigma * diam(y^(s-1))) out of the ORIGINAL image at `refine_size` pixels, runs
its network on it and moves joint i by N^-1 of the network's i-th output in that box:
y_i^s = y_i^(s-1) + side * psi_i (one network per stage for all joints; row i of its J-row
output belongs to joint i, as in the paper). The sub-images of all joints of all images are cut
in ONE batched call of the device warp (`augment.warp_images` with `out_size`).

The batched warp reads each image once per joint from a broadcast copy ([B, J, H, W, 3]); at
the paper's sizes that is B x J source images in memory at once.

Call the stages in evaluation mode (`model.eval()`): dropout off, BatchNorm running averages.
`cascade_predict` is traceable: wrap it in `nnx.jit` (models as arguments) or call it inside a
jitted function.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp

from posejax import deeppose
from posejax.data.batching import augment
from posejax.skeleton import H36M, Skeleton


def image_box(height: int, width: int):
  """Stage 1's box b0: the square around the whole image, (centre [2], side)."""
  return jnp.array([(width - 1) / 2, (height - 1) / 2], jnp.float32), float(max(height, width))


def stage1_predict(model, images, *, stage1_size: int):
  """Stage 1: the image resized to stage1_size, joints back in image pixels.

  Args:
    model: images [B, S, S, 3] -> [B, J, 2] box-frame joints.
    images: [B, H, W, 3] uint8.
    stage1_size: S.

  Returns:
    [B, J, 2] float32 image pixels.
  """
  images = jnp.asarray(images)
  batch, height, width = images.shape[:3]
  centre, side = image_box(height, width)
  matrix = deeppose.subimage_matrices(centre, jnp.float32(side), stage1_size)
  crops = augment.warp_images(images, jnp.broadcast_to(matrix, (batch, 3, 3)),
                              out_size=stage1_size)
  return deeppose.denormalize_points(model(crops), jnp.broadcast_to(centre, (batch, 2)),
                                     jnp.full((batch, 1), side, jnp.float32))


def refine(model, images, joints_2d, skeleton: Skeleton = H36M, *, sigma: float,
           refine_size: int, diameter_names=deeppose.TORSO_DIAMETER_JOINTS,
           min_side: float = deeppose.MIN_SIDE):
  """One refinement stage: every joint moved within its sub-box.

  Args:
    model: images [N, r, r, 3] -> [N, J, 2] box-frame joints.
    images: [B, H, W, 3] uint8, the images stage 1 saw.
    joints_2d: [B, J, 2] the previous stage's joints (image pixels).
    skeleton: gives the torso-diameter joints by name.
    sigma: sub-box side in torso diameters.
    refine_size: r.
    diameter_names: the joints whose distance is the torso diameter.
    min_side: the smallest sub-box side (pixels).

  Returns:
    [B, J, 2] float32 image pixels.
  """
  images = jnp.asarray(images)
  joints_2d = jnp.asarray(joints_2d, jnp.float32)
  batch, num_joints = joints_2d.shape[:2]
  diameter = deeppose.torso_diameter(joints_2d, skeleton, diameter_names)
  centres, sides = deeppose.refinement_boxes(joints_2d, diameter, sigma, min_side)
  matrices = deeppose.subimage_matrices(centres, sides, refine_size)  # [B, J, 3, 3]
  per_joint = jnp.broadcast_to(images[:, None], (batch, num_joints, *images.shape[1:]))
  subimages = augment.warp_images(per_joint, matrices, out_size=refine_size)
  outputs = model(subimages.reshape(batch * num_joints, *subimages.shape[2:]))
  outputs = outputs.reshape(batch, num_joints, num_joints, 2)  # [B, sub-image i, joint j, 2]
  own = jnp.diagonal(outputs, axis1=1, axis2=2)  # [B, 2, J]: sub-image i's joint i
  return joints_2d + sides[..., None] * jnp.moveaxis(own, -1, 1)


def cascade_predict(stages: Sequence, images, skeleton: Skeleton = H36M, *, sigma: float,
                    stage1_size: int, refine_size: int,
                    diameter_names=deeppose.TORSO_DIAMETER_JOINTS,
                    min_side: float = deeppose.MIN_SIDE) -> list:
  """The joints after every stage of a cascade.

  Args:
    stages: the stage networks in order (stage 1, then the refiners), in evaluation mode.
    images: [B, H, W, 3] uint8 (square crops; a non-square image is seen through the square box
      around it, zeros outside).
    skeleton: J joints; the torso diameter's joints are looked up by name on it.
    sigma: sub-box side in torso diameters.
    stage1_size: stage 1's input side.
    refine_size: the refiners' input side.
    diameter_names: the joints whose distance is the torso diameter.
    min_side: the smallest sub-box side (pixels).

  Returns:
    a list with one [B, J, 2] float32 array of image-pixel joints per stage.
  """
  joints_2d = stage1_predict(stages[0], images, stage1_size=stage1_size)
  predictions = [joints_2d]
  for model in stages[1:]:
    joints_2d = refine(model, images, joints_2d, skeleton, sigma=sigma, refine_size=refine_size,
                       diameter_names=diameter_names, min_side=min_side)
    predictions.append(joints_2d)
  return predictions
