r"""Where a short test run's time goes: model init, lowering, XLA compile and a step of the tiny
weakly supervised train step (the loop tests' config: hrnetv2_w8_small at 32 px, 8 + 8 x 2
images on 8 fake CPU devices), under the XLA_FLAGS of the environment.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m experiments.studies.compile_time
    XLA_FLAGS="--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0 \
        --xla_llvm_disable_expensive_passes=true --xla_cpu_use_fusion_emitters=false" \
        python -m experiments.studies.compile_time

The second line is what tests/conftest.py sets for the suite (BUILD_NOTES.md, sessions 8 and 14).
"""

import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from experiments.configs import synthetic  # noqa: E402
from posejax.data.batching import pipeline  # noqa: E402
from posejax.data.batching.sources import make_source  # noqa: E402
from posejax.tasks import get_task  # noqa: E402
from posejax.train import optimizer as optim  # noqa: E402
from posejax.train import step as step_lib  # noqa: E402


def main():
  config = synthetic.get_config("ws")
  config.data.update(image_size=32, num_views=2, motion="procedural", workers=0,
                     occluder_probability=0.0)
  config.batch.update(labeled=8, multiview=8, num_views=2)
  task = get_task(config)
  start = time.perf_counter()
  model = task.create_model(nnx.Rngs(0))
  init_s = time.perf_counter() - start
  tx, schedule = optim.make_optimizer(dict(config.optim))
  graphdef, state = step_lib.create_train_state(model, tx)
  mesh = step_lib.make_mesh()
  replicated, by_example = step_lib.shardings(mesh)
  batch = next(pipeline.batches(make_source(config.data), task.batch_spec("ws"), prefetch=0))
  batch = jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(by_example, np.asarray(x)), batch)
  step = step_lib.jit_train_step(step_lib.make_train_step(
      graphdef, tx, task.loss_terms("ws"), config.loss_weights, batch_keys=task.batch_keys("ws"),
      prepare=task.prepare_batch("ws"), learning_rate=schedule), mesh)
  state = jax.device_put(state, replicated)
  start = time.perf_counter()
  lowered = step.lower(state, batch)
  lower_s = time.perf_counter() - start
  start = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(3):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  step_s = (time.perf_counter() - start) / 3
  print(f"init {init_s:.1f} s, lower {lower_s:.1f} s, compile {compile_s:.1f} s, "
        f"step {step_s:.2f} s  (XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r})")


if __name__ == "__main__":
  main()
