"""The pseudo-label regulariser (docs/method.md section 4): 2D labels for the multi-view images.

Before weak supervision starts, the 2D pose model of stage 1 runs ONCE over every view of the
multi-view training stream; its joints with confidence above a threshold (tau = 0.5) become 2D
labels, and L_H applies to them throughout stage 2. It matters where the multi-view images look
unlike the 2D-labeled ones (studio captures with constant backgrounds): the 2D then keeps
learning on the images that the 3D losses see. The labels are the model's, never the dataset's.
"""

from __future__ import annotations

import functools
import os
import time

import jax
import numpy as np
from flax import nnx

from posejax.data.batching.sources import Source
from posejax.models.posenet import apply

FILENAME = "pseudo_labels.npz"


@functools.partial(jax.jit, static_argnums=0)
def _predict_2d(graphdef, state, images, cameras):
  predictions, _ = apply(graphdef, state, images, cameras, train=False)
  return predictions["joints_2d"], predictions["confidence"]


def stream_size(source: Source, stream: str = "train_multiview") -> int:
  """How many samples a finite stream holds.

  Raises:
    ValueError: the source renders without end (pseudo labels are computed once, for a finite
      set: use data.in_memory, a prepared data dir or a dataset).
  """
  size = getattr(source, "sizes", {}).get(stream)
  if size is None:
    raise ValueError(f"Pseudo labels need a finite {stream!r} stream, and this source renders "
                     "without end: set data.in_memory=True (with data.sizes), use a prepared "
                     "data dir or a dataset")
  return size


def predict(model: nnx.Module, source: Source, count: int, *, threshold: float = 0.5,
            batch_size: int = 64, log_every_s: float = 30.0) -> dict[str, np.ndarray]:
  """The model's 2D joints on every view of the first `count` multi-view training samples.

  Views are predicted in fixed batches of `batch_size` (the last one padded, so one
  compilation serves all), in eval mode (BatchNorm running averages).

  Returns:
    joints_2d [count, V, J, 2] crop pixels, joints_2d_mask [count, V, J] (confidence above
    `threshold`; False for the views a sample lacks or masks), confidence [count, V, J]; V is
    the most views a sample has.
  """
  graphdef, state = nnx.split(model)
  owners, images, cameras, outputs = [], [], [], []
  started = last_report = time.perf_counter()

  def run(images, cameras):
    padding = batch_size - len(images)
    images = np.concatenate([np.stack(images), np.zeros((padding,) + images[0].shape,
                                                        images[0].dtype)])
    cameras = np.concatenate([np.stack(cameras), np.tile(np.eye(3, dtype=np.float32),
                                                         (padding, 1, 1))])
    joints, confidence = jax.device_get(_predict_2d(graphdef, state, images, cameras))
    outputs.append((joints[:batch_size - padding], confidence[:batch_size - padding]))

  view_masks = []
  for index in range(count):
    sample = source("train_multiview", index)
    views = len(sample["image"])
    view_masks.append(np.asarray(sample.get("view_mask", np.ones(views, bool)), bool))
    owners += [(index, v) for v in range(views)]
    images += list(sample["image"])
    cameras += list(np.asarray(sample["camera"], np.float32))
    while len(images) >= batch_size:
      run(images[:batch_size], cameras[:batch_size])
      images, cameras = images[batch_size:], cameras[batch_size:]
    if time.perf_counter() - last_report > log_every_s:
      last_report = time.perf_counter()
      rate = (index + 1) / (last_report - started)
      print(f"pseudo labels: {index + 1}/{count} samples, ETA "
            f"{(count - index - 1) / rate / 60:.1f} min", flush=True)
  if images:
    run(images, cameras)

  joints = np.concatenate([j for j, _ in outputs])
  confidence = np.concatenate([c for _, c in outputs])
  max_views = max(len(m) for m in view_masks)
  out = {"joints_2d": np.zeros((count, max_views) + joints.shape[1:], np.float32),
         "confidence": np.zeros((count, max_views) + confidence.shape[1:], np.float32)}
  index, view = np.array(owners).T
  out["joints_2d"][index, view] = joints
  out["confidence"][index, view] = confidence
  present = np.zeros((count, max_views), bool)
  present[index, view] = np.concatenate(view_masks)
  out["joints_2d_mask"] = (out["confidence"] > threshold) & present[..., None]
  return out


def load(path: str) -> dict[str, np.ndarray]:
  """The arrays of a pseudo_labels.npz (joints_2d, joints_2d_mask, confidence, threshold)."""
  with np.load(path) as stored:
    return {k: stored[k] for k in stored.files}


def load_or_predict(workdir: str, model: nnx.Module, source: Source, *, threshold: float,
                    batch_size: int, write: bool = True) -> dict[str, np.ndarray]:
  """The workdir's pseudo labels: read from workdir/pseudo_labels.npz when a run made them
  before (so a resumed run trains on the same labels), else predicted with `model` and, with
  `write` (process 0 of a multi-process run), saved there.

  Raises:
    ValueError: the file's labels do not fit the source or the threshold (another config
      wrote them: delete the file to predict again).
  """
  path = os.path.join(workdir, FILENAME)
  count = stream_size(source)
  if os.path.exists(path):
    labels = load(path)
    if len(labels["joints_2d"]) != count or float(labels["threshold"]) != threshold:
      raise ValueError(
          f"{path} holds pseudo labels of {len(labels['joints_2d'])} samples at threshold "
          f"{float(labels['threshold'])}, but this run has {count} at {threshold}: delete the "
          "file to predict them again with the current model")
    print(f"pseudo labels: read {path}", flush=True)
  else:
    labels = predict(model, source, count, threshold=threshold, batch_size=batch_size)
    labels["threshold"] = np.float64(threshold)
    if write:
      partial = path + ".partial.npz"  # a run killed while writing leaves no half file behind
      np.savez(partial, **labels)
      os.replace(partial, path)
  kept = labels["joints_2d_mask"].mean()
  print(f"pseudo labels: {count} multi-view samples, {100 * kept:.1f} % of the joints above "
        f"confidence {threshold}", flush=True)
  return labels


def quality(labels: dict[str, np.ndarray], source: Source) -> tuple[np.ndarray, np.ndarray]:
  """(pixel error, confidence) of every pseudo label whose joint the dataset labels too: how
  good the labels are, where the multi-view data has 2D labels to check them (training never
  reads those; experiments.pseudo_label_quality prints this)."""
  errors, confidences = [], []
  for index in range(len(labels["joints_2d"])):
    sample = source("train_multiview", index)
    views = len(sample["image"])
    labeled = np.asarray(sample["joints_2d_mask"], bool)
    labeled &= np.asarray(sample.get("view_mask", np.ones(views, bool)), bool)[:, None]
    error = np.linalg.norm(labels["joints_2d"][index, :views] - sample["joints_2d"], axis=-1)
    errors.append(error[labeled])
    confidences.append(labels["confidence"][index, :views][labeled])
  return np.concatenate(errors), np.concatenate(confidences)


def format_quality(errors: np.ndarray, confidences: np.ndarray, thresholds) -> str:
  """A table of `quality`: per threshold, the share of joints kept and their pixel error."""
  lines = [f"{len(errors)} labeled joints; all: mean error {errors.mean():.2f} px, "
           f"median {np.median(errors):.2f} px",
           f"{'threshold':>10}{'kept':>8}{'kept: mean px':>15}{'median px':>11}"
           f"{'dropped: mean px':>18}"]
  for threshold in thresholds:
    kept = confidences > threshold
    mean = lambda x: f"{x.mean():.2f}" if len(x) else "-"  # noqa: E731
    median = f"{np.median(errors[kept]):.2f}" if kept.any() else "-"
    lines.append(f"{threshold:>10.2f}{100 * kept.mean():>7.1f}%{mean(errors[kept]):>15}"
                 f"{median:>11}{mean(errors[~kept]):>18}")
  return "\n".join(lines)
