"""Tests of posejax.data.real.video on tiny videos written in the datasets' formats."""

import numpy as np
import pytest
from PIL import Image

from posejax.data.real import video
from tests.fixtures_video import frame_numbers, numbered_frames, truncate, write_video


@pytest.fixture(scope="module", params=[".mp4", ".avi"])
def clip(request, tmp_path_factory):
  """A 60-frame video whose frame i has grey level 4 i + 8 (keyframe every 4 frames)."""
  path = tmp_path_factory.mktemp("video") / f"clip{request.param}"
  return write_video(path, numbered_frames(60))


def test_frame_count(clip):
  assert video.frame_count(clip) == 60


def test_frames_by_index_in_any_order_with_repeats(clip):
  frames = video.read_frames(clip, [7, 2, 7, 0, 59])
  assert frames.shape == (5, 24, 32, 3) and frames.dtype == np.uint8
  np.testing.assert_array_equal(frame_numbers(frames), [7, 2, 7, 0, 59])


def test_seeking_gives_the_same_bytes_as_decoding_everything(clip, monkeypatch):
  indices = [0, 3, 17, 18, 40, 41, 59]
  monkeypatch.setattr(video, "SEEK_GAP", 10**9)  # never seek
  sequential = video.read_frames(clip, indices)
  monkeypatch.setattr(video, "SEEK_GAP", 1)  # seek before nearly every frame
  seeking = video.read_frames(clip, indices)
  np.testing.assert_array_equal(seeking, sequential)
  np.testing.assert_array_equal(frame_numbers(seeking), indices)


def test_every_kth_frame(clip, monkeypatch):
  monkeypatch.setattr(video, "SEEK_GAP", 8)
  np.testing.assert_array_equal(frame_numbers(video.read_frames(clip, range(5, 60, 9))),
                                list(range(5, 60, 9)))


def test_no_indices(clip):
  assert video.read_frames(clip, []).shape == (0, 24, 32, 3)


def test_frame_beyond_the_end_names_the_file(clip):
  with pytest.raises(ValueError, match=f"{clip}: frame 60 was asked for but the video ends "
                                       "after frame 59"):
    video.read_frames(clip, [1, 60])


def test_negative_index(clip):
  with pytest.raises(ValueError, match="negative frame index"):
    video.read_frames(clip, [-1])


def test_missing_file(tmp_path):
  path = str(tmp_path / "nothing.mp4")
  for read in (video.frame_count, lambda p: video.read_frames(p, [0])):
    with pytest.raises(FileNotFoundError, match=f"{path}: video file not found"):
      read(path)


def test_not_a_video(tmp_path):
  path = tmp_path / "notes.mp4"
  path.write_text("not a video at all\n" * 10)
  with pytest.raises(ValueError, match=f"{path}: not a readable video"):
    video.frame_count(str(path))


def test_image_file_is_no_video(tmp_path):
  path = tmp_path / "picture.avi"
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path, format="PNG")
  with pytest.raises(ValueError, match=f"{path}: "):
    video.read_frames(str(path), [0, 1])


def test_truncated_mp4_without_its_index(tmp_path):
  path = write_video(tmp_path / "cut.mp4", numbered_frames(8))  # index (moov) at the end
  truncate(path, 0.5)
  with pytest.raises(ValueError, match=f"{path}: not a readable video"):
    video.read_frames(path, [0])


def test_truncated_data_fails_at_the_missing_frames(tmp_path):
  path = write_video(tmp_path / "cut.mp4", numbered_frames(40), faststart=True)
  truncate(path, 0.5)
  assert video.frame_count(path) == 40  # the index survives and still declares 40 frames
  np.testing.assert_array_equal(frame_numbers(video.read_frames(path, [0, 1])), [0, 1])
  with pytest.raises(ValueError, match=f"{path}: "):
    video.read_frames(path, [39])


def test_read_image(tmp_path):
  image = np.arange(6 * 4 * 3, dtype=np.uint8).reshape(6, 4, 3)
  Image.fromarray(image).save(tmp_path / "a.png")
  Image.fromarray(image[..., 0]).save(tmp_path / "grey.png")
  np.testing.assert_array_equal(video.read_image(str(tmp_path / "a.png")), image)
  np.testing.assert_array_equal(video.read_image(str(tmp_path / "grey.png")),
                                np.repeat(image[..., :1], 3, axis=-1))


def test_read_image_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'none.jpg'}: image file not found"):
    video.read_image(str(tmp_path / "none.jpg"))
  path = tmp_path / "cut.jpg"
  Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(path, quality=95)
  truncate(path, 0.3)
  with pytest.raises(ValueError, match=f"{path}: not a readable image"):
    video.read_image(str(path))


def test_iter_frames_streams_distinct_indices_in_order(clip):
  frames = video.iter_frames(clip, [30, 4, 30, 12])
  index, frame = next(frames)
  assert index == 4 and frame_numbers(frame[None])[0] == 4
  assert [(i, frame_numbers(f[None])[0]) for i, f in frames] == [(12, 12), (30, 30)]
