"""Inference: a trained PoseNet's predictions for a batch of crops, with the pose in millimetres.

The network predicts a scale-normalised pose (thorax-pelvis = 1); its metric size comes from
the skeleton's mean bone lengths (docs/method.md section 5, `geometry.estimate_scale`).
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from flax import nnx

from posejax import geometry
from posejax.models.posenet import apply


@functools.partial(jax.jit, static_argnums=(0, 1))
def _predict(graphdef, skeleton, state, images, cameras):
  predictions, _ = apply(graphdef, state, images, cameras, train=False)
  scale = geometry.estimate_scale(predictions["pose_3d"], skeleton)
  return {**predictions, "scale_mm": scale,
          "pose_3d_mm": predictions["pose_3d"] * scale[..., None, None]}


def predict_metric(model: nnx.Module, images, cameras) -> dict[str, np.ndarray]:
  """Predictions in eval mode (BatchNorm running averages) plus the metric pose.

  Args:
    model: a PoseNet (e.g. from `posejax.train.loop.restore_model`).
    images: [N, S, S, 3] RGB crops in 0..255.
    cameras: [N, 3, 3] crop cameras K.

  Returns:
    The PoseNet predictions (heatmaps, depthmaps, joints_2d, rel_depth, confidence,
    root_depth, pose_3d scale-normalised, valid) as numpy arrays, plus scale_mm [N] (mm per
    normalised unit, from the skeleton's mean bone lengths) and pose_3d_mm [N, J, 3] =
    scale_mm x pose_3d, camera frame.
  """
  graphdef, state = nnx.split(model)
  return jax.device_get(_predict(graphdef, model.skeleton, state, images, cameras))
