"""Task "pose25d": the weakly supervised multi-view 2.5D method (Iqbal, Molchanov, Kautz,
CVPR 2020; docs/method.md). PoseNet predicts 2.5D (heatmaps + relative depth maps) and
reconstructs a scale-normalised 3D pose from one image; stages train it with the objectives
"2d" (stage 1), "ws" (weak, multi-view) or "fs" (3D-supervised baseline).

Config fields it reads: model (name, dtype, temperature), objective (`Objective`'s settings),
loss_weights, batch, pseudo_labels, eval.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from posejax.data.batching.pipeline import IMAGE_KEYS, LABEL_2D_KEYS, BatchSpec
from posejax.data.batching.sources import Source, with_pseudo_labels
from posejax.evaluators import pose3d
from posejax.models import create_model
from posejax.models.inference import metric_predictor, predict_metric
from posejax.skeleton import H36M
from posejax.tasks import register
from posejax.tasks.base import Task
from posejax.tasks.pose25d import pseudo_labels
from posejax.tasks.pose25d.objective import OBJECTIVES, Objective, augmenter, loss_terms


@register("pose25d")
class Pose25D(Task):
  """The 2.5D network and its objectives "2d", "fs", "ws"."""

  objectives = OBJECTIVES
  best_metric = "mpjpe"
  skeleton = H36M

  def create_model(self, rngs: nnx.Rngs) -> nnx.Module:
    model = self.config.model
    return create_model(model.name, skeleton=self.skeleton, dtype=jnp.dtype(model.dtype),
                        temperature=model.get("temperature", 50.0), rngs=rngs)

  def _pseudo_labels_on(self) -> bool:
    return bool(self.config.get("pseudo_labels", {}).get("enabled"))

  def batch_spec(self, objective: str) -> BatchSpec:
    self.check_objective(objective)
    batch = dict(self.config.batch)
    if objective == "2d":
      return BatchSpec(**dict(batch, multiview=0))
    if objective == "fs":
      return BatchSpec(**batch, multiview_keys=IMAGE_KEYS + LABEL_2D_KEYS + ("joints_3d",))
    return BatchSpec(**batch, multiview_keys=IMAGE_KEYS,
                     pseudo_labels_as_2d=self._pseudo_labels_on())

  def loss_terms(self, objective: str):
    self.check_objective(objective)
    return loss_terms(Objective(mode=objective, **self.config.objective), self.skeleton)

  def prepare_batch(self, objective: str):
    return augmenter(self.skeleton)

  def check_source(self, objectives: list[str], source: Source):
    if "ws" in objectives and self._pseudo_labels_on():
      pseudo_labels.stream_size(source)  # a source that cannot have them fails before stage 1

  def stage_source(self, objective: str, source: Source, model: nnx.Module,
                   workdir: str) -> Source:
    """In "ws" with `pseudo_labels.enabled`, the multi-view samples carry the 2D pseudo labels
    of the model at the start of the stage (the stage-1 model; a resumed run reads the ones it
    made then from the workdir)."""
    if objective != "ws" or not self._pseudo_labels_on():
      return source
    settings = self.config.pseudo_labels
    labels = pseudo_labels.load_or_predict(
        workdir, model, source, threshold=settings.threshold, batch_size=settings.batch_size,
        write=jax.process_index() == 0)
    return with_pseudo_labels(source, labels["joints_2d"], labels["joints_2d_mask"])

  def evaluate(self, model: nnx.Module, source: Source, *, stream: str, samples: int) -> dict:
    """docs/method.md section 5: each view one single-image prediction, scaled to mm with the
    mean bone lengths."""
    return pose3d.evaluate(metric_predictor(model), source, stream=stream, samples=samples)

  def format_results(self, results: dict, title: str = "held-out test") -> str:
    return pose3d.format_results(results, title)

  def predict(self, model: nnx.Module, images, cameras) -> dict:
    return predict_metric(model, images, cameras)
