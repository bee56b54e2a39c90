"""Task "deeppose": direct regression of the joints with a cascade of refiners (Toshev &
Szegedy, arXiv 1312.4659). The pure maths: posejax/deeppose.py; the networks:
posejax/models/regression.py; the cascade at prediction time: posejax/models/deeppose_cascade.py.

Each DeepPose stage is its own run, with its own workdir:

- stage 1, objective "regress": the crop resized to `deeppose.stage1_size`, squared L2 on
  box-normalised joints (`objective.regress_preparer`, `objective.loss_terms`; term "joints");
- stage s >= 2, objective "refine": `deeppose.previous` names the workdirs of stages 1..s-1,
  whose models become the run's frozen model (`PreviousStages`, saved in the checkpoints). When
  the stage starts, their cascade predicts every training image once and the displacement
  statistics go to workdir/displacements.npz (`displacements.load_or_compute`); the refiner then
  trains on k boxes per image around truth + displacement (term "refine").

Evaluation runs the whole cascade (previous stages + this one) and the mean-pose baseline
(`evaluation`); `best_metric` is the last stage's mean 2D error, "error_px".

Config fields it reads: deeppose (`objective.Settings`, plus train_images, mean_pose_samples,
predict_batch_size), model (name, dtype, dropout), batch (labeled, augment, scale_range,
max_rotation_deg, flip_probability), loss_weights (joints, refine), eval (pdj, pcp_threshold),
seed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from posejax.data.batching.pipeline import BatchSpec
from posejax.data.batching.sources import Source
from posejax.evaluators.pose3d import sample_count
from posejax.models.deeppose_cascade import cascade_predict
from posejax.models.regression import create_regressor
from posejax.skeleton import H36M
from posejax.tasks import register
from posejax.tasks.base import Task
from posejax.tasks.deeppose import displacements, evaluation
from posejax.tasks.deeppose.objective import (OBJECTIVES, SAMPLE_INDEX, TRAIN_KEYS, loss_terms,
                                              refine_preparer, regress_preparer, settings_of,
                                              with_sample_index)
from posejax.train import checkpoints


class PreviousStages(nnx.Module):
  """The frozen networks of DeepPose stages 1..s-1, in order."""

  def __init__(self, stages: list[nnx.Module]):
    self.stages = nnx.List(stages)


@register("deeppose")
class DeepPose(Task):
  """DeepPose: objective "regress" (stage 1) or "refine" (stages >= 2), one per run.

  Attributes:
    settings: the checked `deeppose` section (`objective.Settings`).
    displacements: the stage s-1 statistics ({"mean", "std"} [J, 2], torso diameters) that a
      "refine" step draws its boxes from; `stage_source` sets them when the stage starts.
  """

  objectives = OBJECTIVES
  best_metric = "error_px"
  skeleton = H36M

  def __init__(self, config):
    super().__init__(config)
    self.settings = settings_of(config)
    self.displacements: dict[str, np.ndarray] | None = None
    self._previous: list[nnx.Module] | None = None
    self._mean_pose: tuple[int, np.ndarray] | None = None
    self._compiled: dict = {}

  def _option(self, name: str, default):
    return self.config.get("deeppose", {}).get(name, default)

  def check_objective(self, objective: str):
    super().check_objective(objective)
    if objective != self.settings.objective:
      raise ValueError(
          f"deeppose.stage={self.settings.stage} trains objective "
          f"{self.settings.objective!r}, not {objective!r}: each DeepPose stage is its own run "
          "(stage 1 'regress'; stage s >= 2 'refine' with deeppose.previous)")

  # ------------------------------------------------------------------------------- models

  def create_model(self, rngs: nnx.Rngs) -> nnx.Module:
    model = self.config.model
    return create_regressor(model.name, self.skeleton.num_joints,
                            image_size=self.settings.input_size, dtype=jnp.dtype(model.dtype),
                            dropout=model.get("dropout"), rngs=rngs)

  def previous_stages(self) -> list[nnx.Module]:
    """The networks of stages 1..s-1 (eval mode), restored once from `deeppose.previous`.

    Raises:
      FileNotFoundError: a workdir has no config.json or no checkpoint.
      ValueError: a workdir is not the DeepPose stage its place says, or its sizes or sigma
        differ from this run's (the cascade runs every stage at this run's settings).
    """
    if self._previous is None:
      stages = []
      for number, workdir in enumerate(self.settings.previous, start=1):
        model, config = checkpoints.restore_model(workdir)
        theirs = settings_of(config) if config.get("task") == "deeppose" else None
        if theirs is None or theirs.stage != number:
          raise ValueError(f"deeppose.previous[{number - 1}] = {workdir!r} is not a DeepPose "
                           f"stage-{number} workdir (task {config.get('task')!r}, stage "
                           f"{None if theirs is None else theirs.stage})")
        mine = self.settings
        fields = ["stage1_size"] if number == 1 else ["refine_size", "sigma"]
        differ = [f"{f} {getattr(theirs, f)} (not {getattr(mine, f)})" for f in fields
                  if getattr(theirs, f) != getattr(mine, f)]
        if differ:
          raise ValueError(f"Stage {number} in {workdir!r} was trained with "
                           f"{', '.join(differ)}; the cascade needs this run's settings")
        stages.append(model)
      self._previous = stages
    return self._previous

  def create_frozen(self) -> nnx.Module | None:
    """Stage s >= 2: the previous stages (`PreviousStages`); stage 1 has none. A copy: the
    train step donates the state that holds it, and the task keeps its own for evaluation."""
    previous = self.previous_stages()
    if not previous:
      return None
    copies = []
    for stage in previous:
      graphdef, state = nnx.split(stage)
      copies.append(nnx.merge(graphdef, jax.tree.map(lambda x: x.copy(), state)))
    return PreviousStages(copies)

  # --------------------------------------------------------------------------------- data

  def batch_spec(self, objective: str) -> BatchSpec:
    self.check_objective(objective)
    batch = self.config.batch
    keys = TRAIN_KEYS + ((SAMPLE_INDEX,) if objective == "refine" else ())
    return BatchSpec(labeled=batch.labeled, multiview=0, labeled_keys=keys,
                     augment=batch.get("augment", True),
                     scale_range=batch.get("scale_range", 0.2),
                     max_rotation_deg=batch.get("max_rotation_deg", 30.0),
                     flip_probability=batch.get("flip_probability", 0.5))

  def loss_terms(self, objective: str):
    self.check_objective(objective)
    return loss_terms(objective, self.settings)

  def prepare_batch(self, objective: str):
    """Stage 1: the resized augmented crops and their targets. A refiner: its sampled boxes,
    drawn from `self.displacements` (set by `stage_source`, which the loop calls first)."""
    self.check_objective(objective)
    if objective == "regress":
      return regress_preparer(self.settings, self.skeleton)
    if self.displacements is None:
      raise RuntimeError("The refiner's boxes need the previous stage's displacement "
                         "statistics: call stage_source first (or set task.displacements)")
    return refine_preparer(self.settings, self.skeleton, self.displacements["mean"],
                           self.displacements["std"])

  def _train_images(self, source: Source) -> int:
    return displacements.train_image_count(source, int(self._option("train_images", 0)))

  def check_source(self, objectives: list[str], source: Source):
    if "refine" in objectives:
      self._train_images(source)  # fails before the stage when nobody knows the count

  def stage_source(self, objective: str, source: Source, model: nnx.Module,
                   workdir: str) -> Source:
    """A refiner's stage: the previous stages' displacement statistics (computed once, or read
    from workdir/displacements.npz), and samples that carry their index (the boxes' key)."""
    del model  # the refiner's boxes come from the previous stages, not from this one
    if objective != "refine":
      return source
    self.displacements = displacements.load_or_compute(
        workdir, self._cascade(self.previous_stages()), source, self._train_images(source),
        self.settings, self.skeleton, batch_size=self._batch_size(),
        write=jax.process_index() == 0)
    return with_sample_index(source)

  # ------------------------------------------------------------------- cascade, evaluation

  def _batch_size(self) -> int:
    return int(self._option("predict_batch_size", 64))

  def _cascade(self, stages: list[nnx.Module]):
    """images [n, S, S, 3] -> [len(stages), n, J, 2] crop pixels, jitted (one compilation per
    set of networks and image shape)."""
    graphdefs, states = zip(*(nnx.split(stage) for stage in stages))
    if graphdefs not in self._compiled:
      settings = self.settings

      def run(states, images):
        models = [nnx.merge(g, s) for g, s in zip(graphdefs, states)]
        return jnp.stack(cascade_predict(
            models, images, self.skeleton, sigma=settings.sigma,
            stage1_size=settings.stage1_size, refine_size=settings.refine_size,
            diameter_names=settings.diameter_joints))

      self._compiled[graphdefs] = jax.jit(run)
    compiled = self._compiled[graphdefs]
    # On the host first: the previous stages live on one device, the trained model on the
    # loop's mesh, and one jitted call needs its arguments on the same devices.
    states = jax.device_get(states)
    return lambda images: jax.device_get(compiled(states, images))

  def mean_pose(self, source: Source) -> np.ndarray:
    """[J, 2] the training mean of N(y; b0) over the first `deeppose.mean_pose_samples`
    training images (0: all of a finite stream), computed once per source."""
    if self._mean_pose is None or self._mean_pose[0] != id(source):
      count = sample_count(source, "train_2d", int(self._option("mean_pose_samples", 1000)))
      self._mean_pose = (id(source), evaluation.mean_pose(source, count,
                                                          self.settings.label_mask))
    return self._mean_pose[1]

  def evaluate(self, model: nnx.Module, source: Source, *, stream: str, samples: int) -> dict:
    """Every stage of the cascade (the previous stages + `model`) and the mean pose on the first
    `samples` samples of `stream` (`evaluation.evaluate`)."""
    eval_config = self.config.get("eval", {})
    return evaluation.evaluate(
        self._cascade(self.previous_stages() + [model]), self.mean_pose(source), source,
        stream=stream, count=sample_count(source, stream, samples), skeleton=self.skeleton,
        label_mask=self.settings.label_mask, visible_key=self.settings.visible_key,
        diameter_joints=self.settings.diameter_joints, batch_size=self._batch_size(),
        fractions=tuple(eval_config.get("pdj", evaluation.PDJ_FRACTIONS)),
        pcp_threshold=eval_config.get("pcp_threshold", evaluation.PCP_THRESHOLD))

  def format_results(self, results: dict, title: str = "held-out test") -> str:
    return evaluation.format_results(results, title)

  def predict(self, model: nnx.Module, images, cameras) -> dict:
    """{"joints_2d": [N, J, 2] the last stage's joints, "joints_2d_stages": [N, stages, J, 2]
    every stage's}, crop pixels; the cameras are not needed."""
    del cameras
    stages = self._cascade(self.previous_stages() + [model])(np.asarray(images))
    return {"joints_2d": np.asarray(stages[-1]),
            "joints_2d_stages": np.moveaxis(np.asarray(stages), 0, 1)}
