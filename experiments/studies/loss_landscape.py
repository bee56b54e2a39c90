"""The weakly supervised objective as a function of the depths alone, without a network.

    python -m experiments.studies.loss_landscape --samples=32 --steps=2000

On synthetic validation samples with their ground-truth 2D joints, two reports:

- L_MC and L_B along the line t * (true relative depths), t from -1 (every depth negated: the
  mirror image) through 0 (flat poses) to 1 (the truth).
- Free depths, one per joint and view, fitted with Adam to the ws objective (the task's own
  `objective_terms` and the train step's `weighted_sum`, so every term and option is the
  training one, weighed by the flags' weights), from starts near
  the truth (a fraction of the bones' depth offsets negated) and near flat, each with and
  without the root-depth solve's gradient (`Objective.root_depth_gradient`).

A network trained with this objective cannot find what the free fit does not: where a fit
from near the truth walks away from it, the objective's gradient, not the network, is at
fault. MPJPE is that of evaluation (root-aligned, metric scale from the mean bone lengths).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

# pylint: disable=wrong-import-position

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from posejax import geometry, metrics
from posejax.data.render import synthetic
from posejax.skeleton import H36M
from posejax.tasks.pose25d.objective import Objective, objective_terms
from posejax.train import step as step_lib
from posejax.train.loop import quiet_library_logs

_SAMPLES = flags.DEFINE_integer("samples", 32, "Validation samples (4 views each).")
_STEPS = flags.DEFINE_integer("steps", 2000, "Adam steps per fit.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 3e-3, "Adam's learning rate.")
_ALPHA = flags.DEFINE_float("alpha", 0.1, "Weight of L_MC.")
_BETA = flags.DEFINE_float("beta", 1.0, "Weight of L_B.")
_SCALE = flags.DEFINE_float("scale_weight", 1.0, "Weight of scale_bone and scale_tilt.")
_MAX_GAP = flags.DEFINE_float("max_scale_pair_gap", 0.4, "Bound of the torso tilt loss.")
_KNEE = flags.DEFINE_float("knee", 0.0, "Weight of the knee prior (losses.knee_bend_loss).")
_KNEE_MARGIN = flags.DEFINE_float("knee_margin", 0.0, "The knee prior's margin.")

LINE = (-1.0, -0.5, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5, 1.0)


def validation_views(num_samples: int, image_size: int = 64) -> dict[str, np.ndarray]:
  """joints_2d [S, V, J, 2], camera [S, V, 3, 3], joints_3d [S, V, J, 3] of synthetic samples."""
  config = synthetic.SyntheticConfig(image_size=image_size, motion="auto")
  samples = [synthetic.sample(config, "validation", i) for i in range(num_samples)]
  return {key: np.stack([s[key] for s in samples]).astype(np.float32)
          for key in ("joints_2d", "camera", "joints_3d")}


def ws_terms(rel_depth, views, objective: Objective, image_size: int = 64):
  """The train step's ws terms for predicted `rel_depth` [S, V, J] and ground-truth 2D."""
  shape = rel_depth.shape[:2]
  flat = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731
  joints_2d = flat(jnp.asarray(views["joints_2d"]))
  predictions = dict(
      joints_2d=joints_2d, rel_depth=flat(rel_depth),
      confidence=jnp.ones(joints_2d.shape[:-1]),
      # Read for its shape only (no labeled images here, so no L_H).
      heatmaps=jnp.zeros((len(joints_2d), image_size // 4, image_size // 4, H36M.num_joints)))
  batch = dict(multiview=dict(camera=jnp.asarray(views["camera"]),
                              view_mask=jnp.ones(shape, bool)), image_size=image_size)
  return objective_terms(predictions, batch, objective, H36M, num_labeled=0)


def mpjpe_mm(rel_depth, views) -> float:
  pose, _, _ = geometry.reconstruct(views["joints_2d"], rel_depth, views["camera"], H36M)
  metric = pose * geometry.estimate_scale(pose, H36M)[..., None, None]
  return float(jnp.mean(metrics.mpjpe(metric, views["joints_3d"], skeleton=H36M)))


def with_bones_negated(rel_depth, fraction: float, rng: np.random.Generator) -> np.ndarray:
  """The depths with `fraction` of the bones' depth offsets (child - parent) negated."""
  rel_depth = np.asarray(rel_depth)
  out = np.zeros_like(rel_depth)
  for child, parent in H36M.bones:  # parents come first
    sign = np.where(rng.random(rel_depth.shape[:-1]) < fraction, -1.0, 1.0)
    out[..., child] = out[..., parent] + sign * (rel_depth[..., child] - rel_depth[..., parent])
  return out


def fit(start, views, objective: Objective, weights: dict[str, float], steps: int,
        learning_rate: float):
  """Adam on free depths from `start` against the terms weighed by `weights` (keyed by term
  name, as a config's `loss_weights`): (final depths, final terms)."""
  optimizer = optax.adam(learning_rate)

  def loss(rel_depth):
    terms = ws_terms(rel_depth, views, objective)
    return step_lib.weighted_sum(terms, weights), terms

  @jax.jit
  def update(rel_depth, opt_state):
    grads, _ = jax.grad(loss, has_aux=True)(rel_depth)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(rel_depth, updates), opt_state

  rel_depth = jnp.asarray(start, jnp.float32)
  opt_state = optimizer.init(rel_depth)
  for _ in range(steps):
    rel_depth, opt_state = update(rel_depth, opt_state)
  return rel_depth, loss(rel_depth)[1]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet_library_logs()
  views = validation_views(_SAMPLES.value)
  truth = geometry.relative_depth_target(views["joints_3d"], H36M)
  weights = dict(heatmap=0.0, multiview=_ALPHA.value, limb=_BETA.value, knee=_KNEE.value,
                 scale_bone=_SCALE.value, scale_tilt=_SCALE.value)
  settings = dict(max_scale_pair_gap=_MAX_GAP.value, knee_margin=_KNEE_MARGIN.value)
  objective = Objective(mode="ws", **settings)
  print(f"{_SAMPLES.value} samples x 4 views, ground-truth 2D, weights {weights}, {settings}")
  print("\nalong t * (true depths):\n     t    L_MC     L_B  L_knee   MPJPE")
  for t in LINE:
    terms = ws_terms(t * truth, views, objective)
    print(f"{t:+6.2f}  {float(terms['multiview']):.4f}  {float(terms['limb']):.4f}"
          f"  {float(terms['knee']):.4f}  {mpjpe_mm(t * truth, views):6.1f}")

  rng = np.random.default_rng(0)
  starts = {"true depths, 10 % of bones negated": with_bones_negated(truth, 0.1, rng),
            "true depths, 30 % of bones negated": with_bones_negated(truth, 0.3, rng),
            "near flat (0.01 noise)": 0.01 * rng.normal(size=truth.shape)}
  print(f"\nfree depths, {_STEPS.value} Adam steps at {_LEARNING_RATE.value}: MPJPE (mm) "
        "start -> fitted, with / without the root-depth gradient")
  for name, start in starts.items():
    fitted = []
    for root_gradient in (True, False):
      objective = Objective(mode="ws", root_depth_gradient=root_gradient, **settings)
      rel_depth, terms = fit(start, views, objective, weights, _STEPS.value,
                             _LEARNING_RATE.value)
      fitted.append(f"{mpjpe_mm(rel_depth, views):6.1f} (L_MC {float(terms['multiview']):.3f})")
    print(f"  {name:36s} {mpjpe_mm(start, views):6.1f} -> {fitted[0]} / {fitted[1]}",
          flush=True)


if __name__ == "__main__":
  app.run(main)
