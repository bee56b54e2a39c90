"""Benchmarks: `python -m experiments.benchmark [--sections=geometry] [--repeats=20]`.

Sections (run in this order, each prints rows of one table):
  accuracy: float32 project -> reconstruct round-trip error against float64 ground truth.
  geometry: batched 3D reconstruction + the multi-view consistency loss and its gradient, jitted,
            against a plain NumPy loop doing the same, for 32 x 4 views x 17 joints and 100x that.
  data:     synthetic rendering in views/s on one core at 128 and 256 px, and the batch
            pipeline's rate (2D images + multi-view samples per second, threads as flagged)
            next to the rate the small CPU model trains at on the same batch.
  model:    PoseNet forward (eval mode) and forward+backward (train mode, gradient of a loss on
            every output) in images/s, compile times, the convolution and matmul FLOPs per
            image and, on a GPU, the achieved fraction of the device's peak FLOP/s. On the
            first device only.
  train:    the full train step (on-device augmentation, network, objective, Adam update) of
            the synthetic config per objective, jitted over a mesh of 1 and of all devices: compile
            time and images/s, beside the input pipeline's images/s for the same batch
            (rendered on the fly and, with --train_data_dir, from a prepared data dir). Each
            device count runs in a fresh process (fake CPU devices are fixed at JAX's start).
  torch:    the same HRNet train step in posejax and in the HRNet authors' PyTorch model, side
            by side: forward, MSE on 34 maps from a 1x1 head, backward and Adam, per
            --torch_models x --torch_sizes (square inputs) x --torch_dtypes (float32; bfloat16:
            the network computes in bfloat16 with float32 parameters, loss and Adam, under
            torch.autocast for PyTorch), batch --torch_batch. posejax jitted
            (compile and a warm-up step excluded), PyTorch eager on os.cpu_count() threads (one
            warm-up step excluded); images/s of each and posejax / PyTorch. Both networks have
            the same layers (their parameter counts are in the table). Both sides' fraction
            of peak: on a GPU of the data sheet's peak; on a CPU, which has no such figure
            here, of the faster of JAX's and PyTorch's dense 2048 x 2048 product in that dtype
            on the same threads, measured in the same run (peak_from says which). Needs PyTorch
            (pip install "posejax[torch]") and --pose_hrnet=.../lib/models/pose_hrnet.py from
            the authors' repository; without either it is skipped and says which is missing.

The train and torch sections compile posejax's step once per --cpu_fusions setting
(posejax.train.step.CPU_FUSIONS: XLA:CPU's own fusions, or YNNPACK's), one row each.

Timings are wall-clock medians over `--repeats` runs after compilation; compile time is
lowering + XLA compilation. Record results in BUILD_NOTES.md with the machine they ran on.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags, logging

from flax import nnx

from experiments import authors_hrnet
from experiments.configs import synthetic as synthetic_config
from posejax import geometry, losses, models
from posejax.data.batching import pipeline, sources
from posejax.data.render import synthetic
from posejax.errors import ConfigError
from posejax.skeleton import H36M
from posejax.tasks import get_task
from posejax.train import loop
from posejax.train import optimizer as optim
from posejax.train import step as step_lib

_SECTIONS = flags.DEFINE_list("sections",
                              ["accuracy", "geometry", "data", "model", "train", "torch"],
                              "Which benchmark sections to run.")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed runs per measurement (median reported).")
_SIZES = flags.DEFINE_list("geometry_samples", ["32", "3200"],
                           "Multi-view samples per batch for the geometry section.")
_MODELS = flags.DEFINE_list(
    "models", ["hrnet_w32:256:4:float32", "hrnet_w32:256:4:bfloat16",
               "hrnet_w8_small:128:32:float32"],
    "Model section cases as name:image_size:batch:compute_dtype.")
_DATA_WORKERS = flags.DEFINE_integer("data_workers", 2, "Rendering threads in the data section.")
_TRAIN_CONFIGS = flags.DEFINE_list(
    "train_configs", ["ws:hrnet_w8_small:128:32:8", "fs:hrnet_w8_small:128:32:8",
                      "2d:hrnet_w8_small:128:32:0"],
    "Train section cases as objective:model:image_size:labeled:multiview[:compute_dtype] "
    "(experiments/configs/synthetic.py with that objective as its one stage and these fields "
    "changed; 4 views per multi-view sample; the dtype defaults to the config's float32).")
_TRAIN_DEVICES = flags.DEFINE_list(
    "train_devices", ["1", "all"], "Device counts of the train section; 'all': every "
    "accelerator, or on a CPU one fake device per core.")
_TRAIN_DATA_DIR = flags.DEFINE_string(
    "train_data_dir", None, "A data dir prepared for experiments/configs/synthetic.py "
    "(python -m experiments.prepare_data --config=experiments/configs/synthetic.py "
    "--data_dir=DIR): the train section also measures the pipeline reading it.")
_TRAIN_WORKER = flags.DEFINE_integer(
    "train_worker", None, "Internal: run the train cases on this many devices in this process "
    "and print their rows as JSON (the train section starts one such process per count).")
_JSON = flags.DEFINE_string("json", None, "Also write the rows to this JSON file.")
_TORCH_MODELS = flags.DEFINE_list(
    "torch_models", ["hrnet_w32", "hrnetv2_w8_small_hr16"],
    "Torch section: posejax backbones (posejax.models.BACKBONES) to time against the authors' "
    "PyTorch HRNet built with the same layers. hrnetv2_w8_small_hr16: the synthetic config's "
    "model.")
_TORCH_SIZES = flags.DEFINE_list("torch_sizes", ["64", "128", "256"],
                                 "Torch section: square input sizes in pixels.")
_TORCH_BATCH = flags.DEFINE_integer("torch_batch", 4, "Torch section: images per train step.")
_TORCH_DTYPES = flags.DEFINE_list(
    "torch_dtypes", ["float32"], "Torch section: compute dtypes, float32 and/or bfloat16 "
    "(float32 parameters, loss and Adam on both sides; torch.autocast for PyTorch).")
TORCH_DTYPES = ("float32", "bfloat16")
# At parsing, before any section has run (torch_section checks again for callers in Python).
flags.register_validator("torch_dtypes", lambda dtypes: set(dtypes) <= set(TORCH_DTYPES),
                         message=f"--torch_dtypes takes {', '.join(TORCH_DTYPES)}")
_CPU_FUSIONS = flags.DEFINE_list(
    "cpu_fusions", ["xla"], "Train and torch sections: the XLA:CPU compiler settings of "
    f"posejax's step to time, one row each, from {sorted(step_lib.CPU_FUSIONS)} "
    "(posejax.train.step.CPU_FUSIONS; config.train.cpu_fusions in training).")
flags.register_validator("cpu_fusions", lambda names: set(names) <= set(step_lib.CPU_FUSIONS),
                         message=f"--cpu_fusions takes {', '.join(step_lib.CPU_FUSIONS)}")
_TORCH_THREADS = flags.DEFINE_integer(
    "torch_threads", None, "Torch section: PyTorch's intra-op threads (default os.cpu_count()).")
flags.adopt_module_key_flags(authors_hrnet)  # --pose_hrnet: the authors' pose_hrnet.py

NUM_VIEWS = 4


def median_seconds(run: Callable[[], object], repeats: int) -> float:
  """Median wall-clock seconds of `repeats` calls of `run` (which blocks on its results)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def interleaved_seconds(runs: dict[str, Callable[[], object]],
                        rounds: int) -> dict[str, tuple[float, float]]:
  """{name: (median wall-clock seconds, median CPU seconds of this process over all its
  threads)} of each call in `runs`, called in turn `rounds` times (A, B, A, B, ...) so that the
  machine's drift falls on all of them alike. Each call blocks on its results."""
  wall, cpu = {name: [] for name in runs}, {name: [] for name in runs}
  for _ in range(rounds):
    for name, run in runs.items():
      start, start_cpu = time.perf_counter(), _cpu_seconds()
      run()
      wall[name].append(time.perf_counter() - start)
      cpu[name].append(_cpu_seconds() - start_cpu)
  return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in runs}


# ------------------------------------------------------------------------------------ geometry


def multiview_batch(num_samples: int, num_views: int = NUM_VIEWS, seed: int = 0,
                    noise: bool = True):
  """Network-like 2.5D predictions for S samples x V views: one pose per sample seen by V
  cameras around it, person crops of 256 px, plus noise (so the loss is not zero).
  Also returns the exact `joints_3d` (float64, mm) that the noise-free inputs come from."""
  rng = np.random.default_rng(seed)
  num_joints = H36M.num_joints
  pose = rng.normal(size=(num_samples, 1, num_joints, 3)) * 250
  pose[..., H36M.scale_pair[0], :] = pose[..., H36M.root, :] + [0, -480, 0]  # upright torso
  yaw = rng.uniform(0, 2 * np.pi, size=(num_samples, num_views))
  cos, sin = np.cos(yaw), np.sin(yaw)
  zeros, ones = np.zeros_like(yaw), np.ones_like(yaw)
  rotation = np.stack([cos, zeros, sin, zeros, ones, zeros, -sin, zeros, cos], -1).reshape(
      num_samples, num_views, 3, 3)
  distance = rng.uniform(3000, 6000, size=(num_samples, num_views, 1, 1))
  joints_3d = np.einsum("svij,svnj->svni", rotation, np.broadcast_to(
      pose, (num_samples, num_views, num_joints, 3))) + distance * np.array([0, 0, 1.0])
  focal = rng.uniform(800, 1500, size=(num_samples, num_views))
  zoom = 256 / (focal * 2000 / distance[..., 0, 0])
  camera = np.zeros((num_samples, num_views, 3, 3))
  camera[..., 0, 0] = camera[..., 1, 1] = focal * zoom
  camera[..., :2, 2] = 128.0
  camera[..., 2, 2] = 1.0
  joints_2d = np.einsum("svij,svnj->svni", camera, joints_3d)
  joints_2d = joints_2d[..., :2] / joints_2d[..., 2:]
  rel_depth = np.array(geometry.relative_depth_target(joints_3d))
  if noise:
    joints_2d += rng.normal(size=joints_2d.shape) * 2.0
    rel_depth += rng.normal(size=rel_depth.shape) * 0.05
  confidence = rng.uniform(0.3, 1.0, size=(num_samples, num_views, num_joints))
  batch = {k: v.astype(np.float32) for k, v in dict(
      joints_2d=joints_2d, rel_depth=rel_depth, camera=camera, confidence=confidence).items()}
  return dict(batch, joints_3d=joints_3d)


def _jax_loss(joints_2d, rel_depth, camera, confidence):
  poses, _, valid = geometry.reconstruct(joints_2d, rel_depth, camera)
  return losses.multiview_consistency_loss(poses, confidence, valid)


_jax_loss_and_grad = jax.jit(jax.value_and_grad(_jax_loss, argnums=(0, 1)))


def _numpy_reconstruct(joints_2d, rel_depth, camera):
  """One view: docs/method.md section 3 with NumPy, returns (pose [J, 3], valid)."""
  k, l = H36M.scale_pair
  homogeneous = np.concatenate([joints_2d, np.ones((len(joints_2d), 1))], axis=1)
  rays = homogeneous @ np.linalg.inv(camera).T
  rays = rays / rays[:, 2:]
  (xk, yk), (xl, yl) = rays[k, :2], rays[l, :2]
  zk, zl = rel_depth[k], rel_depth[l]
  a = (xk - xl)**2 + (yk - yl)**2
  b = 2 * (zk * (xk * xk + yk * yk - xk * xl - yk * yl)
           + zl * (xl * xl + yl * yl - xk * xl - yk * yl))
  c = (xk * zk - xl * zl)**2 + (yk * zk - yl * zl)**2 + (zk - zl)**2 - 1.0
  discriminant = b * b - 4 * a * c
  valid = a > 1e-10 and discriminant >= 0
  depth = (-b + np.sqrt(max(discriminant, 0.0))) / (2 * a) if a > 1e-10 else 0.0
  valid = valid and depth > 0
  return (depth + rel_depth)[:, None] * rays, valid


def _numpy_rigid_fit(source, target, weights):
  total = weights.sum()
  source_mean = weights @ source / total
  target_mean = weights @ target / total
  covariance = (weights[:, None] * (target - target_mean)).T @ (source - source_mean) / total
  u, _, vt = np.linalg.svd(covariance)
  correction = np.diag([1.0, 1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
  rotation = u @ correction @ vt
  return rotation, target_mean - rotation @ source_mean


def numpy_loss_and_pose_gradient(batch):
  """The same loss as the JAX path with per-sample / per-pair Python loops, and its gradient
  with respect to the reconstructed poses (the JAX path goes further, to the 2.5D inputs)."""
  num_samples, num_views = batch["confidence"].shape[:2]
  poses = np.zeros(batch["joints_2d"].shape[:-1] + (3,))
  valid = np.zeros((num_samples, num_views), bool)
  for s in range(num_samples):
    for v in range(num_views):
      poses[s, v], valid[s, v] = _numpy_reconstruct(
          batch["joints_2d"][s, v].astype(np.float64), batch["rel_depth"][s, v],
          batch["camera"][s, v])
  total, pairs = 0.0, 0
  gradient = np.zeros_like(poses)
  for s in range(num_samples):
    for v in range(num_views):
      for w in range(num_views):
        if v == w or not (valid[s, v] and valid[s, w]):
          continue
        weights = batch["confidence"][s, v] * batch["confidence"][s, w]
        rotation, translation = _numpy_rigid_fit(poses[s, w], poses[s, v], weights)
        residual = poses[s, v] - (poses[s, w] @ rotation.T + translation)
        num_joints = len(weights)
        total += np.sum(weights * np.abs(residual).sum(-1)) / num_joints
        direction = weights[:, None] * np.sign(residual) / num_joints
        gradient[s, v] += direction
        gradient[s, w] -= direction @ rotation
        pairs += 1
  return total / max(pairs, 1), gradient / max(pairs, 1)


def geometry_section(repeats: int, sizes) -> list[dict]:
  rows = []
  for num_samples in sizes:
    batch = multiview_batch(num_samples)
    args = [jnp.asarray(batch[k]) for k in ("joints_2d", "rel_depth", "camera", "confidence")]
    start = time.perf_counter()
    compiled = _jax_loss_and_grad.lower(*args).compile()
    compile_seconds = time.perf_counter() - start
    (jax_loss, _) = compiled(*args)
    jax_seconds = median_seconds(lambda: jax.block_until_ready(compiled(*args)), repeats)
    numpy_repeats = max(1, min(repeats, int(200 / num_samples)))
    numpy_loss, _ = numpy_loss_and_pose_gradient(batch)
    numpy_seconds = median_seconds(lambda: numpy_loss_and_pose_gradient(batch), numpy_repeats)
    rows.append(dict(
        section="geometry",
        case=f"reconstruct + L_MC + grad, {num_samples}x{NUM_VIEWS}x{H36M.num_joints}",
        views=num_samples * NUM_VIEWS, jax_compile_s=compile_seconds, jax_ms=jax_seconds * 1e3,
        numpy_loop_ms=numpy_seconds * 1e3, speedup=numpy_seconds / jax_seconds,
        loss_rel_diff=abs(float(jax_loss) - numpy_loss) / max(abs(numpy_loss), 1e-12)))
  return rows


def accuracy_section(num_samples: int) -> list[dict]:
  """float32 round trip: exact 3D -> (project, relative depth) -> reconstruct, vs float64 truth.

  The inputs are computed in float64 from the exact poses and rounded once to float32, as a
  data pipeline would deliver them; the error is that of `reconstruct` itself."""
  batch = multiview_batch(num_samples, seed=1, noise=False)
  joints_3d = batch["joints_3d"]
  k, l = H36M.scale_pair
  truth = joints_3d / np.linalg.norm(joints_3d[..., k, :] - joints_3d[..., l, :],
                                     axis=-1)[..., None, None]
  pose, _, valid = geometry.reconstruct(batch["joints_2d"], batch["rel_depth"], batch["camera"])
  error = np.abs(np.asarray(pose, np.float64) - truth).max(axis=(-2, -1)).ravel()
  return [dict(section="accuracy", case=f"reconstruct round trip, {error.size} views",
               valid_fraction=float(np.mean(valid)), median_abs_err=float(np.median(error)),
               p99_abs_err=float(np.percentile(error, 99)), max_abs_err=float(error.max()))]


# -------------------------------------------------------------------------------------- data


def data_section(workers: int, repeats: int) -> list[dict]:
  rows = []
  for size in (128, 256):
    config = synthetic.SyntheticConfig(image_size=size, num_views=4)
    synthetic.sample(config, "train_multiview", 0)  # warm caches (motion clips)
    count = max(2, repeats // 2)
    start = time.perf_counter()
    for index in range(count):
      synthetic.sample(config, "train_multiview", index)
    seconds = time.perf_counter() - start
    rows.append(dict(section="data", case=f"render {size}px, 1 thread",
                     views_per_s=count * config.num_views / seconds))
  # The "ws" batch: labeled images with 2D labels, multi-view images without labels.
  spec = pipeline.BatchSpec(labeled=32, multiview=8, num_views=4)
  source = sources.synthetic_source(synthetic.SyntheticConfig(image_size=128))
  iterator = pipeline.batches(source, spec, workers=workers, prefetch=2)
  next(iterator)
  start = time.perf_counter()
  num_batches = 3
  for _ in range(num_batches):
    next(iterator)
  batch_seconds = (time.perf_counter() - start) / num_batches
  images = spec.labeled + spec.multiview * spec.num_views
  rates = {f"pipeline 32 + 8x4 @128px rendered on the fly, {workers} threads": batch_seconds}
  with tempfile.TemporaryDirectory() as data_dir:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    from posejax.data.render import synthetic_tfds  # pylint: disable=import-outside-toplevel
    tfds.disable_progress_bar()
    config = synthetic.SyntheticConfig(image_size=128)
    sizes = {"train_2d": 64, "train_multiview": 16, "test": 1}
    synthetic_tfds.prepare(config, sizes, data_dir)
    prepared = pipeline.batches(synthetic_tfds.prepared_source(config, sizes, data_dir), spec,
                                workers=workers, prefetch=2)
    next(prepared)
    start = time.perf_counter()
    for _ in range(10):
      next(prepared)
    rates[f"pipeline 32 + 8x4 @128px from a prepared data dir, {workers} threads"] = (
        time.perf_counter() - start) / 10
  train = model_case("hrnet_w8_small", 128, images, "float32", repeats=3)
  for case, seconds in rates.items():
    rows.append(dict(section="data", case=case, views_per_s=images / seconds,
                     train_img_s=train["fwd+bwd_img_s"],
                     pipeline_over_train=(images / seconds) / train["fwd+bwd_img_s"]))
  return rows


# ------------------------------------------------------------------------------------- model

# Dense peak FLOP/s by device kind (substring of jax.Device.device_kind), from the vendors' data
# sheets: (bfloat16 tensor cores, float32 matmuls, which XLA runs as TF32 by default on GPUs).
PEAK_FLOPS = {
    "H200": {"bfloat16": 989e12, "float32": 494e12},
    "H100": {"bfloat16": 989e12, "float32": 494e12},  # SXM; PCIe is 756 / 378
    "A100": {"bfloat16": 312e12, "float32": 156e12},
}


def peak_flops(device_kind: str, dtype: str) -> float | None:
  for name, peaks in PEAK_FLOPS.items():
    if name in device_kind:
      return peaks[dtype]
  return None


CPU_PEAK_MATMUL_SIZE = 2048  # large enough for both libraries' best kernels on every core


def cpu_matmul_peak(torch, dtype: str, size: int = CPU_PEAK_MATMUL_SIZE,
                    repeats: int = 5) -> tuple[float, str]:
  """(FLOP/s, which library) of the faster of JAX's and PyTorch's dense `size` x `size`
  product in `dtype` on this CPU, each the best of `repeats` after a warm-up.

  A CPU's data-sheet peak depends on its clock under load and on how many vector units it
  has, neither known here; a large matrix product is the most a convolution can hope for, so
  it is the yardstick for a fraction of peak on a CPU (torch's threads as the caller set them,
  XLA's thread pool on every core)."""
  rng = np.random.default_rng(0)
  data = rng.normal(size=(size, size)).astype(np.float32)
  x = jnp.asarray(data, jnp.dtype(dtype))
  product = jax.jit(lambda a, b: a @ b)
  t = torch.from_numpy(data).to(getattr(torch, dtype))
  runs = {"jax": lambda: product(x, x).block_until_ready(), "torch": lambda: torch.mm(t, t)}
  seconds = {}
  for name, run in runs.items():
    run()
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      run()
      times.append(time.perf_counter() - start)
    seconds[name] = min(times)
  fastest = min(seconds, key=seconds.get)
  return 2 * size**3 / seconds[fastest], fastest


def matmul_flops(function: Callable, *args) -> float:
  """FLOPs of the convolutions and matrix products that `function(*args)` traces (2 per MAC).

  The usual count for a fraction of peak, and the same on every backend. XLA's cost analysis is
  not: on a GPU the convolutions are cuDNN custom calls it does not count (it reported 0.12
  GFLOP per HRNet-W32 forward at 256 px on an H100, against 20.4 on a CPU).
  """
  return _jaxpr_flops(jax.make_jaxpr(function)(*args).jaxpr)


def _jaxpr_flops(jaxpr) -> float:
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "conv_general_dilated":  # each output: a sum over the kernel's other dimensions
      out, kernel = eqn.outvars[0].aval, eqn.invars[1].aval
      out_features = kernel.shape[eqn.params["dimension_numbers"].rhs_spec[0]]
      # The input gradient of a strided convolution is a convolution of the cotangent with
      # zeros between its values (lhs_dilation); only 1 in prod(lhs_dilation) of its products
      # has a non-zero input, so it does the forward convolution's work, as cuDNN's does.
      zeros_between = np.prod(eqn.params.get("lhs_dilation") or (1,))
      total += 2.0 * np.prod(out.shape) * np.prod(kernel.shape) / out_features / zeros_between
    elif name == "dot_general":
      (contracting, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval
      total += 2.0 * np.prod(eqn.outvars[0].aval.shape) * np.prod(
          [lhs.shape[d] for d in contracting])
    repeats = eqn.params.get("length", 1)  # scan bodies run `length` times
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          total += repeats * _jaxpr_flops(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          total += repeats * _jaxpr_flops(sub)
  return total


def model_case(name: str, image_size: int, batch_size: int, dtype: str, repeats: int) -> dict:
  model = models.create_model(name, dtype=jnp.dtype(dtype), rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (batch_size, image_size, image_size, 3), np.uint8))
  cameras = jnp.broadcast_to(jnp.array([[2.0 * image_size, 0, image_size / 2],
                                        [0, 2.0 * image_size, image_size / 2], [0, 0, 1]]),
                             (batch_size, 3, 3))

  def forward(params, rest, images, cameras):
    predictions, _ = models.apply(graphdef, nnx.merge_state(params, rest), images, cameras,
                                  train=False)
    return predictions

  def loss(params, rest, images, cameras):
    predictions, new_rest = models.apply(graphdef, nnx.merge_state(params, rest), images,
                                         cameras, train=True)
    value = sum(jnp.mean(jnp.square(v)) for k, v in predictions.items() if k != "valid")
    return value, new_rest

  forward_and_backward = jax.value_and_grad(loss, has_aux=True)
  row = dict(section="model", case=f"{name} {image_size}px {dtype}", batch=batch_size,
             device=jax.devices()[0].device_kind)
  peak = peak_flops(jax.devices()[0].device_kind, dtype)
  for label, function in (("fwd", forward), ("fwd+bwd", forward_and_backward)):
    start = time.perf_counter()
    compiled = jax.jit(function).lower(params, rest, images, cameras).compile()
    row[f"{label}_compile_s"] = time.perf_counter() - start
    jax.block_until_ready(compiled(params, rest, images, cameras))  # warm-up
    seconds = median_seconds(
        lambda: jax.block_until_ready(compiled(params, rest, images, cameras)), repeats)
    row[f"{label}_img_s"] = batch_size / seconds
    flops = matmul_flops(function, params, rest, images, cameras)
    row[f"{label}_gflop_img"] = flops / batch_size / 1e9
    if peak:
      row[f"{label}_peak_frac"] = flops / seconds / peak
  return row


def model_section(cases, repeats: int) -> list[dict]:
  rows = []
  for case in cases:
    name, size, batch, dtype = case.split(":")
    print(f"  measuring {case} ...", flush=True)  # W32 on a CPU takes minutes
    rows.append(model_case(name, int(size), int(batch), dtype, repeats))
  return rows


# ------------------------------------------------------------------------------------- train


def train_config(case: str):
  """"objective:model:image_size:labeled:multiview[:dtype]" -> the synthetic config with that
  objective as its one stage and those fields."""
  fields = case.split(":")
  try:
    objective, name, image_size, labeled, multiview = fields[:5]
    image_size, labeled, multiview = int(image_size), int(labeled), int(multiview)
    (dtype,) = fields[5:] or ["float32"]
    jnp.dtype(dtype)
    if "+" in objective:  # one stage per case
      raise ValueError
  except (ValueError, TypeError):
    raise ValueError(f"Train case {case!r} is not objective:model:image_size:labeled:multiview"
                     "[:dtype], e.g. ws:hrnet_w8_small:128:32:8 or ws:hrnet_w32:256:32:8:"
                     "bfloat16") from None
  config = synthetic_config.get_config(objective)  # an unknown objective: its ValueError
  config.model.update(name=name, dtype=dtype)
  config.data.image_size = image_size
  config.batch.update(labeled=labeled, multiview=multiview if objective != "2d" else 0,
                      num_views=NUM_VIEWS)
  return config


def objective_of(config) -> str:
  """The objective of a train case's config (its one stage)."""
  return loop.stages_of(config)[0].objective


def case_name(config) -> str:
  batch = config.batch
  views = f"+{batch.multiview}x{batch.num_views}" if batch.multiview else ""
  return (f"{objective_of(config)} {config.model.name} {config.data.image_size}px "
          f"{config.model.dtype} {batch.labeled}{views}")


def images_per_step(config) -> int:
  return config.batch.labeled + config.batch.multiview * config.batch.num_views


def build_train_case(config, devices, cpu_fusions: str = "xla"):
  """The step the training loop builds for the config's (first) stage, on `devices`.

  Returns (train_step, state, batch, mesh): the pure step (TrainState, batch) -> (TrainState,
  metrics), its state placed on the mesh, and the config's first batch, sharded."""
  task = get_task(config)
  stage = loop.stages_of(config)[0]
  model, frozen = task.create_model(nnx.Rngs(config.seed)), task.create_frozen()
  tx, schedule = optim.make_optimizer(stage.optim)
  graphdef, state = step_lib.create_train_state(model, tx, frozen)
  mesh = step_lib.make_mesh(devices)
  train_step = step_lib.make_train_step(
      graphdef, tx, task.loss_terms(stage.objective), config.loss_weights,
      batch_keys=task.batch_keys(stage.objective),
      frozen_graphdef=step_lib.frozen_graphdef(frozen),
      prepare=task.prepare_batch(stage.objective), learning_rate=schedule)
  source = sources.synthetic_source(synthetic.config_from(config.data))
  batch = pipeline.make_batch(source, task.batch_spec(stage.objective), step=0)
  return (train_step, jax.device_put(state, step_lib.shardings(mesh)[0]),
          step_lib.shard_batch(batch, mesh), mesh)


def time_steps(step, state, batch, repeats: int) -> dict:
  """Compile seconds of the jitted `step` and the medians over `repeats` steps of step_ms (the
  call until its results are ready) and dispatch_ms (until the call returns: the host's
  share, which a loop cannot hide behind the device's; near step_ms, the host limits); also
  the state the steps left and the compiled step."""
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_seconds = time.perf_counter() - start
  state, _ = jax.block_until_ready(compiled(state, batch))  # warm-up
  times, dispatches = [], []
  for _ in range(repeats):  # the state is donated: each step consumes the previous one
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    dispatches.append(time.perf_counter() - start)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  return dict(compile_s=compile_seconds, step_ms=statistics.median(times) * 1e3,
              dispatch_ms=statistics.median(dispatches) * 1e3, state=state, compiled=compiled)


def train_case(config, devices, repeats: int, cpu_fusions: str = "xla") -> dict:
  """Compile time and steady-state images/s of the config's jitted train step on `devices`
  (`build_train_case`), called on the state's leaves as the loop calls it."""
  train_step, state, batch, mesh = build_train_case(config, devices, cpu_fusions)
  leaves, state_def = jax.tree_util.tree_flatten(state)
  step = step_lib.jit_train_step(step_lib.on_leaves(train_step, state_def), mesh, cpu_fusions)
  timing = time_steps(step, leaves, batch, repeats)
  images = images_per_step(config)
  row = dict(section="train", case=case_name(config), devices=len(devices),
             device=devices[0].device_kind, cpu_fusions=cpu_fusions,
             compile_s=timing["compile_s"], step_ms=timing["step_ms"],
             dispatch_ms=timing["dispatch_ms"], train_img_s=images / timing["step_ms"] * 1e3)
  # The global batch's, all devices together. Traced unjitted: JAX refuses a jit with compiler
  # options inside another trace.
  flops = matmul_flops(train_step, jax.tree_util.tree_unflatten(state_def, timing["state"]),
                       batch)
  row["gflop_img"] = flops / images / 1e9
  peak = peak_flops(devices[0].device_kind, config.model.dtype)
  if peak:
    row["peak_frac"] = flops / (timing["step_ms"] / 1e3) / (peak * len(devices))
  return row


def pipeline_rate(source, config, workers: int, num_batches: int) -> float:
  """Images/s of `pipeline.batches` assembling the config's batches from `source`."""
  spec = get_task(config).batch_spec(objective_of(config))
  iterator = pipeline.batches(source, spec, workers=workers, prefetch=2)
  try:
    next(iterator)  # thread start-up, motion clips, file handles
    start = time.perf_counter()
    for _ in range(num_batches):
      next(iterator)
    return num_batches * images_per_step(config) / (time.perf_counter() - start)
  finally:
    iterator.close()


def _device_counts(requested) -> list[int]:
  available = os.cpu_count() if jax.default_backend() == "cpu" else jax.device_count()
  counts = [available if count == "all" else int(count) for count in requested]
  return sorted(set(counts))


def _worker_rows(count: int, cases, repeats: int, fusions) -> list[dict]:
  """The train cases on `count` fake CPU devices, measured in a fresh process."""
  flags_ = [f for f in os.environ.get("XLA_FLAGS", "").split()
            if not f.startswith("--xla_force_host_platform_device_count")]
  env = dict(os.environ, XLA_FLAGS=" ".join(
      flags_ + [f"--xla_force_host_platform_device_count={count}"]))
  command = [sys.executable, "-m", "experiments.benchmark", f"--train_worker={count}",
             f"--train_configs={','.join(cases)}", f"--repeats={repeats}",
             f"--cpu_fusions={','.join(fusions)}"]
  result = subprocess.run(command, env=env, capture_output=True, text=True, check=False,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  if result.returncode:
    raise RuntimeError(f"Train benchmark on {count} devices failed ({' '.join(command)}):\n"
                       f"{result.stderr[-3000:]}")
  return json.loads(result.stdout.strip().splitlines()[-1])


def train_worker(count: int, cases, repeats: int, fusions=("xla",)) -> list[dict]:
  devices = jax.devices()
  if len(devices) < count:
    raise ValueError(f"{count} devices requested, {len(devices)} available")
  rows = []
  for case, cpu_fusions in itertools.product(cases, fusions):
    print(f"  measuring {case} ({cpu_fusions} fusions) on {count} devices ...",
          file=sys.stderr, flush=True)
    rows.append(train_case(train_config(case), devices[:count], repeats, cpu_fusions))
  return rows


def train_section(cases, device_counts, repeats: int, workers: int,
                  data_dir: str | None, fusions=("xla",)) -> list[dict]:
  configs = [train_config(case) for case in cases]  # a bad case fails before anything runs
  # Accelerators: subsets of this process's devices. CPU: the fake device count is fixed when
  # JAX starts, so one process per count.
  run = _worker_rows if jax.default_backend() == "cpu" else train_worker
  rows = [row for count in _device_counts(device_counts)
          for row in run(count, cases, repeats, fusions)]
  rates = {}
  for config in configs:
    name = case_name(config)
    data = synthetic.config_from(config.data)
    rates[name] = dict(rendered_img_s=pipeline_rate(sources.synthetic_source(data), config,
                                                    workers, num_batches=2))
    if data_dir:
      from posejax.data.render import synthetic_tfds  # pylint: disable=import-outside-toplevel
      source = synthetic_tfds.prepared_source(data, dict(config.data.sizes),
                                              os.path.expanduser(data_dir))
      rates[name]["prepared_img_s"] = pipeline_rate(source, config, workers, num_batches=10)
  return [dict(row, **rates[row["case"]]) for row in rows]


# ------------------------------------------------------------------------------------- torch

TORCH_OUTPUTS = 34  # the synthetic job's head: 17 heatmaps + 17 depth maps


class MapNet(nnx.Module):
  """An HRNet and a 1x1 convolution (with bias) to `outputs` maps: the authors' pose HRNet
  layout, which their final_layer shares."""

  def __init__(self, config: models.HRNetConfig, outputs: int, *, dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.backbone = models.HRNet(config, dtype=dtype, rngs=rngs)
    self.head = nnx.Conv(self.backbone.out_channels, outputs, (1, 1), dtype=dtype, rngs=rngs)
    self.dtype = dtype

  def __call__(self, images):
    # Parameters in float32, computation in `dtype`, the maps back in float32 for the loss:
    # PoseNet's mixed precision, and what torch.autocast does on the other side.
    return self.head(self.backbone(images.astype(self.dtype))).astype(jnp.float32)


def compiled_map_step(config: models.HRNetConfig, image_size: int, batch_size: int,
                      dtype: str = "float32", cpu_fusions: str = "xla", *,
                      compiler_options: dict | None = None, count_flops: bool | None = None):
  """The jitted train step (forward, MSE on the maps, backward, Adam) on random inputs, the
  network computing in `dtype` (float32 parameters, Adam and loss), compiled with
  `step_lib.CPU_FUSIONS[cpu_fusions]` on a CPU, or with `compiler_options` when given (XLA
  options of a study, e.g. experiments.studies.xla_cpu_options).

  Returns (step, compile seconds, parameter count); each `step()` runs one step on the state
  the previous one left (donated) and returns the loss; `step.flops` is the step's counted
  FLOPs when `count_flops`, by default where the device's peak is known (else None)."""
  model = MapNet(config, TORCH_OUTPUTS, dtype=jnp.dtype(dtype), rngs=nnx.Rngs(0))
  model.train()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tx = optax.adam(1e-3)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(batch_size, image_size, image_size, 3)), jnp.float32)
  targets = jnp.asarray(rng.normal(size=(batch_size, image_size // 4, image_size // 4,
                                         TORCH_OUTPUTS)), jnp.float32)

  def train_step(state, batch):
    params, rest, opt_state = state
    images, targets = batch

    def loss(params):
      net = nnx.merge(graphdef, params, rest, copy=True)  # BatchNorm updates its statistics
      value = jnp.mean(jnp.square(net(images) - targets))
      return value, nnx.state(net, nnx.Not(nnx.Param))
    (value, rest), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), rest, opt_state), value

  state = (params, rest, tx.init(params))
  # For a fraction of peak, by default where a peak is known (a GPU): a trace of the whole step.
  if count_flops is None:
    count_flops = peak_flops(jax.devices()[0].device_kind, dtype) is not None
  flops = matmul_flops(train_step, state, (images, targets)) if count_flops else None
  leaves, state_def = jax.tree_util.tree_flatten(state)  # called on leaves, as the loop does
  start = time.perf_counter()
  options = (compiler_options if compiler_options is not None
             else step_lib.compiler_options(cpu_fusions, jax.default_backend()))
  compiled = jax.jit(step_lib.on_leaves(train_step, state_def), donate_argnums=0,
                     compiler_options=options).lower(leaves, (images, targets)).compile()
  compile_seconds = time.perf_counter() - start

  def step():  # donated: each step consumes the previous state
    new_leaves, value = jax.block_until_ready(compiled(leaves, (images, targets)))
    leaves[:] = new_leaves
    return value

  step.flops = flops  # of one step, the whole batch; None when not counted
  return step, compile_seconds, models.count_parameters(model)


def _posejax_map_step(config: models.HRNetConfig, image_size: int, batch_size: int,
                      repeats: int, dtype: str = "float32", cpu_fusions: str = "xla") -> dict:
  """Seconds per jitted train step (forward, MSE, backward, Adam), compile time and the
  step's counted FLOPs."""
  step, compile_seconds, params = compiled_map_step(config, image_size, batch_size, dtype,
                                                    cpu_fusions, count_flops=True)
  step()  # warm-up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    value = step()
    times.append(time.perf_counter() - start)
  if not np.isfinite(float(value)):
    raise FloatingPointError(f"posejax loss {float(value)}")
  return dict(seconds=statistics.median(times), compile_s=compile_seconds, params=params,
              flops=step.flops)


def torch_device(torch) -> str:
  """Where the PyTorch side runs: "cuda" when JAX runs on a GPU and PyTorch sees one (both
  sides on the same kind of device), else "cpu"."""
  return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def _torch_map_step(torch, pose_hrnet, config: models.HRNetConfig, image_size: int,
                    batch_size: int, repeats: int, dtype: str, device: str = "cpu") -> dict:
  """Seconds per eager train step of the authors' model with the same layers on `device`;
  bfloat16 under torch.autocast (float32 parameters, Adam and loss), PyTorch's automatic mixed
  precision (AMP)."""
  torch.manual_seed(0)
  model = authors_hrnet.build_authors_model(pose_hrnet, config, TORCH_OUTPUTS).to(device)
  model.train()
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  images = torch.randn(batch_size, 3, image_size, image_size).to(device)
  targets = torch.randn(batch_size, TORCH_OUTPUTS, image_size // 4, image_size // 4).to(device)

  def step():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
      maps = model(images).float()
    if maps.shape != targets.shape:  # mse_loss would broadcast
      raise ValueError(f"The authors' model gave maps of shape {tuple(maps.shape)}")
    loss = torch.nn.functional.mse_loss(maps, targets)
    loss.backward()
    optimizer.step()
    return loss.item()  # waits for the device

  # Warm-up: oneDNN primitives or cuDNN's autotuning (benchmark mode), Adam's state.
  for _ in range(2 if device == "cuda" else 1):
    step()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    value = step()
    times.append(time.perf_counter() - start)
  if not np.isfinite(value):
    raise FloatingPointError(f"PyTorch loss {value}")
  return dict(seconds=statistics.median(times),
              params=sum(p.numel() for p in model.parameters()))


def torch_skip_reason(pose_hrnet_path: str | None) -> str | None:
  """Why the torch section cannot run (what to install / pass), or None."""
  missing = []
  try:
    import torch  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    missing.append('PyTorch is not installed: pip install "posejax[torch]" (a CPU build is '
                   "enough)")
  if not pose_hrnet_path:
    missing.append("no --pose_hrnet: pass --pose_hrnet=/path/to/deep-high-resolution-net."
                   "pytorch/lib/models/pose_hrnet.py (the HRNet authors' model, not shipped)")
  elif not os.path.isfile(pose_hrnet_path):
    missing.append(f"--pose_hrnet={pose_hrnet_path} is not a file: pass the HRNet authors' "
                   "deep-high-resolution-net.pytorch/lib/models/pose_hrnet.py")
  return "; ".join(missing) or None


def torch_section(model_names, sizes, batch_size: int, repeats: int,
                  pose_hrnet_path: str | None, threads: int | None = None,
                  dtypes=("float32",), fusions=("xla",)) -> list[dict]:
  """posejax vs the authors' PyTorch HRNet, one row per model, size, compute dtype and
  posejax's CPU fusions (PyTorch timed once for them all), or one "skipped" row saying what
  is missing.

  Run it on an otherwise idle machine: PyTorch's OpenMP threads wait for each other at every
  operation, and a core taken by another process stalls them all (on 2 loaded cores a step of
  the small model at 64 px took 9 s on 2 threads, 0.04 s on 1), far more than it slows XLA's
  thread pool. The rows carry the 1-minute load average at their start.
  """
  unknown = sorted(set(dtypes) - set(TORCH_DTYPES))
  if unknown:  # a typo is the user's to fix whether or not the section can run
    raise ConfigError(f"--torch_dtypes: {unknown} not in {list(TORCH_DTYPES)}")
  for cpu_fusions in fusions:
    step_lib.check_cpu_fusions(cpu_fusions)
  reason = torch_skip_reason(pose_hrnet_path)
  if reason:
    print(f"  torch section skipped: {reason}", flush=True)
    return [dict(section="torch", case="skipped", reason=reason)]
  import torch  # pylint: disable=import-outside-toplevel
  configs = {name: models.BACKBONES[name] for name in model_names}  # unknown: KeyError first
  pose_hrnet = authors_hrnet.load_pose_hrnet(pose_hrnet_path)
  torch.set_num_threads(threads or os.cpu_count())
  device = torch_device(torch)
  # On a GPU, cuDNN's autotuned convolutions: what the authors' training sets
  # (CUDNN.BENCHMARK), as JAX autotunes XLA's. Both run float32 convolutions as TF32 by
  # default (torch.backends.cudnn.allow_tf32; XLA's default precision).
  torch.backends.cudnn.benchmark = device == "cuda"
  peaks = {}
  for dtype in dtypes:  # (FLOP/s, where the figure comes from)
    sheet = peak_flops(jax.devices()[0].device_kind, dtype)
    if sheet:
      peaks[dtype] = (sheet, "data sheet")
    elif jax.default_backend() == "cpu":
      flops, library = cpu_matmul_peak(torch, dtype)
      size = CPU_PEAK_MATMUL_SIZE
      peaks[dtype] = (flops, f"{library} {size}x{size} matmul, measured")
    else:
      peaks[dtype] = (None, "unknown")
  rows = []
  for name, config in configs.items():
    for size, dtype in itertools.product(sizes, dtypes):
      print(f"  measuring {name} {size}px {dtype} ...", flush=True)
      load = os.getloadavg()[0]
      ours = {cpu_fusions: _posejax_map_step(config, int(size), batch_size, repeats, dtype,
                                             cpu_fusions) for cpu_fusions in fusions}
      theirs = _torch_map_step(torch, pose_hrnet, config, int(size), batch_size, repeats, dtype,
                               device)
      torch_rate = batch_size / theirs["seconds"]
      for cpu_fusions, timing in ours.items():
        posejax_rate = batch_size / timing["seconds"]
        row = dict(
            section="torch", case=f"{name} {size}px {dtype}", cpu_fusions=cpu_fusions,
            batch=batch_size, params=timing["params"], torch_params=theirs["params"],
            posejax_compile_s=timing["compile_s"], posejax_img_s=posejax_rate,
            torch_img_s=torch_rate, posejax_over_torch=posejax_rate / torch_rate,
            torch_device=device, torch_threads=torch.get_num_threads(), load_avg_1m=load,
            torch=torch.__version__)
        row.update(gflop_img=timing["flops"] / batch_size / 1e9)
        peak, peak_from = peaks[dtype]
        if peak:  # the same layers: the same FLOPs on both sides
          row.update(peak_tflops=peak / 1e12, peak_from=peak_from,
                     posejax_peak_frac=timing["flops"] / timing["seconds"] / peak,
                     torch_peak_frac=timing["flops"] / theirs["seconds"] / peak)
        rows.append(row)
  return rows


SECTIONS = {
    "data": lambda: data_section(_DATA_WORKERS.value, _REPEATS.value),
    "model": lambda: model_section(_MODELS.value, min(_REPEATS.value, 5)),
    "accuracy": lambda: accuracy_section(max(int(s) for s in _SIZES.value)),
    "geometry": lambda: geometry_section(_REPEATS.value, [int(s) for s in _SIZES.value]),
    "train": lambda: train_section(_TRAIN_CONFIGS.value, _TRAIN_DEVICES.value,
                                   min(_REPEATS.value, 5), _DATA_WORKERS.value,
                                   _TRAIN_DATA_DIR.value, _CPU_FUSIONS.value),
    "torch": lambda: torch_section(_TORCH_MODELS.value, _TORCH_SIZES.value, _TORCH_BATCH.value,
                                   min(_REPEATS.value, 5), authors_hrnet.POSE_HRNET.value,
                                   _TORCH_THREADS.value, _TORCH_DTYPES.value,
                                   _CPU_FUSIONS.value),
}


def format_table(rows: list[dict]) -> str:
  columns = list(dict.fromkeys(key for row in rows for key in row))
  cells = [[_format(row.get(c, "")) for c in columns] for row in rows]
  widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
  lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)),
           "  ".join("-" * w for w in widths)]
  lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
  return "\n".join(lines)


def _format(value) -> str:
  if isinstance(value, float):
    return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.2f}"
  return str(value)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # keep the tables readable (TFDS logs every shard)
  if _TRAIN_WORKER.value is not None:
    print(json.dumps(train_worker(_TRAIN_WORKER.value, _TRAIN_CONFIGS.value, _REPEATS.value,
                                  _CPU_FUSIONS.value)))
    return
  unknown = set(_SECTIONS.value) - set(SECTIONS)
  if unknown:
    raise app.UsageError(f"Unknown sections {sorted(unknown)}; choose from {sorted(SECTIONS)}")
  print(f"devices: {jax.devices()}  cpu: {platform.processor() or platform.machine()}  "
        f"jax {jax.__version__}")
  rows = []
  for name in _SECTIONS.value:
    section_rows = SECTIONS[name]()
    print(f"\n[{name}]\n{format_table(section_rows)}", flush=True)
    rows += section_rows
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  app.run(main)
