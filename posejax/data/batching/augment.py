"""Camera-exact augmentation of person crops: random scale, in-plane rotation, horizontal flip.

An augmentation is a 3x3 affine map T on crop pixels (output pixel = T @ input pixel, homogeneous
coordinates, pixel centres at integers), built about the crop centre c = ((W - 1) / 2, (H - 1) / 2):

    T = C F R(rotation) S(scale) C^-1,   C = translation by c,   F = diag(-1, 1) if flip else I.

Everything that lives in crop pixels follows T, so that `geometry.project(joints_3d', K')` is
exactly `joints_2d'` again (docs/method.md section 1: K includes every 2D affine applied to the
image):

- image: output pixel p reads the input at T^-1 p, bilinear, zeros outside the input;
- joints_2d' = T joints_2d, K' = T K, joints_3d unchanged, for T without mirror.

A mirror needs more. A mirrored image is the picture of a mirrored world, and a mirrored world
has its left and right swapped: the person's right wrist now looks like a left wrist. So when T
reverses orientation (det T < 0: a flip), with M = diag(-1, 1, 1) and perm the skeleton's
`flip_permutation`:

    joints_3d' = M joints_3d[perm],   joints_2d' = T joints_2d[perm],   mask' = mask[perm],
    K' = T K M.

Then K' joints_3d'_j = T K M M joints_3d_perm(j) = T K joints_3d_perm(j), which projects to
joints_2d'_j: the projection stays exact. K' is an ordinary camera again (for K = [[f, 0, u],
[0, f, v], [0, 0, 1]] and T = F: K' = [[f, 0, W - 1 - u], [0, f, v], [0, 0, 1]], positive focal),
and the labels keep their meaning (the skeleton keeps its handedness: a left/right swap without
the 3D mirror, or the other way round, would describe a body that no human has). The rule is
keyed on det T < 0 rather than on a separate flag, so a matrix and its flip can never disagree.

Multi-view samples: a mirror is not a rigid transform. If one view of a sample is mirrored and
another is not, the camera-frame poses of the two views are no longer related by a rotation and
translation, which the multi-view consistency loss assumes. So a sample's views must share ONE
flip decision, while scale and rotation may differ per view: `sample_view_augmentations` draws
exactly that.

Two implementations of the same maths, with identical results up to float rounding:

- host (NumPy): `augment_view` for one view (a host input pipeline, dataset preparation,
  visualisation, checks); `warp_images_numpy`.
- device (JAX, jit/vmap-safe): `augment_batch` for a whole batch dict inside the jitted train
  step; `warp_images`. Sampling stays on the host (a `np.random.Generator`); only the matrices
  (`augmentation_matrices`) travel to the device.

Default: the device path, by measurement (`python -m experiments.studies.augment_timing`, 2-core
CPU):
the jitted warp costs 3-4x less CPU time than the NumPy one (64 x 128^2: 9-13 vs 34-37 CPU-ms;
32 x 256^2: 15-25 vs 63-100 CPU-ms), and on a CPU the host pipeline's cores are the network's
cores. On an accelerator the warp is a small kernel next to the network, while the host would
have to warp every crop of every step on its CPUs.

Example, device (the default; S multi-view samples of V views, crops H x W):

    rng = np.random.default_rng(seed)
    views = [sample_view_augmentations(rng, V) for _ in range(S)]  # one flip per sample
    matrices = augmentation_matrices(views, (H, W))                # [S, V, 3, 3] float32
    batch = augment_batch(batch, matrices)                         # inside the jitted step

Example, host (one multi-view sample):

    views = sample_view_augmentations(rng, V)
    out = [augment_view(image[v], camera[v], joints_2d[v], mask[v], views[v]) for v in range(V)]
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from posejax.skeleton import H36M, Skeleton

# Geometry outputs are float32 (docs/design.md); the host computes them in float64 first.
_GEOMETRY_DTYPE = np.float32
# The CPU device warp runs in chunks of this many output pixels (see `warp_images`).
_CPU_PIXELS_PER_CHUNK = 2**17


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """One random augmentation of one view.

  Attributes:
    scale: zoom factor about the crop centre (> 1 enlarges the person).
    rotation_rad: in-plane rotation about the crop centre, in pixel coordinates (x right,
      y down): positive turns the content clockwise on screen.
    flip: mirror the crop horizontally (and the world with it; see the module docstring).
  """

  scale: float = 1.0
  rotation_rad: float = 0.0
  flip: bool = False


def sample_augmentation(rng: np.random.Generator, *, scale_range: float = 0.2,
                        max_rotation_deg: float = 30.0, flip_probability: float = 0.5,
                        flip: bool | None = None) -> Augmentation:
  """Draws scale ~ U[1 - scale_range, 1 + scale_range], rotation ~ U[-max, max] degrees and a flip.

  Args:
    rng: the host random generator.
    scale_range: half-width of the uniform scale interval (docs/method.md: +-20 %).
    max_rotation_deg: half-width of the uniform rotation interval (docs/method.md: +-30 degrees).
    flip_probability: probability of a horizontal flip.
    flip: if given, use this flip decision instead of drawing one (a multi-view sample's shared
      decision). The flip is drawn from `rng` either way, so the random stream does not depend
      on it.

  Returns:
    An `Augmentation`.
  """
  scale = rng.uniform(1.0 - scale_range, 1.0 + scale_range)
  rotation = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg))
  drawn_flip = rng.uniform() < flip_probability
  return Augmentation(float(scale), float(rotation), bool(drawn_flip if flip is None else flip))


def sample_view_augmentations(rng: np.random.Generator, num_views: int, *,
                              scale_range: float = 0.2, max_rotation_deg: float = 30.0,
                              flip_probability: float = 0.5) -> tuple[Augmentation, ...]:
  """Augmentations for the views of ONE multi-view sample: one shared flip, per-view scale/rotation.

  A mirror is not a rigid transform, so mixing mirrored and unmirrored views of one sample would
  break the rigid relation between their camera-frame poses that multi-view consistency relies
  on. Scale and rotation only change the crop cameras, so they may differ per view.

  Returns:
    `num_views` augmentations whose `flip` is the same.
  """
  flip = bool(rng.uniform() < flip_probability)
  return tuple(
      sample_augmentation(rng, scale_range=scale_range, max_rotation_deg=max_rotation_deg,
                          flip=flip)
      for _ in range(num_views))


def augmentation_matrix(augmentation: Augmentation, image_size: tuple[int, int]) -> np.ndarray:
  """The pixel map T = C F R S C^-1 of an augmentation (see the module docstring).

  Args:
    augmentation: scale, rotation and flip.
    image_size: (H, W) of the crop; the centre is ((W - 1) / 2, (H - 1) / 2).

  Returns:
    [3, 3] float64 affine matrix (last row 0 0 1); output pixel = T @ input pixel. Built so that
    the identity and a pure flip come out exact (a pure flip is x -> (W - 1) - x).
  """
  height, width = image_size
  cos, sin = np.cos(augmentation.rotation_rad), np.sin(augmentation.rotation_rad)
  linear = augmentation.scale * np.array([[cos, -sin], [sin, cos]])
  if augmentation.flip:
    linear = np.array([[-1.0, 0.0], [0.0, 1.0]]) @ linear
  centre = np.array([(width - 1) / 2, (height - 1) / 2])
  matrix = np.eye(3)
  matrix[:2, :2] = linear
  matrix[:2, 2] = centre - linear @ centre
  return matrix


def augmentation_matrices(augmentations, image_size: tuple[int, int]) -> np.ndarray:
  """Stacks `augmentation_matrix` over a (nested) sequence of augmentations, for the device path.

  Args:
    augmentations: an `Augmentation` or nested sequences of them, e.g. [S][V] for a multi-view
      batch (take each sample's views from `sample_view_augmentations`).
    image_size: (H, W) of the crops.

  Returns:
    [..., 3, 3] float32, the leading axes those of the nesting.
  """
  if isinstance(augmentations, Augmentation):
    return augmentation_matrix(augmentations, image_size).astype(np.float32)
  return np.stack([augmentation_matrices(a, image_size) for a in augmentations])


# ------------------------------------------------------------------ shared maths (np or jnp)
#
# Each helper takes the array module `xp` (numpy or jax.numpy) so that the host and the device
# paths run the very same formulas. 3x3 products are written as broadcast multiply-and-sum, not
# matmul: on GPUs XLA may run float32 matmuls in TF32 (10-bit mantissa), which would cost the
# camera its 1e-3 px exactness.


def _matmul(xp, a, b):
  """a @ b for [..., n, k] x [..., k, m], in full precision on every backend."""
  return xp.sum(a[..., :, :, None] * b[..., None, :, :], axis=-2)


def _is_mirror(matrices):
  """[..., 3, 3] -> [...] bool: whether the pixel map reverses orientation (a flip)."""
  return matrices[..., 0, 0] * matrices[..., 1, 1] - matrices[..., 0, 1] * matrices[..., 1, 0] < 0


def _transform_points(xp, points, matrices):
  """Applies [..., 3, 3] affine maps to points [..., J, 2]."""
  x, y = points[..., 0], points[..., 1]
  row = lambda i: (matrices[..., i, 0, None] * x + matrices[..., i, 1, None] * y
                   + matrices[..., i, 2, None])
  return xp.stack([row(0), row(1)], axis=-1)


def _inverse_affine(xp, matrices):
  """Inverse of affine maps [..., 3, 3] by the 2x2 adjugate (exact for flips and the identity)."""
  a, b, tx = matrices[..., 0, 0], matrices[..., 0, 1], matrices[..., 0, 2]
  c, d, ty = matrices[..., 1, 0], matrices[..., 1, 1], matrices[..., 1, 2]
  det = a * d - b * c
  ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
  zeros, ones = xp.zeros_like(a), xp.ones_like(a)
  return xp.stack([
      xp.stack([ia, ib, -(ia * tx + ib * ty)], axis=-1),
      xp.stack([ic, id_, -(ic * tx + id_ * ty)], axis=-1),
      xp.stack([zeros, zeros, ones], axis=-1),
  ], axis=-2)


def _swap_where(xp, mirror, values, perm):
  """values [..., J, D] with the joints reordered by `perm` where mirror [...] is True."""
  return xp.where(mirror[..., None, None], values[..., perm, :], values)


def _negate_x_where(xp, mirror, values):
  """values [..., N, D] with column 0 negated where mirror [...] is True (M = diag(-1, 1, 1)
  applied to points [..., J, 3], or from the right to cameras [..., 3, 3])."""
  sign = xp.where(mirror, -1, 1).astype(values.dtype)[..., None, None]
  return xp.concatenate([values[..., :1] * sign, values[..., 1:]], axis=-1)


def _augment_labels(xp, labels: dict, matrices, skeleton, inside_size) -> dict:
  """The camera and label half of an augmentation (see the module docstring for the maths).

  Args:
    labels: those of `camera` [..., 3, 3], `joints_2d` [..., J, 2], `joints_2d_mask` [..., J]
      and `joints_3d` [..., J, 3] that the example has.
    matrices: [..., 3, 3] pixel maps T.
    inside_size: (H, W) to also mask joints that leave the crop, or None to keep the mask.

  Returns:
    The same keys, augmented.
  """
  mirror = _is_mirror(matrices)
  perm = np.asarray(skeleton.flip_permutation)
  out = {}
  if "camera" in labels:
    # The camera's ray x flips with the x of the mirrored world: K' = T K M.
    out["camera"] = _negate_x_where(xp, mirror, _matmul(xp, matrices, labels["camera"]))
  if "joints_2d" in labels:
    out["joints_2d"] = _transform_points(
        xp, _swap_where(xp, mirror, labels["joints_2d"], perm), matrices)
  if "joints_2d_mask" in labels:
    out["joints_2d_mask"] = _swap_where(xp, mirror, labels["joints_2d_mask"][..., None],
                                        perm)[..., 0]
  if "joints_3d" in labels:
    out["joints_3d"] = _negate_x_where(xp, mirror,
                                       _swap_where(xp, mirror, labels["joints_3d"], perm))
  if inside_size is not None and "joints_2d_mask" in out:
    height, width = inside_size
    # A pixel covers [centre - 0.5, centre + 0.5): the crop spans [-0.5, size - 0.5).
    x, y = out["joints_2d"][..., 0], out["joints_2d"][..., 1]
    out["joints_2d_mask"] = out["joints_2d_mask"] & (x >= -0.5) & (x < width - 0.5) & (
        y >= -0.5) & (y < height - 0.5)
  return out


def _check_images(images):
  """Validates [..., H, W, C] uint8 with 1 <= C <= 4 (a pixel must fit one 32-bit word)."""
  if images.dtype != np.uint8 or images.ndim < 3 or not 1 <= images.shape[-1] <= 4:
    raise ValueError(f"images must be uint8 [..., H, W, C] with 1 <= C <= 4, got {images.dtype} "
                     f"{images.shape}")


def _output_size(out_size, height: int, width: int) -> tuple[int, int]:
  """(H_out, W_out) of a warp: `out_size` None (the input's H, W), an int S (S x S) or (H, W)."""
  if out_size is None:
    return height, width
  if isinstance(out_size, (int, np.integer)):
    out_size = (out_size, out_size)
  out_height, out_width = (int(v) for v in out_size)
  if out_height < 1 or out_width < 1:
    raise ValueError(f"out_size must be positive, got {out_size}")
  return out_height, out_width


def _bilinear_taps(xp, matrices, height, width, out_height=None, out_width=None):
  """Where each output pixel reads, for an inverse-mapping bilinear warp with zeros outside.

  The image is read through a one-pixel ring of zeros ([N, H + 2, W + 2], flattened): clipping
  any outside index onto the ring reads a zero, which is exactly bilinear interpolation of the
  zero-extended image.

  Args:
    matrices: [N, 3, 3] float32 pixel maps T (output = T @ input).
    height, width: of the input images.
    out_height, out_width: of the output (default: the input's).

  Returns:
    (indices, weight_x, weight_y): indices [4, N, H_out, W_out] int32 into the flattened padded
    images (top-left, top-right, bottom-left, bottom-right); weights [N, H_out, W_out, 1]
    float32.
  """
  out_height = height if out_height is None else out_height
  out_width = width if out_width is None else out_width
  num = matrices.shape[0]
  inverse = _inverse_affine(xp, matrices)
  ys, xs = xp.meshgrid(xp.arange(out_height, dtype=xp.float32),
                       xp.arange(out_width, dtype=xp.float32), indexing="ij")
  coefficient = lambda i, j: inverse[:, i, j, None, None]
  source_x = coefficient(0, 0) * xs + coefficient(0, 1) * ys + coefficient(0, 2)
  source_y = coefficient(1, 0) * xs + coefficient(1, 1) * ys + coefficient(1, 2)
  x0, y0 = xp.floor(source_x), xp.floor(source_y)
  padded_width = width + 2
  image_start = (xp.arange(num, dtype=xp.int32) * ((height + 2) * padded_width))[:, None, None]
  col0 = xp.clip(x0 + 1, 0, width + 1).astype(xp.int32)
  col1 = xp.clip(x0 + 2, 0, width + 1).astype(xp.int32)
  row0 = xp.clip(y0 + 1, 0, height + 1).astype(xp.int32) * padded_width + image_start
  row1 = xp.clip(y0 + 2, 0, height + 1).astype(xp.int32) * padded_width + image_start
  indices = xp.stack([row0 + col0, row0 + col1, row1 + col0, row1 + col1])
  return indices, (source_x - x0)[..., None], (source_y - y0)[..., None]


def _pad_to_words(xp, images):
  """[N, H, W, C] uint8 -> [N, H + 2, W + 2, 4]: the zero ring, and channels padded to 4 so
  that a pixel is one 32-bit word (one gather per tap instead of one per channel)."""
  channels = images.shape[-1]
  return xp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 4 - channels)))


# ------------------------------------------------------------------------------ host (NumPy)


def warp_images_numpy(images, matrices, out_size=None) -> np.ndarray:
  """Host image warp: output pixel p = bilinear read of the input at T^-1 p, zeros outside.

  The same algorithm and float32 arithmetic as `warp_images` (results agree to rounding).

  Args:
    images: [..., H, W, C] uint8, 1 <= C <= 4.
    matrices: [..., 3, 3] pixel maps T (output = T @ input), one per image.
    out_size: the output's size: None (default) the input's H x W, an int S for S x S, or
      (H_out, W_out). T maps input pixels to OUTPUT pixels (e.g. a crop matrix that resizes).

  Returns:
    [..., H_out, W_out, C] uint8 (rounded half to even).
  """
  images = np.asarray(images)
  _check_images(images)
  height, width, channels = images.shape[-3:]
  out_height, out_width = _output_size(out_size, height, width)
  images_flat = images.reshape(-1, height, width, channels)
  matrices_flat = np.asarray(matrices, np.float32).reshape(-1, 3, 3)
  warped = np.empty((images_flat.shape[0], out_height, out_width, channels), np.uint8)
  # One image at a time keeps the float32 temporaries in cache: 1.7-1.9x faster than one
  # vectorised call over a batch of 64 x 128^2 or 32 x 256^2
  # (experiments/studies/augment_timing.py).
  for n in range(images_flat.shape[0]):
    warped[n] = _warp_one_numpy(images_flat[n], matrices_flat[n], out_height, out_width)
  return warped.reshape(*images.shape[:-3], out_height, out_width, channels)


def _warp_one_numpy(image, matrix, out_height=None, out_width=None):
  """[H, W, C] uint8 warped by one float32 pixel map [3, 3] into [H_out, W_out, C]."""
  height, width, channels = image.shape
  out_height = height if out_height is None else out_height
  out_width = width if out_width is None else out_width
  words = _pad_to_words(np, image[None]).view(np.uint32).reshape(-1)
  indices, weight_x, weight_y = _bilinear_taps(np, matrix[None], height, width, out_height,
                                               out_width)
  read = lambda tap: words[indices[tap, 0]].view(np.uint8).reshape(
      out_height, out_width, 4).astype(np.float32)

  def lerp(start, end, weight):
    # start + weight * (end - start) in place (fresh temporaries cost more than the maths), in
    # the operation order of the JAX twin so that both round alike.
    end -= start
    end *= weight
    start += end
    return start

  top = lerp(read(0), read(1), weight_x[0])
  bottom = lerp(read(2), read(3), weight_x[0])
  warped = np.rint(lerp(top, bottom, weight_y[0]), out=top)
  # A lerp of values in [0, 255] stays in [0, 255] under float rounding: no clip needed.
  return warped[..., :channels].astype(np.uint8)


def augment_view(image, camera, joints_2d, joints_2d_mask, augmentation: Augmentation, *,
                 skeleton: Skeleton = H36M, joints_3d=None, mask_outside: bool = False) -> dict:
  """Augments one view on the host (NumPy), keeping `project(joints_3d, camera) == joints_2d`.

  For a multi-view sample, take the views' augmentations from `sample_view_augmentations` (one
  shared flip; see the module docstring).

  Args:
    image: [H, W, C] uint8 crop, 1 <= C <= 4.
    camera: [3, 3] crop camera K (may itself contain rotation or mirroring).
    joints_2d: [J, 2] crop pixels.
    joints_2d_mask: [J] bool, labeled/visible joints.
    augmentation: what to apply.
    skeleton: gives the left/right pairs swapped by a flip.
    joints_3d: optional [J, 3] camera-frame joints (mm).
    mask_outside: also mask joints that the augmentation moves out of the crop (outside
      [-0.5, W - 0.5) x [-0.5, H - 0.5)). Default False: augmentation moves labels but never
      drops them; an off-crop joint keeps exact coordinates, and the heatmap target builder (its
      Gaussian falls off the grid) or the loss decides what it means. True reproduces the
      common HRNet practice of a zero target weight for such joints.

  Returns:
    dict with `image` [H, W, C] uint8, `camera` [3, 3], `joints_2d` [J, 2], `joints_2d_mask` [J]
    bool, `joints_3d` [J, 3] (only if given), all geometry float32, and `matrix` [3, 3] float32,
    the pixel map T that was applied (e.g. to map predictions back; not a batch key).
  """
  image = np.asarray(image)
  matrix = augmentation_matrix(augmentation, image.shape[:2])
  labels = {"camera": camera, "joints_2d": joints_2d, "joints_3d": joints_3d}
  labels = {key: np.asarray(value, np.float64) for key, value in labels.items()
            if value is not None}
  labels["joints_2d_mask"] = np.asarray(joints_2d_mask, bool)
  out = _augment_labels(np, labels, matrix, skeleton, image.shape[:2] if mask_outside else None)
  out = {key: value if key == "joints_2d_mask" else value.astype(_GEOMETRY_DTYPE)
         for key, value in out.items()}
  return dict(out, image=warp_images_numpy(image, matrix), matrix=matrix.astype(_GEOMETRY_DTYPE))


# ----------------------------------------------------------------------------- device (JAX)


@functools.partial(jax.jit, static_argnames=("out_size", "pixels_per_chunk"))
def warp_images(images, matrices, *, out_size=None, pixels_per_chunk: int | None = None):
  """Device image warp (jit- and vmap-safe): the algorithm of `warp_images_numpy`, in XLA.

  Args:
    images: [..., H, W, C] uint8, 1 <= C <= 4.
    matrices: [..., 3, 3] float32 pixel maps T (output = T @ input), one per image.
    out_size: the output's size (static): None (default) the input's H x W, an int S for
      S x S, or (H_out, W_out). T maps input pixels to OUTPUT pixels, so a crop matrix
      composed with an augmentation resizes and augments in one read.
    pixels_per_chunk: warp about this many output pixels at a time (whole images, a `lax.map`
      over chunks of the batch), or 0 for the whole batch in one vectorised gather. None: 2^17
      on CPU, where cache-sized chunks measured 1.3-2.7x faster than one gather over 64-128
      images (experiments/studies/augment_timing.py), and 0 on accelerators, which want one big
      kernel.

  Returns:
    [..., H_out, W_out, C] uint8 (rounded half to even).
  """
  images = jnp.asarray(images)
  _check_images(images)
  height, width, channels = images.shape[-3:]
  out_height, out_width = _output_size(out_size, height, width)
  images_flat = images.reshape(-1, height, width, channels)
  matrices_flat = jnp.asarray(matrices, jnp.float32).reshape(-1, 3, 3)
  if pixels_per_chunk is None:
    pixels_per_chunk = _CPU_PIXELS_PER_CHUNK if jax.default_backend() == "cpu" else 0
  if pixels_per_chunk:
    warp_one = lambda args: _warp_jax(args[0][None], args[1][None], out_height, out_width)[0]
    warped = jax.lax.map(warp_one, (images_flat, matrices_flat),
                         batch_size=max(1, pixels_per_chunk // (out_height * out_width)))
  else:
    warped = _warp_jax(images_flat, matrices_flat, out_height, out_width)
  return warped.reshape(*images.shape[:-3], out_height, out_width, channels)


def _warp_jax(images, matrices, out_height=None, out_width=None):
  """[N, H, W, C] uint8 warped by float32 pixel maps [N, 3, 3] into [N, H_out, W_out, C]."""
  num, height, width, channels = images.shape
  words = jax.lax.bitcast_convert_type(_pad_to_words(jnp, images), jnp.uint32).reshape(-1)
  indices, weight_x, weight_y = _bilinear_taps(jnp, matrices, height, width, out_height,
                                               out_width)
  read = lambda tap: jax.lax.bitcast_convert_type(words[indices[tap]], jnp.uint8).astype(
      jnp.float32)
  lerp = lambda start, end, weight: start + weight * (end - start)
  top = lerp(read(0), read(1), weight_x)
  bottom = lerp(read(2), read(3), weight_x)
  warped = jnp.round(lerp(top, bottom, weight_y))
  return warped[..., :channels].astype(jnp.uint8)


@functools.partial(jax.jit, static_argnames=("mask_outside",))
def augment_batch(batch: dict, matrices, *, skeleton: Skeleton = H36M,
                  mask_outside: bool = False) -> dict:
  """Augments a batch dict on the device, inside a jitted step (the JAX twin of `augment_view`).

  Views whose matrix mirrors (det < 0, from a flip) get the flip treatment: left/right joint
  swap and mirrored 3D joints. For multi-view batches build the matrices of each sample's views
  from `sample_view_augmentations` so that all views of a sample share their flip.

  Args:
    batch: dict with `image` [..., H, W, C] uint8, `camera` [..., 3, 3] and those of
      `joints_2d` [..., J, 2], `joints_2d_mask` [..., J], `joints_3d` [..., J, 3] it has (the
      weakly supervised multi-view stream has none); other keys (`has_3d`, `view_mask`, ...)
      pass through unchanged. `...` is e.g. [B] or [S, V].
    matrices: [..., 3, 3] float32 pixel maps T from `augmentation_matrices`.
    skeleton: gives the left/right pairs.
    mask_outside: as in `augment_view` (default False).

  Returns:
    A new dict with the same keys; geometry in float32, the image uint8.
  """
  matrices = jnp.asarray(matrices, jnp.float32)
  labels = {key: jnp.asarray(batch[key], jnp.float32)
            for key in ("camera", "joints_2d", "joints_3d") if key in batch}
  if "joints_2d_mask" in batch:
    labels["joints_2d_mask"] = jnp.asarray(batch["joints_2d_mask"], bool)
  image_size = batch["image"].shape[-3:-1]
  out = _augment_labels(jnp, labels, matrices, skeleton, image_size if mask_outside else None)
  return dict(batch, **out, image=warp_images(batch["image"], matrices))
