"""Train and evaluate: `python -m experiments.train --config=CONFIG.py[:ARG] --workdir=DIR`.

Single fields can be overridden: `--config.train.steps=100`. A misspelt field is an error
that names it. Re-running with the same workdir resumes from its latest checkpoint.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from posejax.train.loop import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Configuration file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs and results go here.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None or _WORKDIR.value is None:
    raise app.UsageError("--config and --workdir are required, e.g. "
                         "--config=experiments/configs/synthetic.py:ws --workdir=/tmp/ws")
  train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
