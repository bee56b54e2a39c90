"""Reading a test run's checkpoints back: the whole saved TrainState, and leaf values that
compare exactly (PRNG keys included)."""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp


def restored(workdir, step) -> dict:
  """The TrainState tree saved at `step` in workdir/checkpoints (params, rest, opt_state, ...)."""
  manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")))
  return manager.restore(step)


def numbers(x) -> np.ndarray:
  """An array's values; a PRNG key's (the dropout stream's state) as its integers."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    return np.asarray(jax.random.key_data(x))
  return np.asarray(x)
