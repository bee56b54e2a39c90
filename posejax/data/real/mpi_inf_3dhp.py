r"""MPI-INF-3DHP as a TFDS dataset: multi-view training frames and the single-view test set.

From the release as its owners distribute it (https://vcai.mpi-inf.mpg.de/3dhp-dataset/: the
training set via its get_dataset.sh, the test set as mpi_inf_3dhp_test_set.zip), in the manual
dir:

    S1/Seq1/annot.mat            MATLAB v5: cameras [1, C], frames [N, 1], and per camera (cell
                                 arrays [C, 1]) annot2 [N, 56], annot3 [N, 84], univ_annot3
    S1/Seq1/camera.calibration   the "Skeletool Camera Calibration File" text: per camera
                                 name, size W H, intrinsic (4x4, row-major), extrinsic
    S1/Seq1/imageSequence/video_0.avi ... video_13.avi
    ... S8/Seq2
    mpi_inf_3dhp_test_set/TS1/annot_data.mat   MATLAB v7.3 (HDF5): annot2 [N, 1, 17, 2],
                                 annot3 and univ_annot3 [N, 1, 17, 3], valid_frame [N, 1],
                                 activity_annotation [N, 1] (h5py's axis order)
    mpi_inf_3dhp_test_set/TS1/imageSequence/img_000001.jpg ...   ... TS6

Conventions:

- Joints: the training set's 28 joints and the test set's 17 (another order) map onto the
  canonical 17 with `skeleton.MPI_INF_3DHP_TRAIN_TO_H36M` / `..._TEST_TO_H36M` (3DHP "neck" is
  H36M thorax, "head" is H36M neck/nose); every canonical joint is present. A 2D joint is
  labeled where it lies inside the frame.
- Training: subjects S1-S8, sequences Seq1-2; `cameras` (default the 8 cameras at chest and
  knee height, 0, 1, 2, 4, 5, 6, 7, 8: the ceiling cameras 11-13 look straight down) of each
  annotated frame, every `train_every` frames, form one multi-view sample. The cameras come
  from camera.calibration (the frames are undistorted). The 2D joints are annot2; joints_3d is
  annot3 (camera frame, mm).
- Test: TS1-TS6, the valid frames (valid_frame), every `test_every`-th of them; each sample
  has one view. The release gives no per-sequence intrinsics in annot_data.mat, so each
  sequence's pinhole intrinsics are fitted to its (annot3, annot2) pairs by least squares; a
  fit worse than MAX_FIT_ERROR_PX fails (wrong joints or files). For the protocol (3D PCK,
  AUC on the "universal" skeleton) the test stream's joints_3d is univ_annot3, and
  joints_3d_camera keeps annot3 (which projects onto joints_2d with the crop camera).
  "action" indexes ACTIONS (the 7 activity classes).

Prepare:

    python -m experiments.prepare_data --dataset=mpi_inf_3dhp --manual_dir=~/mpi_inf_3dhp \
        --data_dir=~/posejax_data
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from posejax import skeleton
from posejax.data.real import crop, datasets, video

TRAIN_MAPPING = skeleton.MPI_INF_3DHP_TRAIN_TO_H36M
TEST_MAPPING = skeleton.MPI_INF_3DHP_TEST_TO_H36M
J = TRAIN_MAPPING.target.num_joints
SUBJECTS = ("S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8")
SEQUENCES = ("Seq1", "Seq2")
TEST_SEQUENCES = ("TS1", "TS2", "TS3", "TS4", "TS5", "TS6")
TEST_DIR = "mpi_inf_3dhp_test_set"
DEFAULT_CAMERAS = (0, 1, 2, 4, 5, 6, 7, 8)
ACTIONS = ("Standing/Walking", "Exercising", "Sitting", "Reaching/Crouching", "On the floor",
           "Sports", "Miscellaneous")  # activity_annotation 1..7
MAX_FIT_ERROR_PX = 5.0
STREAMS = {"train_multiview": "train", "train_2d": "train", "test": "test"}

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
MPI-INF-3DHP from https://vcai.mpi-inf.mpg.de/3dhp-dataset/ (its get_dataset.sh for the training
set, mpi_inf_3dhp_test_set.zip for the test set), in the manual dir as
  S1/Seq1/annot.mat, S1/Seq1/camera.calibration, S1/Seq1/imageSequence/video_0.avi ...
  ... S8/Seq2
  {TEST_DIR}/TS1/annot_data.mat, {TEST_DIR}/TS1/imageSequence/img_000001.jpg ... TS6
"""


def _gather(values, mapping: skeleton.JointMapping) -> np.ndarray:
  """[..., J_source, D] -> [..., 17, D] (every canonical joint is present in 3DHP's sets)."""
  return np.asarray(values)[..., np.asarray(mapping.source_indices), :]


def _in_frame(points, width: int, height: int) -> np.ndarray:
  points = np.asarray(points)
  return (np.isfinite(points).all(-1) & (points >= -0.5).all(-1)
          & (points[..., 0] <= width - 0.5) & (points[..., 1] <= height - 0.5))


def person_view(frame, joints_2d, joints_3d, intrinsics, image_size: int, margin: float) -> dict:
  """One view: the crop around the 2D joints (frame pixels [J, 2]) with its crop camera."""
  height, width = frame.shape[:2]
  mask = _in_frame(joints_2d, width, height)
  centre, side = crop.square_box(joints_2d, np.isfinite(joints_2d).all(-1), margin=margin)
  image, camera = crop.crop_view(frame, intrinsics, centre, side, image_size)
  joints = crop.transform_points(crop.crop_matrix(centre, side, image_size), joints_2d)
  return {"image": image, "camera": camera, "joints_2d": joints.astype(np.float32),
          "joints_2d_mask": mask, "joints_3d": np.asarray(joints_3d, np.float32)}


# ------------------------------------------------------------------------------ training set

def read_calibration(path: str) -> dict[int, np.ndarray]:
  """{camera: [3, 3] intrinsics} of a camera.calibration file.

  Raises:
    FileNotFoundError / ValueError naming the file.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: camera calibration file not found")
  with open(path, errors="replace") as f:
    text = f.read()
  cameras = {}
  for block in re.split(r"^\s*name\s+", text, flags=re.M)[1:]:
    name = block.split()[0]
    match = re.search(r"^\s*intrinsic\s+(.*)$", block, flags=re.M)
    values = match.group(1).split() if match else []
    try:
      matrix = np.array([float(v) for v in values], np.float64).reshape(4, 4)
      cameras[int(name)] = matrix[:3, :3]
    except ValueError:
      raise ValueError(f"{path}: camera {name!r} has no 16-number intrinsic line") from None
  if not cameras:
    raise ValueError(f"{path}: no cameras ('name' blocks); not a 3DHP camera.calibration")
  return cameras


@dataclasses.dataclass(frozen=True)
class TrainSequence:
  directory: str
  frames: np.ndarray  # [N] video frame indices
  joints_2d: dict  # camera -> [N, 17, 2]
  joints_3d: dict  # camera -> [N, 17, 3]
  intrinsics: dict  # camera -> [3, 3]


def _load_mat_v5(path: str) -> dict:
  import scipy.io  # pylint: disable=import-outside-toplevel
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: annotation file not found")
  try:
    return scipy.io.loadmat(path)
  except (ValueError, TypeError, OSError, NotImplementedError) as error:
    raise ValueError(f"{path}: not a readable MATLAB v5 file ({error})") from None


def read_train_sequence(directory: str, cameras) -> TrainSequence:
  """The annotations and calibration of one training sequence (S*/Seq*), checked.

  Raises:
    FileNotFoundError / ValueError naming the file that is missing or wrong.
  """
  path = os.path.join(directory, "annot.mat")
  annot = _load_mat_v5(path)
  missing = [k for k in ("cameras", "frames", "annot2", "annot3") if k not in annot]
  if missing:
    raise ValueError(f"{path}: missing variables {missing}")
  listed = [int(c) for c in np.ravel(annot["cameras"])]
  frames = np.ravel(annot["frames"]).astype(np.int64)
  intrinsics = read_calibration(os.path.join(directory, "camera.calibration"))
  joints_2d, joints_3d = {}, {}
  for camera in cameras:
    if camera not in listed or camera not in intrinsics:
      raise ValueError(f"{path}: camera {camera} is not among its cameras {listed} (or not in "
                       "camera.calibration)")
    slot = listed.index(camera)
    annot2 = np.asarray(np.ravel(annot["annot2"])[slot], np.float64)
    annot3 = np.asarray(np.ravel(annot["annot3"])[slot], np.float64)
    if annot2.shape != (len(frames), 56) or annot3.shape != (len(frames), 84):
      raise ValueError(f"{path}: camera {camera}: annot2 {annot2.shape} / annot3 "
                       f"{annot3.shape}, expected ({len(frames)}, 56) / ({len(frames)}, 84)")
    joints_2d[camera] = _gather(annot2.reshape(-1, 28, 2), TRAIN_MAPPING)
    joints_3d[camera] = _gather(annot3.reshape(-1, 28, 3), TRAIN_MAPPING)
    video_path = os.path.join(directory, "imageSequence", f"video_{camera}.avi")
    if not os.path.isfile(video_path):
      raise FileNotFoundError(f"{video_path}: video not found")
  return TrainSequence(directory, frames, joints_2d, joints_3d, intrinsics)


def generate_train_examples(sequences: list[TrainSequence], cameras, config):
  for sequence in sequences:
    rows = np.arange(0, len(sequence.frames), config.train_every)
    wanted = {int(sequence.frames[r]): r for r in rows}
    paths = [os.path.join(sequence.directory, "imageSequence", f"video_{c}.avi")
             for c in cameras]
    for views in zip(*[video.iter_frames(p, wanted) for p in paths]):
      frame_index = views[0][0]
      row = wanted[frame_index]
      per_view = [person_view(frame, sequence.joints_2d[c][row], sequence.joints_3d[c][row],
                              sequence.intrinsics[c], config.image_size, config.margin)
                  for (_, frame), c in zip(views, cameras)]
      name = os.path.relpath(sequence.directory, os.path.dirname(os.path.dirname(
          sequence.directory)))
      yield f"{name}/{frame_index:06d}", datasets.multiview_record(
          per_view, sequence=name, frame=frame_index, action=-1,
          joints_3d_camera=np.stack([v["joints_3d"] for v in per_view]))


# ---------------------------------------------------------------------------------- test set

def _load_mat_v73(path: str) -> dict:
  """The arrays of a MATLAB v7.3 (HDF5) file, in h5py's (reversed MATLAB) axis order."""
  import h5py  # pylint: disable=import-outside-toplevel
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: annotation file not found")
  try:
    with h5py.File(path, "r") as f:
      return {k: np.asarray(f[k]) for k in f if isinstance(f[k], h5py.Dataset)}
  except OSError as error:
    raise ValueError(f"{path}: not a readable MATLAB v7.3 (HDF5) file ({error})") from None


def fit_intrinsics(joints_2d, joints_3d) -> tuple[np.ndarray, float]:
  """Pinhole intrinsics [3, 3] fitted to 2D/3D pairs ([N, 2], [N, 3]) by least squares, and the
  RMS reprojection error (pixels)."""
  xy = joints_3d[:, :2] / joints_3d[:, 2:]
  rows = []
  for axis in range(2):
    design = np.stack([xy[:, axis], np.ones(len(xy))], -1)
    (focal, centre), *_ = np.linalg.lstsq(design, joints_2d[:, axis], rcond=None)
    rows.append((focal, centre))
  intrinsics = np.array([[rows[0][0], 0, rows[0][1]], [0, rows[1][0], rows[1][1]], [0, 0, 1]])
  projected = xy * [rows[0][0], rows[1][0]] + [rows[0][1], rows[1][1]]
  return intrinsics, float(np.sqrt(np.mean(np.sum((projected - joints_2d) ** 2, -1))))


@dataclasses.dataclass(frozen=True)
class TestSequence:
  directory: str
  name: str
  frames: np.ndarray  # [N] 0-based indices of the valid frames
  joints_2d: np.ndarray  # [N, 17, 2]
  joints_3d: np.ndarray  # [N, 17, 3] annot3
  joints_3d_univ: np.ndarray  # [N, 17, 3]
  actions: np.ndarray  # [N] index into ACTIONS
  intrinsics: np.ndarray


def read_test_sequence(directory: str) -> TestSequence:
  path = os.path.join(directory, "annot_data.mat")
  annot = _load_mat_v73(path)
  missing = [k for k in ("annot2", "annot3", "univ_annot3", "valid_frame",
                         "activity_annotation") if k not in annot]
  if missing:
    raise ValueError(f"{path}: missing variables {missing}")
  valid = np.ravel(annot["valid_frame"]).astype(bool)
  count = len(valid)
  shapes = {k: annot[k].shape for k in ("annot2", "annot3", "univ_annot3")}
  if shapes != {"annot2": (count, 1, 17, 2), "annot3": (count, 1, 17, 3),
                "univ_annot3": (count, 1, 17, 3)}:
    raise ValueError(f"{path}: shapes {shapes} do not match {count} frames of 17 joints")
  frames = np.flatnonzero(valid)
  take = lambda k, d: _gather(annot[k][frames, 0].astype(np.float64), TEST_MAPPING)  # noqa
  joints_2d, joints_3d = take("annot2", 2), take("annot3", 3)
  intrinsics, error = fit_intrinsics(joints_2d.reshape(-1, 2), joints_3d.reshape(-1, 3))
  if not error <= MAX_FIT_ERROR_PX:
    raise ValueError(f"{path}: annot3 does not project onto annot2 with any pinhole camera "
                     f"(RMS error {error:.1f} px)")
  actions = np.ravel(annot["activity_annotation"]).astype(np.int64)[frames] - 1
  return TestSequence(directory, os.path.basename(directory), frames, joints_2d, joints_3d,
                      take("univ_annot3", 3), actions, intrinsics)


def generate_test_examples(sequences: list[TestSequence], config):
  for sequence in sequences:
    for row in range(0, len(sequence.frames), config.test_every):
      frame_index = int(sequence.frames[row])
      image = video.read_image(os.path.join(sequence.directory, "imageSequence",
                                            f"img_{frame_index + 1:06d}.jpg"))
      view = person_view(image, sequence.joints_2d[row], sequence.joints_3d_univ[row],
                         sequence.intrinsics, config.image_size, config.margin)
      yield f"{sequence.name}/{frame_index:06d}", datasets.multiview_record(
          [view], sequence=sequence.name, frame=frame_index,
          action=int(sequence.actions[row]),
          joints_3d_camera=sequence.joints_3d[row][None].astype(np.float32))


# ---------------------------------------------------------------------------------- builder

@dataclasses.dataclass(kw_only=True)
class Mpi3dhpConfig(tfds.core.BuilderConfig):
  image_size: int = 256
  margin: float = 1.25
  train_every: int = 10
  test_every: int = 1
  cameras: tuple[int, ...] = DEFAULT_CAMERAS
  subjects: tuple[str, ...] = SUBJECTS
  test_sequences: tuple[str, ...] = TEST_SEQUENCES


def builder_config(image_size: int = 256, margin: float = 1.25, train_every: int = 10,
                   test_every: int = 1, cameras=DEFAULT_CAMERAS, subjects=SUBJECTS,
                   test_sequences=TEST_SEQUENCES) -> Mpi3dhpConfig:
  """A builder config named after everything that determines the data.

  Args:
    image_size: crop side, pixels.
    margin: crop side = margin x the extent of the 2D joints.
    train_every: step over the annotated training frames; test_every: over the valid test
      frames.
    cameras: the training cameras that form a multi-view sample.
    subjects, test_sequences: the training subjects and test sequences (all by default).
  """
  cameras, subjects, tests = tuple(cameras), tuple(subjects), tuple(test_sequences)
  if min(train_every, test_every) < 1 or image_size < 8 or margin <= 0 or not cameras:
    raise ValueError(f"Invalid MPI-INF-3DHP options: image_size={image_size}, margin={margin}, "
                     f"train_every={train_every}, test_every={test_every}, cameras={cameras}")
  name = (f"s{image_size}_m{int(round(margin * 100))}_train{train_every}_"
          f"{''.join(s.lower() for s in subjects)}_c{'-'.join(map(str, cameras))}"
          f"_test{test_every}_{''.join(t.lower() for t in tests)}")
  return Mpi3dhpConfig(name=name, image_size=image_size, margin=margin,
                       train_every=train_every, test_every=test_every, cameras=cameras,
                       subjects=subjects, test_sequences=tests)


class PosejaxMpiInf3dhp(tfds.core.GeneratorBasedBuilder):
  """MPI-INF-3DHP person crops (see posejax.data.real.mpi_inf_3dhp)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=datasets.multiview_features(
            J, sequence=tfds.features.Text(), frame=np.int64, action=np.int64,
            joints_3d_camera=tfds.features.Tensor(shape=(None, J, 3), dtype=np.float32)),
        homepage="https://vcai.mpi-inf.mpg.de/3dhp-dataset/", description=__doc__)

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    config = self.builder_config
    # Read and check every annotation file before writing anything.
    train = [read_train_sequence(os.path.join(manual_dir, s, q), config.cameras)
             for s in config.subjects for q in SEQUENCES]
    test = [read_test_sequence(os.path.join(manual_dir, TEST_DIR, t))
            for t in config.test_sequences]
    return {"train": self._generate_examples(train, "train"),
            "test": self._generate_examples(test, "test")}

  def _generate_examples(self, sequences, split):
    if split == "train":
      return generate_train_examples(sequences, self.builder_config.cameras, self.builder_config)
    return generate_test_examples(sequences, self.builder_config)


def builder(data_dir: str, **options) -> PosejaxMpiInf3dhp:
  """The MPI-INF-3DHP builder of `builder_config(**options)`, ArrayRecord files in `data_dir`."""
  return PosejaxMpiInf3dhp(config=builder_config(**options),
                           data_dir=os.path.expanduser(data_dir), file_format="array_record")


def prepare(manual_dir: str, data_dir: str, **options) -> PosejaxMpiInf3dhp:
  """Prepares MPI-INF-3DHP once from the release files in `manual_dir`."""
  return datasets.prepare_builder(builder(data_dir, **options), manual_dir)


def prepared_source(data_dir: str, **options) -> datasets.Source:
  """The Source of the prepared dataset: "train_multiview", "train_2d" (single training views)
  and "test" (one view; joints_3d = univ_annot3, joints_3d_camera = annot3)."""
  prepared = datasets.prepared_builder(builder(data_dir, **options), "mpi_inf_3dhp")
  return datasets.multiview_source(prepared, STREAMS)
