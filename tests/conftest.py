"""Test setup: 8 simulated CPU devices (set before JAX starts), a persistent compilation cache
shared by the test processes and the runs they start, and hypothesis profiles."""

import os
import pathlib

# Tests compile far more than they run: LLVM at -O0 without its expensive passes. Measured on
# the tiny ws train step (BUILD_NOTES.md, session 8): model init 18 -> 5 s (one small program
# per parameter shape), compile 23 -> 16 s, a step 0.2 -> 0.4 s.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                      "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Many tests compile the same tiny programs (the same config in several loop tests, the same
# step in a run and its resumption): compiled once, read from disk after.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(pathlib.Path(__file__).parents[1] / ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

from hypothesis import settings  # noqa: E402

# Deterministic by default (CI must not flake); HYPOTHESIS_PROFILE=thorough explores more.
settings.register_profile("default", max_examples=60, deadline=None, derandomize=True)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
