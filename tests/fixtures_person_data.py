"""Tiny fixture files in the exact formats of MPII, COCO and the own multi-view manifest.

Images are black with small white squares at chosen pixels, so a test can find a joint in the
crop and check that pixels and labels agree.
"""

from __future__ import annotations

import json
import os

import numpy as np
import scipy.io
from PIL import Image

from posejax import skeleton

EMPTY = np.zeros((0, 0))  # MATLAB's []


def dotted_image(height: int, width: int, dots=()) -> np.ndarray:
  """[H, W, 3] uint8 black image with a 3x3 white square centred at each (x, y) of `dots`."""
  image = np.zeros((height, width, 3), np.uint8)
  for x, y in dots:
    image[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2] = 255
  return image


def write_jpeg(path, image) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(image).save(path, quality=98)
  return str(path)


def truncate(path, keep: float = 0.5) -> None:
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:int(len(data) * keep)])


def struct_array(entries: list[dict]) -> np.ndarray:
  """A 1xN MATLAB struct array (savemat writes a numpy record array of objects as one)."""
  fields = list(entries[0])
  array = np.empty((1, len(entries)), dtype=[(f, object) for f in fields])
  for i, entry in enumerate(entries):
    for f in fields:
      array[0, i][f] = entry[f]
  return array


# ------------------------------------------------------------------------------------- MPII

def mpii_points(joints: dict[int, tuple[float, float]], visible=None) -> np.ndarray:
  """annopoints.point: a struct array of {id, x, y, is_visible} (MATLAB doubles; is_visible is
  [] or a char '0'/'1' in parts of the real file)."""
  visible = visible or {}
  return struct_array([dict(id=float(j), x=float(x), y=float(y),
                            is_visible=visible.get(j, 1.0)) for j, (x, y) in joints.items()])


def mpii_rect(joints, head_box, objpos, scale, visible=None) -> dict:
  """One annorect entry: head box x1..y2, objpos struct, scale, annopoints; [] for a head box,
  joints, objpos or scale given as None."""
  x1, y1, x2, y2 = [EMPTY] * 4 if head_box is None else [float(v) for v in head_box]
  annopoints = {"point": mpii_points(joints, visible)} if joints else EMPTY
  return dict(x1=x1, y1=y1, x2=x2, y2=y2, annopoints=annopoints,
              scale=EMPTY if scale is None else float(scale),
              objpos=EMPTY if objpos is None else {"x": float(objpos[0]), "y": float(objpos[1])})


def write_mpii_mat(path, images: list[tuple[str, list[dict], bool]]) -> str:
  """mpii_human_pose_v1_u12_1.mat (MATLAB v5) with RELEASE.annolist, img_train,
  single_person, act, video_list.

  Args:
    images: (name, annorects, is_train) per image; one annorect is written as a bare 1x1
      struct (as MATLAB does), none as [].
  """
  annolist = []
  for name, rects, _ in images:
    annorect = struct_array(rects) if rects else EMPTY
    annolist.append(dict(image={"name": name}, annorect=annorect, frame_sec=EMPTY,
                         vididx=EMPTY))
  single = np.empty((len(images), 1), dtype=object)
  for i, (_, rects, _) in enumerate(images):
    single[i, 0] = np.array([[1.0]]) if len(rects) == 1 else EMPTY
  act = struct_array([dict(act_name=EMPTY, cat_name=EMPTY, act_id=-1.0) for _ in images]).T
  release = {"annolist": struct_array(annolist),
             "img_train": np.array([[float(t) for _, _, t in images]]),
             "version": "12", "single_person": single, "act": act,
             "video_list": np.array([["xyz"]], dtype=object)}
  scipy.io.savemat(path, {"RELEASE": release})
  return str(path)


def write_mpii_json(path, entries: list[dict]) -> str:
  """HRNet-style train.json / valid.json: [{"joints_vis", "joints", "image", "scale",
  "center"}] with unlabeled joints at [-1, -1] and joints_vis 0."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(entries, f)
  return str(path)


def mpii_json_entry(image, joints: dict[int, tuple[float, float]], center, scale) -> dict:
  return {"joints_vis": [int(j in joints) for j in range(16)],
          "joints": [list(joints.get(j, (-1.0, -1.0))) for j in range(16)],
          "image": image, "scale": scale, "center": list(center)}


def write_gt_valid(path, head_boxes) -> str:
  """HRNet's gt_valid.mat: headboxes_src [2, 2, N] ((x1, y1), (x2, y2)), jnt_missing,
  pos_gt_src, dataset_joints."""
  head_boxes = np.asarray(head_boxes, np.float64).reshape(-1, 2, 2)  # [N, 2, 2]
  count = len(head_boxes)
  scipy.io.savemat(path, {
      "headboxes_src": head_boxes.transpose(1, 2, 0),
      "jnt_missing": np.zeros((16, count)),
      "pos_gt_src": np.zeros((16, 2, count)),
      "dataset_joints": np.array([["rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv",
                                   "thor", "neck", "head", "rwri", "relb", "rsho", "lsho",
                                   "lelb", "lwri"]], dtype=object),
  })
  return str(path)


# ------------------------------------------------------------------------------------- COCO

COCO_KEYPOINTS = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
                  "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                  "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"]
COCO_SKELETON = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7],
                 [6, 8], [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5],
                 [4, 6], [5, 7]]


def coco_image(image_id: int, height: int, width: int) -> dict:
  return {"license": 1, "file_name": f"{image_id:012d}.jpg", "coco_url": "", "height": height,
          "width": width, "date_captured": "2013-11-14 17:02:52", "flickr_url": "",
          "id": image_id}


def coco_person(annotation_id: int, image_id: int, keypoints: dict[int, tuple], bbox,
                iscrowd: int = 0) -> dict:
  """A person annotation: keypoints is {COCO index: (x, y, v)}; unlisted keypoints are
  (0, 0, 0) as in the real files."""
  flat = []
  for k in range(17):
    flat.extend(int(round(c)) for c in keypoints.get(k, (0, 0, 0)))
  segmentation = ({"counts": [0, 4], "size": [2, 2]} if iscrowd
                  else [[bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1], bbox[0], bbox[1] + 1]])
  return {"segmentation": segmentation, "num_keypoints": sum(v > 0 for _, _, v in
                                                             keypoints.values()),
          "area": float(bbox[2] * bbox[3]), "iscrowd": iscrowd, "keypoints": flat,
          "image_id": image_id, "bbox": [float(b) for b in bbox], "category_id": 1,
          "id": annotation_id}


def write_coco(path, images: list[dict], annotations: list[dict]) -> str:
  """person_keypoints_*2017.json with info, licenses, images, annotations, categories."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump({
        "info": {"description": "COCO 2017 Dataset", "version": "1.0", "year": 2017},
        "licenses": [{"url": "", "id": 1, "name": "Attribution-NonCommercial-ShareAlike"}],
        "images": images, "annotations": annotations,
        "categories": [{"supercategory": "person", "id": 1, "name": "person",
                        "keypoints": COCO_KEYPOINTS, "skeleton": COCO_SKELETON}],
    }, f)
  return str(path)


def swapped_mapping(mapping):
  """`mapping` with the dataset's left and right joints exchanged: the bug tests must catch."""
  swap = {"l_": "r_", "r_": "l_", "left_": "right_", "right_": "left_"}
  names = mapping.source_joint_names
  correspondence = {}
  for target, index in zip(mapping.target.joint_names, mapping.source_indices):
    if index >= 0:
      name = names[index]
      prefix = next((p for p in swap if name.startswith(p)), "")
      correspondence[target] = (swap[prefix] + name[len(prefix):]) if prefix else name
  return skeleton.mapping_by_name(mapping.name + "_swapped", names, correspondence,
                                  mapping.target)


# ------------------------------------------------------------------------------------- own data

def write_manifest(path, manifest: dict) -> str:
  os.makedirs(os.path.dirname(os.fspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(manifest, f)
  return os.fspath(path)
