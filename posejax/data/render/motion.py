"""Human motion for the synthetic renderer: captured clips, procedural motion, user poses.

Every source returns 3D joints of the canonical Human3.6M skeleton (`H36M`, 17 joints in the
order of `H36M.joint_names`) in the WORLD frame: right-handed, +Y up, the floor is Y = 0,
millimetres, float32, shape [T, 17, 3].

Sources:

- `load_deepmimic_clip`: the 15 motion-capture clips (walk, run, jump, cartwheel, ...) that ship
  with pybullet for its DeepMimic humanoid. The clips store joint rotations only; the joint
  positions come from forward kinematics of the humanoid URDF (also shipped with pybullet), done
  here in NumPy. Optional: without pybullet installed `deepmimic_clip_paths()` is empty.
- `procedural_motion`: smooth random joint angles within anatomical limits, posed by forward
  kinematics along the H36M tree for any bone lengths (varied proportions per subject).
- `load_pose_file`: a user's own poses from a .npy file.

This is host-side data generation (NumPy, not jitted).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import xml.etree.ElementTree as ElementTree

import numpy as np

from posejax.skeleton import H36M, Skeleton

# Height of the ankle joint above the floor (mm) when the foot is flat on it; the same value the
# renderer uses to stand a subject on the floor.
ANKLE_HEIGHT_MM = 80.0

_INDEX = {name: i for i, name in enumerate(H36M.joint_names)}


def bone_lengths(poses, skeleton: Skeleton = H36M) -> np.ndarray:
  """Length of every bone of `skeleton`.

  Args:
    poses: [..., J, 3] joint positions.
    skeleton: the keypoint structure (default the canonical Human3.6M-17).

  Returns:
    [..., E] bone lengths in the units of `poses`, in the order of `skeleton.bones`.
  """
  poses = np.asarray(poses)
  children, parents = (np.asarray(side) for side in zip(*skeleton.bones))
  return np.linalg.norm(poses[..., children, :] - poses[..., parents, :], axis=-1)


# ------------------------------------------------------------------------------------ user poses


def load_pose_file(path) -> np.ndarray:
  """Loads a user's 3D poses from a .npy file.

  Args:
    path: a .npy file holding an array [N, 17, 3] (N >= 1) of H36M joints in millimetres, in the
      world frame of this module (+Y up, floor at Y = 0; the renderer re-places every pose on the
      floor anyway).

  Returns:
    [N, 17, 3] float32 poses.

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: the file is not a readable .npy array, has the wrong shape, holds non-finite
      values, or its bones are so short that the poses are evidently not in millimetres.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"Pose file {path} does not exist")
  try:
    poses = np.load(path, allow_pickle=False)  # never unpickle a user's file: it can run code
  except (ValueError, OSError, EOFError) as error:
    raise ValueError(f"Pose file {path} is not a readable .npy array: {error}") from error
  expected = f"[N, {H36M.num_joints}, 3] (N >= 1) H36M joints in mm"
  if poses.ndim != 3 or poses.shape[1:] != (H36M.num_joints, 3) or poses.shape[0] < 1:
    raise ValueError(f"Pose file {path} holds an array of shape {poses.shape}, expected {expected}")
  if not np.issubdtype(poses.dtype, np.number) or np.issubdtype(poses.dtype, np.complexfloating):
    raise ValueError(f"Pose file {path} holds {poses.dtype} values, expected real numbers")
  poses = poses.astype(np.float32)
  bad = ~np.isfinite(poses).all(axis=(1, 2))
  if bad.any():
    raise ValueError(f"Pose file {path} has non-finite values in {bad.sum()} of {len(poses)} "
                     f"poses (first: pose {np.flatnonzero(bad)[0]})")
  # Metres are the usual mistake; such a subject would be rendered 1000 times too small.
  median_bone = float(np.median(bone_lengths(poses)))
  if median_bone < 20.0:
    raise ValueError(f"Pose file {path}: the median bone is {median_bone:.4g} long, expected "
                     "millimetres (a human's bones are 100-500 mm); are the poses in metres?")
  return poses


# -------------------------------------------------------------------------- rotation helpers


def _axis_angle_matrix(axis, angle) -> np.ndarray:
  """Rotation matrices [..., 3, 3] by `angle` [...] (radians, right-hand rule) about `axis` [3]."""
  x, y, z = np.asarray(axis, np.float64) / np.linalg.norm(axis)
  angle = np.asarray(angle, np.float64)
  c, s = np.cos(angle), np.sin(angle)
  t = 1.0 - c
  rows = ((t * x * x + c, t * x * y - s * z, t * x * z + s * y),
          (t * x * y + s * z, t * y * y + c, t * y * z - s * x),
          (t * x * z - s * y, t * y * z + s * x, t * z * z + c))
  return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)


def _quaternion_matrix(quaternion_wxyz) -> np.ndarray:
  """Rotation matrices [..., 3, 3] of quaternions [..., 4] (w, x, y, z), normalised first (the
  clips store them rounded to 6 digits, some visibly off unit length)."""
  q = np.asarray(quaternion_wxyz, np.float64)
  w, x, y, z = np.moveaxis(q / np.linalg.norm(q, axis=-1, keepdims=True), -1, 0)
  rows = ((1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)),
          (2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)),
          (2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)))
  return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)


def _rpy_matrix(roll_pitch_yaw) -> np.ndarray:
  """The URDF origin rotation [3, 3]: fixed-axis roll about X, then pitch about Y, then yaw
  about Z."""
  roll, pitch, yaw = roll_pitch_yaw
  return (_axis_angle_matrix((0, 0, 1), yaw) @ _axis_angle_matrix((0, 1, 0), pitch)
          @ _axis_angle_matrix((1, 0, 0), roll))


# ------------------------------------------------------------------------ DeepMimic humanoid

# pybullet's DeepMimic environment loads humanoid/humanoid.urdf with globalScaling=0.25
# (pybullet_envs/deep_mimic/env/humanoid_stable_pd.py), and the clips' root positions are in the
# metres of that scaled model; the URDF's own numbers are 4x larger.
_URDF_GLOBAL_SCALING = 0.25

# Where each joint's rotation sits in a clip frame (pybullet_envs/deep_mimic/env/
# humanoid_pose_interpolator.py, Slerp and PostProcessMotionData): column 0 is the frame duration,
# 1:4 the root position, 4:8 the root quaternion (w, x, y, z); then per URDF joint a quaternion
# (w, x, y, z) for a spherical joint or one angle (radians) for a revolute one.
_FRAME_SIZE = 44
_ROOT_POSITION = slice(1, 4)
_ROOT_QUATERNION = slice(4, 8)
_JOINT_COLUMNS = {
    "chest": slice(8, 12), "neck": slice(12, 16),
    "right_hip": slice(16, 20), "right_knee": slice(20, 21), "right_ankle": slice(21, 25),
    "right_shoulder": slice(25, 29), "right_elbow": slice(29, 30),
    "left_hip": slice(30, 34), "left_knee": slice(34, 35), "left_ankle": slice(35, 39),
    "left_shoulder": slice(39, 43), "left_elbow": slice(43, 44),
}
_COLUMNS_PER_TYPE = {"spherical": 4, "revolute": 1, "fixed": 0}


@dataclasses.dataclass(frozen=True)
class _UrdfJoint:
  name: str
  kind: str  # "spherical", "revolute" or "fixed"
  parent: str  # parent link
  child: str  # child link (named like the joint in this URDF)
  origin_position: np.ndarray  # [3] child frame origin in the parent link frame, model metres
  origin_rotation: np.ndarray  # [3, 3]
  axis: np.ndarray  # [3] rotation axis of a revolute joint


@dataclasses.dataclass(frozen=True)
class _Humanoid:
  base_link: str
  joints: tuple[_UrdfJoint, ...]  # parents before children
  head_centre: np.ndarray  # [3] the head sphere's centre in the neck link frame, model metres
  head_radius: float


def _pybullet_data_dir() -> pathlib.Path | None:
  try:
    import pybullet_data  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  return pathlib.Path(pybullet_data.getDataPath())


def _floats(text: str | None, default: str) -> np.ndarray:
  return np.array([float(v) for v in (text or default).split()], np.float64)


@functools.lru_cache(maxsize=None)
def _humanoid() -> _Humanoid:
  """Parses pybullet's DeepMimic humanoid URDF (link offsets in the 0.25-scaled model's metres)."""
  data_dir = _pybullet_data_dir()
  if data_dir is None:
    raise ModuleNotFoundError("Loading DeepMimic clips needs pybullet for the humanoid's URDF: "
                              "pip install pybullet")
  urdf = data_dir / "humanoid" / "humanoid.urdf"
  # The shipped file ends in a NUL byte, which the XML parser rejects.
  root = ElementTree.fromstring(urdf.read_bytes().rstrip(b"\0 \r\n\t"))
  joints = []
  for element in root.iter("joint"):
    origin = element.find("origin")
    origin = {} if origin is None else origin.attrib
    axis = element.find("axis")
    joints.append(_UrdfJoint(
        name=element.get("name"), kind=element.get("type"),
        parent=element.find("parent").get("link"), child=element.find("child").get("link"),
        origin_position=_floats(origin.get("xyz"), "0 0 0") * _URDF_GLOBAL_SCALING,
        origin_rotation=_rpy_matrix(_floats(origin.get("rpy"), "0 0 0")),
        axis=_floats(None if axis is None else axis.get("xyz"), "1 0 0")))
  children = {j.child for j in joints}
  (base_link,) = {j.parent for j in joints} - children
  ordered, placed = [], {base_link}
  while len(ordered) < len(joints):  # topological order, robust to any order in the file
    ready = [j for j in joints if j.parent in placed and j.child not in placed]
    if not ready:
      raise ValueError(f"{urdf}: the joints do not form a tree")
    ordered += ready
    placed |= {j.child for j in ready}
  for joint in ordered:
    expected = _COLUMNS_PER_TYPE.get(joint.kind)
    columns = _JOINT_COLUMNS.get(joint.name, slice(0, 0))
    if expected is None or columns.stop - columns.start != expected:
      raise ValueError(f"{urdf}: joint {joint.name!r} of type {joint.kind!r} does not match the "
                       "DeepMimic frame layout")
  neck = next(link for link in root.iter("link") if link.get("name") == "neck")
  head_origin = neck.find("collision/origin").get("xyz")
  head_radius = float(neck.find("collision/geometry/sphere").get("radius"))
  return _Humanoid(base_link=base_link, joints=tuple(ordered),
                   head_centre=_floats(head_origin, "0 0 0") * _URDF_GLOBAL_SCALING,
                   head_radius=head_radius * _URDF_GLOBAL_SCALING)


def _humanoid_link_frames(
    frames: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """Forward kinematics of the DeepMimic humanoid, as pybullet computes it.

  Args:
    frames: [T, 44] clip frames (see `_JOINT_COLUMNS`).

  Returns:
    (positions, rotations): per link name, the world position [T, 3] of the link frame origin
    (= its joint) in the clip's metres, and the link frame's world rotation [T, 3, 3].
  """
  model = _humanoid()
  positions = {model.base_link: frames[:, _ROOT_POSITION]}
  rotations = {model.base_link: _quaternion_matrix(frames[:, _ROOT_QUATERNION])}
  for joint in model.joints:
    parent_position, parent_rotation = positions[joint.parent], rotations[joint.parent]
    positions[joint.child] = parent_position + parent_rotation @ joint.origin_position
    rotation = parent_rotation @ joint.origin_rotation
    columns = frames[:, _JOINT_COLUMNS.get(joint.name, slice(0, 0))]
    if joint.kind == "spherical":
      rotation = rotation @ _quaternion_matrix(columns)
    elif joint.kind == "revolute":
      rotation = rotation @ _axis_angle_matrix(joint.axis, columns[:, 0])
    rotations[joint.child] = rotation
  return positions, rotations


def _deepmimic_joint_points(model: _Humanoid) -> dict[str, tuple[str, np.ndarray]]:
  """Each H36M joint as (link, point in that link's frame, model metres).

  The humanoid faces its +X axis and its Y axis runs up the body (the feet point along +X), so
  the nose is forward of the head's vertical axis.
  """
  on_joint = np.zeros(3)
  centre, radius = model.head_centre, model.head_radius
  points = {
      "pelvis": "root",
      # The chest's spherical joint (the lumbar articulation) is where the H36M spine joint is:
      # 0.236 m above the pelvis, against the H36M mean 233 mm, with the neck base 0.224 m above
      # it (H36M spine-thorax 257 mm). The midpoint of pelvis-chest would sit far too low.
      "spine": "chest",
      # The neck's joint is the base of the neck, at shoulder height: the H36M thorax.
      "thorax": "neck",
      "neck_nose": ("neck", centre + np.array([0.5 * radius, -0.25 * radius, 0.0])),
      "head_top": ("neck", centre + np.array([0.0, radius, 0.0])),
  }
  for side in ("left", "right"):
    points |= {f"{side}_{part}": f"{side}_{part}"
               for part in ("hip", "knee", "ankle", "shoulder", "elbow", "wrist")}
  return {name: (p, on_joint) if isinstance(p, str) else p for name, p in points.items()}


def _leg_length_scale(model: _Humanoid) -> float:
  """Millimetres per clip metre that give the humanoid the H36M mean leg length (hip-knee plus
  knee-ankle): 1079 (1000 x 1.079), a 1.75 m person instead of the humanoid's 1.62 m."""
  by_child = {j.child: np.linalg.norm(j.origin_position) for j in model.joints}
  humanoid_leg = by_child["right_knee"] + by_child["right_ankle"]
  lengths = dict(zip(H36M.bones, H36M.mean_bone_lengths_mm))
  h36m_leg = (lengths[(_INDEX["right_knee"], _INDEX["right_hip"])]
              + lengths[(_INDEX["right_ankle"], _INDEX["right_knee"])])
  return h36m_leg / humanoid_leg


def deepmimic_clip_paths() -> list[pathlib.Path]:
  """The humanoid motion clips shipped with pybullet (pybullet_data/data/motions/
  humanoid3d_*.txt), sorted by name; [] if pybullet is not installed."""
  data_dir = _pybullet_data_dir()
  if data_dir is None:
    return []
  return sorted((data_dir / "data" / "motions").glob("humanoid3d_*.txt"))


def _read_deepmimic_frames(path: pathlib.Path) -> np.ndarray:
  """The [T, 44] float64 frames of a clip, validated."""
  if not path.is_file():
    raise FileNotFoundError(f"DeepMimic clip {path} does not exist")
  try:
    frames = json.loads(path.read_text())["Frames"]
    frames = np.asarray(frames, np.float64)
  except (ValueError, TypeError, KeyError, UnicodeDecodeError) as error:
    raise ValueError(f"DeepMimic clip {path} is malformed: expected JSON with a 'Frames' list of "
                     f"{_FRAME_SIZE}-number lists ({type(error).__name__}: {error})") from error
  if frames.ndim != 2 or frames.shape[0] < 1 or frames.shape[1] != _FRAME_SIZE:
    raise ValueError(f"DeepMimic clip {path} is malformed: its frames form an array of shape "
                     f"{frames.shape}, expected [T, {_FRAME_SIZE}]")
  if not np.isfinite(frames).all():
    raise ValueError(f"DeepMimic clip {path} is malformed: it holds non-finite numbers")
  quaternion_columns = [_ROOT_QUATERNION] + [c for c in _JOINT_COLUMNS.values() if
                                             c.stop - c.start == 4]
  norms = np.stack([np.linalg.norm(frames[:, c], axis=1) for c in quaternion_columns])
  if (norms < 0.5).any() or (norms > 1.5).any():
    raise ValueError(f"DeepMimic clip {path} is malformed: quaternion norms range from "
                     f"{norms.min():.3g} to {norms.max():.3g}, expected unit quaternions")
  return frames


def load_deepmimic_clip(path) -> np.ndarray:
  """Loads a DeepMimic motion clip as H36M joints.

  The joint positions are forward kinematics of pybullet's DeepMimic humanoid (its URDF, scaled
  by 0.25 as pybullet's DeepMimic environment loads it) under the clip's root motion and joint
  rotations. The humanoid's joints give 15 of the 17 H36M joints directly, the head sphere the
  other two:

    pelvis = the root; hips, knees, ankles, shoulders, elbows, wrists = the same-named joints;
    spine = the chest joint (the lumbar articulation, at the H36M spine's height);
    thorax = the neck joint (the base of the neck, at shoulder height);
    head_top = the top of the head sphere (its centre plus its radius along the neck link's up
    axis); neck_nose = about the nose: half the head radius forward of the head sphere's centre
    and a quarter radius below it (the H36M "neck/nose" joint is the head joint, in front of
    the head's vertical axis; this splits thorax-head_top 170:149 mm, near H36M's 121:115).

  Every link is rigid, so every bone length is constant over a clip.

  Units and placement: the humanoid (1.62 m) is scaled to the H36M mean leg length (1.75 m tall,
  x1.079 on top of metres -> mm, root motion included, so strides stay consistent); the clips'
  world is already +Y up, and each clip is shifted vertically so that its lowest ankle over the
  whole clip is at `ANKLE_HEIGHT_MM`. Frames are returned as stored: most clips are at 60 Hz,
  walk, run, kick and punch at 30 Hz, backflip and spin at about 16-24 Hz.

  Args:
    path: a humanoid3d_*.txt clip (see `deepmimic_clip_paths`).

  Returns:
    [T, 17, 3] float32 joints in mm, world frame.

  Raises:
    FileNotFoundError: the clip does not exist.
    ValueError: the clip is malformed.
    ModuleNotFoundError: pybullet (which ships the humanoid's URDF) is not installed.
  """
  path = pathlib.Path(path)
  frames = _read_deepmimic_frames(path)
  model = _humanoid()
  positions, rotations = _humanoid_link_frames(frames)
  joints = np.stack([
      positions[link] + rotations[link] @ point
      for link, point in (_deepmimic_joint_points(model)[name] for name in H36M.joint_names)],
                    axis=1)
  joints *= _leg_length_scale(model)
  ankles = joints[:, [_INDEX["left_ankle"], _INDEX["right_ankle"]], 1]
  joints[..., 1] += ANKLE_HEIGHT_MM - ankles.min()
  return joints.astype(np.float32)


# ------------------------------------------------------------------------ procedural motion

# The body frame of the rest pose: facing +Z, up +Y, so the body's left is +X (right-handed).
_FORWARD = np.array([0.0, 0.0, 1.0])


def _unit(*xyz) -> np.ndarray:
  return np.asarray(xyz, np.float64) / np.linalg.norm(xyz)


# The rest pose (an A-pose: standing straight, arms 30 degrees out from the sides): each bone's
# direction from its parent joint, by child joint, in the body frame.
REST_POSE_DIRECTIONS = {
    "right_hip": _unit(-1, 0, 0), "right_knee": _unit(0, -1, 0), "right_ankle": _unit(0, -1, 0),
    "left_hip": _unit(1, 0, 0), "left_knee": _unit(0, -1, 0), "left_ankle": _unit(0, -1, 0),
    "spine": _unit(0, 1, 0), "thorax": _unit(0, 1, 0),
    # The H36M neck/nose joint is the head joint, forward of the neck; the head top is above and
    # a little behind it.
    "neck_nose": _unit(0, 1, 0.3), "head_top": _unit(0, 1, -0.45),
    "left_shoulder": _unit(1, -0.15, 0), "right_shoulder": _unit(-1, -0.15, 0),
    "left_elbow": _unit(0.5, -0.866, 0), "left_wrist": _unit(0.5, -0.866, 0),
    "right_elbow": _unit(-0.5, -0.866, 0), "right_wrist": _unit(-0.5, -0.866, 0),
}

# Joint-angle limits in degrees, (lowest, neutral, highest), relative to the rest pose.
# Flexion swings a bone forward (for the knee: the shin backward), abduction away from the body's
# midline (for the spine and neck: lateral bend), twist turns it about its own axis.
_BALL_JOINT_LIMITS = {
    # bone (by child joint): ((flexion), (abduction), (twist))
    "spine": ((-15, 0, 35), (-15, 0, 15), (-20, 0, 20)),  # lumbar
    "thorax": ((-10, 0, 20), (-10, 0, 10), (-15, 0, 15)),  # thoracic
    "neck_nose": ((-30, 0, 40), (-20, 0, 20), (-50, 0, 50)),
    "right_knee": ((-20, 5, 100), (-15, 5, 40), (-30, 0, 30)),  # the hip moves the thigh
    "left_knee": ((-20, 5, 100), (-15, 5, 40), (-30, 0, 30)),
    # The shoulder moves the upper arm; its abduction is on top of the rest pose's 30 degrees.
    "right_elbow": ((-40, 0, 120), (-25, 0, 90), (-60, 0, 60)),
    "left_elbow": ((-40, 0, 120), (-25, 0, 90), (-60, 0, 60)),
}
_HINGE_LIMITS = {  # one-way hinges: the knee moves the shin backward, the elbow the forearm forward
    "right_ankle": (0, 10, 130), "left_ankle": (0, 10, 130),
    "right_wrist": (0, 20, 140), "left_wrist": (0, 20, 140),
}
_HINGE_BENDS_FORWARD = {"right_ankle": False, "left_ankle": False,
                        "right_wrist": True, "left_wrist": True}
_PELVIS_TILT_LIMITS = ((-10, 0, 15), (-8, 0, 8))  # forward tilt, sideways roll

# Time scales: joint angles change at 0.05-0.3 Hz, the heading and the position on the floor
# at 0.02-0.1 Hz, so that at 30 Hz no joint moves more than about 100 mm between frames.
_ANGLE_FREQUENCIES_HZ = (0.05, 0.3)
_ROOT_FREQUENCIES_HZ = (0.02, 0.1)
_MAX_ROOT_EXCURSION_MM = 1000.0
_MAX_YAW_SWING_RAD = 1.5


def _smooth_signal(rng: np.random.Generator, times_s: np.ndarray, frequencies_hz,
                   num_terms: int = 3) -> np.ndarray:
  """A smooth random signal in [-1, 1]: a normalised sum of a few random sinusoids.

  Args:
    rng: the random generator.
    times_s: [T] sample times in seconds.
    frequencies_hz: (lowest, highest) frequency of the terms.
    num_terms: how many sinusoids.

  Returns:
    [T] float64 signal.
  """
  frequencies = rng.uniform(*frequencies_hz, size=num_terms)
  phases = rng.uniform(0.0, 2 * np.pi, size=num_terms)
  weights = rng.uniform(0.2, 1.0, size=num_terms)
  terms = np.sin(2 * np.pi * frequencies * times_s[:, None] + phases)
  return terms @ weights / weights.sum()


def _limited_angle(rng: np.random.Generator, times_s: np.ndarray, limits_deg) -> np.ndarray:
  """A smooth random joint angle [T] (radians) strictly inside (lowest, highest).

  A random offset plus a smooth signal, squashed by tanh into (-1, 1), is mapped linearly onto
  (lowest, neutral) below zero and (neutral, highest) above it: angles stay within the limits
  without clipping (which would make them stick there) and crowd towards the neutral pose.
  """
  lowest, neutral, highest = np.deg2rad(limits_deg)
  squashed = np.tanh(rng.normal(0.0, 0.6) + rng.uniform(0.3, 1.2)
                     * _smooth_signal(rng, times_s, _ANGLE_FREQUENCIES_HZ))
  return neutral + np.where(squashed > 0, squashed * (highest - neutral),
                            squashed * (neutral - lowest))


def _ball_joint_rotation(rest_direction: np.ndarray, flexion, abduction, twist,
                         side: float) -> np.ndarray:
  """The local rotations [T, 3, 3] of a bone with three degrees of freedom.

  Args:
    rest_direction: [3] the bone's rest direction in its parent's frame.
    flexion, abduction, twist: [T] angles (radians).
    side: +1 for a bone on the body's left or the midline, -1 on the right, so that positive
      abduction and twist mirror between the sides.
  """
  flexion_axis = np.cross(rest_direction, _FORWARD)  # turns the bone towards the front
  return (_axis_angle_matrix(flexion_axis, flexion)
          @ _axis_angle_matrix(_FORWARD, side * abduction)
          @ _axis_angle_matrix(rest_direction, side * twist))


def _default_bone_lengths(bone_lengths_mm) -> np.ndarray:
  if bone_lengths_mm is None:
    return np.asarray(H36M.mean_bone_lengths_mm, np.float64)
  lengths = np.asarray(bone_lengths_mm, np.float64)
  num_bones = len(H36M.bones)
  if lengths.shape != (num_bones,) or not (np.isfinite(lengths).all() and (lengths > 0).all()):
    raise ValueError(f"bone_lengths_mm must be {num_bones} positive lengths (mm, order of "
                     f"H36M.bones), got {lengths.shape} array {lengths}")
  return lengths


def procedural_motion(rng: np.random.Generator, num_frames: int, *, bone_lengths_mm=None,
                      frame_rate_hz: float = 30.0) -> np.ndarray:
  """Smooth random human motion within anatomical joint limits.

  Every joint angle is a smooth random function of time inside its limits (knees and elbows
  bend one way only, hips and shoulders within cones around their rest directions, spine and
  neck a little): see `_BALL_JOINT_LIMITS` and `_HINGE_LIMITS`. The pose is the rest pose
  `REST_POSE_DIRECTIONS` (an A-pose) rotated joint by joint down the H36M kinematic tree, so
  every bone has exactly its requested length in every frame. The body turns slowly about the
  vertical (a random heading swinging up to 1.5 rad), tilts its pelvis a little and drifts on the
  floor (up to 1 m from the origin); each frame is then lifted so that its lower ankle is at
  `ANKLE_HEIGHT_MM`. At the default 30 Hz no joint moves more than about 100 mm between frames.

  Args:
    rng: the random generator (the motion is a deterministic function of its state).
    num_frames: T >= 1.
    bone_lengths_mm: [16] bone lengths in mm in the order of `H36M.bones` (e.g. a jittered
      subject); default `H36M.mean_bone_lengths_mm`.
    frame_rate_hz: frames per second.

  Returns:
    [T, 17, 3] float32 joints in mm, world frame.
  """
  if int(num_frames) != num_frames or num_frames < 1:
    raise ValueError(f"num_frames must be a positive integer, got {num_frames}")
  if not frame_rate_hz > 0:
    raise ValueError(f"frame_rate_hz must be positive, got {frame_rate_hz}")
  lengths = dict(zip(H36M.bones, _default_bone_lengths(bone_lengths_mm)))
  times_s = np.arange(int(num_frames)) / frame_rate_hz

  # Global motion: heading (yaw about +Y), pelvis tilt, position on the floor.
  yaw = rng.uniform(0, 2 * np.pi) + _MAX_YAW_SWING_RAD * _smooth_signal(
      rng, times_s, _ROOT_FREQUENCIES_HZ)
  tilt, roll = (_limited_angle(rng, times_s, limits) for limits in _PELVIS_TILT_LIMITS)
  root_rotation = (_axis_angle_matrix((0, 1, 0), yaw) @ _axis_angle_matrix((1, 0, 0), tilt)
                   @ _axis_angle_matrix(_FORWARD, roll))
  excursion = rng.uniform(0, _MAX_ROOT_EXCURSION_MM, size=2)
  root_xz = np.stack([excursion[i] * _smooth_signal(rng, times_s, _ROOT_FREQUENCIES_HZ)
                      for i in range(2)], axis=-1)

  # Each bone's frame is its parent bone's frame times its own local rotation; the pelvis-hip,
  # thorax-shoulder and head bones are rigid with their parent.
  root = H36M.root
  positions = np.zeros((len(times_s), H36M.num_joints, 3))
  positions[:, root] = np.stack([root_xz[:, 0], np.zeros_like(yaw), root_xz[:, 1]], axis=-1)
  frames = {root: root_rotation}  # by joint: the frame of the bone ending at it
  for joint, parent in H36M.bones:  # parents come before their children
    name = H36M.joint_names[joint]
    rest = REST_POSE_DIRECTIONS[name]
    side = -1.0 if name.startswith("right") else 1.0
    local = None
    if name in _BALL_JOINT_LIMITS:
      angles = (_limited_angle(rng, times_s, limits) for limits in _BALL_JOINT_LIMITS[name])
      local = _ball_joint_rotation(rest, *angles, side)
    elif name in _HINGE_LIMITS:
      bend = _limited_angle(rng, times_s, _HINGE_LIMITS[name])
      axis = np.cross(rest, _FORWARD) * (1.0 if _HINGE_BENDS_FORWARD[name] else -1.0)
      local = _axis_angle_matrix(axis, bend)
    frame = frames[parent] if local is None else frames[parent] @ local
    frames[joint] = frame
    positions[:, joint] = positions[:, parent] + frame @ (rest * lengths[(joint, parent)])

  ankles = positions[:, [_INDEX["left_ankle"], _INDEX["right_ankle"]], 1]
  positions[..., 1] += (ANKLE_HEIGHT_MM - ankles.min(axis=1))[:, None]
  return positions.astype(np.float32)
