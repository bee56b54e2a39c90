"""MPII Human Pose as a TFDS dataset: single-person crops with 2D labels and PCKh head sizes.

Two annotation formats, as they are distributed:

- "mat": the official `mpii_human_pose_v1_u12_1.mat` (MATLAB v5): the struct RELEASE with
  annolist(i).image.name, annolist(i).annorect(r) (x1, y1, x2, y2 head box, objpos.x/.y, scale,
  annopoints.point(k) with id, x, y, is_visible) and img_train(i). Only training images carry
  joints (the test labels are withheld), so this gives one split, "train": every person with at
  least one annotated joint and a person box (objpos and scale).
- "json": the conversion of the HRNet / simple-baselines authors (annot/train.json and
  annot/valid.json: lists of {"image", "center", "scale", "joints", "joints_vis"}), with their
  splits "train" and "validation". It has no head boxes; the validation head boxes come from
  their annot/gt_valid.mat (`headboxes_src`, same order as valid.json) when it is there.

Conventions:

- MPII coordinates are MATLAB's (the first pixel is 1); posejax's pixel centres start at 0, so
  every coordinate is shifted by -1 (as the HRNet loader does).
- A joint is labeled when the annotation has it (MPII's "labeled but occluded" joints are
  labeled, as in the usual training setups; the json's joints_vis is exactly that).
- The crop: MPII's person scale s means a person height of 200 s pixels; the square box has side
  `margin * 200 s` (margin 1.25) around objpos moved down by 15 s pixels (objpos sits on the
  upper body; the HRNet / simple-baselines convention).
- No intrinsics are known: the camera guess is focal = max(H, W) pixels with the principal point
  at the image centre (`guessed_intrinsics`), so every example still has a crop camera K. Only
  multi-view reconstruction needs K; the 2D loss works in crop pixels.
- head_size: the PCKh normaliser of the official evaluation, 0.6 x the head box diagonal, in
  CROP pixels (the same units as joints_2d); 0 where unknown (json train split).
- Joints map onto the canonical H36M 17 with `skeleton.MPII_TO_H36M` (MPII upper_neck is H36M
  neck_nose); H36M spine has no MPII counterpart and stays masked. Nothing is invented.

Prepare (the manual dir holds the files as the dataset authors distribute them; see README):

    python -m experiments.prepare_data --dataset=mpii --manual_dir=~/mpii --data_dir=~/posejax_data
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import scipy.io
import tensorflow_datasets as tfds

from posejax import skeleton
from posejax.data.real import crop, datasets, video

MAPPING = skeleton.MPII_TO_H36M
J = MAPPING.target.num_joints
NUM_SOURCE_JOINTS = MAPPING.num_source_joints  # 16
FORMATS = ("mat", "json")
PIXELS_PER_SCALE = 200.0  # MPII: scale 1 = a person 200 pixels tall
CENTRE_SHIFT_PER_SCALE = 15.0  # objpos -> box centre, pixels down per unit of scale
HEAD_SIZE_FACTOR = 0.6  # the official evaluation's SC_BIAS
MAT_FILE = "mpii_human_pose_v1_u12_1.mat"
JSON_FILES = {"train": os.path.join("annot", "train.json"),
              "validation": os.path.join("annot", "valid.json")}
JSON_HEAD_BOXES = os.path.join("annot", "gt_valid.mat")  # of the validation split
IMAGE_DIR = "images"

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
From http://human-pose.mpi-inf.mpg.de/ download the images (mpii_human_pose_v1.tar.gz) and
extract them into <manual_dir>/{IMAGE_DIR}/. Then either
- annotation_format="mat": put the official annotations {MAT_FILE} (from
  mpii_human_pose_v1_u12_2.zip) into <manual_dir>/, or
- annotation_format="json": put the HRNet authors' annot/ folder (train.json, valid.json,
  gt_valid.mat; linked from github.com/leoxiaobin/deep-high-resolution-net.pytorch) into
  <manual_dir>/annot/.
"""


@dataclasses.dataclass(frozen=True)
class Person:
  """One annotated person, in frame pixels (pixel centres at integers, first pixel 0); COCO
  uses it too.

  Attributes:
    image: file name in the dataset's image folder.
    joints: [K, 2] float64 joints in the dataset's order (zeros where unlabeled).
    labeled: [K] bool.
    centre: [2] the crop box centre.
    side: the person's extent (MPII: 200 x scale, COCO: the larger bbox side); the crop side
      is margin x this.
    head_size: 0.6 x head box diagonal in frame pixels, 0 if unknown.
  """

  image: str
  joints: np.ndarray
  labeled: np.ndarray
  centre: np.ndarray
  side: float
  head_size: float


def guessed_intrinsics(height: int, width: int) -> np.ndarray:
  """[3, 3] float64 camera guess for a photo without calibration: focal = max(H, W) pixels
  (a ~53 degree field of view across the larger side), principal point at the image centre."""
  focal = float(max(height, width))
  return np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]])


def load_mat(path: str, squeeze: bool = True) -> dict:
  """The variables of a MATLAB v5 file, structs as attribute objects (with `squeeze`: 1-element
  axes squeezed, so a 1x1 struct is the struct itself).

  Raises:
    FileNotFoundError / ValueError naming the file (missing, v7.3, truncated, not a .mat).
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: file not found")
  try:
    return scipy.io.loadmat(path, struct_as_record=False, squeeze_me=squeeze)
  except NotImplementedError:
    raise ValueError(f"{path}: a MATLAB v7.3 (HDF5) file; expected MATLAB v5 as the dataset "
                     "authors distribute it") from None
  except (OSError, ValueError, TypeError, scipy.io.matlab.MatReadError) as error:
    raise ValueError(f"{path}: not a complete MATLAB v5 file ({error})") from None


def _items(value) -> list:
  """A MATLAB struct array after loadmat(squeeze_me=True) as a list: one struct comes back
  bare, none as an empty array."""
  if isinstance(value, np.ndarray):
    return list(value.ravel())
  return [value]


def _empty(value) -> bool:
  """A field that is absent or MATLAB's []."""
  return value is None or (isinstance(value, np.ndarray) and value.size == 0)


def _field(struct, name, where):
  value = getattr(struct, name, None)
  if _empty(value):
    raise ValueError(f"{where}: missing field {name!r}")
  return value


def read_mat(path: str) -> dict[str, list[Person]]:
  """{"train": persons} of the official MPII .mat: the persons of training images with at least
  one labeled joint and a person box (objpos, scale); head_size 0 where the head box is [].

  Raises:
    FileNotFoundError / ValueError naming the file and the broken entry.
  """
  release = load_mat(path).get("RELEASE")
  if release is None:
    raise ValueError(f"{path}: no RELEASE struct; is this {MAT_FILE}?")
  annolist = _items(_field(release, "annolist", f"{path}: RELEASE"))
  img_train = np.atleast_1d(_field(release, "img_train", f"{path}: RELEASE"))
  if len(img_train) != len(annolist):
    raise ValueError(f"{path}: RELEASE.img_train has {len(img_train)} entries for "
                     f"{len(annolist)} annolist entries")
  persons = []
  for i, (entry, is_train) in enumerate(zip(annolist, img_train)):
    if not is_train:
      continue
    where = f"{path}: RELEASE.annolist({i + 1})"  # MATLAB's 1-based index, as users look it up
    name = str(_field(_field(entry, "image", where), "name", where + ".image"))
    for r, rect in enumerate(_items(getattr(entry, "annorect", np.zeros(0)))):
      annopoints = getattr(rect, "annopoints", None)
      points = _items(getattr(annopoints, "point", np.zeros(0)))
      if not points:
        continue  # a person without joint labels
      person = _mat_person(name, rect, points, f"{where}.annorect({r + 1})")
      if person is not None:
        persons.append(person)
  return {"train": persons}


def _mat_person(name: str, rect, points, where: str) -> Person | None:
  """The person of an annorect with joints, or None without a person box (objpos, scale):
  such a person cannot be cropped (the usual loaders skip them too)."""
  joints = np.zeros((NUM_SOURCE_JOINTS, 2))
  labeled = np.zeros(NUM_SOURCE_JOINTS, bool)
  for point in points:
    joint = int(_field(point, "id", where + ".annopoints.point"))
    if not 0 <= joint < NUM_SOURCE_JOINTS:
      raise ValueError(f"{where}: joint id {joint} is not an MPII joint (0-15)")
    joints[joint] = [float(_field(point, "x", where)) - 1, float(_field(point, "y", where)) - 1]
    labeled[joint] = True
  objpos, scale = getattr(rect, "objpos", None), getattr(rect, "scale", None)
  if _empty(objpos) or _empty(scale):
    return None
  centre = np.array([float(_field(objpos, "x", where + ".objpos")),
                     float(_field(objpos, "y", where + ".objpos"))]) - 1
  head = [getattr(rect, k, None) for k in ("x1", "y1", "x2", "y2")]
  head_size = 0.0 if any(_empty(v) for v in head) else HEAD_SIZE_FACTOR * float(
      np.hypot(float(head[2]) - float(head[0]), float(head[3]) - float(head[1])))
  return _person(name, joints, labeled, centre, float(scale), head_size, where)


def _person(name, joints, labeled, centre, scale, head_size, where) -> Person:
  if not scale > 0 or not np.isfinite(centre).all():
    raise ValueError(f"{where}: the person box needs a positive scale and a finite centre, got "
                     f"scale {scale} and centre {centre.tolist()}")
  centre = centre + [0, CENTRE_SHIFT_PER_SCALE * scale]
  return Person(name, joints, labeled, centre, PIXELS_PER_SCALE * scale, head_size)


def read_json(path: str, head_boxes_path: str | None = None) -> list[Person]:
  """The persons of an HRNet-style MPII json (train.json / valid.json), with head sizes from
  their gt_valid.mat (`headboxes_src` [2, 2, N], the same order) when given.

  Raises:
    FileNotFoundError / ValueError naming the file and the broken entry.
  """
  entries = datasets.read_json(path)
  if not isinstance(entries, list):
    raise ValueError(f"{path}: expected a list of person entries, got {type(entries).__name__}")
  head_sizes = np.zeros(len(entries))
  if head_boxes_path is not None:
    head_sizes = _head_sizes(head_boxes_path, len(entries), path)
  persons = []
  for i, entry in enumerate(entries):
    where = f"{path}: entry {i}"
    try:
      joints = np.asarray(entry["joints"], np.float64).reshape(NUM_SOURCE_JOINTS, 2)
      labeled = np.asarray(entry["joints_vis"], np.float64).reshape(NUM_SOURCE_JOINTS) > 0
      centre = np.asarray(entry["center"], np.float64).reshape(2) - 1
      scale = float(entry["scale"])
      name = str(entry["image"])
    except KeyError as error:
      raise ValueError(f"{where}: missing field {error}") from None
    except (TypeError, ValueError) as error:
      raise ValueError(f"{where}: expected image, center [2], scale, joints [16, 2] and "
                       f"joints_vis [16] ({error})") from None
    joints = np.where(labeled[:, None], joints - 1, 0)
    persons.append(_person(name, joints, labeled, centre, scale, head_sizes[i], where))
  return persons


def _head_sizes(path: str, count: int, json_path: str) -> np.ndarray:
  boxes = load_mat(path, squeeze=False).get("headboxes_src")
  if boxes is None or np.ndim(boxes) != 3 or np.shape(boxes)[:2] != (2, 2):
    raise ValueError(f"{path}: expected headboxes_src of shape [2, 2, N], got "
                     f"{None if boxes is None else np.shape(boxes)}")
  if boxes.shape[2] != count:
    raise ValueError(f"{path}: {boxes.shape[2]} head boxes for {count} persons in {json_path}")
  return HEAD_SIZE_FACTOR * np.linalg.norm(boxes[1] - boxes[0], axis=0).astype(np.float64)


def read_annotations(manual_dir: str, annotation_format: str) -> dict[str, list[Person]]:
  """{split: persons} from the manual dir (see MANUAL_DOWNLOAD_INSTRUCTIONS)."""
  if annotation_format == "mat":
    return read_mat(os.path.join(manual_dir, MAT_FILE))
  if annotation_format == "json":
    head_boxes = os.path.join(manual_dir, JSON_HEAD_BOXES)
    return {split: read_json(os.path.join(manual_dir, name),
                             head_boxes if split == "validation" and os.path.isfile(head_boxes)
                             else None)
            for split, name in JSON_FILES.items()}
  raise ValueError(f"annotation_format must be one of {FORMATS}, got {annotation_format!r}")


def person_example(image: np.ndarray, person: Person, image_size: int, margin: float,
                   mapping: skeleton.JointMapping) -> dict:
  """The training example of one person: crop, crop camera, canonical 2D joints, head size.

  Args:
    image: [H, W, 3] uint8 frame.
    person: the annotation, its joints in the dataset's order.
    image_size: S, the crop side in pixels.
    margin: the crop side is `margin * person.side`.
    mapping: the dataset's joints onto the canonical skeleton (MAPPING for MPII).

  Returns:
    image [S, S, 3] uint8, camera [3, 3] float32, joints_2d [J, 2] float32 (crop pixels),
    joints_2d_mask [J] bool, head_size float32 (crop pixels, 0 if unknown).
  """
  side = margin * person.side
  intrinsics = guessed_intrinsics(*image.shape[:2])
  cropped, camera = crop.crop_view(image, intrinsics, person.centre, side, image_size)
  pixels = crop.transform_points(crop.crop_matrix(person.centre, side, image_size),
                                 person.joints)
  joints_2d, mask = mapping(pixels, person.labeled)
  return {"image": cropped, "camera": camera,
          "joints_2d": np.asarray(joints_2d, np.float32),
          "joints_2d_mask": np.asarray(mask, bool),
          "head_size": np.float32(person.head_size * image_size / side)}


@dataclasses.dataclass(kw_only=True)
class MpiiConfig(tfds.core.BuilderConfig):
  annotation_format: str = "mat"
  image_size: int = 256
  margin: float = 1.25


def builder_config(annotation_format: str = "mat", image_size: int = 256,
                   margin: float = 1.25) -> MpiiConfig:
  """A builder config named after everything that determines the data."""
  if annotation_format not in FORMATS:
    raise ValueError(f"annotation_format must be one of {FORMATS}, got {annotation_format!r}")
  return MpiiConfig(name=f"{annotation_format}_s{image_size}_m{int(round(margin * 100))}",
                    annotation_format=annotation_format, image_size=image_size, margin=margin)


def single_image_features(image_size: int) -> tfds.features.FeaturesDict:
  """The record of one person crop (MPII and COCO)."""
  tensor = tfds.features.Tensor
  return tfds.features.FeaturesDict({
      "image": tensor(shape=(image_size, image_size, 3), dtype=np.uint8,
                      encoding=tfds.features.Encoding.ZLIB),
      "camera": tensor(shape=(3, 3), dtype=np.float32),
      "joints_2d": tensor(shape=(J, 2), dtype=np.float32),
      "joints_2d_mask": tensor(shape=(J,), dtype=np.bool_),
      "head_size": np.float32,
      "image_file": tfds.features.Text(),
  })


def generate_person_examples(persons, image_dir: str, image_size: int, margin: float,
                             mapping: skeleton.JointMapping):
  """(key, record) per person, reading each image once (persons of one image are adjacent)."""
  name, image = None, None
  for key, person in enumerate(persons):
    if person.image != name:
      name, image = person.image, video.read_image(os.path.join(image_dir, person.image))
    yield key, dict(person_example(image, person, image_size, margin, mapping),
                    image_file=name)


def from_record(record: dict) -> dict:
  """A stored person crop as a "train_2d" sample: the docs/design.md keys (no 3D labels:
  joints_3d zeros with has_3d False) plus head_size."""
  sample = {k: np.asarray(record[k]) for k in ("image", "camera", "joints_2d",
                                                 "joints_2d_mask", "head_size")}
  sample["joints_3d"] = np.zeros((J, 3), np.float32)
  sample["has_3d"] = np.bool_(False)
  return sample


class PosejaxMpii(tfds.core.GeneratorBasedBuilder):
  """MPII Human Pose single-person crops (see posejax.data.real.mpii)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=single_image_features(self.builder_config.image_size),
        homepage="http://human-pose.mpi-inf.mpg.de/", description=__doc__)

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    config = self.builder_config
    # Parse every annotation file before writing anything: a broken file fails fast.
    splits = read_annotations(manual_dir, config.annotation_format)
    image_dir = os.path.join(manual_dir, IMAGE_DIR)
    return {split: self._generate_examples(persons, image_dir)
            for split, persons in splits.items()}

  def _generate_examples(self, persons, image_dir):
    config = self.builder_config
    return generate_person_examples(persons, image_dir, config.image_size, config.margin,
                                    MAPPING)


def single_image_source(builder, split: str):
  """(stream, index) -> the index-th stored person crop of `split` (wrapping around) as a
  "train_2d" sample; only the "train_2d" stream exists."""
  records = builder.as_data_source(split=split)

  def source(stream: str, index: int) -> dict:
    if stream != "train_2d":
      raise ValueError(f"{builder.name} has single 2D-labeled images only (stream "
                       f"'train_2d'), not {stream!r}")
    return from_record(records[index % len(records)])

  return source


def builder(data_dir: str, **config) -> PosejaxMpii:
  """The MPII builder of `builder_config(**config)` writing ArrayRecord into `data_dir`."""
  return PosejaxMpii(config=builder_config(**config), data_dir=os.path.expanduser(data_dir),
                     file_format="array_record")


def prepare(manual_dir: str, data_dir: str, **config) -> PosejaxMpii:
  """Prepares MPII once from the files in `manual_dir` (config: `builder_config`'s arguments)."""
  return datasets.prepare_builder(builder(data_dir, **config), manual_dir)


def prepared_source(data_dir: str, split: str = "train", **config):
  """The "train_2d" Source of a prepared MPII split ("train"; json format also "validation")."""
  return single_image_source(datasets.prepared_builder(builder(data_dir, **config), "mpii"),
                             split)
