"""experiments.studies.xla_cpu_options: option sets compiled side by side on one train step."""

import gzip
import json

import pytest

from experiments.studies import xla_cpu_options
from posejax.errors import ConfigError
from posejax.train import step as step_lib


def test_every_option_set_of_the_train_configs_is_in_the_study():
  for name, options in step_lib.CPU_FUSIONS.items():
    assert xla_cpu_options.OPTION_SETS[name] == options


def test_two_sets_time_the_same_step_and_count_the_cores_it_keeps_busy(capsys, tmp_path):
  rows = xla_cpu_options.compare("hrnetv2_w4_micro", 32, 2, ["xla", "ynn_eltwise_reduce"],
                                 rounds=1, trace_dir=str(tmp_path))
  assert list(rows) == ["xla", "ynn_eltwise_reduce"]
  # Another executable (YNNPACK runs the element-wise work), the same first step.
  assert rows["ynn_eltwise_reduce"]["first_loss"] == pytest.approx(rows["xla"]["first_loss"],
                                                                   rel=1e-5)
  for row in rows.values():
    assert row["images_per_s"] > 0 and row["cpu_s_per_step"] > 0
  for row in rows.values():  # each set's two traced steps
    assert sum(row["threads"]["share_running"].values()) == pytest.approx(1)
  out = capsys.readouterr().out
  assert out.count("cores busy") == 2 and out.count("thunks running at once") == 2


def test_an_unknown_set_or_backbone_is_named_before_anything_compiles():
  with pytest.raises(ConfigError, match=r"unknown set\(s\) \['onednnn'\]"):
    xla_cpu_options.compare("hrnet_w32", 256, 4, ["ynn", "onednnn"], rounds=1)
  with pytest.raises(ConfigError, match="--backbone='hrnet_w33'"):
    xla_cpu_options.compare("hrnet_w33", 256, 4, ["ynn"], rounds=1)


def test_thread_concurrency_reads_how_the_thunks_shared_the_cores(tmp_path):
  # Thread 1 runs fusion.1 alone, then beside thread 2's thunks; times in microseconds.
  def thunk(tid, name, start, duration):
    return dict(ph="X", pid=1, tid=tid, name=name, ts=start, dur=duration)
  events = [thunk(1, "fusion.1", 0, 1000), thunk(1, "convolution.2", 1000, 2000),
            thunk(2, "fusion.3", 1000, 2000), thunk(1, "fusion.1", 4000, 1500),
            thunk(2, "copy.4", 4000, 1500),
            thunk(1, "ThunkExecutor::Execute", 0, 6000),  # a wrapper, not a thunk
            thunk(2, "PjitFunction(step)", 0, 6000),
            dict(ph="M", pid=1, tid=1, name="thread_name", args=dict(name="worker"))]
  trace_file = tmp_path / "perfetto_trace.json.gz"
  with gzip.open(trace_file, "wt") as file:
    json.dump({"traceEvents": events}, file)
  threads = xla_cpu_options.thread_concurrency(str(trace_file))
  assert threads["span_ms"] == pytest.approx(5.5)
  assert threads["busy_ms"] == {1: pytest.approx(4.5), 2: pytest.approx(3.5)}
  assert threads["share_running"] == {0: pytest.approx(1 / 5.5), 1: pytest.approx(1 / 5.5),
                                      2: pytest.approx(3.5 / 5.5)}
  # fusion.1 took 1.0 ms alone and 1.5 ms beside copy.4; the others ran one way only.
  assert threads["slowdown_beside"] == pytest.approx(1.5)
  assert threads["thunks_both_ways"] == 1
