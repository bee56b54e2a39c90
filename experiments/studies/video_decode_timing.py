"""Video decode speed: posejax.data.real.video (PyAV) against OpenCV, on a 1000 x 1000 H.264 mp4
(Human3.6M's format) of 600 frames with a keyframe every 50.

    python -m experiments.studies.video_decode_timing
    PYTHONPATH=/tmp/cvbench python -m experiments.studies.video_decode_timing  # with OpenCV there:
    # pip install --target /tmp/cvbench opencv-python-headless

Prints frames/s decoding every frame, and the time for every 64th frame (the Human3.6M test
protocol) by seeking, by decoding everything, and by OpenCV's CAP_PROP_POS_FRAMES.
"""

from __future__ import annotations

import os
import tempfile
import time

import av
import numpy as np

from posejax.data.real import video

FRAMES, SIZE, EVERY = 600, 1000, 64


def write_clip(path: str) -> None:
  base = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), np.uint8)
  with av.open(path, "w") as container:
    stream = container.add_stream("libx264", rate=50)
    stream.width = stream.height = SIZE
    stream.pix_fmt, stream.gop_size = "yuv420p", 50
    stream.options = {"crf": "23", "preset": "veryfast"}
    for t in range(FRAMES):
      frame = av.VideoFrame.from_ndarray(np.roll(base, 3 * t, axis=1), format="rgb24")
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def seconds(function) -> float:
  start = time.perf_counter()
  function()
  return time.perf_counter() - start


def main():
  with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, "clip.mp4")
    write_clip(path)
    sparse = range(0, FRAMES, EVERY)
    every = seconds(lambda: sum(1 for _ in video.iter_frames(path, range(FRAMES))))
    print(f"PyAV: every frame {FRAMES / every:.0f} frames/s")
    print(f"PyAV: every {EVERY}th frame, seeking: "
          f"{seconds(lambda: video.read_frames(path, sparse)):.2f} s")
    gap, video.SEEK_GAP = video.SEEK_GAP, 10**9
    print(f"PyAV: every {EVERY}th frame, decoding all: "
          f"{seconds(lambda: video.read_frames(path, sparse)):.2f} s")
    video.SEEK_GAP = gap
    try:
      import cv2  # pylint: disable=import-outside-toplevel
    except ImportError:
      print("OpenCV not installed: no comparison")
      return

    def opencv_all():
      capture = cv2.VideoCapture(path)
      while True:
        ok, frame = capture.read()
        if not ok:
          return
        cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def opencv_sparse():
      capture = cv2.VideoCapture(path)
      for index in sparse:
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        capture.read()

    print(f"OpenCV {cv2.__version__}: every frame {FRAMES / seconds(opencv_all):.0f} frames/s")
    print(f"OpenCV: every {EVERY}th frame by CAP_PROP_POS_FRAMES: {seconds(opencv_sparse):.2f} s")


if __name__ == "__main__":
  main()
