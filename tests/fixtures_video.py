"""Tiny videos written with PyAV, for the tests of the video reader and the video datasets."""

from __future__ import annotations

import os

import av
import numpy as np

# Codec per container, as the datasets distribute them: Human3.6M H.264 in mp4, MPI-INF-3DHP
# MPEG-4 part 2 in avi.
CODECS = {".mp4": "libx264", ".avi": "mpeg4"}


def write_video(path, frames, *, fps: int = 50, keyframe_interval: int = 4,
                faststart: bool = False) -> str:
  """Writes [N, H, W, 3] uint8 frames (H, W even) as a near-lossless video at `path`.

  Args:
    keyframe_interval: frames per group of pictures (small, so that seeking is exercised).
    faststart: mp4 only: put the index (moov atom) before the data, as streaming files do.
  """
  frames = np.asarray(frames, np.uint8)
  os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
  codec = CODECS[os.path.splitext(os.fspath(path))[1]]
  options = {"movflags": "faststart"} if faststart else {}
  with av.open(os.fspath(path), "w", options=options) as container:
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    stream.gop_size = keyframe_interval
    if codec == "libx264":
      stream.options = {"crf": "0", "preset": "ultrafast"}
    else:
      stream.bit_rate = 20_000_000  # far more than the frames need: near-lossless
    for frame in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  return os.fspath(path)


def numbered_frames(count: int, height: int = 24, width: int = 32) -> np.ndarray:
  """[count, H, W, 3] uint8 flat frames whose grey level tells their index: 4 * i + 8."""
  levels = 4 * np.arange(count) + 8
  if levels.max() > 247:
    raise ValueError(f"At most 60 numbered frames, asked for {count}")
  return np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).astype(np.uint8)


def frame_numbers(frames) -> np.ndarray:
  """Inverse of `numbered_frames` for decoded (slightly lossy) frames: [N] int."""
  return np.round((np.asarray(frames, np.float64).mean(axis=(1, 2, 3)) - 8) / 4).astype(int)


def truncate(path, keep: float = 0.5) -> None:
  """Cuts the file at `path` to its first `keep` fraction of bytes."""
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:int(len(data) * keep)])
