"""Test setup: 8 simulated CPU devices (set before JAX starts), a persistent compilation cache
shared by the test processes and the runs they start, and hypothesis profiles.

Fixtures that train or build a model are session-scoped, even those one module uses: under
pytest-xdist a worker may run another module's test between two of a module's tests, and
pytest then tears a module-scoped fixture down and builds it again (the pose transformer
task's trained workdirs were built twice in one worker, 85 s each: BUILD_NOTES.md, session
10). Modules whose fixture costs a minute carry an xdist_group, so that one worker builds it."""

import os
import pathlib

# Tests compile far more than they run: LLVM at -O0 without its expensive passes. Measured on
# the tiny ws train step (BUILD_NOTES.md, session 8): model init 18 -> 5 s (one small program
# per parameter shape), compile 23 -> 16 s, a step 0.2 -> 0.4 s.
# XLA:CPU's older (non-MLIR) fusion emitters compile the pose transformer's train step in half
# the time at -O0 (BUILD_NOTES.md, session 14).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                      "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
                      "--xla_cpu_use_fusion_emitters=false")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Many tests compile the same tiny programs (the same config in several loop tests, the same
# step in a run and its resumption): compiled once, read from disk after.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(pathlib.Path(__file__).parents[1] / ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# Deterministic by default (CI must not flake); HYPOTHESIS_PROFILE=thorough explores more.
settings.register_profile("default", max_examples=60, deadline=None, derandomize=True)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_collection_finish(session):
  """Fails the run when pytest-xdist's loadgroup did not group the xdist_group tests (it
  marks a grouped test's id "@group"): with pytest 9.2 and xdist 3.8 it silently did not, and
  the runs that must not share the CPU ran side by side (pyproject.toml)."""
  if not session.config.getoption("loadgroup", default=False):  # xdist workers of loadgroup
    return
  lost = [item.nodeid for item in session.items
          if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
  if lost:
    raise pytest.UsageError(f"pytest-xdist ignored the xdist_group of {len(lost)} tests (e.g. "
                            f"{lost[0]}): pytest and pytest-xdist do not work together here")
