"""COCO keypoints as a TFDS dataset: single-person crops with 2D labels.

Reads `annotations/person_keypoints_{train,val}2017.json` with pycocotools and the images of
`train2017/` and `val2017/`, as the COCO site distributes them; splits "train" and "validation".

- Persons: category "person", not crowd (iscrowd 0), at least `min_keypoints` labeled keypoints
  (v > 0: v = 1 labeled but occluded, v = 2 visible; both are labels) and a box of positive size.
- Coordinates: COCO keypoints are pixel indices (pixel centres at integers, as in posejax);
  the bbox [x, y, w, h] is in edge coordinates (the first pixel spans 0..1), so its centre in
  pixel-centre coordinates is (x + w / 2 - 0.5, y + h / 2 - 0.5).
- The crop: a square of side `margin * max(w, h)` (margin 1.25) around the bbox centre.
- The camera guess and the record are those of MPII (`mpii.guessed_intrinsics`: focal =
  max(H, W), principal point at the image centre). COCO has no head boxes: head_size is 0.
- Joints map onto the canonical H36M 17 with `skeleton.COCO_TO_H36M`: COCO's nose is H36M's
  neck/nose joint; pelvis, spine, thorax and head top have no COCO counterpart and stay masked
  (the hip midpoint is not the H36M pelvis, so it is not invented).

Prepare (see README):

    python -m experiments.prepare_data --dataset=coco --manual_dir=~/coco --data_dir=~/posejax_data
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os

import numpy as np
import tensorflow_datasets as tfds
from pycocotools.coco import COCO

from posejax import skeleton
from posejax.data.real import datasets, mpii

MAPPING = skeleton.COCO_TO_H36M
NUM_SOURCE_JOINTS = MAPPING.num_source_joints  # 17
SPLITS = {"train": ("annotations/person_keypoints_train2017.json", "train2017"),
          "validation": ("annotations/person_keypoints_val2017.json", "val2017")}

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
From https://cocodataset.org/#download download train2017.zip, val2017.zip and
annotations_trainval2017.zip and extract all three into <manual_dir>/, giving
<manual_dir>/train2017/*.jpg, <manual_dir>/val2017/*.jpg and
<manual_dir>/annotations/person_keypoints_{train,val}2017.json.
"""


def read_persons(path: str, min_keypoints: int = 1) -> list[mpii.Person]:
  """The usable persons of a COCO keypoints file (see the module docstring), in image order.

  Raises:
    FileNotFoundError / ValueError naming the file and the broken annotation.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: file not found")
  try:
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
      coco = COCO(path)
  except (ValueError, UnicodeDecodeError) as error:
    raise ValueError(f"{path}: not a complete JSON file ({error})") from None
  except (AssertionError, KeyError, TypeError) as error:
    raise ValueError(f"{path}: not a COCO annotation file ({type(error).__name__}: "
                     f"{error})") from None
  person_ids = [c["id"] for c in coco.loadCats(coco.getCatIds()) if c.get("name") == "person"]
  if len(person_ids) != 1:
    raise ValueError(f"{path}: expected one category named 'person', found {len(person_ids)}")
  keypoint_names = coco.loadCats(person_ids)[0].get("keypoints")
  if tuple(keypoint_names or ()) != MAPPING.source_joint_names:
    raise ValueError(f"{path}: the person category's keypoints are {keypoint_names}, expected "
                     f"the 17 COCO keypoints {list(MAPPING.source_joint_names)}")
  persons = []
  for image_id in sorted(coco.getImgIds()):
    image = coco.imgs[image_id]
    for annotation in coco.imgToAnns[image_id]:
      if annotation.get("category_id") not in person_ids or annotation.get("iscrowd", 0):
        continue
      person = _person(image, annotation, f"{path}: annotation id {annotation.get('id')}")
      if person is not None and person.labeled.sum() >= min_keypoints:
        persons.append(person)
  return persons


def _person(image: dict, annotation: dict, where: str) -> mpii.Person | None:
  try:
    keypoints = np.asarray(annotation["keypoints"], np.float64).reshape(NUM_SOURCE_JOINTS, 3)
    x, y, width, height = np.asarray(annotation["bbox"], np.float64).reshape(4)
    name = str(image["file_name"])
  except KeyError as error:
    raise ValueError(f"{where}: missing field {error}") from None
  except (TypeError, ValueError) as error:
    raise ValueError(f"{where}: expected keypoints [51] and bbox [4] ({error})") from None
  if not max(width, height) > 0:
    return None  # a degenerate box: nothing to crop
  labeled = keypoints[:, 2] > 0
  return mpii.Person(name, np.where(labeled[:, None], keypoints[:, :2], 0), labeled,
                     np.array([x + width / 2 - 0.5, y + height / 2 - 0.5]),
                     float(max(width, height)), 0.0)


@dataclasses.dataclass(kw_only=True)
class CocoConfig(tfds.core.BuilderConfig):
  image_size: int = 256
  margin: float = 1.25
  min_keypoints: int = 1


def builder_config(image_size: int = 256, margin: float = 1.25,
                   min_keypoints: int = 1) -> CocoConfig:
  """A builder config named after everything that determines the data."""
  if min_keypoints < 1:
    raise ValueError(f"min_keypoints must be at least 1, got {min_keypoints}")
  return CocoConfig(name=f"s{image_size}_m{int(round(margin * 100))}_k{min_keypoints}",
                    image_size=image_size, margin=margin, min_keypoints=min_keypoints)


class PosejaxCoco(tfds.core.GeneratorBasedBuilder):
  """COCO keypoints single-person crops (see posejax.data.real.coco)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=mpii.single_image_features(self.builder_config.image_size),
        homepage="https://cocodataset.org/", description=__doc__)

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    # Parse every annotation file before writing anything: a broken file fails fast.
    persons = {split: read_persons(os.path.join(manual_dir, annotations),
                                   self.builder_config.min_keypoints)
               for split, (annotations, _) in SPLITS.items()}
    return {split: self._generate_examples(persons[split], os.path.join(manual_dir, images))
            for split, (_, images) in SPLITS.items()}

  def _generate_examples(self, persons, image_dir):
    config = self.builder_config
    return mpii.generate_person_examples(persons, image_dir, config.image_size, config.margin,
                                         MAPPING)


def builder(data_dir: str, **config) -> PosejaxCoco:
  """The COCO builder of `builder_config(**config)` writing ArrayRecord into `data_dir`."""
  return PosejaxCoco(config=builder_config(**config), data_dir=os.path.expanduser(data_dir),
                     file_format="array_record")


def prepare(manual_dir: str, data_dir: str, **config) -> PosejaxCoco:
  """Prepares COCO once from the files in `manual_dir` (config: `builder_config`'s arguments)."""
  return datasets.prepare_builder(builder(data_dir, **config), manual_dir)


def prepared_source(data_dir: str, split: str = "train", **config):
  """The "train_2d" Source of a prepared COCO split ("train" or "validation")."""
  prepared = datasets.prepared_builder(builder(data_dir, **config), "coco")
  return mpii.single_image_source(prepared, split)
