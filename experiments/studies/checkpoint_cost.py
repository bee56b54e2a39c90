r"""What an orbax save of the loop's checkpoints costs: the whole TrainState (checkpoints/, to
resume) against the weights alone (best/: params and BatchNorm statistics), side by side in
one process; and two what-ifs that tell its cost per array from its cost per byte
(`host_copies`: the TrainState copied to numpy first; `one_buffer`: its bytes in one array).

    python -m experiments.studies.checkpoint_cost --case=2d:hrnet_w32:128:64:0

For each form: its arrays and megabytes, and the medians over `--repeats` saves of
blocking_ms (until `save` returns and training could go on) and total_ms (until orbax's
background thread has written it; that thread competes with the loop's for the host). Cases
as in `experiments.benchmark --train_configs` (only the model and the optimiser matter).
"""

import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import app

from experiments import benchmark
from experiments.studies import train_case
from posejax.train import checkpoints


def _one_buffer(state) -> list[jax.Array]:
  """The state's values as one float32 vector (a what-if: it loses the tree's names)."""
  return [jnp.concatenate([jnp.ravel(leaf).astype(jnp.float32)
                           for leaf in jax.tree_util.tree_leaves(state)])]


# What the loop saves (TrainState to checkpoints/, weights to best/), and two what-ifs that
# tell orbax's cost per array from its cost per byte: the TrainState copied to the host first
# (numpy leaves), and its bytes in one array. Each form's conversion is timed with its save.
FORMS = {"TrainState": lambda state: state, "weights": checkpoints.weights_of,
         "host_copies": jax.device_get, "one_buffer": _one_buffer}


def train_state(config):
  """The TrainState the loop starts the config's (first) stage with, on one device."""
  return benchmark.build_train_case(config, jax.devices()[:1])[1]


def measure(form: str, config, repeats: int) -> dict:
  state = train_state(config)
  leaves = jax.tree_util.tree_leaves(FORMS[form](state))
  blocking, total = [], []
  with tempfile.TemporaryDirectory() as directory:
    manager = checkpoints.manager(directory, keep=1)
    for step in range(1, repeats + 1):
      start = time.perf_counter()
      manager.save(step, args=ocp.args.StandardSave(FORMS[form](state)))
      returned = time.perf_counter()
      manager.wait_until_finished()
      blocking.append(returned - start)
      total.append(time.perf_counter() - start)
    manager.close()
  return dict(form=form, case=benchmark.case_name(config), device=jax.devices()[0].device_kind,
              arrays=len(leaves),
              megabytes=round(sum(leaf.nbytes for leaf in leaves) / 2**20, 3),
              blocking_ms=round(1e3 * statistics.median(blocking), 1),
              total_ms=round(1e3 * statistics.median(total), 1))


def main(argv):
  del argv
  train_case.run_forms(list(FORMS), measure)  # --repeats: saves per form


if __name__ == "__main__":
  app.run(main)
