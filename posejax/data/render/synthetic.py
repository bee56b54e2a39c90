"""Built-in synthetic multi-view humans: no download, exact cameras, exact 2D/3D ground truth.

A sample is one posed subject in a scene, seen by V cameras at once. Each view is rendered
directly into its person crop by ray casting through the crop camera K (so K, the 2D joints and
the image agree exactly): a body of capsules along the bones (shaded, with clothing colours and
stripes), a textured floor and a procedural backdrop in world coordinates (so all views see one
scene), optionally an occluding pillar.

World frame: right-handed, +Y up, floor at Y = 0, millimetres. Camera frame: x right, y down,
z forward. Everything is determined by (seed, split, index): the same arguments give the same
bytes.

Streams (see `sample`): "train_2d" single images with 2D labels ("in the wild": other
backgrounds and poses), "train_multiview" V-view samples (their 3D ground truth is kept for the
fully supervised baseline and evaluation; the batch pipeline removes it for weak supervision),
and "test" multi-view samples of other motions, subjects and cameras with full 3D ground truth;
"validation" is drawn like "test" from its own random stream (for choosing checkpoints).
"""

from __future__ import annotations

import dataclasses
import functools
import zlib

import numpy as np

from posejax.data.render import motion
from posejax.skeleton import H36M

J = H36M.num_joints
_INDEX = {name: i for i, name in enumerate(H36M.joint_names)}

STREAMS = ("train_2d", "train_multiview", "validation", "test")
# Camera distance from the subject, every split.
CAMERA_DISTANCE_MM = (3000, 6000)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """What the generator draws from.

  Attributes:
    image_size: side of the square person crops, pixels.
    num_views: views per multi-view sample (<= 8).
    seed: global seed; with (stream, index) it determines every sample.
    crop_margin: crop side = margin x the larger side of the projected joints' box.
    occluder_probability: chance of a pillar standing between some cameras and the subject.
    motion: "auto" (captured DeepMimic clips when pybullet is installed, plus procedural
      motion), "procedural", or a path to a user's .npy of poses [N, 17, 3] in mm.
  """

  image_size: int = 128
  num_views: int = 4
  seed: int = 0
  crop_margin: float = 1.3
  occluder_probability: float = 0.2
  motion: str = "auto"

  def __post_init__(self):
    if not 1 <= self.num_views <= 8:
      raise ValueError(f"num_views must be in 1..8, got {self.num_views}")
    if self.image_size < 16:
      raise ValueError(f"image_size must be at least 16 pixels, got {self.image_size}")


def config_from(fields) -> SyntheticConfig:
  """A SyntheticConfig from any mapping/ConfigDict that has (some of) its fields."""
  names = [f.name for f in dataclasses.fields(SyntheticConfig)]
  return SyntheticConfig(**{name: fields[name] for name in names if name in fields})


# --------------------------------------------------------------------------------------- body

# Capsules (joint a, joint b, radius in mm for a 1.75 m subject, part). Parts pick the colour.
_CAPSULES = (
    ("pelvis", "spine", 125, "shirt"), ("spine", "thorax", 135, "shirt"),
    ("pelvis", "right_hip", 85, "trousers"), ("pelvis", "left_hip", 85, "trousers"),
    ("right_hip", "right_knee", 70, "trousers"), ("right_knee", "right_ankle", 52, "trousers"),
    ("left_hip", "left_knee", 70, "trousers"), ("left_knee", "left_ankle", 52, "trousers"),
    ("thorax", "neck_nose", 48, "skin"), ("neck_nose", "head_top", 92, "skin"),
    ("thorax", "right_shoulder", 58, "shirt"), ("thorax", "left_shoulder", 58, "shirt"),
    ("right_shoulder", "right_elbow", 45, "sleeve"), ("right_elbow", "right_wrist", 37, "skin"),
    ("left_shoulder", "left_elbow", 45, "sleeve"), ("left_elbow", "left_wrist", 37, "skin"),
)
# Without these a capsule body looks the same from the front and from behind, mirrored: the
# facing direction, hence left/right and the sign of every relative depth, could not be read
# from an image (a real person has a face and feet). Nose: (offset from the head's centre
# along the facing direction, length, radius) in mm; feet: (length, radius).
_NOSE = (70, 45, 24)
_FOOT = (150, 42)
_PARTS = ("skin", "shirt", "sleeve", "trousers", "shoes", "chest")
# Left limbs are two-tone, white and a shade darker: the one cue for which side is which that a
# small network learns within minutes (the facing cues alone took it longer than the budget of
# the default run; BUILD_NOTES.md, issue 6).
_LEFT_SHADE = 0.7
_LEFT_BAND = np.array([0.93, 0.93, 0.93])
_CAPSULE_PART = np.array([_PARTS.index(p) for _, _, _, p in _CAPSULES]
                         + [_PARTS.index("skin"), _PARTS.index("shoes"), _PARTS.index("shoes")])
_CAPSULE_LEFT = np.array([b.startswith("left_") for _, b, _, _ in _CAPSULES]
                         + [False, False, True])
# The joints whose flesh each capsule is (a joint is not hidden by its own capsules).
_CAPSULE_A = np.array([_INDEX[a] for a, _, _, _ in _CAPSULES]
                      + [_INDEX["neck_nose"], _INDEX["right_ankle"], _INDEX["left_ankle"]])
_CAPSULE_B = np.array([_INDEX[b] for _, b, _, _ in _CAPSULES]
                      + [_INDEX["head_top"], _INDEX["right_ankle"], _INDEX["left_ankle"]])


def facing_direction(joints: np.ndarray) -> np.ndarray:
  """Unit vector [3] the body faces, from hips and shoulders (any right-handed frame)."""
  up = joints[_INDEX["thorax"]] - joints[_INDEX["pelvis"]]
  across = (joints[_INDEX["right_hip"]] - joints[_INDEX["left_hip"]]
            + joints[_INDEX["right_shoulder"]] - joints[_INDEX["left_shoulder"]])
  forward = np.cross(up, across)
  return forward / max(np.linalg.norm(forward), 1e-9)


def _along(direction, axis):
  """`direction` made orthogonal to `axis` and unit length."""
  axis = axis / max(np.linalg.norm(axis), 1e-9)
  out = direction - np.dot(direction, axis) * axis
  return out / max(np.linalg.norm(out), 1e-9)


def body_capsules(joints: np.ndarray, scale: float, girth: float):
  """The body's capsules for joints [17, 3] (mm, any right-handed frame).

  Returns:
    a, b: [C, 3] end points; radius: [C] in mm. Order: `_CAPSULES`, nose, right foot, left foot.
  """
  forward = facing_direction(joints)
  head_top, neck_nose = joints[_INDEX["head_top"]], joints[_INDEX["neck_nose"]]
  nose_direction = _along(forward, head_top - neck_nose)
  nose_offset, nose_length, nose_radius = np.array(_NOSE) * scale
  nose_start = (head_top + neck_nose) / 2 + nose_offset * nose_direction
  a = [joints[_INDEX[j]] for j, _, _, _ in _CAPSULES] + [nose_start]
  b = [joints[_INDEX[j]] for _, j, _, _ in _CAPSULES] + [
      nose_start + nose_length * nose_direction]
  foot_length, foot_radius = np.array(_FOOT) * scale
  for side in ("right", "left"):
    ankle, knee = joints[_INDEX[f"{side}_ankle"]], joints[_INDEX[f"{side}_knee"]]
    a.append(ankle)
    b.append(ankle + foot_length * _along(forward, ankle - knee))
  radius = np.concatenate([np.array([r for _, _, r, _ in _CAPSULES]) * scale * girth,
                           [nose_radius, foot_radius, foot_radius]])
  return np.stack(a), np.stack(b), radius


@dataclasses.dataclass(frozen=True)
class Subject:
  """A person: size, proportions and clothing."""
  bone_scale: np.ndarray  # [E] per-bone length factors (height x jitter), order of H36M.bones
  girth: float  # radius factor
  colours: np.ndarray  # [6, 3] float RGB 0..1 for _PARTS
  stripe_frequency: float  # stripes per metre on the shirt (0: plain)


def random_subject(rng: np.random.Generator) -> Subject:
  height = rng.uniform(0.88, 1.12)
  skin = np.array([0.95, 0.78, 0.65]) * rng.uniform(0.45, 1.0)
  clothes = rng.uniform(0.05, 0.95, size=(5, 3))  # shirt, sleeve, trousers, shoes, chest
  return Subject(bone_scale=height * rng.uniform(0.94, 1.06, size=J - 1),
                 girth=rng.uniform(0.85, 1.25),
                 colours=np.concatenate([skin[None], clothes]).astype(np.float64),
                 stripe_frequency=float(rng.choice([0.0, rng.uniform(4, 12)])))


def retarget(pose: np.ndarray, bone_lengths_mm: np.ndarray) -> np.ndarray:
  """Rebuilds `pose` [17, 3] with the bone directions kept and the given bone lengths [E]."""
  out = np.zeros_like(pose)
  out[H36M.root] = pose[H36M.root]
  for (child, parent), length in zip(H36M.bones, bone_lengths_mm):  # parents precede children
    direction = pose[child] - pose[parent]
    out[child] = out[parent] + direction / max(np.linalg.norm(direction), 1e-9) * length
  return out


# -------------------------------------------------------------------------------------- motion


@functools.lru_cache(maxsize=None)
def _captured_clips(split: str) -> tuple[np.ndarray, ...]:
  """DeepMimic clips for a split (every 4th clip, by name, is held out for the test split)."""
  paths = motion.deepmimic_clip_paths()
  chosen = [p for i, p in enumerate(paths) if (i % 4 == 3) == (split == "test")]
  return tuple(motion.load_deepmimic_clip(p) for p in chosen)


@functools.lru_cache(maxsize=4)
def _user_poses(path: str) -> np.ndarray:
  return motion.load_pose_file(path)


def draw_pose(config: SyntheticConfig, split: str, rng: np.random.Generator) -> np.ndarray:
  """A pose [17, 3] (mm, world frame, feet on the floor) from the configured motion sources."""
  if config.motion not in ("auto", "procedural"):
    poses = _user_poses(config.motion)
    # The user's own poses: even indices train, odd ones test.
    start = 1 if split == "test" else 0
    return poses[start + 2 * rng.integers(0, max((len(poses) - start + 1) // 2, 1))]
  clips = _captured_clips(split) if config.motion == "auto" else ()
  if clips and rng.random() < 0.6:
    clip = clips[rng.integers(len(clips))]
    return clip[rng.integers(len(clip))].astype(np.float64)
  frames = motion.procedural_motion(rng, 2)
  return frames[-1].astype(np.float64)


def _yaw(angle):
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def place_subject(pose: np.ndarray, subject: Subject, rng: np.random.Generator) -> np.ndarray:
  """Retargets to the subject's proportions, turns it by a random yaw and centres it at the
  world origin (feet kept on the floor)."""
  lengths = np.asarray(H36M.mean_bone_lengths_mm) * subject.bone_scale
  pose = retarget(pose, lengths)
  pose = pose @ _yaw(rng.uniform(0, 2 * np.pi)).T
  pose[:, [0, 2]] -= pose[H36M.root, [0, 2]]
  pose[:, 1] -= (pose[[_INDEX["left_ankle"], _INDEX["right_ankle"]], 1].min()
                 - motion.ANKLE_HEIGHT_MM)
  return pose


# ------------------------------------------------------------------------------------- cameras


@dataclasses.dataclass(frozen=True)
class Camera:
  """A pinhole camera: x_cam = rotation @ x_world + translation; pixel = intrinsics @ x_cam."""
  intrinsics: np.ndarray  # [3, 3] of the full (virtual) sensor
  rotation: np.ndarray  # [3, 3] world -> camera
  translation: np.ndarray  # [3]


def look_at(position: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(rotation, translation) of a camera at `position` looking at `target`, image y down."""
  forward = target - position
  forward /= np.linalg.norm(forward)
  right = np.cross(forward, [0.0, 1.0, 0.0])  # x right when y is up and z forward
  right /= np.linalg.norm(right)
  down = np.cross(forward, right)
  rotation = np.stack([right, down, forward])
  return rotation, -rotation @ position


def random_cameras(rng: np.random.Generator, num_views: int, target: np.ndarray,
                   held_out: bool) -> list[Camera]:
  """V cameras around the subject at 3-6 m with varied heights, aim, focal lengths and principal
  points, spread in azimuth so that the views really differ. The test split uses other
  heights and focal lengths."""
  start = rng.uniform(0, 2 * np.pi)
  spacing = 2 * np.pi / num_views
  cameras = []
  for v in range(num_views):
    azimuth = start + v * spacing + rng.uniform(-0.3, 0.3) * spacing
    distance = rng.uniform(*CAMERA_DISTANCE_MM)
    height = rng.uniform(1800, 2800) if held_out else rng.uniform(400, 2000)
    position = np.array([distance * np.sin(azimuth), height, distance * np.cos(azimuth)])
    aim = target + rng.normal(size=3) * 120
    rotation, translation = look_at(position, aim)
    focal = rng.uniform(1200, 1800) if held_out else rng.uniform(800, 1400)
    intrinsics = np.array([[focal * rng.uniform(0.98, 1.02), 0, 500 + rng.normal() * 20],
                           [0, focal, 500 + rng.normal() * 20], [0, 0, 1]])
    cameras.append(Camera(intrinsics, rotation, translation))
  return cameras


def crop_camera(intrinsics: np.ndarray, joints_camera: np.ndarray, image_size: int,
                margin: float, rng: np.random.Generator) -> np.ndarray:
  """The crop camera: a square box around the projected joints (side = margin x their larger
  extent, centre jittered by 5 %) resized to `image_size` pixels (pixel centres at integers)."""
  pixels = joints_camera @ intrinsics.T
  pixels = pixels[:, :2] / pixels[:, 2:]
  low, high = pixels.min(0), pixels.max(0)
  side = margin * max(high[0] - low[0], high[1] - low[1], 1.0)
  centre = (low + high) / 2 + rng.uniform(-0.05, 0.05, size=2) * side
  zoom = image_size / side
  corner = centre - side / 2
  # u = (x - corner) * zoom - 0.5: the box centre lands on the crop centre (S - 1) / 2.
  crop = np.array([[zoom, 0, -corner[0] * zoom - 0.5], [0, zoom, -corner[1] * zoom - 0.5],
                   [0, 0, 1]])
  return crop @ intrinsics


# ------------------------------------------------------------------------------------ renderer


def _ray_capsules(directions, a, b, radius):
  """Distance along unit rays from the origin to capsules (segment a-b, radius).

  Args:
    directions: [P, 3] unit rays; a, b: [C, 3]; radius: [C].

  Returns:
    [P, C] distances (inf where missed).
  """
  ba = b - a  # [C, 3]
  oa = -a  # ray origin (0) minus a
  baba = np.sum(ba * ba, -1)
  bard = directions @ ba.T  # [P, C]
  baoa = np.sum(ba * oa, -1)
  rdoa = directions @ oa.T
  oaoa = np.sum(oa * oa, -1)
  qa = baba - bard * bard
  qb = baba * rdoa - baoa * bard
  qc = baba * oaoa - baoa * baoa - radius**2 * baba
  h = qb * qb - qa * qc
  with np.errstate(invalid="ignore", divide="ignore"):
    t_body = (-qb - np.sqrt(h)) / qa
    y = baoa + t_body * bard
    on_body = (h >= 0) & (y > 0) & (y < baba) & (t_body > 0)
    # End caps: spheres at a (y <= 0) or b (y >= baba).
    cap_centre_is_b = y >= baba
    oc_dot_rd = np.where(cap_centre_is_b, -(directions @ b.T), rdoa)
    oc_oc = np.where(cap_centre_is_b, np.sum(b * b, -1), oaoa)
    hc = oc_dot_rd**2 - (oc_oc - radius**2)
    t_cap = -oc_dot_rd - np.sqrt(hc)
    on_cap = ~on_body & (h >= 0) & (hc >= 0) & (t_cap > 0)
  return np.where(on_body, t_body, np.where(on_cap, t_cap, np.inf))


def _ray_capsules_culled(directions, a, b, radius, camera, image_size):
  """`_ray_capsules` for the rays of every crop pixel (row-major), testing each capsule only
  against the pixels inside its projected bounding box (a capsule covers a small part of the
  crop, so this skips most of the work)."""
  distances = np.full((len(directions), len(a)), np.inf)
  focal = np.sqrt(abs(np.linalg.det(camera[:2, :2])))
  grid = np.arange(image_size * image_size).reshape(image_size, image_size)
  for c in range(len(a)):
    near = min(a[c, 2], b[c, 2]) - radius[c]
    if near <= 1.0:  # reaches behind the camera: no simple box, test every pixel
      pixels = grid.ravel()
    else:
      ends = np.stack([a[c], b[c]]) @ camera.T
      ends = ends[:, :2] / ends[:, 2:]
      reach = radius[c] * focal / near + 1
      low = np.floor(ends.min(0) - reach).astype(int).clip(0, image_size)
      high = np.ceil(ends.max(0) + reach).astype(int).clip(0, image_size)
      pixels = grid[low[1]:high[1] + 1, low[0]:high[0] + 1].ravel()
    if pixels.size:
      distances[pixels, c] = _ray_capsules(directions[pixels], a[c:c + 1], b[c:c + 1],
                                           radius[c:c + 1])[:, 0]
  return distances


def _backdrop(directions_world, palette):
  """Colour of rays that hit nothing: a sky/wall gradient with soft blobs, fixed in the world."""
  up = directions_world[:, 1:2]
  base = palette[0] * (0.6 + 0.4 * up) + palette[1] * (0.4 - 0.4 * up)
  azimuth = np.arctan2(directions_world[:, 0], directions_world[:, 2])[:, None]
  blobs = np.sin(azimuth * palette[2, 0] * 6 + 3 * up) * np.sin(up * 9 + palette[2, 1] * 5)
  return np.clip(base + 0.15 * blobs * palette[2], 0, 1)


def _floor(points_world, distance, palette):
  tile = (np.floor(points_world[:, 0] / 600) + np.floor(points_world[:, 2] / 600)) % 2
  noise = 0.06 * np.sin(points_world[:, 0] / 97) * np.sin(points_world[:, 2] / 131)
  colour = np.where(tile[:, None] > 0, palette[3], palette[4]) + noise[:, None]
  # Fade the pattern with distance: far tiles are smaller than a pixel and would alias.
  fade = np.exp(-np.where(distance > 0, distance, np.inf) / 9000.0)[:, None]
  return np.clip(fade * colour + (1 - fade) * (palette[3] + palette[4]) / 2, 0, 1)


@dataclasses.dataclass(frozen=True)
class Scene:
  palette: np.ndarray  # [5, 3]: backdrop top, backdrop bottom, blob tint, floor tiles a and b
  light: np.ndarray  # [3] unit direction towards the light, world frame
  pillar: np.ndarray | None  # [2, 3] end points of an occluding pillar, or None
  pillar_colour: np.ndarray


def random_scene(rng: np.random.Generator, in_the_wild: bool,
                 occluder_probability: float) -> Scene:
  palette = rng.uniform(0.1, 0.9, size=(5, 3))
  if not in_the_wild:  # a studio: calm grey-ish walls
    palette[:2] = palette[:2] * 0.3 + 0.5
  light = np.array([rng.uniform(-1, 1), rng.uniform(0.5, 1.5), rng.uniform(-1, 1)])
  pillar = None
  if rng.random() < occluder_probability:
    angle, distance = rng.uniform(0, 2 * np.pi), rng.uniform(900, 1600)
    base = np.array([distance * np.sin(angle), 0.0, distance * np.cos(angle)])
    pillar = np.stack([base, base + [0, 2600, 0]])
  return Scene(palette, light / np.linalg.norm(light), pillar, rng.uniform(0.1, 0.9, 3))


def render_view(pose_world: np.ndarray, subject: Subject, scene: Scene, camera: Camera,
                image_size: int, margin: float, rng: np.random.Generator) -> dict:
  """One person crop with its ground truth.

  Returns:
    dict: image [S, S, 3] uint8, camera [3, 3] crop K, joints_2d [17, 2], joints_2d_mask [17]
    (inside the crop and not hidden by another body part), joints_3d [17, 3] camera frame mm.
  """
  joints_camera = pose_world @ camera.rotation.T + camera.translation
  crop_k = crop_camera(camera.intrinsics, joints_camera, image_size, margin, rng)
  pixels = np.stack(np.meshgrid(np.arange(image_size), np.arange(image_size)), -1)
  pixels = pixels.reshape(-1, 2).astype(np.float64)
  rays = np.concatenate([pixels, np.ones((len(pixels), 1))], 1) @ np.linalg.inv(crop_k).T
  directions = rays / np.linalg.norm(rays, axis=1, keepdims=True)

  a, b, radius = body_capsules(joints_camera, np.mean(subject.bone_scale), subject.girth)
  distances = _ray_capsules_culled(directions, a, b, radius, crop_k, image_size)
  nearest = np.argmin(distances, axis=1)
  t_body = distances[np.arange(len(directions)), nearest]

  directions_world = directions @ camera.rotation  # camera -> world (rotation is orthonormal)
  origin_world = -camera.rotation.T @ camera.translation
  colour = _backdrop(directions_world, scene.palette)
  with np.errstate(divide="ignore", invalid="ignore"):
    t_floor = -origin_world[1] / directions_world[:, 1]
  hits_floor = (t_floor > 0) & (t_floor < t_body)
  floor_points = origin_world + t_floor[:, None] * directions_world
  colour = np.where(hits_floor[:, None], _floor(floor_points, t_floor, scene.palette), colour)

  hits_body = np.isfinite(t_body)
  points = np.where(hits_body, t_body, 0.0)[:, None] * directions
  segment = b[nearest] - a[nearest]
  along = np.clip(np.sum((points - a[nearest]) * segment, 1)
                  / np.maximum(np.sum(segment * segment, 1), 1e-9), 0, 1)
  normals = points - (a[nearest] + along[:, None] * segment)
  normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-9)
  light_camera = camera.rotation @ scene.light
  shade = 0.35 + 0.65 * np.clip(normals @ light_camera, 0, 1)
  part = _CAPSULE_PART[nearest]
  torso = nearest < 2  # pelvis-spine and spine-thorax
  front = torso & (normals @ facing_direction(joints_camera) > 0.45)
  part = np.where(front, _PARTS.index("chest"), part)  # a front panel: the chest faces you
  body_colour = subject.colours[part]
  if subject.stripe_frequency:
    height_world = (points @ camera.rotation + origin_world)[:, 1]
    stripes = np.sin(height_world / 1000 * subject.stripe_frequency * 2 * np.pi) > 0
    body_colour = np.where(((part == 1) & stripes)[:, None], body_colour * 0.55, body_colour)
  # Left limbs: the half of each bone next to its parent joint is white, the rest darker.
  left = _CAPSULE_LEFT[nearest][:, None]
  body_colour = np.where(left, body_colour * _LEFT_SHADE, body_colour)
  body_colour = np.where(left & (along < 0.5)[:, None], _LEFT_BAND, body_colour)
  colour = np.where(hits_body[:, None], body_colour * shade[:, None], colour)

  if scene.pillar is not None:
    pillar = scene.pillar @ camera.rotation.T + camera.translation
    t_pillar = _ray_capsules(directions, pillar[:1], pillar[1:], np.array([160.0]))[:, 0]
    in_front = t_pillar < np.minimum(t_body, np.where(hits_floor, t_floor, np.inf))
    pillar_shade = 0.5 + 0.5 * np.abs(directions_world[:, 0:1])
    colour = np.where(in_front[:, None], scene.pillar_colour * pillar_shade, colour)

  image = np.round(np.clip(colour, 0, 1) * 255).astype(np.uint8)
  joints_2d = joints_camera @ crop_k.T
  joints_2d = joints_2d[:, :2] / joints_2d[:, 2:]
  mask = (np.all(joints_2d >= -0.5, 1) & np.all(joints_2d <= image_size - 0.5, 1)
          & ~_hidden(joints_camera, a, b, radius, scene, camera))
  return dict(image=image.reshape(image_size, image_size, 3), camera=crop_k.astype(np.float32),
              joints_2d=joints_2d.astype(np.float32), joints_2d_mask=mask,
              joints_3d=joints_camera.astype(np.float32))


def _distance_to_segments(points, a, b):
  """[P, C] distances from points [P, 3] to segments a-b [C, 3]."""
  ba = b - a
  along = np.einsum("pcd,cd->pc", points[:, None] - a[None], ba) / np.maximum(
      np.sum(ba * ba, -1), 1e-9)
  closest = a[None] + np.clip(along, 0, 1)[..., None] * ba[None]
  return np.linalg.norm(points[:, None] - closest, axis=-1)


def _hidden(joints_camera, a, b, radius, scene, camera):
  """[17] bool: a body part or the pillar is between the camera and the joint. The joint's own
  capsules, and any part the joint lies inside (the hips lie inside the torso), are its flesh,
  not occluders."""
  depth = np.linalg.norm(joints_camera, axis=1)
  directions = joints_camera / depth[:, None]
  distances = _ray_capsules(directions, a, b, radius)  # [17, C]
  own = ((_CAPSULE_A[None] == np.arange(J)[:, None]) | (_CAPSULE_B[None] == np.arange(J)[:, None])
         | (_distance_to_segments(joints_camera, a, b) < radius[None]))
  hidden = np.any(~own & (distances < depth[:, None]), axis=1)
  if scene.pillar is not None:
    pillar = scene.pillar @ camera.rotation.T + camera.translation
    hidden |= _ray_capsules(directions, pillar[:1], pillar[1:], np.array([160.0]))[:, 0] < depth
  return hidden


# ------------------------------------------------------------------------------------- samples


def _rng(config: SyntheticConfig, stream: str, index: int) -> np.random.Generator:
  return np.random.default_rng([config.seed, zlib.crc32(stream.encode()), index])


def sample(config: SyntheticConfig, stream: str, index: int) -> dict[str, np.ndarray]:
  """Sample `index` of `stream` (deterministic).

  Returns for "train_2d": image [S, S, 3] uint8, camera [3, 3], joints_2d [17, 2],
  joints_2d_mask [17], joints_3d [17, 3] (camera frame; the pipeline decides who sees it).
  For "train_multiview", "validation" and "test": the same keys with a leading view axis
  [V, ...], plus view_mask [V], and the extrinsics world_to_camera_rotation [V, 3, 3] /
  world_to_camera_translation [V, 3] and joints_world [17, 3] (for checks, never for training).
  """
  if stream not in STREAMS:
    raise ValueError(f"Unknown stream {stream!r}; choose from {STREAMS}")
  rng = _rng(config, stream, index)
  # Validation draws from the held-out distribution too (other motions, subjects, cameras),
  # with its own random stream: choosing a checkpoint on it never looks at the test samples.
  held_out = stream in ("validation", "test")
  split = "test" if held_out else "train"
  subject = random_subject(rng)
  pose = place_subject(draw_pose(config, split, rng), subject, rng)
  in_the_wild = stream == "train_2d"
  scene = random_scene(rng, in_the_wild, config.occluder_probability)
  target = pose.mean(0)
  num_views = 1 if in_the_wild else config.num_views
  cameras = random_cameras(rng, num_views, target, held_out=held_out)
  views = [render_view(pose, subject, scene, c, config.image_size, config.crop_margin, rng)
           for c in cameras]
  if in_the_wild:
    return views[0]
  out = {k: np.stack([v[k] for v in views]) for k in views[0]}
  out["view_mask"] = np.ones(num_views, bool)
  out["world_to_camera_rotation"] = np.stack([c.rotation for c in cameras]).astype(np.float32)
  out["world_to_camera_translation"] = np.stack([c.translation for c in cameras]).astype(
      np.float32)
  out["joints_world"] = pose.astype(np.float32)
  return out
