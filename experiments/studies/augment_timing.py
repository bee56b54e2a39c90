r"""Host (NumPy) vs device (jitted JAX) image warp of posejax.data.batching.augment: which to use
where.

    python -m experiments.studies.augment_timing [--cases=64x128,32x256] [--repeats=10] \
        [--json=FILE]

Each case is BATCHxSIZE (square uint8 RGB crops, random augmentations with flips). Rows:

  numpy warp          warp_images_numpy on the whole batch (one vectorised call)
  numpy augment_view  the host pipeline as written: augment_view per view (warp + labels)
  jax warp            warp_images, jitted; NumPy inputs, so the host->device copy is included
  jax warp unchunked  the same with pixels_per_chunk=0: one vectorised gather over the batch
                      (what accelerators get; on CPU the default is cache-sized chunks)
  jax augment_batch   augment_batch, jitted: warp + camera + joints for a batch dict
  jax map_coordinates jax.scipy.ndimage.map_coordinates(order=1), vmapped: the library
                      alternative to the explicit gather, for comparison
  scipy (reference)   scipy.ndimage.affine_transform per image (dev-only dependency), if present

Timings are medians over `--repeats` runs of wall-clock time and of process CPU time (all
threads: the core time taken from a network training on the same cores); for the jitted rows,
the first call (compilation, plus one run) is reported separately. Results go to BUILD_NOTES.md
with the machine they ran on.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from posejax.data.batching import augment
from posejax.skeleton import H36M

_CASES = flags.DEFINE_list("cases", ["64x128", "32x256"], "Cases as BATCHxSIZE.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed runs per measurement (median reported).")
_JSON = flags.DEFINE_string("json", None, "Also write the rows to this JSON file.")


def _median_seconds(run: Callable[[], object], repeats: int) -> tuple[float, float]:
  """(wall, CPU) seconds per run: medians over `repeats`. CPU time sums all threads of the
  process, i.e. the core time the run takes away from a network training on the same cores."""
  wall, cpu = [], []
  for _ in range(repeats):
    start, start_cpu = time.perf_counter(), time.process_time()
    run()
    wall.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
  return statistics.median(wall), statistics.median(cpu)


def _first_call_seconds(run: Callable[[], object]) -> float:
  start = time.perf_counter()
  run()
  return time.perf_counter() - start


def _inputs(batch_size: int, size: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  num_joints = H36M.num_joints
  augmentations = [augment.sample_augmentation(rng) for _ in range(batch_size)]
  camera = np.array([[2.0 * size, 0, size / 2], [0, 2.0 * size, size / 2], [0, 0, 1]], np.float32)
  batch = {
      "image": rng.integers(0, 256, size=(batch_size, size, size, 3), dtype=np.uint8),
      "camera": np.broadcast_to(camera, (batch_size, 3, 3)).copy(),
      "joints_2d": rng.uniform(0, size, size=(batch_size, num_joints, 2)).astype(np.float32),
      "joints_2d_mask": np.ones((batch_size, num_joints), bool),
      "joints_3d": (rng.normal(size=(batch_size, num_joints, 3)) * 300
                    + [0, 0, 4000]).astype(np.float32),
  }
  return batch, augmentations, augment.augmentation_matrices(augmentations, (size, size))


def _map_coordinates_warp(images, matrices):
  """The same warp through jax.scipy.ndimage.map_coordinates ('constant' = zero padding)."""
  height, width = images.shape[1:3]
  ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                        jnp.arange(width, dtype=jnp.float32), indexing="ij")
  inverse = jnp.linalg.inv(matrices)

  def one_image(image, inverse):
    source_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    source_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    one_channel = lambda channel: jax.scipy.ndimage.map_coordinates(
        channel.astype(jnp.float32), [source_y, source_x], order=1, mode="constant")
    return jax.vmap(one_channel, in_axes=-1, out_axes=-1)(image)

  warped = jax.vmap(one_image)(images, inverse)
  return jnp.clip(jnp.round(warped), 0, 255).astype(jnp.uint8)


def _scipy_warp(images, matrices):
  from scipy import ndimage  # dev-only dependency: the library never imports scipy.

  out = np.empty_like(images)
  for n in range(images.shape[0]):
    inverse = np.linalg.inv(matrices[n])
    # scipy indexes (row, col, channel) = (y, x, c): swap x and y of the pixel map.
    swap = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]])
    rc_inverse = swap @ inverse @ swap
    affine = np.eye(4)
    affine[:2, :2] = rc_inverse[:2, :2]
    affine[:2, 3] = rc_inverse[:2, 2]
    out[n] = ndimage.affine_transform(images[n], affine, order=1, mode="grid-constant")
  return out


def _rows_for_case(batch_size: int, size: int, repeats: int):
  batch, augmentations, matrices = _inputs(batch_size, size)
  images = batch["image"]

  def host_pipeline():
    for n in range(batch_size):
      augment.augment_view(images[n], batch["camera"][n], batch["joints_2d"][n],
                           batch["joints_2d_mask"][n], augmentations[n],
                           joints_3d=batch["joints_3d"][n])

  jax_warp = lambda: augment.warp_images(images, matrices).block_until_ready()
  unchunked = lambda: augment.warp_images(images, matrices, pixels_per_chunk=0).block_until_ready()
  jax_batch = lambda: jax.block_until_ready(augment.augment_batch(batch, matrices))
  map_coordinates = jax.jit(_map_coordinates_warp)
  jax_map = lambda: map_coordinates(images, matrices).block_until_ready()
  cases = [
      ("numpy warp", lambda: augment.warp_images_numpy(images, matrices), False),
      ("numpy augment_view", host_pipeline, False),
      ("jax warp", jax_warp, True),
      ("jax warp unchunked", unchunked, True),
      ("jax augment_batch", jax_batch, True),
      ("jax map_coordinates", jax_map, True),
  ]
  has_scipy = importlib.util.find_spec("scipy") is not None  # only with the dev extras
  if has_scipy:
    cases.append(("scipy (reference)", lambda: _scipy_warp(images, matrices), False))

  rows = []
  for name, run, jitted in cases:
    # The first call of a jitted row compiles it (nothing ran these shapes before).
    compile_s = _first_call_seconds(run) if jitted else None
    if not jitted:
      run()  # warm caches the same way
    seconds, cpu_seconds = _median_seconds(run, repeats)
    rows.append({"case": f"{batch_size}x{size}x{size}", "implementation": name,
                 "ms_per_batch": 1e3 * seconds, "cpu_ms_per_batch": 1e3 * cpu_seconds,
                 "images_per_s": batch_size / seconds, "compile_s": compile_s})

  # The implementations must agree for their speeds to mean anything.
  reference = augment.warp_images_numpy(images, matrices).astype(np.int32)
  others = [("jax warp", augment.warp_images(images, matrices)),
            ("jax map_coordinates", map_coordinates(images, matrices))]
  if has_scipy:
    others.append(("scipy", _scipy_warp(images, matrices)))
  for name, result in others:
    difference = np.abs(np.asarray(result, np.int32) - reference).max()
    assert difference <= 1, f"{name} differs from numpy warp by {difference} levels"
  return rows


def main(argv):
  del argv
  print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"JAX {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"NumPy {np.__version__}")
  rows = []
  for case in _CASES.value:
    batch_size, size = (int(v) for v in case.split("x"))
    rows += _rows_for_case(batch_size, size, _REPEATS.value)
  print(f"{'case':>14} {'implementation':>20} {'ms/batch':>9} {'CPU ms':>8} {'images/s':>9} "
        f"{'1st call s':>10}")
  for row in rows:
    compile_s = "" if row["compile_s"] is None else f"{row['compile_s']:.2f}"
    print(f"{row['case']:>14} {row['implementation']:>20} {row['ms_per_batch']:9.1f} "
          f"{row['cpu_ms_per_batch']:8.1f} {row['images_per_s']:9.0f} {compile_s:>10}")
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  app.run(main)
