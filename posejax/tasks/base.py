"""The Task: one pose system of the house, as the training loop sees it.

A task says how to build its model (and, for distillation, a frozen model beside it), which
objectives its stages may name, what batch each objective needs, the loss terms of each (a
dict keyed by term name; the config's `loss_weights` weighs them by the same names), how it
evaluates (metrics, the table it prints, the metric that picks `best/`) and how it predicts for
`experiments.predict` / `show_predictions`. The loop (`posejax.train.loop`) owns what every
task shares: mesh and shardings, checkpoints, resume, preemption, NaN stop, progress, metric
writers, validation scheduling, stages. A new system subclasses Task in its own files and
registers it (`posejax.tasks.register`); it edits nothing in `posejax/train`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

from flax import nnx

from posejax.data.batching.pipeline import LABEL_2D_KEYS, BatchSpec
from posejax.data.batching.sources import Source
from posejax.skeleton import Skeleton
from posejax.train.step import LossTerms


class Task(abc.ABC):
  """A registered pose system; `config` is the whole run config.

  Attributes:
    objectives: the objective names a stage of this task may use.
    best_metric: the validation metric (lower is better) that picks the checkpoint in best/.
    skeleton: the joints the task predicts (their names and limbs: `predict` and
      `show_predictions` draw with it).
  """

  objectives: tuple[str, ...] = ()
  best_metric: str = "mpjpe"
  skeleton: Skeleton

  def __init__(self, config):
    self.config = config

  def check_objective(self, objective: str):
    if objective not in self.objectives:
      raise ValueError(f"Task {type(self).__name__} has no objective {objective!r}; "
                       f"it has {list(self.objectives)}")

  @abc.abstractmethod
  def create_model(self, rngs: nnx.Rngs) -> nnx.Module:
    """The trained model, freshly initialised."""

  def create_frozen(self) -> nnx.Module | None:
    """A frozen model that every step sees beside the trained one (a teacher), or None. It is
    never updated; the loop saves it in the checkpoints with the rest of the state."""
    return None

  @abc.abstractmethod
  def batch_spec(self, objective: str) -> BatchSpec:
    """The batches that `objective` trains on."""

  def batch_keys(self, objective: str) -> dict[str, tuple[str, ...]]:
    """{stream: keys} a batch of `objective` may carry; the step refuses any other."""
    spec = self.batch_spec(objective)
    keys = {}
    if spec.labeled:
      keys["labeled"] = tuple(spec.labeled_keys)
    if spec.multiview:
      extra = LABEL_2D_KEYS if spec.pseudo_labels_as_2d else ()
      keys["multiview"] = tuple(spec.multiview_keys) + ("view_mask",) + extra
    return keys

  @abc.abstractmethod
  def loss_terms(self, objective: str) -> LossTerms:
    """(model in train mode, batch, frozen model or None) -> {term name: scalar}."""

  def prepare_batch(self, objective: str) -> Callable[[dict], dict] | None:
    """batch -> batch on the device before the loss, outside the gradient (augmentation)."""
    return None

  def check_source(self, objectives: list[str], source: Source):
    """Fails early, before any stage runs, when `source` cannot serve these objectives."""

  def stage_source(self, objective: str, source: Source, model: nnx.Module,
                   workdir: str) -> Source:
    """The source a stage of `objective` trains on, given the model at the stage's start
    (eval mode): `source` itself, or a wrapper (pseudo labels, say)."""
    del objective, model, workdir
    return source

  @abc.abstractmethod
  def evaluate(self, model: nnx.Module, source: Source, *, stream: str, samples: int) -> dict:
    """Metrics of the model (eval mode) on the first `samples` samples of `stream` (0: all of
    a finite stream). Floats, plus anything JSON can hold."""

  @abc.abstractmethod
  def format_results(self, results: dict, title: str = "held-out test") -> str:
    """The console table of `evaluate`'s results."""

  @abc.abstractmethod
  def predict(self, model: nnx.Module, images, cameras) -> dict:
    """NumPy predictions of the model (eval mode) for [N, S, S, 3] crops and [N, 3, 3] crop
    cameras."""
