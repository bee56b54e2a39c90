"""Pictures a person would rather look at than read: skeletons drawn on crops, contact sheets."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from posejax.skeleton import H36M, Skeleton

LEFT, RIGHT, CENTRE = (60, 140, 255), (255, 90, 60), (250, 230, 60)


def _side_colour(skeleton: Skeleton, joint: int):
  name = skeleton.joint_names[joint]
  return LEFT if name.startswith("left") else RIGHT if name.startswith("right") else CENTRE


def draw_skeleton(image: np.ndarray, joints_2d: np.ndarray, joint_mask=None,
                  skeleton: Skeleton = H36M, scale: int = 1) -> Image.Image:
  """The crop [H, W, 3] uint8, upscaled by `scale`, with bones (left blue, right red) and
  joints; masked (hidden) joints are drawn as hollow circles and their bones thin."""
  picture = Image.fromarray(np.asarray(image, np.uint8))
  if scale != 1:
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
  draw = ImageDraw.Draw(picture)
  points = (np.asarray(joints_2d, np.float64) + 0.5) * scale - 0.5
  visible = np.ones(len(points), bool) if joint_mask is None else np.asarray(joint_mask, bool)
  for child, parent in skeleton.bones:
    width = max(scale, 2) if visible[child] and visible[parent] else 1
    draw.line([tuple(points[parent]), tuple(points[child])],
              fill=_side_colour(skeleton, child), width=width)
  radius = max(1.5, scale * 1.2)
  for j, (x, y) in enumerate(points):
    box = [x - radius, y - radius, x + radius, y + radius]
    if visible[j]:
      draw.ellipse(box, fill=_side_colour(skeleton, j))
    else:
      draw.ellipse(box, outline=_side_colour(skeleton, j))
  return picture


def contact_sheet(rows: list[list[Image.Image]], gap: int = 4,
                  background=(24, 24, 24)) -> Image.Image:
  """Pictures laid out in rows (all the same size)."""
  width, height = rows[0][0].size
  columns = max(len(r) for r in rows)
  sheet = Image.new("RGB", (columns * (width + gap) + gap, len(rows) * (height + gap) + gap),
                    background)
  for r, row in enumerate(rows):
    for c, picture in enumerate(row):
      sheet.paste(picture, (gap + c * (width + gap), gap + r * (height + gap)))
  return sheet
