"""posejax.skeleton: the skeleton description, its validation, and the dataset joint mappings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posejax import skeleton as skeleton_lib
from posejax.skeleton import (COCO_TO_H36M, H36M, MAPPINGS, MPI_INF_3DHP_TEST_TO_H36M,
                              MPI_INF_3DHP_TRAIN_TO_H36M, MPII_TO_H36M, Skeleton,
                              flip_joints_order)

# Hand-written from the joint orders: for each H36M joint, the index of the source joint, -1 if
# the dataset has none. H36M order: pelvis, r_hip, r_knee, r_ankle, l_hip, l_knee, l_ankle,
# spine, thorax, neck_nose, head_top, l_shoulder, l_elbow, l_wrist, r_shoulder, r_elbow, r_wrist.
MPII_INDICES = [6, 2, 1, 0, 3, 4, 5, -1, 7, 8, 9, 13, 14, 15, 12, 11, 10]
COCO_INDICES = [-1, 12, 14, 16, 11, 13, 15, -1, -1, 0, -1, 5, 7, 9, 6, 8, 10]
MPI_INF_3DHP_TEST_INDICES = [14, 8, 9, 10, 11, 12, 13, 15, 1, 16, 0, 5, 6, 7, 2, 3, 4]
# The 17 test joints as 28-joint training indices, in test order (the usual 3DHP subset).
MPI_INF_3DHP_TEST_IN_TRAIN = [7, 5, 14, 15, 16, 9, 10, 11, 23, 24, 25, 18, 19, 20, 4, 3, 6]
MPI_INF_3DHP_TRAIN_INDICES = [4, 23, 24, 25, 18, 19, 20, 3, 5, 6, 7, 9, 10, 11, 14, 15, 16]

H36M_BONES = ((1, 0), (2, 1), (3, 2), (4, 0), (5, 4), (6, 5), (7, 0), (8, 7), (9, 8), (10, 9),
              (11, 8), (12, 11), (13, 12), (14, 8), (15, 14), (16, 15))
H36M_FLIP = (0, 4, 5, 6, 1, 2, 3, 7, 8, 9, 10, 14, 15, 16, 11, 12, 13)


def make_skeleton(**overrides):
  """A valid 3-joint chain left_end - middle (root) - right_end, with fields overridable."""
  fields = dict(name="chain3", joint_names=("left_end", "middle", "right_end"),
                parents=(1, -1, 1), scale_pair=(0, 2), flip_pairs=((0, 2),),
                mean_bone_lengths_mm=(30.0, 50.0), mean_scale_mm=80.0)
  fields.update(overrides)
  return Skeleton(**fields)


# --- Human3.6M -----------------------------------------------------------------------------------

def test_h36m_structure():
  """17 joints, pelvis root, (thorax, pelvis) scale pair and the hand-listed 16 bones."""
  assert H36M.num_joints == 17
  assert H36M.root == 0 and H36M.joint_names[0] == "pelvis"
  assert H36M.scale_pair == (8, 0)
  assert H36M.joint_names[8] == "thorax"
  assert H36M.bones == H36M_BONES


def test_h36m_bones_form_a_tree():
  """Every joint reaches the root by following parents (no cycle), each non-root joint once."""
  children = [child for child, _ in H36M.bones]
  assert sorted(children) == list(range(1, 17))
  for joint in range(H36M.num_joints):
    steps, current = 0, joint
    while current != H36M.root:
      current = H36M.parents[current]
      steps += 1
      assert steps < H36M.num_joints
  # Parent precedes child in H36M order, so a single pass over bones can accumulate positions.
  assert all(parent < child for child, parent in H36M.bones)


def test_h36m_flip_permutation_swaps_left_and_right_names():
  """The flip permutation is the hand-listed involution mapping left_X to right_X."""
  perm = H36M.flip_permutation
  assert perm == H36M_FLIP
  assert tuple(perm[p] for p in perm) == tuple(range(17))
  names = H36M.joint_names
  sided = 0
  for joint, name in enumerate(names):
    if name.startswith("left_"):
      assert names[perm[joint]] == "right_" + name[len("left_"):]
      sided += 1
    elif name.startswith("right_"):
      assert names[perm[joint]] == "left_" + name[len("right_"):]
      sided += 1
    else:
      assert perm[joint] == joint
  assert sided == 12


def test_h36m_mean_bone_lengths():
  """Normalised bone lengths are mm / mean_scale_mm; left and right limbs have equal lengths."""
  assert H36M.mean_scale_mm == pytest.approx(490.46)
  lengths = H36M.mean_bone_lengths
  assert lengths.dtype == np.float32 and lengths.shape == (16,)
  # Bone 0 is right_hip-pelvis (132.95 mm), bone 2 right_ankle-right_knee (454.21 mm).
  assert lengths[0] == pytest.approx(132.95 / 490.46, rel=1e-6)
  assert lengths[2] == pytest.approx(454.21 / 490.46, rel=1e-6)
  np.testing.assert_allclose(lengths, np.asarray(H36M.mean_bone_lengths_mm) / 490.46, rtol=1e-6)
  by_child = {child: length for (child, _), length in zip(H36M.bones, H36M.mean_bone_lengths_mm)}
  for child, mirrored in enumerate(H36M.flip_permutation):
    if child != H36M.root:
      assert by_child[child] == by_child[mirrored], H36M.joint_names[child]


def test_index_of_names():
  """Skeleton.index finds joints and names the joint list for an unknown one."""
  assert H36M.index("thorax") == 8 and H36M.index("right_wrist") == 16
  with pytest.raises(KeyError, match=r"'nose'.*h36m_17.*pelvis.*right_wrist"):
    H36M.index("nose")


# --- Validation ----------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    (dict(parents=(-1, -1, 1)), r"exactly one joint must have parent -1"),
    (dict(parents=(1, 2, 0)), r"exactly one joint must have parent -1"),
    (dict(parents=(1, -1, 5)), r"parent indices out of range: \[5\]"),
    (dict(parents=(1, -1)), r"2 parents for 3 joints"),
    (dict(scale_pair=(1, 1)), r"scale_pair \(1, 1\)"),
    (dict(scale_pair=(0, 3)), r"scale_pair \(0, 3\)"),
    (dict(mean_bone_lengths_mm=(30.0,)), r"1 bone lengths for 2 bones"),
    (dict(flip_pairs=((0, 2), (2, 1))), r"flip_pairs"),
    (dict(flip_pairs=((0, 7),)), r"flip_pairs"),
    (dict(joint_names=("a", "a", "b")), r"joint names are not unique"),
    (dict(mean_scale_mm=0.0), r"mean_scale_mm must be positive"),
])
def test_invalid_skeleton_raises_naming_the_problem(overrides, message):
  """Each kind of inconsistent skeleton is refused with a ValueError that says what is wrong."""
  with pytest.raises(ValueError, match=r"Invalid skeleton 'chain3'.*" + message):
    make_skeleton(**overrides)


def test_non_human_skeleton():
  """A 3-joint chain rooted in the middle: its own bones, root, flip permutation and units."""
  chain = make_skeleton()
  assert chain.num_joints == 3 and chain.root == 1
  assert chain.bones == ((0, 1), (2, 1))
  assert chain.flip_permutation == (2, 1, 0)
  np.testing.assert_allclose(chain.mean_bone_lengths, [30 / 80, 50 / 80], rtol=1e-6)
  values = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
  np.testing.assert_array_equal(flip_joints_order(values, chain),
                                [[5.0, 6.0], [3.0, 4.0], [1.0, 2.0]])


def test_skeleton_is_a_static_jit_argument():
  """A Skeleton has no pytree leaves and acts as a compile-time constant under jax.jit."""
  assert jax.tree_util.tree_leaves(H36M) == []

  @jax.jit
  def root_relative(pose, skeleton):
    return pose - pose[skeleton.root]

  chain_pose = jnp.array([[1.0, 1.0, 1.0], [2.0, 3.0, 4.0], [0.0, 0.0, 0.0]])
  np.testing.assert_array_equal(root_relative(chain_pose, make_skeleton()),
                                [[-1.0, -2.0, -3.0], [0.0, 0.0, 0.0], [-2.0, -3.0, -4.0]])
  # Same shapes, different skeleton: a new trace, root 0 instead of 1.
  other = make_skeleton(parents=(-1, 0, 1))
  np.testing.assert_array_equal(root_relative(chain_pose, other),
                                [[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [-1.0, -1.0, -1.0]])


# --- Dataset joint mappings ---------------------------------------------------------------------

@pytest.mark.parametrize("mapping, expected, num_source", [
    (MPII_TO_H36M, MPII_INDICES, 16),
    (COCO_TO_H36M, COCO_INDICES, 17),
    (MPI_INF_3DHP_TEST_TO_H36M, MPI_INF_3DHP_TEST_INDICES, 17),
    (MPI_INF_3DHP_TRAIN_TO_H36M, MPI_INF_3DHP_TRAIN_INDICES, 28),
], ids=lambda x: getattr(x, "name", ""))
def test_mapping_matches_hand_written_indices(mapping, expected, num_source):
  """Mapping values that are (source index + 1) yields the hand-written index list, 0 if missing."""
  assert mapping.target is H36M and mapping.num_source_joints == num_source
  assert list(mapping.source_indices) == expected
  values = np.arange(1, num_source + 1, dtype=np.float32)[:, None]
  mapped, mask = mapping(values)
  expected = np.asarray(expected)
  np.testing.assert_array_equal(mapped[:, 0], np.where(expected >= 0, expected + 1, 0))
  np.testing.assert_array_equal(mask, expected >= 0)


def test_mpi_inf_3dhp_train_mapping_agrees_with_test_subset():
  """28-joint train mapping = 17-joint test mapping composed with the test subset of train."""
  composed = [MPI_INF_3DHP_TEST_IN_TRAIN[i] for i in MPI_INF_3DHP_TEST_INDICES]
  assert composed == MPI_INF_3DHP_TRAIN_INDICES
  train_names = MPI_INF_3DHP_TRAIN_TO_H36M.source_joint_names
  test_names = MPI_INF_3DHP_TEST_TO_H36M.source_joint_names
  assert [train_names[i] for i in MPI_INF_3DHP_TEST_IN_TRAIN] == list(test_names)


def test_mappings_registry():
  """MAPPINGS holds the four mappings by name."""
  assert MAPPINGS == {"mpii_16": MPII_TO_H36M, "coco_17": COCO_TO_H36M,
                      "mpi_inf_3dhp_17": MPI_INF_3DHP_TEST_TO_H36M,
                      "mpi_inf_3dhp_28": MPI_INF_3DHP_TRAIN_TO_H36M}


def test_mpii_mapping_keeps_sides():
  """right_ankle gets MPII joint 0 (r_ankle); a left/right-swapped mapping would give joint 5."""
  values = np.arange(16, dtype=np.float32)[:, None] * np.ones(2, np.float32)
  mapped, _ = MPII_TO_H36M(values)
  assert H36M.index("right_ankle") == 3
  np.testing.assert_array_equal(mapped[3], [0.0, 0.0])
  np.testing.assert_array_equal(mapped[6], [5.0, 5.0])  # left_ankle = MPII l_ankle
  np.testing.assert_array_equal(mapped[16], [10.0, 10.0])  # right_wrist = MPII r_wrist
  # The mapping does not commute with a left/right swap of its output.
  assert not np.array_equal(flip_joints_order(mapped), mapped)


@pytest.mark.parametrize("mapping", list(MAPPINGS.values()), ids=list(MAPPINGS))
def test_mapping_preserves_sides_by_name(mapping):
  """Every mapped left_/right_ joint comes from a source joint of the same side."""
  side_prefixes = {"left": ("left_", "l_"), "right": ("right_", "r_")}
  for target, source in enumerate(mapping.source_indices):
    target_name = H36M.joint_names[target]
    side = target_name.split("_")[0]
    if source >= 0 and side in side_prefixes:
      assert mapping.source_joint_names[source].startswith(side_prefixes[side]), target_name


def test_coco_never_invents_torso_joints():
  """COCO pelvis, spine, thorax and head_top stay missing (mask False, value 0) for any input."""
  values = np.full((2, 17, 2), 7.0, np.float32)
  mapped, mask = COCO_TO_H36M(values, np.ones((2, 17), bool))
  missing = [H36M.index(n) for n in ("pelvis", "spine", "thorax", "head_top")]
  assert missing == [0, 7, 8, 10]
  assert mapped.shape == (2, 17, 2) and mask.shape == (2, 17)
  assert not np.asarray(mask)[:, missing].any()
  np.testing.assert_array_equal(np.asarray(mapped)[:, missing], 0.0)
  present = [j for j in range(17) if j not in missing]
  assert np.asarray(mask)[:, present].all()
  np.testing.assert_array_equal(np.asarray(mapped)[:, present], 7.0)


def test_mapping_combines_source_mask_with_missing_joints():
  """A masked-out source joint becomes a False, zeroed target joint; batch axes are kept."""
  values = np.arange(1, 17, dtype=np.float32)[None, :, None] * np.ones((2, 1, 3), np.float32)
  source_mask = np.ones((2, 16), bool)
  source_mask[1, 0] = False  # sample 1: MPII r_ankle not visible
  mapped, mask = MPII_TO_H36M(values, source_mask)
  expected_mask = np.ones((2, 17), bool)
  expected_mask[:, 7] = False  # MPII has no spine
  expected_mask[1, 3] = False  # right_ankle <- MPII 0, masked in sample 1
  np.testing.assert_array_equal(mask, expected_mask)
  np.testing.assert_array_equal(mapped[0, 3], [1.0, 1.0, 1.0])
  np.testing.assert_array_equal(mapped[1, 3], [0.0, 0.0, 0.0])
  np.testing.assert_array_equal(mapped[:, 7], 0.0)


def test_mapping_rejects_wrong_number_of_source_joints():
  """Values with another joint count than the dataset's raise ValueError naming the mapping."""
  with pytest.raises(ValueError, match=r"mpii_16 has 16 joints"):
    MPII_TO_H36M(np.zeros((17, 2)))
  with pytest.raises(ValueError, match=r"mpi_inf_3dhp_28 has 28 joints"):
    MPI_INF_3DHP_TRAIN_TO_H36M(np.zeros((4, 17, 3)))


def test_mapping_by_name_rejects_unknown_joints():
  """A correspondence naming joints that do not exist is refused."""
  with pytest.raises(ValueError, match=r"unknown target joints \['nose'\].*\['tail'\]"):
    skeleton_lib.mapping_by_name("bad", ("a", "b"), {"nose": "a", "pelvis": "tail"})


def test_flip_joints_order():
  """flip_joints_order swaps left/right joints of H36M arrays along axis -2, batch axes kept."""
  values = np.arange(17, dtype=np.float32)[None, :, None] * np.ones((2, 1, 2), np.float32)
  flipped = np.asarray(flip_joints_order(values))
  np.testing.assert_array_equal(flipped[:, :, 0], np.broadcast_to(H36M_FLIP, (2, 17)))
  np.testing.assert_array_equal(flipped[0, 1], [4.0, 4.0])   # right_hip <- left_hip
  np.testing.assert_array_equal(flipped[0, 13], [16.0, 16.0])  # left_wrist <- right_wrist
  np.testing.assert_array_equal(flip_joints_order(flipped), values)
