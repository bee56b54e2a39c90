"""Training batches: a 2D-labeled stream plus a multi-view stream (METHOD.md section 5).

A batch is a dict with two sub-dicts (DESIGN.md keys):
- "labeled": image [B, H, W, 3] uint8, camera [B, 3, 3], joints_2d [B, J, 2],
  joints_2d_mask [B, J]; in mode "fs" also joints_3d [B, J, 3] and has_3d [B].
- "multiview": image [S, V, H, W, 3], camera [S, V, 3, 3], view_mask [S, V]; in mode "fs" also
  joints_2d, joints_2d_mask, joints_3d, has_3d with the same leading axes. In mode "ws" the
  multi-view stream carries NO labels at all: weak supervision cannot read what is not there.
  The one exception is the pseudo-label regulariser (METHOD.md section 4): a source wrapped by
  `with_pseudo_labels` gives joints_2d / joints_2d_mask that the stage-1 2D model predicted,
  never the dataset's own.
Mode "2d" (stage-1 pretraining) has only the labeled stream.
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
from collections.abc import Callable, Iterator

import numpy as np

from posejax.data import augment, synthetic

MODES = ("2d", "fs", "ws")
_AUGMENTATION_SALT = 0x5A17
_LABEL_KEYS = ("joints_2d", "joints_2d_mask")
# A sample's 2D pseudo labels (`with_pseudo_labels`): they become the multi-view stream's
# joints_2d / joints_2d_mask in mode "ws", where the dataset's own labels are left out.
PSEUDO_LABEL_KEYS = ("pseudo_joints_2d", "pseudo_joints_2d_mask")


@dataclasses.dataclass(frozen=True)
class BatchSpec:
  """Global batch composition.

  Attributes:
    labeled: 2D-labeled images per global batch (B).
    multiview: multi-view samples per global batch (S).
    num_views: views per multi-view sample (V): a random V-subset when a sample has more,
      padding with view_mask False when it has fewer.
    mode: "2d", "fs" or "ws".
    augment: add sampled augmentation matrices to the batch.
    scale_range, max_rotation_deg, flip_probability: the augmentation's ranges (METHOD.md:
      scale +-20 %, rotation +-30 degrees).
  """

  labeled: int = 32
  multiview: int = 8
  num_views: int = 4
  mode: str = "ws"
  augment: bool = True
  scale_range: float = 0.2
  max_rotation_deg: float = 30.0
  flip_probability: float = 0.5

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
    if self.labeled < 0 or self.multiview < 0 or self.num_views < 1:
      raise ValueError(f"Invalid batch sizes in {self}")


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


def _labeled_keys(mode: str) -> tuple[str, ...]:
  keys = ("image", "camera") + _LABEL_KEYS
  return keys + ("joints_3d",) if mode == "fs" else keys


def _multiview_keys(mode: str) -> tuple[str, ...]:
  keys = ("image", "camera", "view_mask")
  return keys + _LABEL_KEYS + ("joints_3d",) if mode == "fs" else keys


def _multiview_views(sample: dict, mode: str) -> dict[str, np.ndarray]:
  """The keys of a multi-view sample that a batch of `mode` may carry."""
  views = {k: sample[k] for k in _multiview_keys(mode)}
  if mode == "ws" and PSEUDO_LABEL_KEYS[0] in sample:
    views.update({label: sample[pseudo] for label, pseudo in zip(_LABEL_KEYS, PSEUDO_LABEL_KEYS)})
  return views


Source = Callable[[str, int], dict]


def synthetic_source(config: synthetic.SyntheticConfig) -> Source:
  """(stream, index) -> sample, rendering on the fly."""
  return lambda stream, index: synthetic.sample(config, stream, index)


def finite_source(source: Source, sizes: dict[str, int]) -> Source:
  """A finite dataset of `sizes[stream]` samples per stream, kept in memory: index i reads
  sample i mod size, produced once by `source`. For short CPU runs on the synthetic data,
  where rendering every batch afresh would compete with training for the same cores."""
  cache = {}

  def cached(stream: str, index: int) -> dict:
    key = (stream, index % sizes[stream])
    if key not in cache:  # two threads may both render a sample: same bytes, no harm
      cache[key] = source(*key)
    return cache[key]

  cached.sizes = dict(sizes)
  return cached


def with_pseudo_labels(source: Source, joints_2d: np.ndarray, joints_2d_mask: np.ndarray
                       ) -> Source:
  """`source` whose multi-view training samples also carry 2D pseudo labels.

  Args:
    source: (stream, index) -> sample; its "train_multiview" stream has N samples (index i
      reads sample i mod N, as every finite source here does).
    joints_2d: [N, V, J, 2] crop pixels of every view of the N samples (V: the most views a
      sample has; fewer views read the first ones).
    joints_2d_mask: [N, V, J] bool, the joints confident enough to train on.
  """
  if joints_2d.shape[:-1] != joints_2d_mask.shape:
    raise ValueError(f"Pseudo labels {joints_2d.shape} and mask {joints_2d_mask.shape} differ")

  def labelled(stream: str, index: int) -> dict:
    sample = source(stream, index)
    if stream != "train_multiview":
      return sample
    views = len(sample["image"])
    i = index % len(joints_2d)
    return dict(sample, **dict(zip(PSEUDO_LABEL_KEYS, (joints_2d[i, :views],
                                                       joints_2d_mask[i, :views]))))

  labelled.sizes = getattr(source, "sizes", {})
  return labelled


def make_batch(source: Source, spec: BatchSpec, step: int, *, process_index: int = 0,
               process_count: int = 1, seed: int = 0,
               executor: concurrent.futures.Executor | None = None) -> dict:
  """This process's part of the global batch of `step` (see the module docstring)."""
  batch = {}
  if spec.labeled:
    indices = [step * spec.labeled + i for i in _local_slice(spec.labeled, process_index,
                                                                  process_count)]
    samples = _map(executor, lambda i: source("train_2d", i), indices)
    keys = _labeled_keys(spec.mode)
    labeled = _stack([{k: s[k] for k in keys} for s in samples])
    if spec.mode == "fs":
      labeled["has_3d"] = np.zeros(len(samples), bool)  # the 2D stream has no 3D labels
    if spec.augment:
      labeled["augmentation"] = augment.augmentation_matrices(
          [augment.sample_augmentation(_sample_rng(seed, "train_2d", i), **_ranges(spec))
           for i in indices], labeled["image"].shape[-3:-1])
    batch["labeled"] = labeled
  if spec.multiview and spec.mode != "2d":
    indices = [step * spec.multiview + i for i in _local_slice(spec.multiview, process_index,
                                                                    process_count)]
    samples = _map(executor, lambda i: source("train_multiview", i), indices)
    rngs = [_sample_rng(seed, "train_multiview", i) for i in indices]
    chosen = [select_views(_multiview_views(s, spec.mode), spec.num_views, rng)
              for s, rng in zip(samples, rngs)]
    multiview = _stack(chosen)
    if spec.mode == "fs":
      multiview["has_3d"] = multiview["view_mask"].copy()
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
