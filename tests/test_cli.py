"""experiments.cli.run_parts: the `--parts` of the studies."""

import pytest
from absl import app

from experiments import cli


def test_run_parts_runs_the_chosen_parts_in_the_studys_order():
  ran = []
  parts = {"layer": lambda: ran.append("layer"), "step": lambda: ran.append("step")}
  cli.run_parts(["step", "layer"], parts)
  assert ran == ["layer", "step"]
  ran.clear()
  cli.run_parts(["step"], parts)
  assert ran == ["step"]


def test_run_parts_names_an_unknown_part_and_the_choices_before_running_any():
  ran = []
  with pytest.raises(app.UsageError, match=r"Unknown parts \['lyer'\]; choose from layer, step"):
    cli.run_parts(["step", "lyer"], {"layer": lambda: ran.append(1),
                                     "step": lambda: ran.append(2)})
  assert not ran
