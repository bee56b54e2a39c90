"""Leeds Sports Pose (LSP) and LSP-extended as a TFDS dataset: single-person crops, 2D labels.

The files, as their authors (Johnson & Everingham) distribute them:

- LSP (lsp_dataset.zip): `images/im0001.jpg` ... `im2000.jpg` and `joints.mat` holding `joints`,
  a 3 x 14 x 2000 array: row 0 x, row 1 y, row 2 a binary visibility flag, for 14 joints of
  each image. In this file the flag is 0 for a VISIBLE joint and 1 for an occluded one (the
  usual loaders invert it, e.g. bearpaw/pytorch-pose `miscs/gen_lsp.m`: `1 - joints(3, :, :)`);
  every joint has a position (the annotators placed occluded joints too).
- LSP-extended (lspet_dataset.zip): `images/im00001.jpg` ... `im10000.jpg` and `joints.mat`
  holding `joints`, 14 x 3 x 10000 (joint, (x, y, flag), image): a different layout, and here
  the flag is 1 for visible. A joint with flag 0 was not placed reliably (the loaders give it
  zero weight or drop it), so it counts as unlabelled.

Conventions:

- Joint order (both READMEs): right ankle, right knee, right hip, left hip, left knee, left
  ankle, right wrist, right elbow, right shoulder, left shoulder, left elbow, left wrist, neck,
  head top. They map onto the canonical H36M 17 with `MAPPING`: LSP's neck is H36M neck_nose
  (as MPII's upper neck is, `skeleton.MPII_TO_H36M`); pelvis, spine and thorax have no LSP
  counterpart and stay masked. Left and right are taken as the file names them; later papers
  report LSP results with "observer-centric" and "person-centric" labels, a property of the
  annotation file that this builder cannot check.
- Coordinates are taken as MATLAB's (the first pixel is 1) and shifted by -1 to posejax's pixel
  centres, as for MPII (the annotation tools were MATLAB; the common loaders subtract 1).
- `joints_2d_mask`: labelled joints (LSP: all 14; LSP-extended: the flagged-visible ones).
  `joints_2d_visible`: the visible ones (LSP: flag 0; LSP-extended: the labelled ones), so that
  an evaluation can report visible and occluded joints apart.
- The crop: the square around the labelled joints (side = their larger extent) times
  `margin`; the camera guess of MPII (`mpii.guessed_intrinsics`). No head boxes: head_size 0.
- Splits: "train" = the first `num_train` (1000) LSP images plus, with `extended`, all of
  LSP-extended (11000, the DeepPose paper's LSP training set); "test" = the remaining LSP
  images (the standard 1000). Streams: "train_2d" reads "train", "test" reads "test".

Prepare (extract each zip into its own folder of the manual dir):

    python -m experiments.prepare_data --dataset=lsp --manual_dir=~/lsp --data_dir=~/posejax_data
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from posejax import skeleton
from posejax.data.real import crop, datasets, mpii, video

LSP_JOINTS = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    "neck", "head_top")
_SAME_NAME = ("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
              "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
              "left_wrist", "head_top")
MAPPING = skeleton.mapping_by_name("lsp_14", LSP_JOINTS, {
    "neck_nose": "neck", **{name: name for name in _SAME_NAME}})
J = MAPPING.target.num_joints
NUM_SOURCE_JOINTS = MAPPING.num_source_joints  # 14

LSP_DIR = "lsp_dataset"
LSPET_DIR = "lspet_dataset"
JOINTS_FILE = "joints.mat"
IMAGE_DIR = "images"
LSP_IMAGE_NAME = "im{:04d}.jpg"  # 1-based
LSPET_IMAGE_NAME = "im{:05d}.jpg"
LSP_TRAIN_IMAGES = 1000  # the standard split: the first 1000 train, the rest (1000) test

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
From http://sam.johnson.io/research/lsp.html download lsp_dataset.zip and extract it into
<manual_dir>/{LSP_DIR}/ (giving <manual_dir>/{LSP_DIR}/{JOINTS_FILE} and
<manual_dir>/{LSP_DIR}/{IMAGE_DIR}/im0001.jpg ...). For extended=True (the default) also download
lspet_dataset.zip from http://sam.johnson.io/research/lspet.html and extract it into
<manual_dir>/{LSPET_DIR}/ (giving <manual_dir>/{LSPET_DIR}/{JOINTS_FILE} and
<manual_dir>/{LSPET_DIR}/{IMAGE_DIR}/im00001.jpg ...).
"""


@dataclasses.dataclass(frozen=True)
class Annotations:
  """The joints of one joints.mat, in LSP's joint order, 0-based pixels.

  Attributes:
    joints: [N, 14, 2] float64 (zeros where unlabelled).
    labelled: [N, 14] bool.
    visible: [N, 14] bool (a subset of labelled).
  """

  joints: np.ndarray
  labelled: np.ndarray
  visible: np.ndarray

  def __len__(self) -> int:
    return len(self.joints)


def _joints_array(path: str) -> np.ndarray:
  variables = mpii.load_mat(path, squeeze=False)
  joints = variables.get("joints")
  if joints is None:
    found = sorted(k for k in variables if not k.startswith("__"))
    raise ValueError(f"{path}: no 'joints' variable (found {found})")
  try:
    return np.asarray(joints, np.float64)
  except (TypeError, ValueError):
    raise ValueError(f"{path}: 'joints' is not a numeric array") from None


def _flags(flags, path: str) -> np.ndarray:
  """The binary flags [N, 14] as bool, or a ValueError naming the values found."""
  values = np.unique(flags)
  if not np.isin(values, (0.0, 1.0)).all():
    raise ValueError(f"{path}: the visibility flags must be 0 or 1, found {values[:10].tolist()}")
  return flags == 1


def _check_coordinates(joints, labelled, path: str):
  bad = labelled & ~np.isfinite(joints).all(-1)
  if bad.any():
    image, joint = np.argwhere(bad)[0]
    raise ValueError(f"{path}: image {image + 1}, joint {LSP_JOINTS[joint]}: coordinates "
                     f"{joints[image, joint].tolist()} are not finite")


def read_lsp(path: str) -> Annotations:
  """The joints of LSP's joints.mat (`joints` 3 x 14 x N, flag 0 = visible; all labelled).

  Raises:
    FileNotFoundError / ValueError naming the file (missing, not MATLAB v5, no `joints`, a
    shape other than 3 x 14 x N (the message gives the shape found), flags other than 0/1).
  """
  joints = _joints_array(path)
  if joints.ndim != 3 or joints.shape[:2] != (3, NUM_SOURCE_JOINTS):
    layout = (" (that is LSP-extended's layout 14 x 3 x N)" if joints.shape[:2] == (
        NUM_SOURCE_JOINTS, 3) else "")
    raise ValueError(f"{path}: expected LSP's joints of shape 3 x 14 x N (x, y, visibility "
                     f"flag), got {' x '.join(map(str, joints.shape))}{layout}")
  points = joints[:2].transpose(2, 1, 0) - 1  # [N, 14, 2], 0-based
  occluded = _flags(joints[2].T, path)
  labelled = np.ones(occluded.shape, bool)
  _check_coordinates(points, labelled, path)
  return Annotations(points, labelled, ~occluded)


def read_lspet(path: str) -> Annotations:
  """The joints of LSP-extended's joints.mat (`joints` 14 x 3 x N, flag 1 = visible; a joint
  with flag 0 is unlabelled).

  Raises:
    FileNotFoundError / ValueError naming the file (as `read_lsp`; the expected shape is
    14 x 3 x N).
  """
  joints = _joints_array(path)
  if joints.ndim != 3 or joints.shape[:2] != (NUM_SOURCE_JOINTS, 3):
    layout = (" (that is LSP's layout 3 x 14 x N)" if joints.shape[:2] == (
        3, NUM_SOURCE_JOINTS) else "")
    raise ValueError(f"{path}: expected LSP-extended's joints of shape 14 x 3 x N (x, y, "
                     f"visibility flag), got {' x '.join(map(str, joints.shape))}{layout}")
  points = joints[:, :2].transpose(2, 0, 1) - 1  # [N, 14, 2], 0-based
  labelled = _flags(joints[:, 2].T, path)
  _check_coordinates(points, labelled, path)
  points = np.where(labelled[..., None], points, 0.0)
  return Annotations(points, labelled, labelled.copy())


@dataclasses.dataclass(frozen=True)
class LspPerson:
  """One image's person: the crop box and labels (`person`) and its visible joints [14]."""

  person: mpii.Person
  visible: np.ndarray


def persons(annotations: Annotations, image_dir: str, name_format: str,
            indices) -> list[LspPerson]:
  """The persons of the images `indices` (0-based) of one joints.mat; an image without a
  labelled joint is skipped. Image i is `name_format.format(i + 1)` in `image_dir`."""
  out = []
  for i in indices:
    labelled = annotations.labelled[i]
    if not labelled.any():
      continue
    centre, side = crop.square_box(annotations.joints[i], labelled, margin=1.0)
    name = os.path.join(image_dir, name_format.format(i + 1))
    out.append(LspPerson(mpii.Person(name, annotations.joints[i], labelled, centre, side, 0.0),
                         annotations.visible[i]))
  return out


def read_splits(manual_dir: str, extended: bool = True,
                num_train: int = LSP_TRAIN_IMAGES) -> dict[str, list[LspPerson]]:
  """{"train": persons, "test": persons} of the manual dir (see MANUAL_DOWNLOAD_INSTRUCTIONS),
  image paths relative to `manual_dir`.

  Raises:
    FileNotFoundError: a joints.mat or an image is missing (the message names it).
    ValueError: a malformed joints.mat, or too few LSP images for the split.
  """
  lsp_path = os.path.join(manual_dir, LSP_DIR, JOINTS_FILE)
  lsp = read_lsp(lsp_path)
  if len(lsp) <= num_train:
    raise ValueError(f"{lsp_path}: {len(lsp)} images; the split needs more than num_train = "
                     f"{num_train} (LSP has 2000: 1000 train, 1000 test)")
  lsp_images = os.path.join(LSP_DIR, IMAGE_DIR)
  splits = {
      "train": persons(lsp, lsp_images, LSP_IMAGE_NAME, range(num_train)),
      "test": persons(lsp, lsp_images, LSP_IMAGE_NAME, range(num_train, len(lsp))),
  }
  if extended:
    lspet = read_lspet(os.path.join(manual_dir, LSPET_DIR, JOINTS_FILE))
    splits["train"] += persons(lspet, os.path.join(LSPET_DIR, IMAGE_DIR), LSPET_IMAGE_NAME,
                               range(len(lspet)))
  for split in splits.values():
    for entry in split:
      path = os.path.join(manual_dir, entry.person.image)
      if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: image file not found")
  return splits


def person_example(image: np.ndarray, entry: LspPerson, image_size: int, margin: float) -> dict:
  """The record of one person: `mpii.person_example`'s keys plus joints_2d_visible [J] bool."""
  example = mpii.person_example(image, entry.person, image_size, margin, MAPPING)
  visible, visible_mask = MAPPING(entry.visible[:, None].astype(np.float32), entry.person.labeled)
  example["joints_2d_visible"] = np.asarray(visible_mask & (visible[..., 0] > 0.5), bool)
  return example


@dataclasses.dataclass(kw_only=True)
class LspConfig(tfds.core.BuilderConfig):
  image_size: int = 256
  margin: float = 1.25
  extended: bool = True
  num_train: int = LSP_TRAIN_IMAGES


def builder_config(image_size: int = 256, margin: float = 1.25, extended: bool = True,
                   num_train: int = LSP_TRAIN_IMAGES) -> LspConfig:
  """A builder config named after everything that determines the data."""
  if num_train < 1:
    raise ValueError(f"num_train must be at least 1, got {num_train}")
  name = (f"s{image_size}_m{int(round(margin * 100))}" + ("_ext" if extended else "")
          + ("" if num_train == LSP_TRAIN_IMAGES else f"_t{num_train}"))
  return LspConfig(name=name, image_size=image_size, margin=margin, extended=extended,
                   num_train=num_train)


def features(image_size: int) -> tfds.features.FeaturesDict:
  """MPII's single-person record plus joints_2d_visible."""
  tensor = tfds.features.Tensor
  return tfds.features.FeaturesDict({
      "image": tensor(shape=(image_size, image_size, 3), dtype=np.uint8,
                      encoding=tfds.features.Encoding.ZLIB),
      "camera": tensor(shape=(3, 3), dtype=np.float32),
      "joints_2d": tensor(shape=(J, 2), dtype=np.float32),
      "joints_2d_mask": tensor(shape=(J,), dtype=np.bool_),
      "joints_2d_visible": tensor(shape=(J,), dtype=np.bool_),
      "head_size": np.float32,
      "image_file": tfds.features.Text(),
  })


def from_record(record: dict) -> dict:
  """A stored crop as a sample: the docs/design.md single-image keys (no 3D: joints_3d zeros,
  has_3d False), head_size (0) and joints_2d_visible."""
  sample = mpii.from_record(record)
  sample["joints_2d_visible"] = np.asarray(record["joints_2d_visible"])
  return sample


class PosejaxLsp(tfds.core.GeneratorBasedBuilder):
  """Leeds Sports Pose (+ extended) single-person crops (see posejax.data.real.lsp)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=features(self.builder_config.image_size),
        homepage="http://sam.johnson.io/research/lsp.html", description=__doc__)

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    config = self.builder_config
    # Every annotation file is parsed and every image found before anything is written.
    splits = read_splits(manual_dir, config.extended, config.num_train)
    return {split: self._generate_examples(entries, manual_dir)
            for split, entries in splits.items()}

  def _generate_examples(self, entries, manual_dir):
    config = self.builder_config
    for key, entry in enumerate(entries):
      image = video.read_image(os.path.join(manual_dir, entry.person.image))
      yield key, dict(person_example(image, entry, config.image_size, config.margin),
                      image_file=entry.person.image)


STREAM_SPLITS = {"train_2d": "train", "test": "test"}


def builder(data_dir: str, **config) -> PosejaxLsp:
  """The LSP builder of `builder_config(**config)` writing ArrayRecord into `data_dir`."""
  return PosejaxLsp(config=builder_config(**config), data_dir=os.path.expanduser(data_dir),
                    file_format="array_record")


def prepare(manual_dir: str, data_dir: str, **config) -> PosejaxLsp:
  """Prepares LSP once from the files in `manual_dir` (config: `builder_config`'s arguments)."""
  return datasets.prepare_builder(builder(data_dir, **config), manual_dir)


def prepared_source(data_dir: str, **config):
  """The Source of a prepared LSP: stream "train_2d" reads split "train", "test" reads "test"
  (index i wraps around); `sizes` gives the test stream's size."""
  prepared = datasets.prepared_builder(builder(data_dir, **config), "lsp")
  records = {stream: prepared.as_data_source(split=split)
             for stream, split in STREAM_SPLITS.items()}

  def source(stream: str, index: int) -> dict:
    if stream not in records:
      raise KeyError(f"lsp has no stream {stream!r}; streams: {sorted(records)}")
    data = records[stream]
    return from_record(data[index % len(data)])

  source.sizes = {"test": len(records["test"])}
  return source
