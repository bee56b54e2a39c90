"""Keypoint skeletons as data, and joint-order mappings between datasets.

A `Skeleton` is a small frozen description of a keypoint structure: joint names, the kinematic
tree (a parent per joint), the root, the scale pair (k, l) whose distance defines the scale
normalisation, the left/right pairs for flipping and the mean bone lengths in millimetres.
Every function of posejax takes one (defaulting to `H36M`) instead of assuming 17 joints, so the
method runs unchanged on hands, animals or objects.

A `Skeleton` is a static pytree (no leaves): it can be passed straight through `jax.jit`, where
it acts as a compile-time constant.

`JointMapping` maps a dataset's joint order onto a skeleton; a joint that the dataset lacks is
marked missing (mask False), never invented from its neighbours.
"""

from __future__ import annotations

import dataclasses
import jax
import jax.numpy as jnp
import numpy as np


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Skeleton:
  """A keypoint structure.

  Attributes:
    name: a short identifier.
    joint_names: the J joint names, in array order.
    parents: for each joint the index of its parent in the kinematic tree, -1 for the root.
    scale_pair: (k, l), the joints whose distance is the unit of scale normalisation
      (docs/method.md section 1: thorax and pelvis for humans).
    flip_pairs: (left, right) index pairs swapped by a horizontal flip.
    mean_bone_lengths_mm: for each bone of `bones` (same order) its mean length in mm.
    mean_scale_mm: the mean distance between the scale pair in mm, to turn the bone lengths into
      scale-normalised units.
  """

  name: str
  joint_names: tuple[str, ...]
  parents: tuple[int, ...]
  scale_pair: tuple[int, int]
  flip_pairs: tuple[tuple[int, int], ...]
  mean_bone_lengths_mm: tuple[float, ...]
  mean_scale_mm: float

  def __post_init__(self):
    num_joints = len(self.joint_names)
    problems = []
    if len(self.parents) != num_joints:
      problems.append(f"{len(self.parents)} parents for {num_joints} joints")
    roots = [j for j, p in enumerate(self.parents) if p == -1]
    if len(roots) != 1:
      problems.append(f"exactly one joint must have parent -1, got {roots}")
    bad_parents = [p for p in self.parents if not -1 <= p < num_joints]
    if bad_parents:
      problems.append(f"parent indices out of range: {bad_parents}")
    if len(set(self.joint_names)) != num_joints:
      problems.append("joint names are not unique")
    k, l = self.scale_pair
    if k == l or not (0 <= k < num_joints and 0 <= l < num_joints):
      problems.append(f"scale_pair {self.scale_pair} must be two distinct joint indices")
    flipped = [j for pair in self.flip_pairs for j in pair]
    if len(set(flipped)) != len(flipped) or any(not 0 <= j < num_joints for j in flipped):
      problems.append(f"flip_pairs {self.flip_pairs} must be disjoint valid joint indices")
    if len(self.mean_bone_lengths_mm) != num_joints - 1:
      problems.append(f"{len(self.mean_bone_lengths_mm)} bone lengths for {num_joints - 1} bones")
    if self.mean_scale_mm <= 0:
      problems.append(f"mean_scale_mm must be positive, got {self.mean_scale_mm}")
    if problems:
      raise ValueError(f"Invalid skeleton {self.name!r}: " + "; ".join(problems))

  @property
  def num_joints(self) -> int:
    return len(self.joint_names)

  @property
  def root(self) -> int:
    return self.parents.index(-1)

  @property
  def bones(self) -> tuple[tuple[int, int], ...]:
    """The (child, parent) pairs of the kinematic tree, in joint order (root excluded)."""
    return tuple((j, p) for j, p in enumerate(self.parents) if p >= 0)

  @property
  def flip_permutation(self) -> tuple[int, ...]:
    """Index permutation that swaps left and right joints: `flipped = joints[..., perm, :]`."""
    perm = list(range(self.num_joints))
    for left, right in self.flip_pairs:
      perm[left], perm[right] = right, left
    return tuple(perm)

  @property
  def mean_bone_lengths(self) -> np.ndarray:
    """Mean bone lengths in scale-normalised units (scale pair distance = 1), float32 [E]."""
    return np.asarray(self.mean_bone_lengths_mm, np.float32) / np.float32(self.mean_scale_mm)

  def index(self, joint_name: str) -> int:
    try:
      return self.joint_names.index(joint_name)
    except ValueError:
      raise KeyError(f"{joint_name!r} is not a joint of skeleton {self.name!r}; "
                     f"its joints are {self.joint_names}") from None


def _bone_lengths_by_child(skeleton_parents, lengths_by_child):
  """Orders per-child bone lengths like `Skeleton.bones`."""
  return tuple(lengths_by_child[j] for j, p in enumerate(skeleton_parents) if p >= 0)


_H36M_JOINTS = (
    "pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "spine", "thorax", "neck_nose", "head_top", "left_shoulder", "left_elbow", "left_wrist",
    "right_shoulder", "right_elbow", "right_wrist")
_H36M_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
# Bone lengths (mm, indexed by child joint) of the Human3.6M subject S1 skeleton, the usual
# stand-in for the training-set mean; dataset builders compute their own means from the data.
_H36M_BONE_MM_BY_CHILD = {
    1: 132.95, 2: 442.89, 3: 454.21, 4: 132.95, 5: 442.89, 6: 454.21, 7: 233.38, 8: 257.08,
    9: 121.13, 10: 115.00, 11: 151.03, 12: 278.88, 13: 251.73, 14: 151.03, 15: 278.88, 16: 251.73,
}

H36M = Skeleton(
    name="h36m_17",
    joint_names=_H36M_JOINTS,
    parents=_H36M_PARENTS,
    scale_pair=(8, 0),  # (thorax, pelvis)
    flip_pairs=((4, 1), (5, 2), (6, 3), (11, 14), (12, 15), (13, 16)),
    mean_bone_lengths_mm=_bone_lengths_by_child(_H36M_PARENTS, _H36M_BONE_MM_BY_CHILD),
    # Thorax-pelvis distance with a straight spine (pelvis-spine + spine-thorax): the S1 value.
    mean_scale_mm=233.38 + 257.08,
)


@dataclasses.dataclass(frozen=True)
class JointMapping:
  """Maps a dataset's joint order onto a target skeleton.

  Attributes:
    name: the source joint set, e.g. "mpii_16".
    source_joint_names: the source joints in the dataset's order.
    target: the skeleton mapped onto.
    source_indices: for each target joint, the index of the source joint that IS that joint,
      or -1 where the source has no such joint.
  """

  name: str
  source_joint_names: tuple[str, ...]
  target: Skeleton
  source_indices: tuple[int, ...]

  @property
  def num_source_joints(self) -> int:
    return len(self.source_joint_names)

  def __call__(self, values, source_mask=None):
    """Reorders per-joint values into the target skeleton's order.

    Args:
      values: [..., J_source, D] per-joint values (2D or 3D coordinates, ...).
      source_mask: optional [..., J_source] bool, the dataset's own visibility/label mask.

    Returns:
      (mapped [..., J_target, D], mask [..., J_target] bool); joints the source lacks (or has
      masked out) are zeros with mask False.
    """
    values = jnp.asarray(values)
    if values.shape[-2] != self.num_source_joints:
      raise ValueError(f"{self.name} has {self.num_source_joints} joints, got values of shape "
                       f"{values.shape}")
    present = np.asarray(self.source_indices) >= 0
    gather = np.where(present, self.source_indices, 0)
    mapped = values[..., gather, :]
    mask = jnp.broadcast_to(jnp.asarray(present), mapped.shape[:-1])
    if source_mask is not None:
      mask = mask & jnp.asarray(source_mask, bool)[..., gather]
    return jnp.where(mask[..., None], mapped, 0), mask


def mapping_by_name(name: str, source_joint_names, correspondence: dict[str, str],
                    target: Skeleton = H36M) -> JointMapping:
  """Builds a JointMapping from {target joint name: source joint name} (absent = missing)."""
  unknown_target = set(correspondence) - set(target.joint_names)
  unknown_source = set(correspondence.values()) - set(source_joint_names)
  if unknown_target or unknown_source:
    raise ValueError(f"{name}: unknown target joints {sorted(unknown_target)}, "
                     f"unknown source joints {sorted(unknown_source)}")
  indices = tuple(
      source_joint_names.index(correspondence[joint]) if joint in correspondence else -1
      for joint in target.joint_names)
  return JointMapping(name, tuple(source_joint_names), target, indices)


_MPII_JOINTS = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
    "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow",
    "l_wrist")
_COCO_JOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle")
# MPI-INF-3DHP test set (annot_data.mat 'annot3'): 17 joints in this order.
_MPI_INF_3DHP_TEST_JOINTS = (
    "head_top", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
    "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
    "left_knee", "left_ankle", "pelvis", "spine", "head")
# MPI-INF-3DHP training sequences (annot.mat): 28 joints in this order.
_MPI_INF_3DHP_TRAIN_JOINTS = (
    "spine3", "spine4", "spine2", "spine", "pelvis", "neck", "head", "head_top",
    "left_clavicle", "left_shoulder", "left_elbow", "left_wrist", "left_hand",
    "right_clavicle", "right_shoulder", "right_elbow", "right_wrist", "right_hand",
    "left_hip", "left_knee", "left_ankle", "left_foot", "left_toe",
    "right_hip", "right_knee", "right_ankle", "right_foot", "right_toe")

_LIMB_JOINTS = tuple(f"{side}_{part}" for side in ("left", "right")
                     for part in ("hip", "knee", "ankle", "shoulder", "elbow", "wrist"))

MPII_TO_H36M = mapping_by_name("mpii_16", _MPII_JOINTS, {
    "pelvis": "pelvis", "thorax": "thorax", "neck_nose": "upper_neck", "head_top": "head_top",
    **{limb: limb[0] + "_" + limb.split("_")[1] for limb in _LIMB_JOINTS},  # left_hip: l_hip
})
# COCO has no pelvis, spine, thorax or head top: those stay missing (the hip midpoint is NOT
# the pelvis joint of Human3.6M, so it is not invented). COCO's nose is H36M's neck/nose joint.
COCO_TO_H36M = mapping_by_name("coco_17", _COCO_JOINTS, {
    "neck_nose": "nose", **{canonical: canonical for canonical in _LIMB_JOINTS},
})
# The standard correspondence: 3DHP 'neck' is H36M 'thorax', 3DHP 'head' is H36M 'neck/nose'.
_MPI_INF_3DHP_CORRESPONDENCE = {
    "pelvis": "pelvis", "spine": "spine", "thorax": "neck", "neck_nose": "head",
    "head_top": "head_top", **{canonical: canonical for canonical in _LIMB_JOINTS},
}
MPI_INF_3DHP_TEST_TO_H36M = mapping_by_name(
    "mpi_inf_3dhp_17", _MPI_INF_3DHP_TEST_JOINTS, _MPI_INF_3DHP_CORRESPONDENCE)
MPI_INF_3DHP_TRAIN_TO_H36M = mapping_by_name(
    "mpi_inf_3dhp_28", _MPI_INF_3DHP_TRAIN_JOINTS, _MPI_INF_3DHP_CORRESPONDENCE)

MAPPINGS = {m.name: m for m in (MPII_TO_H36M, COCO_TO_H36M, MPI_INF_3DHP_TEST_TO_H36M,
                                MPI_INF_3DHP_TRAIN_TO_H36M)}


def flip_joints_order(values, skeleton: Skeleton = H36M):
  """Swaps left and right joints along axis -2 of `values` [..., J, D] (the joint order only;
  mirroring the coordinates themselves is the augmentation's job)."""
  return values[..., np.asarray(skeleton.flip_permutation), :]
