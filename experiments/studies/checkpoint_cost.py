r"""What an orbax save of the loop's checkpoints costs: the whole TrainState (checkpoints/, to
resume) against the weights alone (best/: params and BatchNorm statistics), side by side in
one process.

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
import orbax.checkpoint as ocp
from absl import app
from flax import nnx

from experiments import benchmark
from experiments.studies import train_case
from posejax.tasks import get_task
from posejax.train import checkpoints, loop
from posejax.train import optimizer as optim
from posejax.train import step as step_lib

FORMS = {"TrainState": lambda state: state, "weights": checkpoints.weights_of}


def train_state(config):
  """The TrainState the loop starts the config's (first) stage with."""
  task = get_task(config)
  tx, _ = optim.make_optimizer(loop.stages_of(config)[0].optim)
  _, state = step_lib.create_train_state(task.create_model(nnx.Rngs(config.seed)), tx,
                                         task.create_frozen())
  return state


def measure(form: str, config, repeats: int) -> dict:
  tree = FORMS[form](train_state(config))
  leaves = jax.tree_util.tree_leaves(tree)
  blocking, total = [], []
  with tempfile.TemporaryDirectory() as directory:
    manager = checkpoints.manager(directory, keep=1)
    for step in range(1, repeats + 1):
      start = time.perf_counter()
      manager.save(step, args=ocp.args.StandardSave(tree))
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
