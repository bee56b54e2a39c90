"""Sources: the one data interface, `(stream, index) -> sample`.

A Source is any callable from a stream name ("train_2d", "train_multiview", "validation",
"test") and a sample index to a sample, a dict of NumPy arrays (keys in docs/design.md). A
finite source also has `sizes`, {stream: number of samples}. The synthetic renderer, the
prepared synthetic set and every real dataset (`posejax.data.real.datasets`) are Sources;
`make_source` picks the one a config names.
"""

from __future__ import annotations

import concurrent.futures
import functools
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence

import numpy as np

from posejax.data.render import synthetic
from posejax.errors import ConfigError

Source = Callable[[str, int], dict]
# A sample's 2D pseudo labels (`with_pseudo_labels`): a batch spec may take them as the
# multi-view stream's joints_2d / joints_2d_mask, where the dataset's own labels are left out.
PSEUDO_LABEL_KEYS = ("pseudo_joints_2d", "pseudo_joints_2d_mask")


def synthetic_source(config: synthetic.SyntheticConfig) -> Source:
  """(stream, index) -> sample, rendering on the fly."""
  return lambda stream, index: synthetic.sample(config, stream, index)


def finite_source(source: Source, sizes: dict[str, int],
                  rendered: dict[tuple[str, int], dict] | None = None) -> Source:
  """A finite dataset of `sizes[stream]` samples per stream, kept in memory: index i reads
  sample i mod size, produced once by `source` (or taken from `rendered`, {(stream, index):
  sample}, samples produced beforehand). For short CPU runs on the synthetic data, where
  rendering every batch afresh would compete with training for the same cores."""
  cache = dict(rendered or {})

  def cached(stream: str, index: int) -> dict:
    key = (stream, index % sizes[stream])
    if key not in cache:  # two threads may both render a sample: same bytes, no harm
      cache[key] = source(*key)
    return cache[key]

  cached.sizes = dict(sizes)
  return cached


def render_in_processes(config: synthetic.SyntheticConfig, sizes: dict[str, int],
                        streams: Sequence[str], processes: int) -> dict[tuple[str, int], dict]:
  """Every sample of `streams` (`sizes[stream]` each) rendered by `processes` worker processes:
  {(stream, index): sample}, the same samples as `synthetic.sample` gives in this process.

  Rendering is NumPy on small arrays and holds Python's GIL most of the time: threads scale
  poorly (16 on a 16-core GPU machine gave about 47 samples/s at 128 px, docs/results.md 3.7)
  and processes don't share it."""
  keys = [(stream, index) for stream in streams for index in range(sizes[stream])]
  start = time.perf_counter()
  print(f"rendering {len(keys)} samples ({', '.join(streams)}) in {processes} processes ...",
        flush=True)
  # "spawn": a forked child of a process that has started JAX's threads can deadlock.
  with concurrent.futures.ProcessPoolExecutor(
      processes, mp_context=multiprocessing.get_context("spawn")) as pool:
    samples = list(pool.map(functools.partial(synthetic.sample, config),
                            [stream for stream, _ in keys], [index for _, index in keys],
                            chunksize=8))
  seconds = time.perf_counter() - start
  print(f"rendered {len(keys)} samples in {seconds:.1f} s ({len(keys) / seconds:.0f}/s)",
        flush=True)
  return dict(zip(keys, samples))


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


def make_source(data, *, for_training: bool = False) -> Source:
  """The Source of a config's `data` section: registered real datasets (`source` =
  "datasets": `streams` and `options` as in `datasets.streams_source`), or the synthetic data
  from a prepared data dir, or rendered on the fly (kept in memory with `in_memory`: a finite
  set of `sizes` samples, rendered on first use; `for_training` with `render_processes` set:
  the training streams rendered by that many processes first. Evaluation reads a few held-out
  samples, rendered as it reads them, and no training sample)."""
  if data.source == "datasets":
    from posejax.data.real import datasets  # pylint: disable=import-outside-toplevel
    return datasets.streams_source(dict(data.streams), os.path.expanduser(data.data_dir),
                                   {k: dict(v) for k, v in data.get("options", {}).items()})
  if data.source != "synthetic":
    raise ConfigError(f"data.source must be 'synthetic' or 'datasets', got {data.source!r}")
  synthetic_config = synthetic.config_from(data)
  if data.get("data_dir"):
    from posejax.data.render import synthetic_tfds  # pylint: disable=import-outside-toplevel
    return synthetic_tfds.prepared_source(synthetic_config, dict(data.sizes),
                                          os.path.expanduser(data.data_dir))
  source = synthetic_source(synthetic_config)
  if not data.get("in_memory"):
    return source
  sizes = dict(data.sizes)
  rendered = None
  if for_training and data.get("render_processes"):
    streams = [s for s in ("train_2d", "train_multiview") if sizes.get(s)]
    rendered = render_in_processes(synthetic_config, sizes, streams, data.render_processes)
  return finite_source(source, sizes, rendered)
