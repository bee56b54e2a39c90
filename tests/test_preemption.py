"""A real run that is stopped (SIGTERM, preemption) and killed (SIGKILL, no chance to save),
resumed each time, ends with the parameters of the run that was never interrupted."""

import re
import signal
import time

import numpy as np

from tests.cli_runs import TIMEOUT_S, checkpoint, launch, wait_all, wait_for

STEPS = 40
# Stage ws after 10 2D steps: the interruptions land in the second stage, whose optimiser,
# batches and step function a resumed run must pick up where the first left off.
OVERRIDES = ["--config.stages.stage1.steps=10", f"--config.stages.stage2.steps={STEPS - 10}",
             "--config.train.checkpoint_every=10", "--config.batch.multiview=4"]
CONFIG = "tests/cli_config.py:2d+ws"


def _finished_checkpoints(workdir) -> list[int]:
  """Steps whose checkpoint orbax has finished writing (a save in progress has a tmp name)."""
  folder = workdir / "checkpoints"
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.exists() \
      else []


def test_stopped_and_killed_run_resumes_to_the_parameters_of_a_straight_run(tmp_path):
  deadline = time.monotonic() + TIMEOUT_S
  straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
  logs = {name: tmp_path / f"{name}.log" for name in ("straight", "stopped", "killed", "last")}
  launch_ = lambda workdir, name: launch(workdir, logs[name], 1, overrides=OVERRIDES,  # noqa: E731
                                          config=CONFIG)
  runs = {"straight": launch_(straight, "straight")}

  # 1. SIGTERM in the ws phase: the run saves the step it is at and stops.
  stopped = launch_(interrupted, "stopped")
  wait_for(lambda: "step 13/40" in logs["stopped"].read_text(), stopped, logs["stopped"],
           deadline)
  stopped.send_signal(signal.SIGTERM)
  wait_all({"stopped": stopped}, logs, deadline=deadline)
  saved = int(re.search(r"SIGTERM: saved step (\d+)", logs["stopped"].read_text())[1])
  assert 13 <= saved < STEPS

  # 2. Resumed there, then SIGKILLed once it has written a later checkpoint.
  killed = launch_(interrupted, "killed")
  wait_for(lambda: any(s > saved for s in _finished_checkpoints(interrupted)), killed,
           logs["killed"], deadline)
  killed.send_signal(signal.SIGKILL)
  wait_all({"killed": killed}, logs, expected_code=-signal.SIGKILL, deadline=deadline)
  assert f"resumed from step {saved}" in logs["killed"].read_text()
  assert "held-out test" not in logs["killed"].read_text()
  latest = _finished_checkpoints(interrupted)[-1]
  assert saved < latest < STEPS

  # 3. Resumed from the latest checkpoint the killed run finished, to the end.
  runs["last"] = launch_(interrupted, "last")
  wait_all(runs, logs, deadline=deadline)
  assert f"resumed from step {latest}" in logs["last"].read_text()
  expected, resumed = checkpoint(straight, STEPS), checkpoint(interrupted, STEPS)
  for key in ("params", "rest"):
    np.testing.assert_array_equal(resumed[key], expected[key])
