r"""The host's share of a train step: the jitted step called on the TrainState (a pytree of
nnx.States) against the same step called on the state's leaves (`step_lib.on_leaves`, what
the loop does), side by side in one process.

    python -m experiments.studies.dispatch_overhead --case=2d:hrnet_w32:128:64:0:bfloat16

For each form: step_ms (the call until its results are ready), dispatch_ms (until the call
returns: the host's share) and queued_img_s, the rate of `--repeats` steps dispatched back to
back as the loop dispatches them (the host runs ahead while the device computes, so this is
max(host, device) per step). Cases as in `experiments.benchmark --train_configs`.
"""

import time

import jax
from absl import app

from experiments import benchmark
from experiments.studies import train_case
from posejax.train import step as step_lib

FORMS = ("TrainState", "leaves")


def queued_rate(compiled, state, batch, steps: int, images: int) -> float:
  """Images/s of `steps` steps dispatched without waiting, as the training loop does."""
  jax.block_until_ready(state)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, batch)
  jax.block_until_ready((state, metrics))
  return steps * images / (time.perf_counter() - start)


def measure(form: str, config, repeats: int) -> dict:
  train_step, state, batch, mesh = benchmark.build_train_case(config, jax.devices()[:1])
  if form == "leaves":
    state, state_def = jax.tree_util.tree_flatten(state)
    train_step = step_lib.on_leaves(train_step, state_def)
  step = step_lib.jit_train_step(train_step, mesh)
  timing = benchmark.time_steps(step, state, batch, repeats)
  rate = queued_rate(timing["compiled"], timing["state"], batch, repeats,
                     benchmark.images_per_step(config))
  return dict(form=form, case=benchmark.case_name(config), device=jax.devices()[0].device_kind,
              state_arrays=len(jax.tree_util.tree_leaves(state)),
              compile_s=round(timing["compile_s"], 1), step_ms=round(timing["step_ms"], 2),
              dispatch_ms=round(timing["dispatch_ms"], 2), queued_img_s=round(rate, 1))


def main(argv):
  del argv
  train_case.run_forms(FORMS, measure)  # --repeats: steps timed per form


if __name__ == "__main__":
  app.run(main)
