"""Adam with the recipe's step decay (METHOD.md section 5: 5e-4, x0.1 at 50k of 60k steps)."""

from __future__ import annotations

from collections.abc import Sequence

import optax


def learning_rate_schedule(base: float = 5e-4, decay_steps: Sequence[int] = (50_000,),
                           decay_factor: float = 0.1) -> optax.Schedule:
  """`base`, multiplied by `decay_factor` at each step of `decay_steps`."""
  if any(b <= a for a, b in zip(decay_steps, decay_steps[1:])):
    raise ValueError(f"decay_steps must increase, got {tuple(decay_steps)}")
  return optax.piecewise_constant_schedule(base, {int(s): decay_factor for s in decay_steps})


def make_optimizer(base: float = 5e-4, decay_steps: Sequence[int] = (50_000,),
                   decay_factor: float = 0.1, clip_norm: float = 0.0
                   ) -> optax.GradientTransformation:
  """Adam on the step-decay schedule; with `clip_norm` > 0 the gradient's global norm is
  clipped to it first (not in the recipe; the synthetic config uses it, BUILD_NOTES.md)."""
  adam = optax.adam(learning_rate_schedule(base, decay_steps, decay_factor))
  return optax.chain(optax.clip_by_global_norm(clip_norm), adam) if clip_norm > 0 else adam


def from_config(optim) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optimiser, learning-rate schedule) of a config's `optim` section."""
  decay = (optim.learning_rate, tuple(optim.decay_steps), optim.decay_factor)
  return (make_optimizer(*decay, clip_norm=optim.get("clip_norm", 0.0)),
          learning_rate_schedule(*decay))
