"""The objectives of the 2.5D method (docs/method.md section 4), as loss terms by name.

  "2d": heatmap (L_H) on the 2D-labeled stream (stage-1 pretraining).
  "fs": heatmap + depth (L_Z); the multi-view views carry 2D and 3D labels in this mode.
  "ws": heatmap + multiview (L_MC) + limb (L_B) + knee + scale_bone + scale_tilt; the multi-view
        stream has no labels (the train step refuses a batch that carries any: weak supervision
        must not be able to read them), or only 2D pseudo labels of the stage-1 model, on which
        L_H applies too (the regulariser of docs/method.md section 4; `pseudo_labels`).
The config weighs the terms by name (`loss_weights`: heatmap, depth = psi, multiview = alpha,
limb = beta, knee, scale_bone, scale_tilt); ablations are weights of zero. "knee" (a hinge on
knees bent backwards, `losses.knee_bend_loss`) is ours, not the method's: its weight is 0 in
the paper's recipe.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from posejax import geometry, losses
from posejax.data.batching import augment
from posejax.skeleton import Skeleton

OBJECTIVES = ("2d", "fs", "ws")


@dataclasses.dataclass(frozen=True)
class Objective:
  """Which losses, and how they read the network (see losses.py for their normalisation)."""

  mode: str = "ws"
  with_scale: bool = False  # multi-view alignment: rigid (False) or similarity
  # Whether the 3D losses (L_Z; L_MC, L_B) may move the 2D: the joints and the softmax weights
  # that read the depth maps (docs/method.md lets them). False: they train the depth maps only,
  # the 2D learns from L_H alone. At a small budget the 3D losses otherwise undo the 2D stage
  # (through the softmax, whose gradient carries the temperature, 50): BUILD_NOTES.md.
  losses_3d_move_2d: bool = True
  max_scale_pair_gap: float = 0.7  # `losses.scale_pair_tilt_loss`'s max_gap
  # Whether L_MC, L_B and the scale terms differentiate through the root-depth solve
  # (docs/method.md: they do). Its gradient couples every joint to the scale pair's depths and
  # is unbounded where the discriminant nears 0; with it, free per-view depths fitted to
  # ground-truth 2D drift away from the true depths (BUILD_NOTES.md).
  root_depth_gradient: bool = True
  heatmap_sigma: float = 2.0  # Gaussian targets, in heatmap cells
  knee_margin: float = 0.0  # `losses.knee_bend_loss`'s margin

  def __post_init__(self):
    if self.mode not in OBJECTIVES:
      raise ValueError(f"mode must be one of {OBJECTIVES}, got {self.mode!r}")


def flatten_views(stream: dict) -> dict:
  """[S, V, ...] -> [S * V, ...] for the per-view keys of a multi-view stream."""
  return {k: v.reshape((-1,) + v.shape[2:]) for k, v in stream.items() if k != "view_mask"}


def objective_terms(predictions: dict, batch: dict, objective: Objective, skeleton: Skeleton,
                    num_labeled: int) -> dict[str, jax.Array]:
  """Every loss term of the objective for predictions on [labeled; flattened multi-view]."""
  heatmaps = predictions["heatmaps"]
  size = heatmaps.shape[-3:-1]
  stride = batch["image_size"] // size[0]
  terms = {}

  supervised_2d = [batch["labeled"]] if "labeled" in batch else []
  # The multi-view views' 2D labels: the dataset's in mode "fs", pseudo labels in mode "ws".
  if objective.mode != "2d" and "joints_2d" in batch.get("multiview", {}):
    supervised_2d.append(flatten_views(batch["multiview"]))
  count = sum(len(s["joints_2d"]) for s in supervised_2d)
  if supervised_2d:
    joints_2d = jnp.concatenate([s["joints_2d"] for s in supervised_2d])
    mask = jnp.concatenate([s["joints_2d_mask"] for s in supervised_2d])
    targets = losses.heatmap_targets(joints_2d, size, stride=stride,
                                     sigma=objective.heatmap_sigma)
    terms["heatmap"] = losses.heatmap_loss(heatmaps[:count], targets, mask)

  if "multiview" in batch and objective.mode != "2d":
    view_mask = batch["multiview"]["view_mask"]
    shape = view_mask.shape
    view = lambda x: x[num_labeled:].reshape(shape + x.shape[1:])  # noqa: E731
    rel_depth = view(predictions["rel_depth"])
    if not objective.losses_3d_move_2d:  # same values, gradients to the depth maps only
      rel_depth = geometry.relative_depth(jax.lax.stop_gradient(view(predictions["probabilities"])),
                                          view(predictions["depthmaps"]))
    if objective.mode == "fs":
      target = geometry.relative_depth_target(batch["multiview"]["joints_3d"], skeleton)
      depth_mask = view_mask[..., None] & jnp.ones_like(target, bool)
      terms["depth"] = losses.depth_loss(rel_depth, target, depth_mask)
    else:
      joints_2d = view(predictions["joints_2d"])
      if not objective.losses_3d_move_2d:
        joints_2d = jax.lax.stop_gradient(joints_2d)
      poses, root_depth, _ = geometry.reconstruct(
          joints_2d, rel_depth, batch["multiview"]["camera"], skeleton,
          root_gradient=objective.root_depth_gradient)
      confidence = view(predictions["confidence"])
      # Poses in front of the camera count, including those whose discriminant is negative
      # (reconstructed at the vertex, the scale bone as close to C as it gets): dropping them
      # would let the network escape L_MC and L_B by making every reconstruction "invalid",
      # which it learnt to do (BUILD_NOTES.md).
      present = view_mask & (root_depth > 0)
      terms["multiview"] = losses.multiview_consistency_loss(
          poses, confidence, present, with_scale=objective.with_scale)
      present_confidence = confidence * present[..., None].astype(jnp.float32)
      terms["limb"] = losses.limb_length_loss(poses, present_confidence, skeleton)
      terms["knee"] = losses.knee_bend_loss(poses, present_confidence, skeleton,
                                            margin=objective.knee_margin)
      # Every view, even one reconstructed behind the camera: its bone is too long all the same.
      terms["scale_bone"] = losses.scale_bone_loss(poses, view_mask, skeleton)
      terms["scale_tilt"] = losses.scale_pair_tilt_loss(
          rel_depth, view_mask, skeleton, max_gap=objective.max_scale_pair_gap)
  return terms


def augmenter(skeleton: Skeleton):
  """batch -> batch with every stream's sampled augmentation applied (on the device)."""

  def prepare(batch: dict) -> dict:
    return {name: augment.augment_batch(stream, stream["augmentation"], skeleton=skeleton)
            if "augmentation" in stream else stream for name, stream in batch.items()}

  return prepare


def loss_terms(objective: Objective, skeleton: Skeleton):
  """The train step's LossTerms: the network ONCE on the labeled images and all multi-view
  views together (so BatchNorm normalises with the statistics of the whole global batch), then
  `objective_terms`."""

  def terms(model, batch: dict, frozen=None) -> dict[str, jax.Array]:
    del frozen
    streams = [batch["labeled"]] if "labeled" in batch else []
    if "multiview" in batch:
      streams.append(flatten_views(batch["multiview"]))
    images = jnp.concatenate([s["image"] for s in streams])
    cameras = jnp.concatenate([s["camera"] for s in streams])
    num_labeled = len(batch["labeled"]["image"]) if "labeled" in batch else 0
    predictions = model(images, cameras)
    return objective_terms(predictions, dict(batch, image_size=images.shape[-3]), objective,
                           skeleton, num_labeled)

  return terms
