"""Training batches: a 2D-labeled stream plus a multi-view stream (docs/method.md section 5).

A batch is a dict with up to two sub-dicts (keys in docs/design.md):
- "labeled": [B, ...] single images: image [B, H, W, 3] uint8, camera [B, 3, 3] and the label
  keys the task's objective asks for (joints_2d [B, J, 2], joints_2d_mask [B, J], ...).
- "multiview": [S, V, ...] views of S scenes: image, camera, view_mask [S, V] and the keys the
  objective asks for. Weak supervision asks for none: it cannot read what is not there. The
  one exception is the pseudo-label regulariser (docs/method.md section 4): with
  `pseudo_labels_as_2d`, a source wrapped by `sources.with_pseudo_labels` gives joints_2d /
  joints_2d_mask that the stage-1 2D model predicted, never the dataset's own.
Which keys a stream carries is the task's choice (`BatchSpec.labeled_keys`,
`multiview_keys`); the pipeline knows no task.
With augmentation on, each stream also carries "augmentation": [B, 3, 3] / [S, V, 3, 3] crop
matrices sampled here (one flip decision per multi-view sample, scale and rotation per view);
the jitted train step applies them with `augment.augment_batch` (on the device: measured
faster than warping on the host, BUILD_NOTES.md).

Batches are a pure function of (config, step, process): the global batch of a step holds fixed
sample indices, each with its own view choice and augmentation (a function of the sample's
index), and process p of P takes its contiguous 1/P slice, so a run resumes exactly
from any step and the hosts of a pod read disjoint data without talking to each other.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import zlib
from collections.abc import Iterator

import numpy as np

from posejax.data.batching import augment
from posejax.data.batching.sources import PSEUDO_LABEL_KEYS, Source

_AUGMENTATION_SALT = 0x5A17
IMAGE_KEYS = ("image", "camera")
LABEL_2D_KEYS = ("joints_2d", "joints_2d_mask")


@dataclasses.dataclass(frozen=True)
class BatchSpec:
  """Global batch composition.

  Attributes:
    labeled: single images per global batch (B), from the stream "train_2d".
    multiview: multi-view samples per global batch (S), from "train_multiview".
    num_views: views per multi-view sample (V): a random V-subset when a sample has more,
      padding with view_mask False when it has fewer.
    labeled_keys: the keys of a labeled sample that the batch carries.
    multiview_keys: the keys of a multi-view sample that the batch carries (view_mask is
      always added).
    pseudo_labels_as_2d: a multi-view sample's pseudo labels (`sources.PSEUDO_LABEL_KEYS`), when
      it has them, become the stream's joints_2d / joints_2d_mask.
    augment: add sampled augmentation matrices to the batch.
    scale_range, max_rotation_deg, flip_probability: the augmentation's ranges (docs/method.md:
      scale +-20 %, rotation +-30 degrees).
  """

  labeled: int = 32
  multiview: int = 8
  num_views: int = 4
  labeled_keys: tuple[str, ...] = IMAGE_KEYS + LABEL_2D_KEYS
  multiview_keys: tuple[str, ...] = IMAGE_KEYS
  pseudo_labels_as_2d: bool = False
  augment: bool = True
  scale_range: float = 0.2
  max_rotation_deg: float = 30.0
  flip_probability: float = 0.5

  def __post_init__(self):
    if self.labeled < 0 or self.multiview < 0 or self.num_views < 1:
      raise ValueError(f"Invalid batch sizes in {self}")

  def images_per_step(self) -> int:
    return self.labeled + self.multiview * self.num_views


def select_views(views: dict[str, np.ndarray], num_views: int,
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
  """A random `num_views`-subset of a multi-view sample's views (keys with a leading view axis),
  or all of them padded with zeros and view_mask False when there are fewer."""
  available = len(views["image"])
  mask = views.get("view_mask", np.ones(available, bool))
  if available > num_views:
    chosen = np.sort(rng.choice(available, num_views, replace=False))
    return {k: v[chosen] for k, v in views.items()}
  padding = num_views - available
  out = {k: np.concatenate([v, np.zeros((padding,) + v.shape[1:], v.dtype)]) for k, v in
         views.items()}
  out["view_mask"] = np.concatenate([mask, np.zeros(padding, bool)])
  return out


def _local_slice(global_size: int, process_index: int, process_count: int) -> range:
  if global_size % process_count:
    raise ValueError(f"A global batch of {global_size} does not split over {process_count} "
                     "processes")
  local = global_size // process_count
  return range(process_index * local, (process_index + 1) * local)


def _stack(samples: list[dict]) -> dict[str, np.ndarray]:
  return {k: np.stack([s[k] for s in samples]) for k in samples[0]}


def _multiview_views(sample: dict, spec: BatchSpec) -> dict[str, np.ndarray]:
  """The keys of a multi-view sample that a batch of `spec` carries."""
  views = {k: sample[k] for k in dict.fromkeys(spec.multiview_keys + ("view_mask",))}
  if spec.pseudo_labels_as_2d and PSEUDO_LABEL_KEYS[0] in sample:
    views.update({label: sample[pseudo] for label, pseudo in zip(LABEL_2D_KEYS,
                                                                 PSEUDO_LABEL_KEYS)})
  return views


def make_batch(source: Source, spec: BatchSpec, step: int, *, process_index: int = 0,
               process_count: int = 1, seed: int = 0,
               executor: concurrent.futures.Executor | None = None) -> dict:
  """This process's part of the global batch of `step` (see the module docstring)."""
  batch = {}
  if spec.labeled:
    indices = [step * spec.labeled + i for i in _local_slice(spec.labeled, process_index,
                                                                  process_count)]
    samples = _map(executor, lambda i: source("train_2d", i), indices)
    labeled = _stack([{k: s[k] for k in spec.labeled_keys} for s in samples])
    if spec.augment:
      labeled["augmentation"] = augment.augmentation_matrices(
          [augment.sample_augmentation(_sample_rng(seed, "train_2d", i), **_ranges(spec))
           for i in indices], labeled["image"].shape[-3:-1])
    batch["labeled"] = labeled
  if spec.multiview:
    indices = [step * spec.multiview + i for i in _local_slice(spec.multiview, process_index,
                                                                    process_count)]
    samples = _map(executor, lambda i: source("train_multiview", i), indices)
    rngs = [_sample_rng(seed, "train_multiview", i) for i in indices]
    chosen = [select_views(_multiview_views(s, spec), spec.num_views, rng)
              for s, rng in zip(samples, rngs)]
    multiview = _stack(chosen)
    if spec.augment:  # one flip per sample: a mirrored view is not a rigid transform
      multiview["augmentation"] = augment.augmentation_matrices(
          [augment.sample_view_augmentations(rng, spec.num_views, **_ranges(spec))
           for rng in rngs], multiview["image"].shape[-3:-1])
    batch["multiview"] = multiview
  return batch


def _sample_rng(seed: int, stream: str, index: int) -> np.random.Generator:
  """The view choice and augmentation of one sample of the global batch: a function of the
  sample alone, so the global batch is the same whatever the number of processes. (The salt
  keeps it apart from the renderer's generator of the same (seed, stream, index).)"""
  return np.random.default_rng([seed, _AUGMENTATION_SALT, zlib.crc32(stream.encode()), index])


def _ranges(spec: BatchSpec) -> dict:
  return dict(scale_range=spec.scale_range, max_rotation_deg=spec.max_rotation_deg,
              flip_probability=spec.flip_probability)


def _map(executor, function, items):
  return list(executor.map(function, items)) if executor else [function(i) for i in items]


def batches(source: Source, spec: BatchSpec, *, start_step: int = 0, process_index: int = 0,
            process_count: int = 1, seed: int = 0, workers: int = 0,
            prefetch: int = 2) -> Iterator[dict]:
  """Endless iterator of this process's batches from `start_step` on, rendered by `workers`
  threads (0: in the caller's thread) with `prefetch` batches prepared ahead."""
  executor = concurrent.futures.ThreadPoolExecutor(workers) if workers else None
  ahead = concurrent.futures.ThreadPoolExecutor(1) if prefetch else None
  make = lambda step: make_batch(source, spec, step, process_index=process_index,  # noqa: E731
                                 process_count=process_count, seed=seed, executor=executor)
  step = start_step
  if ahead is None:
    while True:
      yield make(step)
      step += 1
  pending = [ahead.submit(make, s) for s in range(step, step + prefetch)]
  try:
    while True:
      batch = pending.pop(0).result()
      pending.append(ahead.submit(make, step + prefetch))
      step += 1
      yield batch
  finally:
    for future in pending:
      future.cancel()
    ahead.shutdown(wait=False, cancel_futures=True)
    if executor:
      executor.shutdown(wait=False, cancel_futures=True)
