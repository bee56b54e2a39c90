"""Evaluate a trained workdir: `python -m experiments.evaluate --config=CONFIG.py --workdir=DIR`.

MPJPE, N-MPJPE, PA-MPJPE (mm, poses scaled from the mean bone lengths), 3D PCK@150 and AUC on
the held-out test stream; a line on the console and eval.json in the workdir. The config must
be the one the workdir was trained with (`--config.eval.samples=N` sets how many samples).
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from posejax.train.loop import evaluate_workdir

_CONFIG = config_flags.DEFINE_config_file("config", None, "Configuration file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None or _WORKDIR.value is None:
    raise app.UsageError("--config and --workdir are required")
  evaluate_workdir(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
