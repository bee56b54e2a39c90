"""Optimisers from a config's `optim` section, all of it Optax.

    optim = dict(
        name="adam",            # adam | adamw | adagrad | sgd (with `momentum`)
        learning_rate=5e-4,
        schedule="step",        # step: x decay_factor at each of decay_steps; cosine: to 0
        total_steps=0,          # cosine: at this step (0 in a stage of a run: at the stage's end)
        decay_steps=(50_000,), decay_factor=0.1,
        warmup_steps=0,         # linear from 0 to learning_rate first
        weight_decay=0.0,       # adamw / sgd; never on norms and biases (parameters of ndim < 2)
        momentum=0.9,           # sgd
        clip_norm=0.0,          # > 0: clip the gradient's global norm first
        multipliers={},         # {"backbone": 0.1}: learning-rate factor per parameter group
    )

A parameter group is a path prefix of the parameter tree ("backbone", "head/conv"); its
multiplier scales the group's whole update (Adam's step and AdamW's decay alike), and a
multiplier of 0 freezes the group (`optax.set_to_zero`: no optimiser state, no update), which
is how a stage trains part of a model. The schedule counts the optimiser's own steps, so a
stage that starts with a fresh optimiser starts its schedule at 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import optax

NAMES = ("adam", "adamw", "adagrad", "sgd")
SCHEDULES = ("step", "cosine")
_DEFAULTS = dict(name="adam", learning_rate=5e-4, schedule="step", decay_steps=(),
                 decay_factor=0.1, warmup_steps=0, weight_decay=0.0, momentum=0.9,
                 clip_norm=0.0, multipliers={}, total_steps=0)


def learning_rate_schedule(base: float = 5e-4, decay_steps: Sequence[int] = (50_000,),
                           decay_factor: float = 0.1, *, schedule: str = "step",
                           warmup_steps: int = 0, total_steps: int = 0) -> optax.Schedule:
  """`base` after `warmup_steps` of linear warm-up; then "step": multiplied by `decay_factor`
  at each step of `decay_steps`, or "cosine": down to 0 at `total_steps`."""
  if schedule not in SCHEDULES:
    raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {schedule!r}")
  if any(b <= a for a, b in zip(decay_steps, decay_steps[1:])):
    raise ValueError(f"decay_steps must increase, got {tuple(decay_steps)}")
  if schedule == "cosine":
    if total_steps <= warmup_steps:
      raise ValueError(f"a cosine schedule needs more steps than its warm-up: total_steps="
                       f"{total_steps} (a stage's length unless set), warmup_steps={warmup_steps}")
    return optax.warmup_cosine_decay_schedule(0.0, base, warmup_steps, total_steps)
  decay = optax.piecewise_constant_schedule(
      base, {int(s) - warmup_steps: decay_factor for s in decay_steps})
  if not warmup_steps:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, base, warmup_steps), decay],
                              [warmup_steps])


def _decay_mask(params):
  """Weight decay on kernels only: not on norms' scales and biases (ndim < 2)."""
  return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def _base(name: str, schedule: optax.Schedule, weight_decay: float, momentum: float
          ) -> optax.GradientTransformation:
  if name == "adam":
    return optax.adam(schedule)
  if name == "adamw":
    return optax.adamw(schedule, weight_decay=weight_decay, mask=_decay_mask)
  if name == "adagrad":
    return optax.adagrad(schedule)
  if name == "sgd":
    sgd = optax.sgd(schedule, momentum=momentum or None)
    if weight_decay:  # decoupled, like adamw's, and masked the same way
      return optax.chain(optax.add_decayed_weights(weight_decay, _decay_mask), sgd)
    return sgd
  raise ValueError(f"optim.name must be one of {NAMES}, got {name!r}")


def parameter_groups(params, multipliers: Mapping[str, float]):
  """The group of every parameter: the longest prefix of `multipliers` that its path
  ("backbone/stage2/conv/kernel") starts with, or "default"."""
  prefixes = sorted(multipliers, key=len, reverse=True)

  def group(path, _):
    name = "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
    return next((p for p in prefixes if name == p or name.startswith(p + "/")), "default")

  return jax.tree_util.tree_map_with_path(group, params)


def describe(optim: Mapping) -> str:
  """The optimiser and how its learning rate moves, in words: "adam at learning rate 0.0001,
  cosine to 0 at step 500 of the stage" (steps count from the optimiser's first)."""
  o = dict(_DEFAULTS, **optim)
  words = f"{o['name']} at learning rate {o['learning_rate']:g}"
  if o["warmup_steps"]:
    words += f", warm-up {o['warmup_steps']} steps"
  if o["schedule"] == "cosine":
    return f"{words}, cosine to 0 at step {o['total_steps']} of the stage"
  if o["decay_steps"]:
    decay_steps = ", ".join(str(int(s)) for s in o["decay_steps"])
    words += f", x {o['decay_factor']:g} at step {decay_steps} of the stage"
  return words


def make_optimizer(optim: Mapping) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optimiser, learning-rate schedule of the default group) of an `optim` mapping (see the
  module docstring; missing keys take their defaults, unknown keys are an error)."""
  unknown = set(optim) - set(_DEFAULTS)
  if unknown:
    raise ValueError(f"Unknown optim field(s) {sorted(unknown)}; known: {sorted(_DEFAULTS)}")
  o = dict(_DEFAULTS, **optim)
  schedule = learning_rate_schedule(o["learning_rate"], tuple(o["decay_steps"]),
                                    o["decay_factor"], schedule=o["schedule"],
                                    warmup_steps=o["warmup_steps"],
                                    total_steps=o["total_steps"])
  base = _base(o["name"], schedule, o["weight_decay"], o["momentum"])
  multipliers = dict(o["multipliers"])
  if multipliers:
    transforms = {"default": base}
    for group, factor in multipliers.items():
      transforms[group] = (optax.set_to_zero() if factor == 0
                           else optax.chain(_base(o["name"], schedule, o["weight_decay"],
                                                  o["momentum"]), optax.scale(factor)))
    base = optax.multi_transform(transforms,
                                 lambda params: parameter_groups(params, multipliers))
  if o["clip_norm"] > 0:
    base = optax.chain(optax.clip_by_global_norm(o["clip_norm"]), base)
  return base, schedule
