"""A tiny Human3.6M release in the official layout: D3_Positions_mono CDF files ("Pose",
[1, N, 96] float32, 32 joints in the camera frame, mm) and 1000 px mp4 videos in which coloured
disks mark where some joints appear through each camera's published (distorted) lens."""

from __future__ import annotations

import os

import numpy as np
from cdflib import cdfwrite

from posejax.data.real import h36m
from tests.fixtures_video import write_video

# A person facing the camera (x right, y down, mm, relative to the pelvis), canonical order:
# left arm raised, right arm down, so that left and right differ.
POSE_17 = np.array([
    [0, 0, 0], [-130, 0, 0], [-130, 440, 0], [-130, 880, 0],  # pelvis, right leg
    [130, 0, 0], [130, 440, 0], [130, 880, 0],  # left leg
    [0, -230, 0], [0, -480, 0], [0, -600, -50], [0, -720, 0],  # spine .. head top
    [150, -470, 0], [300, -700, 0], [400, -950, 0],  # left arm
    [-150, -470, 0], [-300, -250, 0], [-350, 0, -100],  # right arm
], np.float64)
# Disk colours marking joints in the videos.
MARKS = {"left_wrist": (255, 0, 0), "right_wrist": (0, 255, 0), "head_top": (0, 0, 255)}
FRAME_SIZES = {"54138969": (1002, 1000), "55011271": (1000, 1000), "58860488": (1000, 1000),
               "60457274": (1002, 1000)}  # (height, width) of the published cameras
STEP_MM = 150.0  # the person walks this far along x per frame


def pose_32(pose_17) -> np.ndarray:
  """[32, 3]: the canonical joints at their indices in the 32, the other joints far away (so a
  wrong index in the mapping shows)."""
  pose = np.tile(pose_17[:1] + [0.0, 0.0, 3000.0], (32, 1)) + np.arange(32)[:, None]
  pose[np.asarray(h36m.MAPPING.source_indices)] = pose_17
  return pose


def camera_pose(camera_index: int, frame: int, root_x: float = 1000.0) -> np.ndarray:
  """[17, 3] the canonical joints (mm, camera frame) of a camera's view at a frame."""
  root = np.array([root_x + 40.0 * camera_index + STEP_MM * frame, -100.0, 5000.0])
  return POSE_17 + root


def write_poses(path, poses_32) -> str:
  """A D3_Positions_mono CDF file holding [N, 32, 3] poses."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  poses = np.asarray(poses_32, np.float32).reshape(1, len(poses_32), 96)
  cdf = cdfwrite.CDF(path, cdf_spec={"Majority": "Row_major"}, delete=True)
  cdf.write_var({"Variable": "Pose", "Data_Type": cdfwrite.CDF.CDF_FLOAT, "Num_Elements": 1,
                 "Rec_Vary": True, "Dim_Sizes": [len(poses_32), 96]}, var_data=poses)
  cdf.close()
  return path


def marked_frame(camera: h36m.Camera, joints_3d, radius: int = 15) -> np.ndarray:
  """A black frame of the camera's size with a coloured disk where each MARKS joint appears
  (distorted projection)."""
  height, width = FRAME_SIZES[camera.name]
  frame = np.zeros((height, width, 3), np.uint8)
  pixels = camera.project(joints_3d)
  for name, colour in MARKS.items():
    x, y = pixels[h36m.MAPPING.target.index(name)]
    left, top = max(int(x) - radius - 1, 0), max(int(y) - radius - 1, 0)
    right, bottom = min(int(x) + radius + 2, width), min(int(y) + radius + 2, height)
    if right <= left or bottom <= top:
      continue  # outside the frame
    ys, xs = np.mgrid[top:bottom, left:right]
    frame[ys, xs] = np.where(((xs - x) ** 2 + (ys - y) ** 2 <= radius ** 2)[..., None], colour,
                             frame[ys, xs])
  return frame


def write_sequence(manual_dir, subject: str, name: str, frames: int = 3,
                   pose_frames: int | None = None, root_x: float = 1000.0) -> None:
  """One sequence of a subject: per camera its CDF (`pose_frames` poses, default `frames`) and
  its video (`frames` frames)."""
  pose_frames = frames if pose_frames is None else pose_frames
  for index, camera in enumerate(h36m.CAMERAS):
    stem = f"{name}.{camera.name}"
    poses = [camera_pose(index, t, root_x) for t in range(max(frames, pose_frames))]
    write_poses(os.path.join(manual_dir, subject, h36m.POSE_DIR, stem + ".cdf"),
                [pose_32(p) for p in poses[:pose_frames]])
    write_video(os.path.join(manual_dir, subject, h36m.VIDEO_DIR, stem + ".mp4"),
                [marked_frame(camera, p) for p in poses[:frames]])


def write_release(manual_dir, subjects=("S1", "S5", "S6", "S7", "S8", "S9", "S11")) -> str:
  """A release with one sequence per subject ("Walking 1" / S9 "TakingPhoto"), 3 frames."""
  for subject in subjects:
    write_sequence(manual_dir, subject, "TakingPhoto" if subject == "S9" else "Walking 1")
  return os.fspath(manual_dir)
