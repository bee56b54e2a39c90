"""Inference: a trained PoseNet's predictions for a batch of crops, with the pose in millimetres.

The network predicts a scale-normalised pose (thorax-pelvis = 1); its metric size comes from
the skeleton's mean bone lengths (docs/method.md section 5, `geometry.estimate_scale`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx

from posejax import geometry
from posejax.models.posenet import apply


@functools.lru_cache(maxsize=16)
def _jitted_predict(graphdef, skeleton, state_def):
  """The jitted metric prediction of one model graph, called on its state's leaves: built once
  per graph, so that a call neither walks the model nor hashes its graph."""

  def predict(leaves, images, cameras):
    state = jax.tree_util.tree_unflatten(state_def, leaves)
    predictions, _ = apply(graphdef, state, images, cameras, train=False)
    scale = geometry.estimate_scale(predictions["pose_3d"], skeleton)
    return {**predictions, "scale_mm": scale,
            "pose_3d_mm": predictions["pose_3d"] * scale[..., None, None]}

  return jax.jit(predict)


def metric_predictor(model: nnx.Module) -> Callable[[np.ndarray, np.ndarray], dict]:
  """`predict_metric` of the model as it is now, for many calls: (images, cameras) -> dict.

  The model is split once, here. Why: `nnx.split` walks the whole graph, 107 ms for HRNet-W32
  on the 2-core VM, and an evaluation called it for every sample (docs/results.md 3.8).
  """
  graphdef, state = nnx.split(model)
  leaves, state_def = jax.tree_util.tree_flatten(state)
  predict = _jitted_predict(graphdef, model.skeleton, state_def)
  return lambda images, cameras: jax.device_get(predict(leaves, images, cameras))


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
    scale_mm x pose_3d, camera frame. For many calls on one model, `metric_predictor`.
  """
  return metric_predictor(model)(images, cameras)
