"""Task "pose_transformer": a heatmap-free, DETR-style 3D pose network with joint queries
(posejax/models/pose_transformer.py). HRNet branches, a transformer encoder and a decoder of N
learned queries; each decoder layer refines the previous one's estimate and predicts, per
query, a joint class (J types + background) and a root-relative, scale-normalised 3D position.

One objective, "matched" (`objective`): each decoder layer's queries are matched to the joints
by the Hungarian algorithm under jit (`posejax.matching`), or, with `model.matching = "fixed"`,
query j is joint j (the force-aligned baseline, N = J). It trains on the single-view labeled
stream ("train_2d") with 3D labels. At inference each joint is read by its class alone.

Evaluation (`evaluation`): the house's 3D table (MPJPE, N-MPJPE, PA-MPJPE, PCK, AUC) plus MPJPE
per decoder layer (class read-out and oracle matching), the share of joints whose class read-out
is the oracle's, and the error on hidden joints.

Config fields it reads: model (name = the HRNet backbone, dtype, and the PoseTransformer
arguments of `MODEL_FIELDS`), objective (`objective.Settings`), loss_weights (class, coord),
batch (labeled, augment, scale_range, max_rotation_deg = 0, flip_probability), eval.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from posejax.data.batching.pipeline import BatchSpec
from posejax.data.batching.sources import Source
from posejax.evaluators.pose3d import sample_count
from posejax.models.pose_transformer import MATCHINGS, create_pose_transformer
from posejax.skeleton import H36M
from posejax.tasks import register
from posejax.tasks.base import Task
from posejax.tasks.pose25d.objective import augmenter
from posejax.tasks.pose_transformer import evaluation
from posejax.tasks.pose_transformer.objective import (OBJECTIVES, TRAIN_KEYS, loss_terms,
                                                      settings_of)

# The `model` fields passed on to `create_pose_transformer` (besides name and dtype).
MODEL_FIELDS = ("d_model", "num_heads", "ffn_dim", "encoder_layers", "decoder_layers",
                "num_queries", "num_levels", "dropout", "refine_from_previous",
                "detach_previous", "matching", "attention")


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, images):
  outputs = nnx.merge(graphdef, state)(images)
  return outputs["logits"], outputs["coords"]


def forward(model: nnx.Module):
  """images [V, S, S, 3] -> (logits [L, V, N, J + 1], coords [L, V, N, 3]) numpy, of the model
  as it is (eval mode for predictions), jitted once per image shape."""
  graphdef, state = nnx.split(model)
  return lambda images: jax.device_get(_forward(graphdef, state, np.asarray(images)))


@register("pose_transformer")
class PoseTransformerTask(Task):
  """The joint-query transformer and its objective "matched".

  Attributes:
    settings: the checked `objective` section (`objective.Settings`).
    matching: the model's "hungarian" (N candidates) or "fixed" (query j is joint j).
  """

  objectives = OBJECTIVES
  best_metric = "mpjpe"
  skeleton = H36M

  def __init__(self, config):
    super().__init__(config)
    model = config.model
    unknown = set(model) - {"name", "dtype", *MODEL_FIELDS}
    if unknown:
      raise ValueError(f"Unknown model field(s) {sorted(unknown)}; the pose transformer "
                       f"reads name, dtype and {list(MODEL_FIELDS)}")
    self.settings = settings_of(config)
    self.matching = model.get("matching", "hungarian")
    if self.matching not in MATCHINGS:
      raise ValueError(f"model.matching must be one of {MATCHINGS}, got {self.matching!r}")
    self.settings.layer_tolerances(model.get("decoder_layers", 6))  # fails before any step
    if config.batch.get("max_rotation_deg", 0.0) != 0:
      raise ValueError(
          f"batch.max_rotation_deg must be 0 for the pose transformer, got "
          f"{config.batch.max_rotation_deg}: rotating the crop turns the image but not the "
          "camera-frame 3D target, so the network would learn contradictory pairs")

  def create_model(self, rngs: nnx.Rngs) -> nnx.Module:
    model = self.config.model
    kwargs = {name: model[name] for name in MODEL_FIELDS if name in model}
    return create_pose_transformer(model.name, skeleton=self.skeleton,
                                   dtype=jnp.dtype(model.get("dtype", "float32")), rngs=rngs,
                                   **kwargs)

  def batch_spec(self, objective: str) -> BatchSpec:
    self.check_objective(objective)
    batch = self.config.batch
    return BatchSpec(labeled=batch.labeled, multiview=0, labeled_keys=TRAIN_KEYS,
                     augment=batch.get("augment", True),
                     scale_range=batch.get("scale_range", 0.2), max_rotation_deg=0.0,
                     flip_probability=batch.get("flip_probability", 0.0))

  def loss_terms(self, objective: str):
    self.check_objective(objective)
    return loss_terms(self.settings, self.skeleton, self.matching)

  def prepare_batch(self, objective: str):
    """Scale (and, if asked, mirror) augmentation on the device; a mirror also mirrors the 3D
    label (`augment.augment_batch`)."""
    self.check_objective(objective)
    return augmenter(self.skeleton)

  def evaluate(self, model: nnx.Module, source: Source, *, stream: str, samples: int) -> dict:
    return evaluation.evaluate(forward(model), source, stream=stream,
                               count=sample_count(source, stream, samples),
                               settings=self.settings, model_matching=self.matching,
                               skeleton=self.skeleton)

  def format_results(self, results: dict, title: str = "held-out test") -> str:
    return evaluation.format_results(results, title)

  def predict(self, model: nnx.Module, images, cameras) -> dict:
    """Numpy predictions for [N, S, S, 3] crops (the cameras are not needed):

    pose_3d [N, J, 3] root-relative, scale-normalised (thorax-pelvis = 1), the last decoder
    layer read out by class; joint_scores [N, J] the chosen queries' class probabilities (1 for
    "fixed"); scale_mm [N] from the mean bone lengths; pose_3d_mm [N, J, 3] = scale_mm x pose_3d;
    valid [N] (a usable scale); pose_3d_layers [N, L, J, 3] every layer's read-out
    (normalised).
    """
    del cameras
    logits, coords = forward(model)(images)
    poses, scores = evaluation.layer_readouts(logits, coords, self.matching)
    pose_mm, scale = evaluation.metric_poses(poses[-1])
    return {"pose_3d": poses[-1], "joint_scores": scores[-1], "scale_mm": scale,
            "pose_3d_mm": pose_mm, "valid": scale > 0,
            "pose_3d_layers": np.moveaxis(poses, 0, 1)}
