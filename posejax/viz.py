"""Pictures a person would rather look at than read: skeletons drawn on crops and images,
3D poses from the front and the side, contact sheets."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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


GRID, AXES, TEXT, INVALID = (52, 52, 52), (96, 96, 96), (200, 200, 200), (255, 80, 80)


def _nice_step(length: float) -> float:
  """The smallest 1, 2, 2.5 or 5 x 10^k that is at least `length` (> 0)."""
  power = 10.0 ** np.floor(np.log10(length))
  return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= length * (1 - 1e-9))


def _font(size: int):
  return ImageFont.load_default(size=max(8, size // 22))


def _text_margin(size: int) -> int:
  return max(2, size // 64)


def _write_title(draw: ImageDraw.ImageDraw, size: int, title: str, colour=TEXT):
  """`title` in the top-left corner of a [size, size] panel."""
  margin = _text_margin(size)
  draw.text((margin, margin), title, fill=colour, font=_font(size))


def _checked_pose(pose_3d, skeleton: Skeleton) -> np.ndarray:
  pose = np.asarray(pose_3d, np.float64)
  if pose.shape != (skeleton.num_joints, 3):
    raise ValueError(f"pose_3d must be [{skeleton.num_joints}, 3], got shape {pose.shape}")
  if not np.isfinite(pose).all():
    raise ValueError(f"pose_3d has non-finite values: {pose.tolist()}")
  return pose


def draw_pose_3d(pose_3d, skeleton: Skeleton = H36M, *, yaw_degrees: float = 0.0,
                 half_extent_mm: float = 1000.0, size: int = 256, joint_mask=None,
                 title: str = "", title_colour=TEXT) -> Image.Image:
  """One orthographic view of a 3D pose, root at the centre, on a millimetre grid.

  The pose is turned by `yaw_degrees` about the camera's y axis (image down) and seen along
  the turned z axis: 0 is the camera's own view (x right, y down), 90 a side view from the
  camera's right with depth z to the right. Bones are drawn far to near so that near limbs
  cover far ones; left limbs blue, right red, as in `draw_skeleton`.

  Args:
    pose_3d: [J, 3] camera-frame pose (mm).
    skeleton: joint names (for the side colours) and bones.
    yaw_degrees: turn about the y axis.
    half_extent_mm: the distance from the centre to the picture's edge.
    size: side of the square picture, pixels.
    joint_mask: [J] bool; False joints are drawn hollow and their bones thin.
    title: written in the top-left corner.

  Returns:
    [size, size] RGB picture; the grid spacing (mm) is written in the bottom-left corner.

  Raises:
    ValueError: the pose is not [J, 3] for the skeleton's J or not finite, or the extent is
      not positive.
  """
  pose = _checked_pose(pose_3d, skeleton)
  if not half_extent_mm > 0:
    raise ValueError(f"half_extent_mm must be positive, got {half_extent_mm}")
  yaw = np.deg2rad(yaw_degrees)
  turn = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
  turned = (pose - pose[skeleton.root]) @ turn.T
  pixels_per_mm = size / (2 * half_extent_mm)
  centre = (size - 1) / 2
  points = centre + turned[:, :2] * pixels_per_mm

  picture = Image.new("RGB", (size, size), (24, 24, 24))
  draw = ImageDraw.Draw(picture)
  # Grid lines through the root every `step` mm, about 4 to 10 across the picture.
  step = _nice_step(half_extent_mm / 4)
  ticks = np.arange(-np.floor(half_extent_mm / step), np.floor(half_extent_mm / step) + 1)
  for tick in ticks:
    offset = centre + tick * step * pixels_per_mm
    colour = AXES if tick == 0 else GRID
    draw.line([(offset, 0), (offset, size)], fill=colour)
    draw.line([(0, offset), (size, offset)], fill=colour)

  visible = (np.ones(len(points), bool) if joint_mask is None
             else np.asarray(joint_mask, bool))
  width = max(2, size // 100)
  depth = turned[:, 2]
  for child, parent in sorted(skeleton.bones, key=lambda b: -(depth[b[0]] + depth[b[1]])):
    draw.line([tuple(points[parent]), tuple(points[child])], fill=_side_colour(skeleton, child),
              width=width if visible[child] and visible[parent] else 1)
  radius = max(2.0, size / 110)
  for j in np.argsort(-depth, kind="stable"):
    x, y = points[j]
    box = [x - radius, y - radius, x + radius, y + radius]
    if visible[j]:
      draw.ellipse(box, fill=_side_colour(skeleton, j))
    else:
      draw.ellipse(box, outline=_side_colour(skeleton, j))

  _write_title(draw, size, title, title_colour)
  draw.text((_text_margin(size), size - _text_margin(size)), f"grid {step:g} mm", fill=TEXT,
            font=_font(size), anchor="ld")
  return picture


def fitting_half_extent(*poses_3d, skeleton: Skeleton = H36M) -> float:
  """The half extent (mm) at which every pose, root at the centre, fits with a 15 % margin."""
  relative = [np.abs(_checked_pose(p, skeleton) - _checked_pose(p, skeleton)[skeleton.root])
              for p in poses_3d]
  return max(1.15 * max(float(r.max(initial=0.0)) for r in relative), 10.0)


def pose_3d_views(pose_3d, skeleton: Skeleton = H36M, *, size: int = 256, joint_mask=None,
                  valid: bool = True, half_extent_mm: float | None = None,
                  label: str = "") -> list[Image.Image]:
  """The pose from the front (as the camera sees it) and from the side, at one scale.

  Args:
    pose_3d: [J, 3] camera-frame pose (mm).
    joint_mask: [J] bool, joints to draw hollow where False.
    valid: False marks the titles (in red) as an invalid reconstruction.
    half_extent_mm: the scale (default: the pose fits with a 15 % margin); give two poses the
      same one to compare them.
    label: put before each view's title.

  Returns:
    [front, side], each [size, size] RGB.
  """
  pose = _checked_pose(pose_3d, skeleton)
  # Both views share one scale; the side view's horizontal axis is the depth.
  half_extent = (fitting_half_extent(pose, skeleton=skeleton) if half_extent_mm is None
                 else half_extent_mm)
  note = "" if valid else " (invalid)"
  colour = TEXT if valid else INVALID
  prefix = f"{label}, " if label else ""
  return [draw_pose_3d(pose, skeleton, yaw_degrees=yaw, half_extent_mm=half_extent, size=size,
                       joint_mask=joint_mask, title=prefix + title + note, title_colour=colour)
          for yaw, title in ((0.0, "front: x right, y down"),
                             (90.0, "side: depth z right, y down"))]


def letterbox(image, size: int) -> tuple[np.ndarray, np.ndarray]:
  """An image scaled to fit a [size, size] square (centred, black bars) and the [3, 3] pixel
  map from the image to the square (pixel centres at integers), to carry points along."""
  picture = Image.fromarray(np.asarray(image, np.uint8))
  zoom = size / max(picture.size)
  width, height = max(1, round(picture.width * zoom)), max(1, round(picture.height * zoom))
  left, top = (size - width) // 2, (size - height) // 2
  square = Image.new("RGB", (size, size))
  square.paste(picture.convert("RGB").resize((width, height), Image.BILINEAR), (left, top))
  zoom_x, zoom_y = width / picture.width, height / picture.height
  matrix = np.array([[zoom_x, 0, (zoom_x - 1) / 2 + left], [0, zoom_y, (zoom_y - 1) / 2 + top],
                     [0, 0, 1]])
  return np.asarray(square), matrix


CONFIDENT = 0.5  # a predicted joint less confident than this is drawn hollow


def joints_to_draw(prediction: dict):
  """The 2D joints the pictures draw of one image's prediction (`Task.predict`'s keys, without
  the batch axis): every stage of a cascade ("joints_2d_stages" [S, J, 2]), else "joints_2d"
  [J, 2], else None (a 3D-only task)."""
  return prediction.get("joints_2d_stages", prediction.get("joints_2d"))


def confident_joints(prediction: dict):
  """[J] bool, the joints drawn filled: confidence (PoseNet) or class score (pose transformer)
  at least CONFIDENT; None (all filled) where the prediction has neither."""
  scores = prediction.get("confidence", prediction.get("joint_scores"))
  return None if scores is None else np.asarray(scores) >= CONFIDENT


def skeleton_panel(image, joints_2d=None, *, joint_mask=None, skeleton: Skeleton = H36M,
                   size: int = 256, title: str = "") -> Image.Image:
  """The image letterboxed to [size, size] with the skeleton of `joints_2d` ([J, 2], the
  image's pixels) if given, and `title` in the top-left corner."""
  square, matrix = letterbox(image, size)
  if joints_2d is None:
    picture = Image.fromarray(square)
  else:
    points = np.asarray(joints_2d, np.float64) @ matrix[:2, :2].T + matrix[:2, 2]
    picture = draw_skeleton(square, points, joint_mask, skeleton)
  if title:
    _write_title(ImageDraw.Draw(picture), size, title)
  return picture


def skeleton_panels(image, joints_2d, *, joint_mask=None, skeleton: Skeleton = H36M,
                    size: int = 256) -> list[Image.Image]:
  """The panels of a 2D prediction (`skeleton_panel`): one for [J, 2] joints, one per stage
  for a cascade's [S, J, 2] (titled "stage s", the last, the prediction, "stage S (final)"),
  and the image alone for None."""
  if joints_2d is None or np.ndim(joints_2d) == 2:
    return [skeleton_panel(image, joints_2d, joint_mask=joint_mask, skeleton=skeleton,
                           size=size)]
  last = len(joints_2d) - 1
  return [skeleton_panel(image, joints, joint_mask=joint_mask, skeleton=skeleton, size=size,
                         title=f"stage {s + 1}" + (" (final)" if s == last else ""))
          for s, joints in enumerate(joints_2d)]


def prediction_picture(image, joints_2d, pose_3d_mm, *, joint_mask=None, valid: bool = True,
                       skeleton: Skeleton = H36M, size: int = 256) -> Image.Image:
  """One prediction at a glance: the 2D skeleton on the whole image (`skeleton_panels`: a
  cascade's stages side by side; the image alone without a 2D prediction) beside the 3D pose
  seen from the front and from the side (`pose_3d_views`; left out without a 3D prediction).

  Args:
    image: [H, W, 3] uint8, the whole image.
    joints_2d: [J, 2] joints in that image's pixels, [S, J, 2] a cascade's stages, or None.
    pose_3d_mm: [J, 3] camera-frame pose (mm), or None.
    joint_mask: [J] bool, joints drawn hollow where False (e.g. low confidence).
    valid: whether the 3D reconstruction is valid (marked in red otherwise).
    size: side of each square panel.

  Returns:
    RGB picture of n * (size + 4) + 4 by size + 8 pixels, n panels: the 2D ones (S for a
    cascade, else 1), then 2 for a 3D pose.
  """
  panels = skeleton_panels(image, joints_2d, joint_mask=joint_mask, skeleton=skeleton,
                           size=size)
  if pose_3d_mm is not None:
    panels += pose_3d_views(pose_3d_mm, skeleton, size=size, joint_mask=joint_mask,
                            valid=valid)
  return contact_sheet([panels])


def prediction_and_truth(image, joints_2d, pose_3d_mm, truth_3d_mm, *, truth_2d=None,
                         truth_2d_mask=None, joint_mask=None, valid: bool = True,
                         skeleton: Skeleton = H36M, size: int = 192) -> list[Image.Image]:
  """A prediction beside its ground truth, as panels of one row: the crop with the predicted
  2D skeleton (`skeleton_panels`: a cascade's stages side by side; the crop alone without a 2D
  prediction); the crop with the true 2D skeleton where `truth_2d` is given; for a 3D
  prediction, the predicted and the true 3D pose, each from the front and from the side, root
  at the centre and at one scale (what MPJPE compares), the prediction's titles giving its
  MPJPE (root-aligned, mm).

  Args:
    image: [H, W, 3] uint8 crop; joints_2d: its predicted joints (crop pixels), [J, 2],
      [S, J, 2] a cascade's stages, or None.
    pose_3d_mm, truth_3d_mm: [J, 3] predicted and true camera-frame poses (mm), or both None.
    truth_2d: [J, 2] the true joints (crop pixels), or None; truth_2d_mask: [J] bool, true
      joints drawn hollow where False (hidden, or not labelled).
    joint_mask: [J] bool, predicted joints drawn hollow where False (e.g. low confidence).
    valid: whether the reconstruction is valid (the prediction's titles turn red if not).
    size: side of each square panel.

  Raises:
    ValueError: one of pose_3d_mm and truth_3d_mm without the other.
  """
  if (pose_3d_mm is None) != (truth_3d_mm is None):
    raise ValueError("pose_3d_mm and truth_3d_mm go together: give both or neither")
  panels = skeleton_panels(image, joints_2d, joint_mask=joint_mask, skeleton=skeleton,
                           size=size)
  if truth_2d is not None:
    panels.append(skeleton_panel(image, truth_2d, joint_mask=truth_2d_mask, skeleton=skeleton,
                                 size=size, title="truth"))
  if pose_3d_mm is None:
    return panels
  pose, truth = _checked_pose(pose_3d_mm, skeleton), _checked_pose(truth_3d_mm, skeleton)
  error = np.linalg.norm((pose - pose[skeleton.root]) - (truth - truth[skeleton.root]),
                         axis=-1).mean()
  extent = fitting_half_extent(pose, truth, skeleton=skeleton)
  return [*panels,
          *pose_3d_views(pose, skeleton, size=size, joint_mask=joint_mask, valid=valid,
                         half_extent_mm=extent, label=f"predicted ({error:.0f} mm)"),
          *pose_3d_views(truth, skeleton, size=size, half_extent_mm=extent, label="truth")]
