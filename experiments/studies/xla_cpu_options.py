r"""XLA:CPU option sets side by side on one HRNet train step, interleaved in one process.

    python -m experiments.studies.xla_cpu_options [--backbone=hrnet_w32] [--image_size=256] \
        [--batch_size=4] [--options=xla,ynn,onednn,onednn_fusions] [--rounds=3]
    taskset -c 0 python -m experiments.studies.xla_cpu_options --options=ynn   # on one core
    python -m experiments.studies.xla_cpu_options --options=ynn --trace_dir=/tmp/trace

The step is `experiments.benchmark`'s (forward, MSE on the maps, backward, Adam; float32),
compiled once per option set with `jax.jit(compiler_options=...)`; then one step of each set in
turn, `--rounds` times, so that the machine's drift falls on all of them alike. Printed per
set: compile time, the first loss (the sets must agree), images/s and the CPU seconds per step
(over all threads: CPU seconds / wall seconds is how many cores the step keeps busy). With
`--trace_dir`, two more steps of each set run under `jax.profiler`, and the trace says how its
thunks shared the cores (`thread_concurrency`).

The sets: the train configs' (`posejax.train.step.CPU_FUSIONS`: "xla", "ynn") and the other
XLA:CPU options that jaxlib has (oneDNN, XNNPACK), which no config uses. Measured on the 2-core
VM: BUILD_NOTES.md, session 21.
"""

from __future__ import annotations

import bisect
import collections
import glob
import gzip
import json
import os

import jax
from absl import app, flags

from experiments import benchmark
from posejax import models
from posejax.errors import ConfigError
from posejax.train import step as step_lib


_kinds = step_lib.library_fusion_types
OPTION_SETS = {
    **step_lib.CPU_FUSIONS,
    "onednn": {"xla_cpu_use_onednn": True},
    "onednn_fusions": {"xla_cpu_experimental_onednn_fusion_type":
                       _kinds("DOT", "ELTWISE", "REDUCE")},
    "xnnpack": {"xla_cpu_use_xnnpack": True},
    "ynn_without_dots": {"xla_cpu_experimental_ynn_fusion_type":
                         _kinds("ELTWISE", "REDUCE", "INDIVIDUAL_CONVOLUTION")},
    "ynn_eltwise_reduce": {"xla_cpu_experimental_ynn_fusion_type": _kinds("ELTWISE", "REDUCE")},
    # The order XLA runs independent ops in, which decides what two cores can run at once.
    "ynn_concurrency_scheduler": {**step_lib.CPU_FUSIONS["ynn"], "xla_cpu_scheduler_type":
                                  "CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED"},
    "ynn_memory_scheduler": {**step_lib.CPU_FUSIONS["ynn"], "xla_cpu_scheduler_type":
                             "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"},
    # 512-bit vectors for XLA's own fusions (XLA prefers 256 by default), on CPUs with AVX-512.
    "xla_vector_512": {**step_lib.CPU_FUSIONS["xla"], "xla_cpu_prefer_vector_width": 512},
    "ynn_vector_512": {**step_lib.CPU_FUSIONS["ynn"], "xla_cpu_prefer_vector_width": 512},
}


# Trace events that wrap the thunks rather than being one.
_WRAPPERS = ("ThunkExecutor", "$", "PjitFunction", "ParseArguments", "CommonPjRt", "PjRt",
             "Execute")


def _leaf_thunks(trace_file: str) -> dict[int, list[tuple[float, float, str]]]:
  """{thread: [(start, end, name)]} in microseconds of the thunks (XLA:CPU's executable pieces:
  fusions, convolutions, copies) in a perfetto trace that `jax.profiler` wrote; the wrappers
  around them (the executor, PjRt, the Python call) are left out."""
  with gzip.open(trace_file) as file:
    trace = json.load(file)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  threads = collections.defaultdict(list)
  for event in events:
    name = event.get("name", "")
    if event.get("ph") != "X" or " " in name or name.startswith(_WRAPPERS):
      continue
    threads[event["tid"]].append((event["ts"], event["ts"] + event["dur"], name))
  return {tid: sorted(thunks) for tid, thunks in threads.items()}


def thread_concurrency(trace_file: str) -> dict:
  """How the step's thunks share the cores: busy milliseconds per thread, the share of the
  trace's span with 0, 1, 2, ... thunks running at once, and how much longer a thunk takes
  beside another (over 90 % of it overlapped) than alone (under 10 %), on average over the
  thunks of at least 0.2 ms seen both ways."""
  threads = _leaf_thunks(trace_file)
  edges = sorted((t, d) for thunks in threads.values() for a, b, _ in thunks
                 for t, d in ((a, 1), (b, -1)))
  running, last, span = 0, edges[0][0], collections.defaultdict(float)
  for time_us, change in edges:
    span[running] += time_us - last
    running, last = running + change, time_us
  total = sum(span.values())
  alone, beside = collections.defaultdict(list), collections.defaultdict(list)
  for tid, thunks in threads.items():
    others = sorted(x for other, v in threads.items() if other != tid for x in v)
    starts = [a for a, _, _ in others]
    for a, b, name in thunks:
      if b - a < 200:
        continue
      covered = 0.0  # by the other threads' thunks: the one before `a`, and those after
      for s, e, _ in others[max(bisect.bisect_left(starts, a) - 1, 0):]:
        if s >= b:
          break
        covered += max(0.0, min(b, e) - max(a, s))
      share = covered / (b - a)
      if share < 0.1:
        alone[name].append(b - a)
      elif share > 0.9:
        beside[name].append(b - a)
  both = [name for name in alone if name in beside]
  mean = lambda values: sum(values) / len(values)  # noqa: E731
  slowdown = (sum(mean(beside[n]) for n in both) / sum(mean(alone[n]) for n in both)
              if both else float("nan"))
  return dict(span_ms=total / 1e3,
              busy_ms={tid: sum(b - a for a, b, _ in v) / 1e3 for tid, v in threads.items()},
              share_running={n: t / total for n, t in sorted(span.items())},
              slowdown_beside=slowdown, thunks_both_ways=len(both))


def compare(backbone: str, image_size: int, batch_size: int, names: list[str],
            rounds: int, trace_dir: str = "") -> dict[str, dict]:
  """{set: compile_s, first_loss, images_per_s, cpu_s_per_step}, printed as it goes; with
  `trace_dir`, also each set's `thread_concurrency` over two traced steps."""
  unknown = [name for name in names if name not in OPTION_SETS]
  if unknown:
    raise ConfigError(f"--options: unknown set(s) {unknown}; known: {sorted(OPTION_SETS)}")
  if backbone not in models.BACKBONES:
    raise ConfigError(f"--backbone={backbone!r}: expected one of {sorted(models.BACKBONES)}")
  if jax.default_backend() != "cpu":
    raise ConfigError(f"These are XLA:CPU options; JAX's backend here is "
                      f"{jax.default_backend()!r} (JAX_PLATFORMS=cpu runs the study on the CPU)")
  steps, rows = {}, {}
  for name in names:
    step, compile_s, _ = benchmark.compiled_map_step(
        models.BACKBONES[backbone], image_size, batch_size,
        compiler_options=OPTION_SETS[name] or None)
    first_loss = float(step())
    step()  # warm-up
    steps[name] = step
    rows[name] = dict(compile_s=compile_s, first_loss=first_loss)
    print(f"{name}: compile {compile_s:.1f} s, first loss {first_loss:.8f}", flush=True)
  for name, (wall, cpu) in benchmark.interleaved_seconds(steps, rounds).items():
    rows[name].update(images_per_s=batch_size / wall, cpu_s_per_step=cpu)
    print(f"{backbone} {image_size} px, batch {batch_size}, {name}: "
          f"{batch_size / wall:.3f} images/s, {wall:.3f} s per step, "
          f"{cpu:.2f} CPU s per step ({cpu / wall:.2f} cores busy)", flush=True)
  if trace_dir:
    for name, step in steps.items():
      directory = os.path.join(trace_dir, name)
      with jax.profiler.trace(directory, create_perfetto_trace=True):
        for _ in range(2):
          step()
      trace_file = sorted(glob.glob(
          os.path.join(directory, "plugins/profile/*/perfetto_trace.json.gz")))[-1]
      rows[name]["threads"] = threads = thread_concurrency(trace_file)
      shares = ", ".join(f"{n}: {100 * share:.0f} %"
                         for n, share in threads["share_running"].items())
      print(f"{name}, 2 traced steps ({threads['span_ms']:.0f} ms): thunks running at once "
            f"{shares}; a thunk beside another takes {threads['slowdown_beside']:.2f}x its "
            f"time alone ({threads['thunks_both_ways']} thunks seen both ways)", flush=True)
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  args = flags.FLAGS
  compare(args.backbone, args.image_size, args.batch_size, args.options, args.rounds,
          args.trace_dir)


def define_flags():
  """Defined when the study runs, not on import: tests import it beside other studies that
  define some of the same names."""
  flags.DEFINE_string("backbone", "hrnet_w32", "A key of posejax.models.BACKBONES.")
  flags.DEFINE_integer("image_size", 256, "Input height and width in pixels.")
  flags.DEFINE_integer("batch_size", 4, "Images per step.")
  flags.DEFINE_list("options", ["xla", "ynn", "onednn", "onednn_fusions"],
                    f"Option sets to compare, of {sorted(OPTION_SETS)}.")
  flags.DEFINE_integer("rounds", 3, "Timed steps per set (median), interleaved.")
  flags.DEFINE_string("trace_dir", "", "Where to write a profiler trace of two steps per set "
                      "and read how its thunks share the cores (empty: no trace).")


if __name__ == "__main__":
  define_flags()
  app.run(main)
