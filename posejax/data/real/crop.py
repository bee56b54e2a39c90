"""Person crops from full frames, with the crop camera that keeps the geometry exact.

Every real dataset builder turns a frame and a person box into a square crop of `image_size`
pixels and the 3x3 crop camera K = crop_matrix @ intrinsics (docs/method.md section 1: K maps camera
rays to crop pixels, last row (0, 0, 1)). Pixel centres sit at integer coordinates in both the
frame and the crop. Rotation, flips and scale jitter are left to the augmentation on the device;
the builders only cut axis-aligned squares, so the resampling can be an antialiased resize (a
plain bilinear read of a 1000 px box into 256 px would alias).
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def square_box(points, mask=None, *, margin: float = 1.25,
               min_side: float = 1.0) -> tuple[np.ndarray, float]:
  """The square box around the (masked) points: centre [2] and side (pixels).

  Args:
    points: [N, 2] pixel coordinates.
    mask: [N] bool, the points to use (default all).
    margin: side = margin x the larger extent of the points.
    min_side: lower bound of the side (a single point still gives a box).

  Raises:
    ValueError: no point is selected or a selected point is not finite.
  """
  points = np.asarray(points, np.float64)
  if mask is not None:
    points = points[np.asarray(mask, bool)]
  if len(points) == 0 or not np.isfinite(points).all():
    raise ValueError(f"A box needs at least one finite point, got {points.tolist()}")
  low, high = points.min(0), points.max(0)
  return (low + high) / 2, max(margin * float((high - low).max()), min_side)


def crop_matrix(centre, side: float, image_size: int) -> np.ndarray:
  """[3, 3] float64 map from frame pixels to crop pixels of the square box (centre, side).

  The box's centre lands on the crop centre (S - 1) / 2 and its side on S pixels.
  """
  zoom = image_size / side
  corner = np.asarray(centre, np.float64) - side / 2
  # A frame pixel centre x is the edge coordinate x + 0.5; the crop edge coordinate is
  # (x + 0.5 - corner_edge) * zoom, and its pixel centre coordinate is that minus 0.5, with
  # corner_edge = corner + 0.5.
  return np.array([[zoom, 0, -corner[0] * zoom - 0.5], [0, zoom, -corner[1] * zoom - 0.5],
                   [0, 0, 1]])


def crop_image(image, centre, side: float, image_size: int) -> np.ndarray:
  """The square box of a frame resized to [image_size, image_size, C] uint8 (zeros outside
  the frame), exactly consistent with `crop_matrix(centre, side, image_size)`.

  Args:
    image: [H, W, C] uint8 frame, C in (1, 3, 4).
  """
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3:
    raise ValueError(f"image must be uint8 [H, W, C], got {image.dtype} {image.shape}")
  left_edge, top_edge = np.asarray(centre, np.float64) - side / 2 + 0.5  # edge coordinates
  # PIL crops outside the frame with zeros, but resize boxes must lie inside the image: cut
  # the integer region around the box first, then resize its fractional box.
  x0, y0 = int(np.floor(left_edge)), int(np.floor(top_edge))
  x1, y1 = int(np.ceil(left_edge + side)), int(np.ceil(top_edge + side))
  region = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).crop(
      (x0, y0, x1, y1))
  box = (left_edge - x0, top_edge - y0, left_edge - x0 + side, top_edge - y0 + side)
  resized = np.asarray(region.resize((image_size, image_size), Image.BILINEAR, box=box))
  return resized.reshape(image_size, image_size, image.shape[-1])


def crop_view(image, intrinsics, centre, side: float, image_size: int):
  """(crop [S, S, C] uint8, crop camera K [3, 3] float32) of a frame seen with `intrinsics`."""
  matrix = crop_matrix(centre, side, image_size)
  camera = (matrix @ np.asarray(intrinsics, np.float64)).astype(np.float32)
  return crop_image(image, centre, side, image_size), camera


def transform_points(matrix, points) -> np.ndarray:
  """[N, 2] pixel points mapped by a [3, 3] affine pixel map."""
  points = np.asarray(points, np.float64)
  return points @ np.asarray(matrix)[:2, :2].T + np.asarray(matrix)[:2, 2]
