"""DeepPose's two objectives as the generic train step runs them (Toshev & Szegedy, arXiv
1312.4659; the pure maths: posejax/deeppose.py).

- "regress" (stage 1): the augmented crop, resized to `stage1_size` in the same warp, and the
  squared L2 distance between the network's joints and the truth, both in the frame of the crop's
  box b0 (N(y; b0)), summed over the joints that count and averaged over the images (the paper's
  section 3.1).
- "refine" (stage s >= 2): k boxes per image, each around the truth of one joint drawn among
  those that count, moved by a displacement drawn from the stage s-1 statistics (the paper's
  eq. 7, in torso diameters) and of side sigma x the torso diameter, cut out of the augmented crop
  at `refine_size` in one warp; the loss is the squared L2 distance between the network's row
  `joint` of its [J, 2] output and N(y_joint; b), averaged over the boxes.
  With `context_weight` w > 0 (posejax's, not the paper's), every row j of the output whose
  joint counts and lies inside the box is trained too, on N(y_j; b), with weight w: the box's
  own row is read as in the paper, but the network learns to place every joint it sees, not
  only the one it was centred on. On the synthetic recipe this took stage 2 from 4 % to 9 %
  below stage 1's error in 750 steps (BUILD_NOTES.md, session 12).

Which joints count (`label_mask`): "in_crop" (synthetic data: every joint has its true position,
hidden or not, and DeepPose's point is to guess the hidden ones too) trains on every joint inside
the augmented crop; "labelled" (real data, where an unlabelled joint has no position) on the
labelled joints inside it. The crop spans [-0.5, size - 0.5) (pixel centres at integers).

Randomness: the refiner's boxes of a sample come from a key folded from the run's seed, the
DeepPose stage and the sample's global index in the stream ("sample_index", which
`with_sample_index` adds): the batches are a pure function of the step, so the boxes are too, on
any number of devices or processes, and a resumed run draws the same ones.

Both prepare functions run inside the jitted step, before the loss and outside the gradient.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from posejax import deeppose
from posejax.data.batching import augment
from posejax.data.batching.sources import Source
from posejax.models.deeppose_cascade import image_box
from posejax.skeleton import Skeleton

OBJECTIVES = ("regress", "refine")
LABEL_MASKS = ("in_crop", "labelled")
LOSSES = ("l2", "smooth_l1")
# The training keys a labeled batch carries (the step refuses any other).
TRAIN_KEYS = ("image", "joints_2d", "joints_2d_mask")
SAMPLE_INDEX = "sample_index"
# Loss-term names, weighed by `config.loss_weights`.
TERMS = {"regress": "joints", "refine": "refine"}
_BOX_SALT = 0xDEE9


@dataclasses.dataclass(frozen=True)
class Settings:
  """The `deeppose` section of a config, checked.

  Attributes:
    stage: the DeepPose stage this run trains (1: "regress"; s >= 2: "refine").
    previous: the workdirs of stages 1..stage-1, in order.
    sigma: sub-box side in torso diameters.
    stage1_size: stage 1's input side (pixels).
    refine_size: the refiners' input side.
    samples_per_image: k, refiner boxes per image and step.
    displacement_scale: multiplies the displacements' standard deviation (0: boxes centred on
      the drawn displacement mean).
    loss: "l2" (the paper) or "smooth_l1" (mmpose's regression baseline).
    smooth_l1_beta: where smooth L1 turns from quadratic to linear (box-normalised units).
    diameter_joints: the two joints whose distance is the torso diameter.
    label_mask: which joints count (module docstring).
    visible_key: the sample key that marks visible joints (evaluation only).
    context_weight: weight of the refiner's context term: every OTHER row of its [J, 2]
      output is trained too, on the joints that count and lie inside the box (0: the paper,
      row `joint` only; module docstring).
    seed: the run's seed.
  """

  stage: int = 1
  previous: tuple[str, ...] = ()
  sigma: float = 1.0
  stage1_size: int = 64
  refine_size: int = 32
  samples_per_image: int = 8
  displacement_scale: float = 1.0
  loss: str = "l2"
  smooth_l1_beta: float = 0.05
  diameter_joints: tuple[str, str] = deeppose.TORSO_DIAMETER_JOINTS
  label_mask: str = "in_crop"
  visible_key: str = "joints_2d_mask"
  context_weight: float = 0.0
  seed: int = 0

  def __post_init__(self):
    problems = []
    if self.stage < 1:
      problems.append(f"deeppose.stage must be 1 or more, got {self.stage}")
    elif len(self.previous) != self.stage - 1:
      problems.append(
          f"deeppose.stage={self.stage} needs the workdirs of stages 1..{self.stage - 1} in "
          f"deeppose.previous (comma-separated), got {len(self.previous)}: "
          f"{','.join(self.previous) or 'none'}")
    if self.loss not in LOSSES:
      problems.append(f"deeppose.loss must be one of {LOSSES}, got {self.loss!r}")
    if self.label_mask not in LABEL_MASKS:
      problems.append(f"deeppose.label_mask must be one of {LABEL_MASKS}, got "
                      f"{self.label_mask!r}")
    if self.samples_per_image < 1 or self.sigma <= 0 or min(self.stage1_size,
                                                             self.refine_size) < 1:
      problems.append("deeppose.samples_per_image, sigma, stage1_size and refine_size must be "
                      "positive")
    if problems:
      raise ValueError("; ".join(problems))

  @property
  def objective(self) -> str:
    return "regress" if self.stage == 1 else "refine"

  @property
  def input_size(self) -> int:
    """The side of the images this stage's network sees."""
    return self.stage1_size if self.stage == 1 else self.refine_size


def workdir_list(previous) -> tuple[str, ...]:
  """`deeppose.previous` as a tuple: a comma-separated string (the command line) or a list (a
  config.json)."""
  if isinstance(previous, str):
    return tuple(p.strip() for p in previous.split(",") if p.strip())
  return tuple(str(p) for p in previous or ())


def settings_of(config) -> Settings:
  """The checked `Settings` of a run config (its `deeppose` section and seed)."""
  section = dict(config.get("deeppose", {}))
  fields = {f.name for f in dataclasses.fields(Settings)} - {"seed"}
  ignored = {"num_stages", "train_images", "mean_pose_samples", "predict_batch_size"}
  unknown = sorted(set(section) - fields - ignored)
  if unknown:
    raise ValueError(f"Unknown deeppose field(s) {unknown}; known: {sorted(fields | ignored)}")
  values = {k: v for k, v in section.items() if k in fields}
  values["previous"] = workdir_list(values.get("previous", ()))
  if "diameter_joints" in values:
    values["diameter_joints"] = tuple(values["diameter_joints"])
  return Settings(**values, seed=int(config.get("seed", 0)))


# ------------------------------------------------------------------------------------ masks


def in_crop(joints_2d, height: int, width: int):
  """[..., J] bool: joints inside the crop [-0.5, W - 0.5) x [-0.5, H - 0.5)."""
  x, y = joints_2d[..., 0], joints_2d[..., 1]
  return (x >= -0.5) & (x < width - 0.5) & (y >= -0.5) & (y < height - 0.5)


def train_mask(joints_2d, joints_2d_mask, height: int, width: int, label_mask: str):
  """[..., J] bool: the joints a loss counts (module docstring); works on NumPy and JAX."""
  inside = in_crop(joints_2d, height, width)
  if label_mask == "in_crop":
    return inside
  return inside & joints_2d_mask


def known_mask(joints_2d_mask, label_mask: str):
  """[..., J] bool: the joints whose true position is known (all of them on synthetic data)."""
  mask = np.asarray(joints_2d_mask, bool)
  return np.ones_like(mask) if label_mask == "in_crop" else mask


def known_like(labelled, label_mask: str):
  """The traced twin of `known_mask`."""
  return jnp.ones_like(labelled) if label_mask == "in_crop" else labelled


def torso_diameters(joints_2d, known, skeleton: Skeleton, names) -> jax.Array:
  """[...] the torso diameter of true poses, 0 where one of its joints is not known."""
  a, b = deeppose.diameter_joints(skeleton, names)
  diameter = deeppose.torso_diameter(joints_2d, skeleton, names)
  known = jnp.asarray(known, bool)
  return jnp.where(known[..., a] & known[..., b], diameter, 0.0)


# ----------------------------------------------------------------------- batch preparation


def _matmul(a, b):
  """a @ b for [..., 3, 3] matrices, at full float32 precision on every backend (not TF32)."""
  return jnp.sum(a[..., :, :, None] * b[..., None, :, :], axis=-2)


def augment_joints(joints_2d, joints_2d_mask, matrices, skeleton: Skeleton):
  """The 2D labels of an augmentation (`augment`'s rule): a mirroring map swaps left and right.

  Args:
    joints_2d: [B, J, 2] crop pixels; joints_2d_mask: [B, J] bool.
    matrices: [B, 3, 3] pixel maps T.

  Returns:
    (T joints_2d[perm], joints_2d_mask[perm]), perm the skeleton's flip permutation where T
    mirrors, else the identity.
  """
  mirror = (matrices[..., 0, 0] * matrices[..., 1, 1]
            - matrices[..., 0, 1] * matrices[..., 1, 0]) < 0
  perm = np.asarray(skeleton.flip_permutation)
  joints_2d = jnp.where(mirror[:, None, None], joints_2d[:, perm], joints_2d)
  joints_2d_mask = jnp.where(mirror[:, None], joints_2d_mask[:, perm], joints_2d_mask)
  x, y = joints_2d[..., 0], joints_2d[..., 1]
  row = lambda i: (matrices[:, i, 0, None] * x + matrices[:, i, 1, None] * y  # noqa: E731
                   + matrices[:, i, 2, None])
  return jnp.stack([row(0), row(1)], axis=-1), joints_2d_mask


def _augmented(stream: dict, skeleton: Skeleton):
  """(images, matrices T, augmented joints, augmented label mask) of a labeled stream; T is the
  identity when the batch carries no augmentation."""
  images = stream["image"]
  batch = images.shape[0]
  matrices = stream.get("augmentation")
  if matrices is None:
    matrices = jnp.broadcast_to(jnp.eye(3, dtype=jnp.float32), (batch, 3, 3))
  matrices = jnp.asarray(matrices, jnp.float32)
  joints, labelled = augment_joints(jnp.asarray(stream["joints_2d"], jnp.float32),
                                    jnp.asarray(stream["joints_2d_mask"], bool), matrices,
                                    skeleton)
  return images, matrices, joints, labelled


def regress_preparer(settings: Settings, skeleton: Skeleton):
  """batch -> {"labeled": image [B, s1, s1, 3], target [B, J, 2] N(y; b0), mask [B, J]}."""

  def prepare(batch: dict) -> dict:
    images, matrices, joints, labelled = _augmented(batch["labeled"], skeleton)
    height, width = images.shape[-3:-1]
    mask = train_mask(joints, labelled, height, width, settings.label_mask)
    centre, side = image_box(height, width)
    to_input = deeppose.subimage_matrices(centre, jnp.float32(side), settings.stage1_size)
    crops = augment.warp_images(images, _matmul(to_input, matrices),
                                out_size=settings.stage1_size)
    batch_size = images.shape[0]
    target = deeppose.normalize_points(joints, jnp.broadcast_to(centre, (batch_size, 2)),
                                       jnp.full((batch_size, 1), side, jnp.float32))
    return {"labeled": {"image": crops, "target": target, "mask": mask}}

  return prepare


def box_keys(seed: int, stage: int, sample_index) -> jax.Array:
  """[B] PRNG keys of the refiner boxes: fold_in(seed, salt, stage, the sample's index)."""
  base = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _BOX_SALT), stage)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(sample_index, jnp.int32))


def refine_preparer(settings: Settings, skeleton: Skeleton, mean, std):
  """batch -> {"labeled": image [B, k, r, r, 3], joint [B, k], target [B, k, 2], weight [B, k]}.

  Args:
    mean, std: [J, 2] the stage s-1 displacement statistics (torso diameters).
  """
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
  k, size = settings.samples_per_image, settings.refine_size

  def draw(key, joints, mask, diameter):  # one sample: its own key
    out = deeppose.sample_refinement_boxes(
        key, joints[None], mask[None], diameter[None], mean, std, settings.sigma, k,
        settings.displacement_scale)
    return tuple(x[0] for x in out)

  def prepare(batch: dict) -> dict:
    stream = batch["labeled"]
    images, matrices, joints, labelled = _augmented(stream, skeleton)
    batch_size, height, width = images.shape[:3]
    mask = train_mask(joints, labelled, height, width, settings.label_mask)
    diameter = torso_diameters(joints, known_like(labelled, settings.label_mask), skeleton,
                               settings.diameter_joints)
    keys = box_keys(settings.seed, settings.stage, stream[SAMPLE_INDEX])
    joint, centres, sides, weight = jax.vmap(draw)(keys, joints, mask, diameter)
    to_box = deeppose.subimage_matrices(centres, sides, size)  # [B, k, 3, 3]
    per_box = jnp.broadcast_to(images[:, None], (batch_size, k) + images.shape[1:])
    subimages = augment.warp_images(per_box, _matmul(to_box, matrices[:, None]),
                                    out_size=size)
    target = deeppose.refinement_targets(joints, joint, centres, sides)
    prepared = {"image": subimages, "joint": joint, "target": target, "weight": weight}
    if settings.context_weight:
      every = deeppose.normalize_points(joints[:, None], centres, sides[..., None])  # [B,k,J,2]
      inside = jnp.all(jnp.abs(every) <= 0.5, axis=-1)
      prepared["context_target"] = every
      prepared["context_mask"] = inside & mask[:, None] & (weight[..., None] > 0)
    return {"labeled": prepared}

  return prepare


# ------------------------------------------------------------------------------ loss terms


def point_loss(difference, loss: str, beta: float):
  """[..., 2] -> [...]: the squared L2 norm, or smooth L1 summed over x and y."""
  if loss == "l2":
    return jnp.sum(jnp.square(difference), axis=-1)
  size = jnp.abs(difference)
  return jnp.sum(jnp.where(size < beta, 0.5 * jnp.square(difference) / beta, size - 0.5 * beta),
                 axis=-1)


def loss_terms(objective: str, settings: Settings):
  """The step's `LossTerms` of an objective on a prepared batch: {"joints"} or {"refine"}."""

  def regress(model, batch, frozen):
    del frozen  # the previous stages are not part of stage 1's, nor any, training loss
    stream = batch["labeled"]
    predicted = model(stream["image"])
    per_joint = point_loss(predicted - stream["target"], settings.loss, settings.smooth_l1_beta)
    total = jnp.sum(jnp.where(stream["mask"], per_joint, 0.0))
    return {TERMS["regress"]: total / stream["image"].shape[0]}

  def refine(model, batch, frozen):
    del frozen
    stream = batch["labeled"]
    outputs = model(stream["image"])  # [B, k, J, 2]: every joint's row; the box's is read
    own = jnp.take_along_axis(outputs, stream["joint"][..., None, None], axis=-2)[..., 0, :]
    per_box = point_loss(own - stream["target"], settings.loss, settings.smooth_l1_beta)
    weight = stream["weight"]
    boxes = jnp.maximum(jnp.sum(weight), 1.0)
    terms = {TERMS["refine"]: jnp.sum(weight * per_box) / boxes}
    if settings.context_weight:
      per_row = point_loss(outputs - stream["context_target"], settings.loss,
                           settings.smooth_l1_beta)
      context = jnp.sum(jnp.where(stream["context_mask"], per_row, 0.0)) / boxes
      terms[TERMS["refine"]] += settings.context_weight * context
    return terms

  return {"regress": regress, "refine": refine}[objective]


# ----------------------------------------------------------------------------------- source


def with_sample_index(source: Source) -> Source:
  """`source` whose "train_2d" samples also carry their index in the stream (the refiner's box
  randomness, see the module docstring)."""

  def indexed(stream: str, index: int) -> dict:
    sample = source(stream, index)
    if stream == "train_2d":
      sample = dict(sample, **{SAMPLE_INDEX: np.int32(index)})
    return sample

  indexed.sizes = getattr(source, "sizes", {})
  return indexed
