"""A tiny MPI-INF-3DHP release in the official formats: annot.mat (MATLAB v5, cell arrays per
camera), camera.calibration text, imageSequence/video_N.avi; the test set's annot_data.mat
(MATLAB v7.3 = HDF5 with MATLAB's header and transposed arrays) and img_XXXXXX.jpg frames.
Frames are 64 x 48 px; coloured 3x3 marks show where some joints are."""

from __future__ import annotations

import os

import h5py
import numpy as np
import scipy.io
from PIL import Image

from posejax import skeleton
from tests.fixtures_video import write_video

WIDTH, HEIGHT = 64, 48
INTRINSICS = np.array([[60.0, 0, 31.5], [0, 62.0, 23.5], [0, 0, 1]])
# A person facing the camera (mm, relative to the pelvis), canonical order (as fixtures_h36m).
POSE_17 = np.array([
    [0, 0, 0], [-130, 0, 0], [-130, 440, 0], [-130, 880, 0], [130, 0, 0], [130, 440, 0],
    [130, 880, 0], [0, -230, 0], [0, -480, 0], [0, -600, -50], [0, -720, 0],
    [150, -470, 0], [300, -700, 0], [400, -950, 0], [-150, -470, 0], [-300, -250, 0],
    [-350, 0, -100]], np.float64)
MARKS = {"left_wrist": (255, 0, 0), "right_wrist": (0, 255, 0)}


def pose(camera: int, frame: int, x: float = 0.0) -> np.ndarray:
  """[17, 3] canonical joints (camera frame, mm) of a camera's view at a frame."""
  return POSE_17 + [x + 60.0 * camera + 100.0 * frame, -150.0, 5000.0]


def project(joints_3d) -> np.ndarray:
  projected = joints_3d @ INTRINSICS.T
  return projected[:, :2] / projected[:, 2:]


def to_source(values, mapping: skeleton.JointMapping) -> np.ndarray:
  """Canonical [17, D] values in a dataset's own joint order (unmapped joints: far away)."""
  out = np.full((mapping.num_source_joints, values.shape[-1]), 1e4)
  out[np.asarray(mapping.source_indices)] = values
  return out


def marked_frame(joints_2d) -> np.ndarray:
  frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
  for name, colour in MARKS.items():
    x, y = np.round(joints_2d[skeleton.H36M.index(name)]).astype(int)
    if 1 <= x < WIDTH - 1 and 1 <= y < HEIGHT - 1:
      frame[y - 1:y + 2, x - 1:x + 2] = colour
  return frame


CALIBRATION_HEADER = "Skeletool Camera Calibration File V1.0\n"


def write_calibration(path, cameras=range(14)) -> None:
  intrinsic = np.eye(4)
  intrinsic[:3, :3] = INTRINSICS
  with open(path, "w") as f:
    f.write(CALIBRATION_HEADER)
    for camera in cameras:
      f.write(f"name          {camera}\n  sensor      10 10\n  size        {WIDTH} {HEIGHT}\n"
              f"  animated    0\n  intrinsic   {' '.join(f'{v:g}' for v in intrinsic.ravel())} \n"
              f"  extrinsic   {' '.join(f'{v:g}' for v in np.eye(4).ravel())} \n"
              "  radial      0\n")


def write_train_sequence(manual_dir, subject: str, sequence: str, frames=(0, 1, 2),
                         video_cameras=(0, 1)) -> str:
  """annot.mat for all 14 cameras at the given video frames; videos for `video_cameras`."""
  directory = os.path.join(manual_dir, subject, sequence)
  os.makedirs(os.path.join(directory, "imageSequence"), exist_ok=True)
  mapping = skeleton.MPI_INF_3DHP_TRAIN_TO_H36M
  annot2 = np.empty((14, 1), object)
  annot3 = np.empty((14, 1), object)
  for camera in range(14):
    poses = [pose(camera, f) for f in frames]
    annot2[camera, 0] = np.stack([to_source(project(p), mapping).ravel() for p in poses])
    annot3[camera, 0] = np.stack([to_source(p, mapping).ravel() for p in poses])
  scipy.io.savemat(os.path.join(directory, "annot.mat"), {
      "cameras": np.arange(14, dtype=np.uint8)[None], "frames": np.asarray(frames)[:, None],
      "annot2": annot2, "annot3": annot3, "univ_annot3": annot3})
  write_calibration(os.path.join(directory, "camera.calibration"))
  for camera in video_cameras:
    write_video(os.path.join(directory, "imageSequence", f"video_{camera}.avi"),
                [marked_frame(project(pose(camera, f))) for f in range(max(frames) + 1)],
                fps=25)
  return directory


def write_mat_v73(path, arrays: dict) -> None:
  """A MATLAB v7.3 file: HDF5 behind MATLAB's 512-byte header, every array stored transposed
  (MATLAB is column-major), with its MATLAB_class attribute."""
  with h5py.File(path, "w", userblock_size=512) as f:
    for name, value in arrays.items():
      data = f.create_dataset(name, data=np.asarray(value, np.float64))  # already h5py order
      data.attrs["MATLAB_class"] = np.bytes_("double")
  header = (b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2018 "
            b"HDF5 schema 1.00 .")
  with open(path, "r+b") as f:
    f.write(header.ljust(116) + b"\0" * 8 + b"\x00\x02IM")


def write_test_sequence(manual_dir, name: str, count: int = 4, invalid=(1,),
                        activity: int = 3) -> str:
  """annot_data.mat (h5py order: annot2 [N, 1, 17, 2] ...) and N jpg frames."""
  directory = os.path.join(manual_dir, "mpi_inf_3dhp_test_set", name)
  os.makedirs(os.path.join(directory, "imageSequence"), exist_ok=True)
  mapping = skeleton.MPI_INF_3DHP_TEST_TO_H36M
  poses = [pose(0, f, x=-200.0) for f in range(count)]
  write_mat_v73(os.path.join(directory, "annot_data.mat"), {
      "annot2": np.stack([to_source(project(p), mapping) for p in poses])[:, None],
      "annot3": np.stack([to_source(p, mapping) for p in poses])[:, None],
      "univ_annot3": np.stack([to_source(0.9 * p, mapping) for p in poses])[:, None],
      "valid_frame": np.asarray([[0.0 if f in invalid else 1.0] for f in range(count)]),
      "activity_annotation": np.full((count, 1), float(activity))})
  for f, p in enumerate(poses):
    Image.fromarray(marked_frame(project(p))).save(
        os.path.join(directory, "imageSequence", f"img_{f + 1:06d}.jpg"), quality=98)
  return directory


def write_release(manual_dir, subjects=("S1",), tests=("TS1",)) -> str:
  for subject in subjects:
    for sequence in ("Seq1", "Seq2"):
      write_train_sequence(manual_dir, subject, sequence)
  for test in tests:
    write_test_sequence(manual_dir, test)
  return os.fspath(manual_dir)
