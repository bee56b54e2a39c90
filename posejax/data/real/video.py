"""Frames of videos (mp4, avi, ...) and images, read by index, with errors that name the file.

Videos are decoded with PyAV (FFmpeg's libraries, wheels on PyPI for every platform): it
decodes with FFmpeg's own threads and seeks by timestamp, so reading every 64th frame of a
Human3.6M video decodes only the stretch from the keyframe before each wanted frame
(BUILD_NOTES.md has the measured rates and the comparison with OpenCV). Images are read with
Pillow.

Frame i is the i-th frame in presentation order, counted from 0. The frame of a decoded picture
is found from its timestamp and the stream's average frame rate, so the datasets' constant-rate
videos are indexed exactly after a seek; a stream without timestamps is read from the start.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import av
import numpy as np
from PIL import Image

# A gap of more wanted-frame distance than this is crossed by seeking instead of decoding every
# frame in between: beyond the usual keyframe interval (12-50 frames), seeking lands on a
# keyframe after the current position and skips the frames before it.
SEEK_GAP = 50


def _check_exists(path: str, what: str) -> None:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: {what} file not found")


def _open(path: str):
  """(container, its first video stream), with errors naming the file."""
  _check_exists(path, "video")
  try:
    container = av.open(path)
  except av.error.FFmpegError as error:
    raise ValueError(f"{path}: not a readable video ({error})") from None
  if not container.streams.video:
    container.close()
    raise ValueError(f"{path}: has no video stream")
  return container, container.streams.video[0]


def frame_count(path: str) -> int:
  """The number of frames of the video at `path`, as its container declares (counted from the
  packets when it declares none).

  Raises:
    FileNotFoundError: no such file.
    ValueError: not a readable video.
  """
  container, stream = _open(path)
  with container:
    if stream.frames > 0:
      return stream.frames
    try:
      return sum(1 for packet in container.demux(stream) if packet.size)
    except av.error.FFmpegError as error:
      raise ValueError(f"{path}: unreadable video data ({error})") from None


def read_frames(path: str, indices: Iterable[int]) -> np.ndarray:
  """The frames `indices` of the video at `path`.

  Args:
    path: a video file.
    indices: frame indices (>= 0), in any order, repeats allowed.

  Returns:
    [N, H, W, 3] uint8 RGB frames, in the order of `indices`.

  Raises:
    FileNotFoundError: no such file.
    ValueError: not a readable video, a negative index, or a frame beyond the frames that can be
      decoded (a truncated file); the message names the file.
  """
  indices = [int(i) for i in indices]
  frames = dict(iter_frames(path, indices))
  if not frames:
    container, stream = _open(path)
    with container:
      return np.zeros((0, stream.height, stream.width, 3), np.uint8)
  return np.stack([frames[i] for i in indices])


def iter_frames(path: str, indices: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
  """(index, [H, W, 3] uint8 RGB frame) for the distinct `indices`, in increasing order, decoded
  as they are consumed: a long video is streamed, never held in memory.

  Sparse indices are reached by seeking (see SEEK_GAP); each frame is decoded at most once.

  Raises:
    FileNotFoundError, ValueError: as `read_frames`, when the generator is first advanced (for a
      missing or unreadable file) or reaches the frame that cannot be decoded.
  """
  wanted = sorted(set(int(i) for i in indices))
  if wanted and wanted[0] < 0:
    raise ValueError(f"{path}: negative frame index in {wanted}")
  if not wanted:
    return
  container, stream = _open(path)
  stream.thread_type = "AUTO"
  with container:
    try:
      yield from _decode(container, stream, wanted, path)
    except av.error.FFmpegError as error:
      raise ValueError(f"{path}: unreadable video data ({error})") from None


def _decode(container, stream, wanted: list[int], path: str):
  """Yields (index, frame) for the sorted, distinct frame indices `wanted`."""
  rate = stream.average_rate or stream.guessed_rate
  start = stream.start_time or 0
  can_seek = bool(rate)

  def restart(timestamp):
    container.seek(timestamp, stream=stream, backward=True)
    return container.decode(stream)

  decoded, position = container.decode(stream), -1  # position: index of the last frame decoded
  for target in wanted:
    if can_seek and target - position > SEEK_GAP:
      decoded, position = restart(start + int(round(target / (rate * stream.time_base)))), None
    while position is None or position < target:
      frame = next(decoded, None)
      if frame is None:
        raise ValueError(f"{path}: frame {target} was asked for but the video ends after "
                         f"frame {position} (truncated file?)")
      if frame.pts is not None and rate:
        index = int(round((frame.pts - start) * stream.time_base * rate))
      elif position is not None:
        index = position + 1
      else:  # no timestamp after a seek: the position is unknown, count from the start
        can_seek = False
        decoded, position = restart(start), -1
        continue
      if position is None and index > target:
        # The seek landed past the target (a container with an imprecise index): start over.
        decoded, position = restart(start), -1
        continue
      if index > target:
        raise ValueError(f"{path}: has no frame {target} (its timestamps jump from frame "
                         f"{position} to frame {index})")
      position = index
    yield target, frame.to_ndarray(format="rgb24")


def read_image(path: str) -> np.ndarray:
  """[H, W, 3] uint8 RGB image (grey, palette or CMYK files are converted).

  Raises:
    FileNotFoundError: no such file.
    ValueError: not a complete image file (the message names the file).
  """
  _check_exists(path, "image")
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert("RGB"))
  except (OSError, SyntaxError, ValueError) as error:  # PIL: unidentified or truncated
    raise ValueError(f"{path}: not a readable image ({error})") from None
