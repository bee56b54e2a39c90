"""The pose transformer's objective "matched" as the generic train step runs it.

Every decoder layer l predicts N candidates (class logits over J joint types + background, a 3D
position). With `model.matching = "hungarian"` each layer's candidates are matched anew to the J
ground-truth joints (`matching.matching_cost` -> `matching.assign`, DETR's auxiliary losses);
with "fixed" (the force-aligned baseline, N = J) query j is joint j and only the coordinates
train (the class of query j is j by construction). The loss of layer l is `matching.set_loss`
with that layer's tolerance tau_l (coarse to fine: the earlier layers are forgiven small
errors), and the layers are summed with weights gamma^(L - l), so the last one has weight 1:

    cls = sum_l gamma^(L - l) CE_l,   coord = sum_l gamma^(L - l) L1_l(tau_l)

The config weighs the two terms by name (`loss_weights.cls`, `loss_weights.coord`; not `class`,
a Python keyword, which a command line could not set). Targets are
the labels' root-relative, scale-normalised 3D poses (thorax-pelvis = 1, `target_pose`), the
model's own units.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from posejax import geometry, matching
from posejax.models.pose_transformer import MATCHINGS
from posejax.skeleton import Skeleton

OBJECTIVES = ("matched",)
SOLVERS = ("optax", "scipy")
# The keys a labeled batch carries (the step refuses any other): the model reads the image
# alone; the crop camera would only matter to a model that placed the root in space.
TRAIN_KEYS = ("image", "joints_3d")


@dataclasses.dataclass(frozen=True)
class Settings:
  """The `objective` section of a config, checked.

  Attributes:
    solver: the assignment solver under jit, "optax" (`optax.assignment`) or "scipy" (a host
      callback; the test oracle).
    cost_class, cost_coord: the matching cost's weights (DETR / PRTR: 1 and 5).
    eos_coef: the cross-entropy weight of the background class.
    tolerances: per decoder layer, the L1 distance below which a matched joint costs nothing
      (shrinking to 0 at the last layer); () for 0 at every layer.
    layer_gamma: layer l's loss is weighted gamma^(L - l).
    aux_loss: False: the last layer alone trains (the others still run).
  """

  solver: str = "optax"
  cost_class: float = 1.0
  cost_coord: float = 5.0
  eos_coef: float = 0.1
  tolerances: tuple[float, ...] = ()
  layer_gamma: float = 1.0
  aux_loss: bool = True

  def __post_init__(self):
    if self.solver not in SOLVERS:
      raise ValueError(f"objective.solver must be one of {SOLVERS}, got {self.solver!r}")
    if self.layer_gamma <= 0:
      raise ValueError(f"objective.layer_gamma must be positive, got {self.layer_gamma}")
    if any(t < 0 for t in self.tolerances):
      raise ValueError(f"objective.tolerances must be >= 0, got {self.tolerances}")

  def layer_tolerances(self, num_layers: int) -> tuple[float, ...]:
    """tau_l of each of `num_layers` decoder layers."""
    if not self.tolerances:
      return (0.0,) * num_layers
    if len(self.tolerances) != num_layers:
      raise ValueError(f"objective.tolerances has {len(self.tolerances)} values for "
                       f"{num_layers} decoder layers (model.decoder_layers): give one per layer")
    return tuple(self.tolerances)


def settings_of(config) -> Settings:
  """The checked `objective` section of a run config."""
  fields = dict(config.get("objective", {}))
  unknown = set(fields) - {f.name for f in dataclasses.fields(Settings)}
  if unknown:
    raise ValueError(f"Unknown objective field(s) {sorted(unknown)}; the pose transformer "
                     f"knows {[f.name for f in dataclasses.fields(Settings)]}")
  if "tolerances" in fields:
    fields["tolerances"] = tuple(float(t) for t in fields["tolerances"])
  return Settings(**fields)


def target_pose(joints_3d, skeleton: Skeleton):
  """The training target of camera-frame joints [..., J, 3] (mm): root-relative and divided by
  the scale pair's length (`geometry.normalize_pose`). Float32."""
  joints_3d = jnp.asarray(joints_3d, jnp.float32)
  root = skeleton.root
  return geometry.normalize_pose(joints_3d - joints_3d[..., root:root + 1, :], skeleton)[0]


def fixed_assignment(batch_shape: tuple[int, ...], num_joints: int):
  """The force-aligned baseline's assignment: query j is joint j. [*batch_shape, J] int32."""
  return jnp.broadcast_to(jnp.arange(num_joints, dtype=jnp.int32), (*batch_shape, num_joints))


def assignment(logits, coords, target, mask, settings: Settings, model_matching: str):
  """query_for_joint [..., B, J] of predictions [..., B, N, ...] (one decoder layer, or several
  along leading axes: one solver call for all of them): Hungarian on the matching cost, or
  fixed. target [B, J, 3] and mask [B, J] broadcast over the leading axes."""
  if model_matching == "fixed":
    return fixed_assignment(coords.shape[:-2], target.shape[-2])
  cost = matching.matching_cost(logits, coords, target, mask, settings.cost_class,
                                settings.cost_coord)
  return matching.assign(cost, settings.solver)


def layer_weights(num_layers: int, settings: Settings) -> tuple[float, ...]:
  """gamma^(L - l) for l = 1..L; with aux_loss False, 0 for all but the last layer."""
  if not settings.aux_loss:
    return (0.0,) * (num_layers - 1) + (1.0,)
  return tuple(settings.layer_gamma**(num_layers - 1 - l) for l in range(num_layers))


def matched_terms(logits, coords, target, mask, settings: Settings,
                  model_matching: str) -> dict[str, jax.Array]:
  """The loss terms of every decoder layer's predictions.

  Args:
    logits: [L, B, N, J + 1] class logits of the L decoder layers.
    coords: [L, B, N, 3] their positions (scale-normalised).
    target: [B, J, 3] `target_pose` of the labels.
    mask: [B, J] bool, the joints that have a label.
    settings: the objective.
    model_matching: the model's "hungarian" or "fixed".

  Returns:
    {"cls", "coord"} for "hungarian"; {"coord"} for "fixed" (no class to learn).
  """
  if model_matching not in MATCHINGS:
    raise ValueError(f"model.matching must be one of {MATCHINGS}, got {model_matching!r}")
  num_layers = logits.shape[0]
  tolerances = settings.layer_tolerances(num_layers)
  weights = layer_weights(num_layers, settings)
  trained = np.array([layer for layer in range(num_layers) if weights[layer] != 0])
  # Every trained layer is matched anew, all layers in one solver call.
  query_for_joint = assignment(logits[trained], coords[trained], target, mask, settings,
                               model_matching)
  totals = {"cls": 0.0, "coord": 0.0}
  for layer, layer_query_for_joint in zip(trained, query_for_joint):
    terms = matching.set_loss(logits[layer], coords[layer], layer_query_for_joint, target, mask,
                              eos_coef=settings.eos_coef, tolerance=tolerances[layer])
    totals = {name: totals[name] + weights[layer] * terms[name] for name in totals}
  if model_matching == "fixed":
    del totals["cls"]
  return totals


def loss_terms(settings: Settings, skeleton: Skeleton, model_matching: str):
  """The train step's LossTerms: the model on the labeled crops, `matched_terms` on its
  decoder layers. Every joint of a 3D label counts (the house's 3D streams label all)."""

  def terms(model, batch: dict, frozen=None) -> dict[str, jax.Array]:
    del frozen
    labeled = batch["labeled"]
    outputs = model(labeled["image"])
    target = target_pose(labeled["joints_3d"], skeleton)
    mask = jnp.ones(target.shape[:-1], bool)
    return matched_terms(outputs["logits"], outputs["coords"], target, mask, settings,
                         model_matching)

  return terms
