"""experiments.studies.xla_cpu_options: option sets compiled side by side on one train step."""

import pytest

from experiments.studies import xla_cpu_options
from posejax.errors import ConfigError
from posejax.train import step as step_lib


def test_every_option_set_of_the_train_configs_is_in_the_study():
  for name, options in step_lib.CPU_FUSIONS.items():
    assert xla_cpu_options.OPTION_SETS[name] == options


def test_two_sets_time_the_same_step_and_count_the_cores_it_keeps_busy(capsys):
  rows = xla_cpu_options.compare("hrnetv2_w4_micro", 32, 2, ["xla", "ynn_eltwise_reduce"],
                                 rounds=1)
  assert list(rows) == ["xla", "ynn_eltwise_reduce"]
  # Another executable (YNNPACK runs the element-wise work), the same first step.
  assert rows["ynn_eltwise_reduce"]["first_loss"] == pytest.approx(rows["xla"]["first_loss"],
                                                                   rel=1e-5)
  for row in rows.values():
    assert row["images_per_s"] > 0 and row["cpu_s_per_step"] > 0
  assert capsys.readouterr().out.count("cores busy") == 2


def test_an_unknown_set_or_backbone_is_named_before_anything_compiles():
  with pytest.raises(ConfigError, match=r"unknown set\(s\) \['onednnn'\]"):
    xla_cpu_options.compare("hrnet_w32", 256, 4, ["ynn", "onednnn"], rounds=1)
  with pytest.raises(ConfigError, match="--backbone='hrnet_w33'"):
    xla_cpu_options.compare("hrnet_w33", 256, 4, ["ynn"], rounds=1)
