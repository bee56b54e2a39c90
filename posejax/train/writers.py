"""Metric writing: TensorBoard event files, without TensorFlow.

tensorboardX writes the event files (a few hundred kB of Python and protobuf); CLU's writer
would import TensorFlow (hundreds of MB) for the same files. The console gets the loop's own
progress lines, so nothing here logs.
"""

from __future__ import annotations

import os

import numpy as np


class MetricWriter:
  """Scalars to `logdir` as TensorBoard event files; on processes other than the first (or with
  `enabled` False) nothing is written."""

  def __init__(self, logdir: str, enabled: bool = True):
    self._writer = None
    if enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      os.makedirs(logdir, exist_ok=True)
      self._writer = SummaryWriter(logdir, flush_secs=30)

  def write_scalars(self, step: int, scalars: dict):
    if self._writer is None:
      return
    for name, value in scalars.items():
      self._writer.add_scalar(name, float(np.asarray(value)), global_step=int(step))

  def flush(self):
    if self._writer is not None:
      self._writer.flush()

  def close(self):
    if self._writer is not None:
      self._writer.close()
