r"""Human3.6M as a TFDS dataset: the 4 synchronized views of a frame as one multi-view sample.

From the official release as its owners distribute it (http://vision.imar.ro/human3.6m/), one
directory per subject, unpacked into the manual dir:

    S1/MyPoseFeatures/D3_Positions_mono/Directions 1.54138969.cdf   (per action and camera)
    S1/Videos/Directions 1.54138969.mp4
    ...

Conventions:

- Poses: D3_Positions_mono holds each frame's 32 joints in the camera frame (mm), one CDF per
  sequence and camera (variable "Pose", [1, N, 96]). The 17 canonical joints are the usual
  subset [0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27], matched by name
  (`MAPPING`); every one is present.
- Cameras: the published intrinsics of the 4 cameras (`CAMERAS`, the values distributed with
  VideoPose3D, common/h36m_dataset.py) including their radial and tangential distortion. The
  extrinsics are not needed: the poses are in each camera's frame already, and training never
  uses extrinsics (docs/method.md section 4).
- Crops: the square box around the projected joints (side = margin x their extent). The
  videos are distorted (camera 54138969 moves a point at (x/z, y/z) = (0.40, -0.21) by
  16.6 px); with `undistort` (default) the crop is resampled so that it is the ideal pinhole
  image of the crop camera K, so K, the 2D joints (the exact projection of the 3D joints with
  K) and the pixels agree.
- Frames: 50 fps videos; a sequence has min(CDF frames, video frames) frames over its four
  cameras (some CDFs are a few frames shorter than their videos), sampled every `train_every`
  (training) or `test_every` (evaluation: 64, the usual protocol) frames from frame 0.
- Splits (the standard protocol): "train" S1, S5, S6, S7, S8; "test" S9, S11. Streams:
  "train_multiview" and "train_2d" (single views) from "train", "test" from "test".
- Actions: `ACTIONS` (15); a sample's "action" indexes it (file name variants such as
  "TakingPhoto" or "WalkingDog" map to "Photo" and "WalkDog"). The "_ALL" files are not
  sequences. S11 "Directions" is skipped: its camera 54138969 video is corrupt in the official
  release (VideoPose3D drops it too).
- A 2D joint is labeled (joints_2d_mask) where it lies inside the video frame.

Prepare:

    python -m experiments.prepare_data --dataset=h36m --manual_dir=~/h36m \
        --data_dir=~/posejax_data
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
import scipy.ndimage
import tensorflow_datasets as tfds

from posejax import skeleton
from posejax.data.real import crop, datasets, video

# The 32 joints of the D3_Positions files (H36M metadata; end sites named after their joint).
JOINTS_32 = (
    "Hip", "RightUpLeg", "RightLeg", "RightFoot", "RightToeBase", "RightToeEnd",
    "LeftUpLeg", "LeftLeg", "LeftFoot", "LeftToeBase", "LeftToeEnd",
    "Spine", "Spine1", "Neck", "Head", "HeadEnd",
    "LeftShoulder", "LeftArm", "LeftForeArm", "LeftHand", "LeftHandThumb", "LeftThumbEnd",
    "LeftWristEnd", "LeftWristEndSite",
    "RightShoulder", "RightArm", "RightForeArm", "RightHand", "RightHandThumb", "RightThumbEnd",
    "RightWristEnd", "RightWristEndSite")
MAPPING = skeleton.mapping_by_name("h36m_32", JOINTS_32, {
    "pelvis": "Hip", "right_hip": "RightUpLeg", "right_knee": "RightLeg",
    "right_ankle": "RightFoot", "left_hip": "LeftUpLeg", "left_knee": "LeftLeg",
    "left_ankle": "LeftFoot", "spine": "Spine1", "thorax": "Neck", "neck_nose": "Head",
    "head_top": "HeadEnd", "left_shoulder": "LeftArm", "left_elbow": "LeftForeArm",
    "left_wrist": "LeftHand", "right_shoulder": "RightArm", "right_elbow": "RightForeArm",
    "right_wrist": "RightHand"})
J = MAPPING.target.num_joints

SUBJECTS = {"train": ("S1", "S5", "S6", "S7", "S8"), "test": ("S9", "S11")}
STREAMS = {"train_multiview": "train", "train_2d": "train", "test": "test"}
ACTIONS = ("Directions", "Discussion", "Eating", "Greeting", "Phoning", "Photo", "Posing",
           "Purchases", "Sitting", "SittingDown", "Smoking", "Waiting", "WalkDog", "Walking",
           "WalkTogether")
_ACTION_ALIASES = {"TakingPhoto": "Photo", "WalkingDog": "WalkDog"}
_SKIPPED = {("S11", "Directions")}  # camera 54138969's video is corrupt in the release
POSE_DIR = os.path.join("MyPoseFeatures", "D3_Positions_mono")
VIDEO_DIR = "Videos"


@dataclasses.dataclass(frozen=True)
class Camera:
  """A Human3.6M camera: pinhole intrinsics plus the distortion of its lens.

  Attributes:
    name: the camera id in the file names.
    focal: (fx, fy) pixels.
    centre: (cx, cy) pixels (pixel centres at integer coordinates, as in the published values'
      use by VideoPose3D).
    radial: (k1, k2, k3).
    tangential: (p1, p2).
    size: (width, height) of its videos, pixels.
  """

  name: str
  focal: tuple[float, float]
  centre: tuple[float, float]
  radial: tuple[float, float, float]
  tangential: tuple[float, float]
  size: tuple[int, int]

  @property
  def intrinsics(self) -> np.ndarray:
    """[3, 3] float64 pinhole matrix."""
    return np.array([[self.focal[0], 0, self.centre[0]], [0, self.focal[1], self.centre[1]],
                     [0, 0, 1]])

  def distort(self, normalised) -> np.ndarray:
    """Normalised image points [N, 2] (x/z, y/z) -> where the lens puts them (normalised).

    The model of Human3.6M's published projection code as VideoPose3D implements it
    (common/camera.py, project_to_2d): radial polynomial in r^2 plus its tangential terms.
    """
    xy = np.asarray(normalised, np.float64)
    r2 = np.sum(xy ** 2, axis=-1, keepdims=True)
    k1, k2, k3 = self.radial
    radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
    p = np.asarray(self.tangential)
    tangential = np.sum(p * xy, axis=-1, keepdims=True)
    return xy * (radial + tangential) + p * r2

  def project(self, points_3d, distort: bool = True) -> np.ndarray:
    """Camera-frame points [N, 3] -> frame pixels [N, 2] (with or without the distortion)."""
    points_3d = np.asarray(points_3d, np.float64)
    xy = points_3d[:, :2] / points_3d[:, 2:]
    if distort:
      xy = self.distort(xy)
    return xy * np.asarray(self.focal) + np.asarray(self.centre)


# The published intrinsics (VideoPose3D, common/h36m_dataset.py: h36m_cameras_intrinsic_params).
CAMERAS = (
    Camera("54138969", (1145.0494384765625, 1143.7811279296875),
           (512.54150390625, 515.4514770507812),
           (-0.20709891617298126, 0.24777518212795258, -0.0030751503072679043),
           (-0.0009756988729350269, -0.00142447161488235), (1000, 1002)),
    Camera("55011271", (1149.6756591796875, 1147.5916748046875),
           (508.8486328125, 508.0649108886719),
           (-0.1942136287689209, 0.2404085397720337, 0.006819975562393665),
           (-0.0016190266469493508, -0.0027408944442868233), (1000, 1000)),
    Camera("58860488", (1149.1407470703125, 1148.7989501953125),
           (519.8158569335938, 501.40264892578125),
           (-0.2083381861448288, 0.25548800826072693, -0.0024604974314570427),
           (0.0014843869721516967, -0.0007599993259645998), (1000, 1000)),
    Camera("60457274", (1145.5113525390625, 1144.77392578125),
           (514.9682006835938, 501.88201904296875),
           (-0.198384091258049, 0.21832367777824402, -0.008947807364165783),
           (-0.0005872055771760643, -0.0018133620033040643), (1000, 1002)),
)

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
The Human3.6M release from http://vision.imar.ro/human3.6m/ (registration required): per
subject (train {', '.join(SUBJECTS['train'])}; test {', '.join(SUBJECTS['test'])}) the "Poses
D3 Positions mono" and "Videos" archives, unpacked into the manual dir as
  S1/{POSE_DIR}/Directions 1.54138969.cdf
  S1/{VIDEO_DIR}/Directions 1.54138969.mp4
  ...
"""


# ------------------------------------------------------------------------------- reading files

def read_poses(path: str) -> np.ndarray:
  """[N, 32, 3] float64 camera-frame joints (mm) of a D3_Positions(_mono) CDF file.

  Raises:
    FileNotFoundError / ValueError naming the file (missing, not a CDF, truncated, no "Pose"
    variable, wrong size).
  """
  import cdflib  # pylint: disable=import-outside-toplevel
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: pose file not found")
  try:
    cdf = cdflib.CDF(path)
    if "Pose" not in cdf.cdf_info().zVariables + cdf.cdf_info().rVariables:
      raise ValueError("it has no variable 'Pose'")
    poses = np.asarray(cdf.varget("Pose"), np.float64)
  except (OSError, ValueError, KeyError, IndexError) as error:
    raise ValueError(f"{path}: not a readable Human3.6M pose file ({error})") from None
  if poses.size % (len(JOINTS_32) * 3):
    raise ValueError(f"{path}: 'Pose' of shape {poses.shape} is not frames x 32 joints x 3")
  return poses.reshape(-1, len(JOINTS_32), 3)


@dataclasses.dataclass(frozen=True)
class Sequence:
  """One recorded sequence of a subject, seen by the 4 cameras.

  Attributes:
    subject: e.g. "S9".
    name: the file name's sequence part, e.g. "Walking 1".
    action: index into ACTIONS.
    pose_files, video_files: per camera of CAMERAS.
  """

  subject: str
  name: str
  action: int
  pose_files: tuple[str, ...]
  video_files: tuple[str, ...]


def action_index(sequence_name: str, where: str) -> int:
  """The ACTIONS index of a sequence name such as "Walking 1", "WalkDog" or "TakingPhoto 1"."""
  action = re.sub(r"\s*\d*$", "", sequence_name)
  action = _ACTION_ALIASES.get(action, action)
  if action not in ACTIONS:
    raise ValueError(f"{where}: unknown Human3.6M action {action!r}; expected one of {ACTIONS}")
  return ACTIONS.index(action)


def find_sequences(manual_dir: str, subjects) -> list[Sequence]:
  """The sequences of `subjects`, found from their pose files, with every camera's pose file and
  video checked to exist.

  Raises:
    FileNotFoundError: a subject's pose directory, or a camera's pose file or video, is missing
      (named).
  """
  sequences = []
  camera_names = [c.name for c in CAMERAS]
  for subject in subjects:
    pose_dir = os.path.join(manual_dir, subject, POSE_DIR)
    if not os.path.isdir(pose_dir):
      raise FileNotFoundError(f"{pose_dir}: missing; subject {subject} needs its poses and "
                              f"videos. Expected layout:\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
    names = set()
    for file in os.listdir(pose_dir):
      match = re.fullmatch(r"(.+)\.(\d+)\.cdf", file)
      if match and match.group(2) in camera_names and not file.startswith("_ALL"):
        names.add(match.group(1))
    if not names:
      raise FileNotFoundError(f"{pose_dir}: no pose files 'ACTION.CAMERA.cdf' of the cameras "
                              f"{camera_names}")
    for name in sorted(names):
      if (subject, re.sub(r"\s*\d*$", "", name)) in _SKIPPED:
        continue
      stem = [f"{name}.{camera}" for camera in camera_names]
      poses = tuple(os.path.join(pose_dir, s + ".cdf") for s in stem)
      videos = tuple(os.path.join(manual_dir, subject, VIDEO_DIR, s + ".mp4") for s in stem)
      for path in poses + videos:
        if not os.path.isfile(path):
          raise FileNotFoundError(f"{path}: missing (sequence {subject} {name!r} needs it for "
                                  "its 4 views)")
      sequences.append(Sequence(subject, name, action_index(name, poses[0]), poses, videos))
  return sequences


# ------------------------------------------------------------------------------------ crops

def undistorted_crop(frame, camera: Camera, centre, side: float, image_size: int):
  """The square box (centre, side) of a distorted frame as the ideal pinhole crop.

  Each crop pixel reads the frame where the lens puts its ray. The frame is first resampled
  (antialiased) at the crop's zoom over the box that those points cover, so the final
  bilinear reads are close to 1:1 and do not alias.

  Returns:
    (crop [S, S, 3] uint8, crop camera K [3, 3] float32 = crop_matrix @ intrinsics).
  """
  matrix = crop.crop_matrix(centre, side, image_size)
  camera_matrix = matrix @ camera.intrinsics
  u, v = np.meshgrid(np.arange(image_size, dtype=np.float64),
                     np.arange(image_size, dtype=np.float64))
  pixels = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], axis=-1)
  rays = pixels @ np.linalg.inv(camera_matrix).T  # last row of K is (0, 0, 1): z = 1
  frame_points = camera.distort(rays[:, :2]) * np.asarray(camera.focal) + np.asarray(
      camera.centre)
  zoom = image_size / side
  low, high = frame_points.min(0) - 2, frame_points.max(0) + 2
  region_size = int(np.ceil((high - low).max() * zoom))
  region_centre, region_side = (low + high) / 2, region_size / zoom
  region = crop.crop_image(frame, region_centre, region_side, region_size)
  x, y = crop.transform_points(crop.crop_matrix(region_centre, region_side, region_size),
                               frame_points).T
  channels = [scipy.ndimage.map_coordinates(region[..., c].astype(np.float32), [y, x],
                                            order=1, mode="constant", cval=0.0)
              for c in range(region.shape[-1])]
  image = np.clip(np.round(np.stack(channels, -1)), 0, 255).astype(np.uint8)
  return image.reshape(image_size, image_size, -1), camera_matrix.astype(np.float32)


def person_view(frame, joints_3d, camera: Camera, image_size: int, margin: float,
                undistort: bool = True) -> dict:
  """One view of a person: crop, crop camera and joints.

  Args:
    frame: [H, W, 3] uint8 video frame.
    joints_3d: [J, 3] camera-frame joints (mm), canonical order.
    camera: the view's camera.

  Returns:
    image [S, S, 3] uint8, camera [3, 3] K, joints_2d [J, 2] = the projection of joints_3d with
    K, joints_2d_mask [J] (inside the frame), joints_3d [J, 3] float32.
  """
  joints_3d = np.asarray(joints_3d, np.float64)
  ideal = camera.project(joints_3d, distort=False)
  centre, side = crop.square_box(ideal, margin=margin)
  if undistort:
    image, camera_matrix = undistorted_crop(frame, camera, centre, side, image_size)
  else:
    image, camera_matrix = crop.crop_view(frame, camera.intrinsics, centre, side, image_size)
  in_frame = camera.project(joints_3d, distort=undistort)
  height, width = frame.shape[:2]
  mask = ((in_frame >= -0.5) & (in_frame <= np.array([width, height]) - 0.5)).all(-1)
  projected = joints_3d @ np.asarray(camera_matrix, np.float64).T
  return {"image": image, "camera": camera_matrix,
          "joints_2d": (projected[:, :2] / projected[:, 2:]).astype(np.float32),
          "joints_2d_mask": mask, "joints_3d": joints_3d.astype(np.float32)}


# ---------------------------------------------------------------------------------- builder

@dataclasses.dataclass(kw_only=True)
class H36mConfig(tfds.core.BuilderConfig):
  image_size: int = 256
  margin: float = 1.25
  train_every: int = 5
  test_every: int = 64
  undistort: bool = True
  train_subjects: tuple[str, ...] = SUBJECTS["train"]
  test_subjects: tuple[str, ...] = SUBJECTS["test"]


def builder_config(image_size: int = 256, margin: float = 1.25, train_every: int = 5,
                   test_every: int = 64, undistort: bool = True,
                   train_subjects=SUBJECTS["train"], test_subjects=SUBJECTS["test"]):
  """A builder config named after everything that determines the data.

  Args:
    image_size: crop side, pixels.
    margin: crop side = margin x the extent of the projected joints.
    train_every, test_every: frame step of the training and test sequences (50 fps).
    undistort: resample crops into ideal pinhole images (see the module docstring).
    train_subjects, test_subjects: the protocol's subjects by default.
  """
  train_subjects, test_subjects = tuple(train_subjects), tuple(test_subjects)
  if min(train_every, test_every) < 1 or image_size < 8 or margin <= 0:
    raise ValueError(f"Invalid Human3.6M options: image_size={image_size}, margin={margin}, "
                     f"train_every={train_every}, test_every={test_every}")
  subjects = lambda names: "".join(s.lower() for s in names)  # noqa: E731
  name = (f"s{image_size}_m{int(round(margin * 100))}_train{train_every}"
          f"{subjects(train_subjects)}_test{test_every}{subjects(test_subjects)}"
          + ("" if undistort else "_distorted"))
  return H36mConfig(name=name, image_size=image_size, margin=margin, train_every=train_every,
                    test_every=test_every, undistort=undistort, train_subjects=train_subjects,
                    test_subjects=test_subjects)


def sequence_frames(sequence: Sequence) -> tuple[int, list[np.ndarray]]:
  """(frame count shared by the 4 views, per camera the [N, 17, 3] canonical joints in mm)."""
  # Every canonical joint is present in the 32: a plain gather (no JAX in data preparation).
  poses = [read_poses(path)[:, np.asarray(MAPPING.source_indices)]
           for path in sequence.pose_files]
  counts = [len(p) for p in poses] + [video.frame_count(v) for v in sequence.video_files]
  return min(counts), poses


def generate_examples(sequences: list[Sequence], every: int, config: H36mConfig):
  """(key, record) per sampled frame of each sequence: the 4 views of one moment."""
  for sequence in sequences:
    count, poses = sequence_frames(sequence)
    indices = range(0, count, every)
    streams = [video.iter_frames(path, indices) for path in sequence.video_files]
    for views in zip(*streams):
      index = views[0][0]
      for (_, frame), camera, path in zip(views, CAMERAS, sequence.video_files):
        if frame.shape[1::-1] != camera.size:
          raise ValueError(f"{path}: frames of {frame.shape[1]} x {frame.shape[0]} pixels, but "
                           f"camera {camera.name}'s published calibration is for "
                           f"{camera.size[0]} x {camera.size[1]}")
      per_view = [person_view(frame, pose[index], camera, config.image_size, config.margin,
                              config.undistort)
                  for (_, frame), pose, camera in zip(views, poses, CAMERAS)]
      key = f"{sequence.subject}/{sequence.name}/{index:06d}"
      yield key, datasets.multiview_record(
          per_view, subject=sequence.subject, sequence=sequence.name, action=sequence.action,
          frame=index)


class PosejaxH36m(tfds.core.GeneratorBasedBuilder):
  """Human3.6M multi-view person crops (see posejax.data.real.h36m)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=datasets.multiview_features(
            J, subject=tfds.features.Text(), sequence=tfds.features.Text(), action=np.int64,
            frame=np.int64),
        homepage="http://vision.imar.ro/human3.6m/", description=__doc__)

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    config = self.builder_config
    # Find and check every file before writing anything: a missing one fails fast.
    splits = {"train": (find_sequences(manual_dir, config.train_subjects), config.train_every),
              "test": (find_sequences(manual_dir, config.test_subjects), config.test_every)}
    for sequences, _ in splits.values():
      for sequence in sequences:
        sequence_frames(sequence)  # reads every pose file and video header
    return {split: self._generate_examples(sequences, every)
            for split, (sequences, every) in splits.items()}

  def _generate_examples(self, sequences, every):
    return generate_examples(sequences, every, self.builder_config)


def builder(data_dir: str, **options) -> PosejaxH36m:
  """The Human3.6M builder of `builder_config(**options)`, ArrayRecord files in `data_dir`."""
  return PosejaxH36m(config=builder_config(**options), data_dir=os.path.expanduser(data_dir),
                     file_format="array_record")


def prepare(manual_dir: str, data_dir: str, **options) -> PosejaxH36m:
  """Prepares Human3.6M once from the release files in `manual_dir` (see the module docstring;
  options: `builder_config`'s arguments)."""
  return datasets.prepare_builder(builder(data_dir, **options), manual_dir)


def prepared_source(data_dir: str, **options) -> datasets.Source:
  """The Source of the prepared dataset: streams "train_multiview", "train_2d" (single views of
  the training frames) and "test"; samples carry "action" (index into ACTIONS)."""
  prepared = datasets.prepared_builder(builder(data_dir, **options), "h36m")
  return datasets.multiview_source(prepared, STREAMS)
