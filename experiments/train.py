r"""Train and evaluate: `python -m experiments.train --config=CONFIG.py[:ARG] --workdir=DIR`.

Single fields can be overridden: `--config.stages.stage2.steps=100`, `--config.train.steps=20`
(stop after 20 steps). A misspelt field is an error that names it. Re-running with the same
workdir resumes from its latest checkpoint, in whichever stage it stopped.

Several processes (hosts of a pod, or processes on one machine) train one model together when
each is started with `--distributed`: on Cloud TPU, SLURM and Open MPI JAX finds the others by
itself; elsewhere give every process the same `--coordinator_address=HOST:PORT` (process 0's
host) and `--num_processes`, and its own `--process_id`. All of them need the same workdir
(a shared file system); each feeds its own slice of every global batch.
"""

from __future__ import annotations

import jax
from absl import app, flags
from ml_collections import config_flags

from experiments import cli
from posejax.train.loop import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Configuration file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs and results go here.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Join a multi-process run (jax.distributed.initialize) before "
    "anything else; implied by --coordinator_address.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT where process 0 runs the coordinator; not "
    "needed on Cloud TPU, SLURM or Open MPI, where JAX detects it.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "Processes in the run (with --coordinator_address).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "This process's index, 0 .. num_processes - 1.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None or _WORKDIR.value is None:
    raise app.UsageError("--config and --workdir are required, e.g. "
                         "--config=experiments/configs/synthetic.py --workdir=/tmp/posejax")
  if _DISTRIBUTED.value or _COORDINATOR.value:
    if _COORDINATOR.value and (_NUM_PROCESSES.value is None or _PROCESS_ID.value is None):
      raise app.UsageError("--coordinator_address needs --num_processes and --process_id")
    # Before any JAX computation: the backend is created knowing the other processes.
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  cli.run(main, config_flags=[_CONFIG])
