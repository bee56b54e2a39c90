r"""The soft-argmax temperature lambda: what it costs on perfect heatmaps, and on a trained model.

    python -m experiments.studies.softargmax_temperature
    python -m experiments.studies.softargmax_temperature --workdir=RUNS/main --temperatures=50,20,10

Without `--workdir`: joints at random sub-cell positions on a 16 x 16 grid of stride 4 (the
synthetic main job's 64 px crops), their Gaussian heatmap targets (`losses.heatmap_targets`,
peak 1, each `--sigmas`), read back by `geometry.softargmax` at each temperature: the mean and
largest error in pixels. A large lambda makes the softmax an argmax that snaps towards cell
centres; a small one lets the background pull every joint towards the grid's centre.

With `--workdir`: a trained pose25d model (its latest checkpoint) evaluated on the validation
stream at each temperature, the weights unchanged (MPJPE, 2D error): the decoding alone, for
choices that must not look at the test set. Measured (BUILD_NOTES.md, session 16): on perfect
targets of sigma 2 cells, 0.81 px at lambda 50 and 0.08 px at 10; the main job trained at 50
validated at 189.3 mm decoded at 50 and 183.5 decoded at 10.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

# pylint: disable=wrong-import-position

import numpy as np
from absl import app, flags

from experiments import cli, studies
from posejax import geometry, losses
from posejax.data.batching.sources import make_source

GRID, STRIDE = 16, 4  # the synthetic main job: 64 px crops, HRNet's stride 4


def decoding_error(temperature: float, sigma: float, joints_2d: np.ndarray) -> np.ndarray:
  """Pixel error of the soft-argmax read-out of perfect Gaussian targets of `joints_2d`."""
  targets = losses.heatmap_targets(joints_2d, (GRID, GRID), stride=STRIDE, sigma=sigma)
  found, _ = geometry.softargmax(targets, temperature=temperature, stride=STRIDE)
  return np.linalg.norm(np.asarray(found) - joints_2d, axis=-1)


def random_joints(count: int) -> np.ndarray:
  """[count, 1, 2] float32 joints at random sub-cell positions, 2 cells from the border (where
  the Gaussian would be cut off)."""
  margin = 2 * STRIDE
  joints = np.random.default_rng(0).uniform(margin, GRID * STRIDE - margin, (count, 1, 2))
  return joints.astype(np.float32)


def perfect_heatmaps(temperatures: list[float], sigmas: list[float], count: int) -> None:
  joints = random_joints(count)
  print(f"perfect Gaussian heatmaps, {GRID} x {GRID} cells of {STRIDE} px, {count} joints: "
        "soft-argmax error in px (mean / max)")
  print("sigma (cells)  " + "  ".join(f"{f'lambda {t:g}':>14}" for t in temperatures))
  for sigma in sigmas:
    errors = [decoding_error(t, sigma, joints) for t in temperatures]
    print(f"{sigma:<13g}  " + "  ".join(f"{e.mean():>6.2f} / {e.max():<5.2f}" for e in errors))


def decode_at_temperatures(task, model, source, samples: int,
                           temperatures: list[float]) -> dict[float, dict]:
  """The validation results of one pose25d model at each temperature, its weights unchanged."""
  by_temperature, trained_at = {}, model.temperature
  for temperature in temperatures:
    model.temperature = temperature  # the decoding only: the weights are the trained ones
    results = by_temperature[temperature] = task.evaluate(model, source, stream="validation",
                                                          samples=samples)
    print(f"  lambda {temperature:>5g}: MPJPE {results['mpjpe']:.1f} mm, 2D error "
          f"{results['error_2d_px']:.2f} px", flush=True)
  model.temperature = trained_at
  return by_temperature


def trained_model(workdir: str, temperatures: list[float]) -> dict[float, dict]:
  """The validation results of a pose25d workdir's latest model at each temperature."""
  config, task, model, step = studies.latest_pose25d_model(workdir,
                                                           "this study decodes pose25d")
  samples = config.eval.validation_samples
  print(f"{workdir} (step {step}, trained at lambda {config.model.temperature:g}), validation "
        f"stream ({samples} samples):")
  return decode_at_temperatures(task, model, make_source(config.data), samples, temperatures)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  args = flags.FLAGS
  temperatures = [float(t) for t in args.temperatures]
  if args.workdir:
    trained_model(args.workdir, temperatures)
  else:
    perfect_heatmaps(temperatures, [float(s) for s in args.sigmas], args.joints)


def define_flags() -> None:
  """The program's flags, defined when it runs (not on import: the tests import this module
  beside programs that define --workdir too)."""
  flags.DEFINE_list("temperatures", ["100", "50", "20", "14", "10", "7", "5"],
                    "Soft-argmax temperatures (lambda) to compare.")
  flags.DEFINE_list("sigmas", ["1", "1.5", "2"],
                    "Gaussian target widths in heatmap cells (perfect-heatmap part).")
  flags.DEFINE_integer("joints", 2000, "Random joints (perfect-heatmap part).")
  flags.DEFINE_string("workdir", None, "A trained pose25d workdir to decode.")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
