"""Predict poses on your images: `python -m experiments.predict --workdir=DIR IMAGE...`.

    python -m experiments.predict --workdir=/tmp/ws photo.jpg [--box=x0,y0,x1,y1]
        [--focal_length=PX] [--margin=1.25] [--out=DIR]

The workdir's task (its config.json's `task`) and latest checkpoint make the prediction
(`Task.predict`). For each IMAGE (jpg, png, anything Pillow reads; EXIF orientation applied, so
pixels are as displayed) it writes, next to the image or into --out:

- IMAGE_STEM.pose.json: joint_names, the image's size and the camera used (intrinsics, crop box,
  crop matrix, crop camera K = crop_matrix @ intrinsics), and what the task predicts. 2D joints
  are given twice: in the whole image's pixels (pixel centres at integers) and in the
  network's crop (the key + "_crop"); 3D poses "_normalised" are scale-normalised
  (thorax-pelvis = 1), "_mm" in millimetres, metric size from the mean bone lengths.
  - pose25d (PoseNet): joints_2d, joints_2d_crop; joints_25d (x, y in crop pixels, relative
    depth z^r scale-normalised, positive = farther than the pelvis); confidence; root_depth
    (scale-normalised) and root_depth_mm; scale_mm; pose_3d_mm (camera frame, x right, y
    down, z forward) and pose_3d_normalised; valid (False: the reconstruction failed, e.g.
    thorax and pelvis on one pixel).
  - deeppose: joints_2d, joints_2d_crop (the last stage of the cascade) and
    joints_2d_stages, joints_2d_stages_crop (every stage, in cascade order). 2D only.
  - pose_transformer: joint_scores (each joint's class probability); scale_mm; pose_3d_mm and
    pose_3d_normalised (root-relative: the pelvis at 0, camera axes); pose_3d_layers_normalised
    (every decoder layer's pose, the last = pose_3d_normalised); valid (a usable scale). 3D
    only.
- IMAGE_STEM.pose.png: the image with the 2D skeleton (DeepPose: one panel per stage, the last
  titled "(final)"; the pose transformer: the image alone) beside the 3D pose from the front
  and the side where the task predicts 3D; joints with confidence (class score) below 0.5
  hollow.

The person should fill the crop as in training: --box is the person's box in image pixels; the
crop is the square around its centre, --margin times its longer side. Without --box the crop
is the whole image, squared about its centre (padded with black). The camera's focal length is
rarely known: the default max(H, W) pixels is a field of view of 53 degrees across the longer
side, a typical phone or webcam; the principal point is the image centre. A wrong focal length
mostly changes the root depth (distance to the camera), little the pose's shape.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
from absl import app, flags, logging
from PIL import Image, ImageOps, UnidentifiedImageError

from posejax import viz
from posejax.data.real import crop
from experiments import cli
from posejax.tasks import Task, get_task
from posejax.train.checkpoints import restore_model

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir (its config.json and "
                               "latest checkpoint are used).")
_BOX = flags.DEFINE_string("box", None, "x0,y0,x1,y1: the person's box in image pixels "
                           "(default: the whole image).")
_FOCAL_LENGTH = flags.DEFINE_float("focal_length", None, "Focal length in pixels (default: "
                                   "max(H, W), principal point at the image centre).")
_MARGIN = flags.DEFINE_float("margin", 1.25, "Crop side = margin x the --box's longer side.")
_OUT = flags.DEFINE_string("out", None, "Directory for the .pose.json and .pose.png files "
                           "(default: next to each image).")


def parse_box(text: str) -> np.ndarray:
  """'x0,y0,x1,y1' -> [4] float64, with x1 > x0 and y1 > y0.

  Raises:
    ValueError: not four finite numbers, or an empty box.
  """
  try:
    box = np.array([float(v) for v in text.split(",")])
  except ValueError:
    box = np.array([])
  if box.shape != (4,) or not np.isfinite(box).all():
    raise ValueError(f"--box must be four numbers x0,y0,x1,y1 (pixels), got {text!r}")
  if box[2] <= box[0] or box[3] <= box[1]:
    raise ValueError(f"--box {text!r} is empty: it needs x1 > x0 and y1 > y0")
  return box


def load_image(path: str) -> np.ndarray:
  """[H, W, 3] uint8 RGB as displayed (EXIF orientation applied).

  Raises:
    FileNotFoundError: no such file.
    ValueError: the file is not an image Pillow can read.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Image {path!r} does not exist")
  try:
    with Image.open(path) as image:
      return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
  except (UnidentifiedImageError, OSError) as error:
    raise ValueError(f"Image {path!r} cannot be read: {error}") from error


def default_intrinsics(height: int, width: int, focal_length: float | None = None) -> np.ndarray:
  """[3, 3] pinhole intrinsics: focal length (default max(H, W)) and the image centre."""
  focal = float(max(height, width) if focal_length is None else focal_length)
  return np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]])


def crop_box(height: int, width: int, box=None, margin: float = 1.25) -> tuple[np.ndarray, float]:
  """(centre [2], side) of the square crop: around `box` [x0, y0, x1, y1] with `margin`, or
  the whole image squared about its centre."""
  if box is None:
    return np.array([(width - 1) / 2, (height - 1) / 2]), float(max(height, width))
  return crop.square_box(np.reshape(box, (2, 2)), margin=margin)


def _listed(values):
  """float32 values as (nested lists of) their shortest decimal forms, lossless for float32."""
  values = np.asarray(values, np.float32)
  decimals = np.array([float(str(v)) for v in values.ravel()]).reshape(values.shape)
  return decimals.tolist()


def _json_text(result: dict) -> str:
  """Indented JSON with each list of numbers (a joint's coordinates, a matrix row) on one line."""
  text = json.dumps(result, indent=1)
  return re.sub(r"\[\s+([-+0-9.eE,\s]*?)\s+\]",
                lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text)


def output_stems(image_paths, out: str | None) -> list[str]:
  """Where each image's outputs go: `out`/NAME.pose or, without `out`, IMAGE_PATH_STEM.pose
  (+ .json / .png).

  Raises:
    ValueError: two images would write the same files.
  """
  stems = [os.path.splitext(os.path.join(out, os.path.basename(p)) if out else p)[0] + ".pose"
           for p in image_paths]
  clashes = sorted({s for s in stems if stems.count(s) > 1})
  if clashes:
    raise ValueError(f"Several images would write the same outputs {clashes}: give them "
                     "different names or leave out --out")
  return stems


# The keys of `Task.predict` this program knows: written to the JSON by `prediction_fields`,
# or left out on purpose (PoseNet's maps: pictures, not numbers for a JSON).
WRITTEN_KEYS = ("joints_2d", "joints_2d_stages", "rel_depth", "confidence", "joint_scores",
                "root_depth", "scale_mm", "pose_3d_mm", "pose_3d", "pose_3d_layers", "valid")
LEFT_OUT_KEYS = ("heatmaps", "depthmaps", "probabilities")


def check_prediction(task: Task, prediction: dict):
  """Raises ValueError where `prediction` (a `task.predict` result) has a key this program does
  not know, or nothing to draw (neither 2D joints nor a metric 3D pose): a JSON silently
  missing part of the prediction would be worse."""
  name = type(task).__name__
  unknown = sorted(set(prediction) - set(WRITTEN_KEYS) - set(LEFT_OUT_KEYS))
  if unknown:
    raise ValueError(f"Task {name} predicts {unknown}, which experiments.predict does not know "
                     f"how to write; it knows {list(WRITTEN_KEYS)}")
  if "joints_2d" not in prediction and "pose_3d_mm" not in prediction:
    raise ValueError(f"Task {name}'s prediction has neither joints_2d nor pose_3d_mm (it has "
                     f"{sorted(prediction)}): nothing to write")


def prediction_fields(prediction: dict, crop_to_image: np.ndarray) -> dict:
  """The JSON fields of one crop's prediction (the module docstring; keys the task does not
  predict are left out), 2D joints mapped by `crop_to_image` [3, 3] to the image's pixels."""
  p, fields = prediction, {}
  for key in ("joints_2d", "joints_2d_stages"):
    if key in p:
      fields[key] = _listed(crop.transform_points(crop_to_image, p[key]))
      fields[key + "_crop"] = _listed(p[key])
  if "rel_depth" in p:
    fields["joints_25d"] = _listed(np.concatenate([p["joints_2d"], p["rel_depth"][:, None]], -1))
  for key in ("confidence", "joint_scores", "root_depth"):
    if key in p:
      fields[key] = _listed(p[key])
  if "root_depth" in p:
    fields["root_depth_mm"] = _listed(p["root_depth"] * p["scale_mm"])
  for key in ("scale_mm", "pose_3d_mm"):
    if key in p:
      fields[key] = _listed(p[key])
  for key in ("pose_3d", "pose_3d_layers"):  # scale-normalised: said in the name
    if key in p:
      fields[key + "_normalised"] = _listed(p[key])
  if "valid" in p:
    fields["valid"] = bool(p["valid"])
  return fields


def predict_image(task: Task, model, image_size: int, image, *, box=None, focal_length=None,
                  margin: float = 1.25) -> tuple[dict, np.ndarray | None]:
  """One image's prediction as the JSON-ready dict of the module docstring (without the
  image and workdir paths), and the confident-joint mask [J] for the picture (None where the
  task gives no confidence).

  Args:
    task: the workdir's task (`posejax.tasks.get_task`), whose `predict` is used.
    model: its model in eval mode.
    image_size: the side of the crops the model was trained on.
    image: [H, W, 3] uint8.
    box: [4] person box x0, y0, x1, y1 (pixels) or None for the whole image.
    focal_length: pixels, or None for the default max(H, W).
    margin: crop side / the box's longer side.

  Raises:
    ValueError: the task's prediction is not one this program can write (`check_prediction`).
  """
  height, width = image.shape[:2]
  intrinsics = default_intrinsics(height, width, focal_length)
  centre, side = crop_box(height, width, box, margin)
  matrix = crop.crop_matrix(centre, side, image_size)
  pixels, camera = crop.crop_view(image, intrinsics, centre, side, image_size)
  p = {k: v[0] for k, v in task.predict(model, pixels[None], camera[None]).items()}
  check_prediction(task, p)
  result = dict(
      image_height=height, image_width=width,
      joint_names=list(task.skeleton.joint_names),
      **prediction_fields(p, np.linalg.inv(matrix)),
      camera=dict(intrinsics=intrinsics.tolist(), focal_length=intrinsics[0, 0],
                  focal_length_given=focal_length is not None,
                  crop_centre=centre.tolist(), crop_side=side, crop_size=image_size,
                  crop_matrix=matrix.tolist(), crop_camera=_listed(camera)),
  )
  return result, viz.confident_joints(p)


def predict_files(workdir: str, image_paths, *, box=None, focal_length=None,
                  margin: float = 1.25, out: str | None = None) -> list[str]:
  """Writes IMAGE.pose.json and IMAGE.pose.png for each image (see the module docstring).

  Every image is read before the model is loaded, so a bad path fails at once.

  Returns:
    The output stems (add .json / .png), in the order of `image_paths`.
  """
  if focal_length is not None and not focal_length > 0:
    raise ValueError(f"--focal_length must be positive, got {focal_length}")
  if not margin > 0:
    raise ValueError(f"--margin must be positive, got {margin}")
  images = [load_image(path) for path in image_paths]
  stems = output_stems(image_paths, out)
  model, config = restore_model(workdir)
  task = get_task(config)
  if out:
    os.makedirs(out, exist_ok=True)
  for path, image, stem in zip(image_paths, images, stems):
    result, confident = predict_image(task, model, config.data.image_size, image, box=box,
                                      focal_length=focal_length, margin=margin)
    result = dict(image=os.path.abspath(path), workdir=os.path.abspath(workdir), **result)
    with open(stem + ".json", "w") as f:
      f.write(_json_text(result) + "\n")
    valid = result.get("valid", True)  # a 2D-only task reconstructs nothing
    # The result's 2D joints are the image's pixels, as the picture draws them on the image.
    viz.prediction_picture(image, viz.joints_to_draw(result), result.get("pose_3d_mm"),
                           joint_mask=confident, valid=valid,
                           skeleton=task.skeleton).save(stem + ".png")
    print(f"{path}: {stem}.json, {stem}.png" + ("" if valid else "  (invalid reconstruction)"),
          flush=True)
  return stems


def main(argv):
  image_paths = argv[1:]
  if not image_paths:
    raise app.UsageError("Give at least one image: python -m experiments.predict "
                         "--workdir=DIR photo.jpg")
  if _WORKDIR.value is None:
    raise app.UsageError("--workdir (a training workdir) is required")
  try:
    box = None if _BOX.value is None else parse_box(_BOX.value)
  except ValueError as error:
    raise app.UsageError(str(error)) from error
  logging.set_verbosity(logging.WARNING)  # orbax reports every step of a restore
  predict_files(_WORKDIR.value, image_paths, box=box, focal_length=_FOCAL_LENGTH.value,
                margin=_MARGIN.value, out=_OUT.value)


if __name__ == "__main__":
  cli.run(main)
