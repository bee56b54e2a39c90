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
                   decay_factor: float = 0.1) -> optax.GradientTransformation:
  return optax.adam(learning_rate_schedule(base, decay_steps, decay_factor))
