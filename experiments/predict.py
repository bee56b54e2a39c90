"""Predict 3D poses on your images: `python -m experiments.predict --workdir=DIR IMAGE...`.

    python -m experiments.predict --workdir=/tmp/ws photo.jpg [--box=x0,y0,x1,y1]
        [--focal_length=PX] [--margin=1.25] [--out=DIR]

For each IMAGE (jpg, png, anything Pillow reads; EXIF orientation applied, so pixels are as
displayed) it writes, next to the image or into --out:

- IMAGE_STEM.pose.json: joint_names; joints_2d (the whole image's pixels, pixel centres at
  integers) and joints_2d_crop (the network's crop); joints_25d (x, y in crop pixels, relative
  depth z^r scale-normalised, positive = farther than the pelvis); confidence; root_depth
  (scale-normalised) and root_depth_mm; scale_mm; pose_3d_mm (camera frame, x right, y down,
  z forward, metric size from the mean bone lengths) and pose_3d_normalised (thorax-pelvis = 1);
  valid (False: the reconstruction failed, e.g. thorax and pelvis on one pixel); and the camera
  used (intrinsics, crop box, crop matrix, crop camera K = crop_matrix @ intrinsics).
- IMAGE_STEM.pose.png: the 2D skeleton on the image beside the 3D pose from the front and the
  side (joints with confidence below 0.5 hollow).

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
from posejax.models.inference import predict_metric
from experiments import cli
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

CONFIDENT = 0.5  # joints below are drawn hollow


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


def predict_image(model, image_size: int, image, *, box=None, focal_length=None,
                  margin: float = 1.25) -> tuple[dict, np.ndarray]:
  """One image's prediction as the JSON-ready dict of the module docstring (without the
  image and workdir paths), and the confident-joint mask [J] for the picture.

  Args:
    model: a PoseNet in eval mode.
    image_size: the side of the crops the model was trained on.
    image: [H, W, 3] uint8.
    box: [4] person box x0, y0, x1, y1 (pixels) or None for the whole image.
    focal_length: pixels, or None for the default max(H, W).
    margin: crop side / the box's longer side.
  """
  height, width = image.shape[:2]
  intrinsics = default_intrinsics(height, width, focal_length)
  centre, side = crop_box(height, width, box, margin)
  matrix = crop.crop_matrix(centre, side, image_size)
  pixels, camera = crop.crop_view(image, intrinsics, centre, side, image_size)
  p = {k: v[0] for k, v in predict_metric(model, pixels[None], camera[None]).items()}
  result = dict(
      image_height=height, image_width=width,
      joint_names=list(model.skeleton.joint_names),
      joints_2d=_listed(crop.transform_points(np.linalg.inv(matrix), p["joints_2d"])),
      joints_2d_crop=_listed(p["joints_2d"]),
      joints_25d=_listed(np.concatenate([p["joints_2d"], p["rel_depth"][:, None]], -1)),
      confidence=_listed(p["confidence"]),
      root_depth=_listed(p["root_depth"]),
      root_depth_mm=_listed(p["root_depth"] * p["scale_mm"]),
      scale_mm=_listed(p["scale_mm"]),
      pose_3d_mm=_listed(p["pose_3d_mm"]),
      pose_3d_normalised=_listed(p["pose_3d"]),
      valid=bool(p["valid"]),
      camera=dict(intrinsics=intrinsics.tolist(), focal_length=intrinsics[0, 0],
                  focal_length_given=focal_length is not None,
                  crop_centre=centre.tolist(), crop_side=side, crop_size=image_size,
                  crop_matrix=matrix.tolist(), crop_camera=_listed(camera)),
  )
  return result, p["confidence"] >= CONFIDENT


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
  if out:
    os.makedirs(out, exist_ok=True)
  for path, image, stem in zip(image_paths, images, stems):
    result, confident = predict_image(model, config.data.image_size, image, box=box,
                                      focal_length=focal_length, margin=margin)
    result = dict(image=os.path.abspath(path), workdir=os.path.abspath(workdir), **result)
    with open(stem + ".json", "w") as f:
      f.write(_json_text(result) + "\n")
    viz.prediction_picture(image, result["joints_2d"], result["pose_3d_mm"],
                           joint_mask=confident, valid=result["valid"],
                           skeleton=model.skeleton).save(stem + ".png")
    print(f"{path}: {stem}.json, {stem}.png"
          + ("" if result["valid"] else "  (invalid reconstruction)"), flush=True)
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
