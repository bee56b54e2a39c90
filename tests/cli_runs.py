"""`python -m experiments.train` in subprocesses, for the tests that start, signal and kill real
runs (tests/test_multiprocess.py, tests/test_preemption.py)."""

import os
import pathlib
import re
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

ROOT = pathlib.Path(__file__).parents[1]
CONFIG = "tests/cli_config.py"  # the tiny run: 32 px, 2 steps of mode fs unless overridden
# Runs of several JAX processes each: one such test at a time (README's --dist loadgroup), so
# that they do not starve each other's collectives and heartbeats on a 2-core machine.
ONE_AT_A_TIME = pytest.mark.xdist_group("subprocess_runs")
TIMEOUT_S = 420  # all runs of a test together; a hung run fails the test instead of blocking it


def launch(workdir, log, devices: int, distributed: tuple[int, int, int] | None = None,
           overrides=(), config: str = CONFIG, signal_at: str = "") -> subprocess.Popen:
  """`experiments.train` on `devices` fake CPU devices; distributed: (port, processes, id);
  signal_at: "STEP:SIGNAL", the signal the run sends itself after that step
  (POSEJAX_SIGNAL_AT_STEP, posejax/train/loop.py)."""
  command = [sys.executable, "-m", "experiments.train", f"--config={config}",
             f"--workdir={workdir}", *overrides]
  if distributed:
    port, num_processes, process_id = distributed
    command += [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num_processes}",
                f"--process_id={process_id}"]
  # The tests' XLA flags (tests/conftest.py), with this run's device count.
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                 os.environ.get("XLA_FLAGS", ""))
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={devices}",
             POSEJAX_SIGNAL_AT_STEP=signal_at)
  return subprocess.Popen(command, cwd=ROOT, env=env, stdout=open(log, "w"),
                          stderr=subprocess.STDOUT)


def wait_all(runs: dict[str, subprocess.Popen], logs: dict[str, pathlib.Path],
             expected_code: int = 0, deadline: float | None = None):
  """Waits for every run and asserts its exit code (killing all of them on the way out)."""
  deadline = time.monotonic() + TIMEOUT_S if deadline is None else deadline
  try:
    for name, process in runs.items():
      try:
        code = process.wait(timeout=max(deadline - time.monotonic(), 1))
      except subprocess.TimeoutExpired:
        code = f"still running after {TIMEOUT_S} s"
      assert code == expected_code, f"{name}: {code}\n{logs[name].read_text()[-3000:]}"
  finally:
    for process in runs.values():
      if process.poll() is None:
        process.kill()
        process.wait()


def checkpoint(workdir, step) -> dict[str, np.ndarray]:
  """Parameters and BatchNorm statistics (flattened) of a checkpoint, read onto one device
  whatever the topology that wrote it."""
  manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                                  item_handlers=ocp.StandardCheckpointHandler())
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
      manager.item_metadata(step))
  restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
  return {k: np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(restored[k])])
          for k in ("params", "rest")}
