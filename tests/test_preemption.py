"""A real run that is stopped (SIGTERM, preemption) and killed (SIGKILL, no chance to save),
resumed each time, ends with the parameters of the run that was never interrupted. The runs
signal themselves at chosen steps (POSEJAX_SIGNAL_AT_STEP), so every step below is exact."""

import signal

import numpy as np

from tests.cli_runs import ONE_AT_A_TIME, checkpoint, launch, wait_all

pytestmark = ONE_AT_A_TIME

STEPS = 20
# Stage ws after 6 2D steps: the interruptions land in the second stage, whose optimiser,
# batches and step function a resumed run must pick up where the first left off.
OVERRIDES = ["--config.stages.stage1.steps=6", f"--config.stages.stage2.steps={STEPS - 6}",
             "--config.train.checkpoint_every=5", "--config.batch.multiview=4"]
CONFIG = "tests/cli_config.py:2d+ws"


def _checkpoints(workdir) -> list[int]:
  """Steps whose checkpoint orbax finished writing (a save in progress has a tmp name)."""
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_stopped_and_killed_run_resumes_to_the_parameters_of_a_straight_run(tmp_path):
  straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
  logs = {name: tmp_path / f"{name}.log" for name in ("straight", "stopped", "killed", "last")}
  launch_ = lambda workdir, name, signal_at="": launch(  # noqa: E731
      workdir, logs[name], 1, overrides=OVERRIDES, config=CONFIG, signal_at=signal_at)
  runs = {"straight": launch_(straight, "straight")}

  # 1. SIGTERM after step 8 (stage ws): the run saves step 8 and stops.
  wait_all({"stopped": launch_(interrupted, "stopped", "8:SIGTERM")}, logs)
  assert "SIGTERM: saved step 8, stopping" in logs["stopped"].read_text()
  assert _checkpoints(interrupted) == [5, 6, 8]

  # 2. Resumed at step 8, then SIGKILLed after step 17: the last checkpoint written is 15.
  wait_all({"killed": launch_(interrupted, "killed", "17:SIGKILL")}, logs,
           expected_code=-signal.SIGKILL)
  killed = logs["killed"].read_text()
  assert "resumed from step 8" in killed and "step 17/20" not in killed
  assert "held-out test" not in killed
  assert _checkpoints(interrupted)[-1] == 15

  # 3. Resumed from step 15 to the end: the parameters, BatchNorm statistics of the straight run.
  runs["last"] = launch_(interrupted, "last")
  wait_all(runs, logs)
  last = logs["last"].read_text()
  assert "resumed from step 15" in last and "step 15/20" not in last and "step 20/20" in last
  expected, resumed = checkpoint(straight, STEPS), checkpoint(interrupted, STEPS)
  for key in ("params", "rest"):
    np.testing.assert_array_equal(resumed[key], expected[key])
