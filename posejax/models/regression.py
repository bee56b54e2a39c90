"""DeepPose's regression networks (Toshev & Szegedy, arXiv 1312.4659) in Flax NNX.

A regressor maps images [..., H, W, 3] (RGB, 0..255) to joints in the frame of the image's box,
N(y; b) = (y - c) / side (`posejax.deeppose.normalize_points`): [..., J, 2] float32, (0, 0) the
box centre and +-0.5 its edges. The last layer starts near 0, so an untrained network predicts
the box centre for every joint. Images are normalised with the ImageNet statistics, exactly as
`PoseNet` does.

- `AlexNetRegressor`: the paper's network, C(55x55x96, 11x11/4) - LRN - P - C(27x27x256, 5x5) -
  LRN - P - C(13x13x384, 3x3) - C(13x13x384) - C(13x13x256) - P - F(4096) - F(4096) - F(2J) at
  220 px, ReLU, dropout on the F layers. LRN and initialisation follow AlexNet (Krizhevsky et
  al. 2012), which the paper builds on and does not restate: k = 2, n = 5, alpha = 1e-4,
  beta = 0.75; weights N(0, 0.01), biases 1 in conv2, conv4, conv5 and the hidden F layers.
- `SmallRegressor`: a CPU-sized net of the same shape (posejax's design, docs/design.md):
  conv 5x5/2 32 - pool - conv 3x3 64 - pool - 2 x conv 3x3 128 - pool - F512 - F512 - F(2J),
  He initialisation. "deeppose_small_fine" drops the last pool, so the F layers see a 4 x 4 map
  at 32 px instead of 2 x 2: the synthetic recipe's refiners, which must place a joint within
  their box (the F layers cost 4 x the weights; the convolutions are the same).
- `BackboneRegressor`: a feature backbone (HRNet) with global average pooling (or flattening)
  and one linear layer, the regression baseline of mmpose's DeepPose configs.

`create_regressor("deeppose_small", num_joints, rngs=nnx.Rngs(0))` builds one by name; `apply`
is the pure functional call for train steps.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx

from posejax.models.hrnet import HRNet, HRNetConfig
from posejax.models.posenet import IMAGENET_MEAN, IMAGENET_STD

# Krizhevsky et al.'s local response normalisation constants.
LRN_BIAS = 2.0
LRN_SIZE = 5
LRN_ALPHA = 1e-4
LRN_BETA = 0.75
# The last layer starts with weights of standard deviation 0.001 / sqrt(fan_in) and zero bias:
# outputs about 0.1 % of a feature's scale, i.e. every joint on the box centre.
_NEAR_ZERO = nnx.initializers.variance_scaling(1e-6, "fan_in", "normal")
_HE = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")
_ALEXNET_WEIGHTS = nnx.initializers.normal(0.01)


def normalize_images(images):
  """[..., H, W, 3] RGB in 0..255 (uint8 or float) -> [N, H, W, 3] float32, ImageNet-normalised
  (N = the product of the leading axes), as `PoseNet.maps` does."""
  images = jnp.asarray(images)
  height, width, channels = images.shape[-3:]
  x = images.reshape(-1, height, width, channels).astype(jnp.float32)
  return (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)


def local_response_norm(x, size: int = LRN_SIZE, bias: float = LRN_BIAS,
                        alpha: float = LRN_ALPHA, beta: float = LRN_BETA):
  """Local response normalisation across channels (Krizhevsky et al. 2012, section 3.3).

  b_c = a_c / (bias + alpha * sum_{c' within size // 2 of c} a_c'^2) ^ beta, the sum over the
  `size` channels centred on c (fewer at the ends). alpha is NOT divided by `size` (that is
  Caffe's and PyTorch's convention; this is the paper's and TensorFlow's). Computed in float32.

  Args:
    x: [..., C] channels-last activations.

  Returns:
    [..., C] in x's dtype.
  """
  x32 = jnp.asarray(x, jnp.float32)
  squared = jnp.square(x32)
  half = size // 2
  padded = jnp.pad(squared, [(0, 0)] * (x32.ndim - 1) + [(half, size - 1 - half)])
  channels = x32.shape[-1]
  window = sum(padded[..., d:d + channels] for d in range(size))
  return (x32 / (bias + alpha * window) ** beta).astype(x.dtype)


def _max_pool(x, window: int, stride: int):
  return nnx.max_pool(x, (window, window), (stride, stride), padding="VALID")


def _joints(flat_outputs, leading_shape, num_joints):
  """[N, 2J] -> [..., J, 2] float32."""
  return flat_outputs.astype(jnp.float32).reshape(*leading_shape, num_joints, 2)


class AlexNetRegressor(nnx.Module):
  """The DeepPose network (see the module docstring).

  Args:
    num_joints: J.
    image_size: the square input side (the paper: 220, giving 55/27/13/6 pixel maps).
    dropout: rate on the two hidden F layers (0.6, as in the chainer reimplementation
      mitmul/deeppose).
    dtype: compute dtype (parameters float32; outputs float32).

  At 220 px with J = 17 this layout has 58.4 M parameters (the paper quotes "about 40 M").
  """

  def __init__(self, num_joints: int, *, image_size: int = 220, dropout: float = 0.6,
               dtype=jnp.float32, rngs: nnx.Rngs):
    self.num_joints = num_joints
    self.image_size = image_size
    self.dtype = dtype
    size = math.ceil(image_size / 4)  # conv1, stride 4, SAME
    for _ in range(3):  # three 3x3/2 pools; conv2-5 keep the size
      size = (size - 3) // 2 + 1
    if size < 1:
      raise ValueError(f"AlexNetRegressor needs inputs of at least 57 px, got {image_size}")
    conv = lambda cin, cout, kernel, stride, bias: nnx.Conv(
        cin, cout, (kernel, kernel), (stride, stride), padding="SAME", dtype=dtype,
        kernel_init=_ALEXNET_WEIGHTS, bias_init=nnx.initializers.constant(bias), rngs=rngs)
    self.conv1 = conv(3, 96, 11, 4, 0.0)
    self.conv2 = conv(96, 256, 5, 1, 1.0)
    self.conv3 = conv(256, 384, 3, 1, 0.0)
    self.conv4 = conv(384, 384, 3, 1, 1.0)
    self.conv5 = conv(384, 256, 3, 1, 1.0)
    self.fc6 = nnx.Linear(size * size * 256, 4096, dtype=dtype, kernel_init=_ALEXNET_WEIGHTS,
                          bias_init=nnx.initializers.constant(1.0), rngs=rngs)
    self.fc7 = nnx.Linear(4096, 4096, dtype=dtype, kernel_init=_ALEXNET_WEIGHTS,
                          bias_init=nnx.initializers.constant(1.0), rngs=rngs)
    self.fc8 = nnx.Linear(4096, 2 * num_joints, dtype=dtype, kernel_init=_NEAR_ZERO, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, images):
    """[..., S, S, 3] images (0..255) -> [..., J, 2] float32 joints in the box frame."""
    leading = images.shape[:-3]
    x = normalize_images(images).astype(self.dtype)
    x = _max_pool(local_response_norm(nnx.relu(self.conv1(x))), 3, 2)
    x = _max_pool(local_response_norm(nnx.relu(self.conv2(x))), 3, 2)
    x = nnx.relu(self.conv3(x))
    x = nnx.relu(self.conv4(x))
    x = _max_pool(nnx.relu(self.conv5(x)), 3, 2)
    x = x.reshape(x.shape[0], -1)
    x = self.dropout(nnx.relu(self.fc6(x)))
    x = self.dropout(nnx.relu(self.fc7(x)))
    return _joints(self.fc8(x), leading, self.num_joints)


class SmallRegressor(nnx.Module):
  """A CPU-sized DeepPose regressor (see the module docstring).

  Args:
    num_joints: J.
    image_size: the square input side (64 px for stage 1, 32 px for refiners in the synthetic
      recipe); at least 16 (8 without the last pool).
    dropout: rate on the two hidden F layers.
    last_pool: the 2x2 pool after conv4 (False: the F layers see twice the map's side).
    dtype: compute dtype.
  """

  def __init__(self, num_joints: int, *, image_size: int = 64, dropout: float = 0.3,
               last_pool: bool = True, dtype=jnp.float32, rngs: nnx.Rngs):
    self.num_joints = num_joints
    self.image_size = image_size
    self.dtype = dtype
    self.last_pool = last_pool
    size = math.ceil(image_size / 2) // 2 // 2  # conv /2 (SAME), two 2x2/2 pools
    if last_pool:
      size //= 2
    if size < 1:
      raise ValueError(f"SmallRegressor needs inputs of at least {16 if last_pool else 8} px, "
                       f"got {image_size}")
    conv = lambda cin, cout, kernel, stride: nnx.Conv(
        cin, cout, (kernel, kernel), (stride, stride), padding="SAME", dtype=dtype,
        kernel_init=_HE, rngs=rngs)
    self.conv1 = conv(3, 32, 5, 2)
    self.conv2 = conv(32, 64, 3, 1)
    self.conv3 = conv(64, 128, 3, 1)
    self.conv4 = conv(128, 128, 3, 1)
    self.fc1 = nnx.Linear(size * size * 128, 512, dtype=dtype, kernel_init=_HE, rngs=rngs)
    self.fc2 = nnx.Linear(512, 512, dtype=dtype, kernel_init=_HE, rngs=rngs)
    self.fc3 = nnx.Linear(512, 2 * num_joints, dtype=dtype, kernel_init=_NEAR_ZERO, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, images):
    """[..., S, S, 3] images (0..255) -> [..., J, 2] float32 joints in the box frame."""
    leading = images.shape[:-3]
    x = normalize_images(images).astype(self.dtype)
    x = _max_pool(nnx.relu(self.conv1(x)), 2, 2)
    x = _max_pool(nnx.relu(self.conv2(x)), 2, 2)
    x = nnx.relu(self.conv3(x))
    x = nnx.relu(self.conv4(x))
    if self.last_pool:
      x = _max_pool(x, 2, 2)
    x = x.reshape(x.shape[0], -1)
    x = self.dropout(nnx.relu(self.fc1(x)))
    x = self.dropout(nnx.relu(self.fc2(x)))
    return _joints(self.fc3(x), leading, self.num_joints)


class BackboneRegressor(nnx.Module):
  """A feature backbone + pooling + one linear layer to 2J.

  Args:
    backbone: an nnx.Module mapping [N, H, W, 3] normalised images to [N, h, w, C] features,
      with an `out_channels` attribute (C), e.g. `HRNet`.
    num_joints: J.
    pool: "gap" (global average pooling, any input size) or "flatten" (needs `image_size`).
    image_size: the square input side, for "flatten".
    stride: the backbone's output stride, for "flatten" (HRNet: 4).
    dropout: rate before the linear layer.
    dtype: compute dtype of the head (the backbone has its own).
  """

  def __init__(self, backbone: nnx.Module, num_joints: int, *, pool: str = "gap",
               image_size: int | None = None, stride: int = 4, dropout: float = 0.0,
               dtype=jnp.float32, rngs: nnx.Rngs):
    if pool not in ("gap", "flatten"):
      raise ValueError(f"pool must be 'gap' or 'flatten', got {pool!r}")
    if pool == "flatten" and image_size is None:
      raise ValueError("pool='flatten' needs the image_size")
    self.backbone = backbone
    self.num_joints = num_joints
    self.pool = pool
    self.dtype = dtype
    features = backbone.out_channels
    if pool == "flatten":
      features *= math.ceil(image_size / stride) ** 2
    self.head = nnx.Linear(features, 2 * num_joints, dtype=dtype, kernel_init=_NEAR_ZERO,
                           rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, images):
    """[..., S, S, 3] images (0..255) -> [..., J, 2] float32 joints in the box frame."""
    leading = images.shape[:-3]
    features = self.backbone(normalize_images(images).astype(self.dtype))
    if self.pool == "gap":
      x = jnp.mean(features.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)
    else:
      x = features.reshape(features.shape[0], -1)
    return _joints(self.head(self.dropout(x)), leading, self.num_joints)


# Small HRNet variants for CPU runs and tests (those of posejax.models.BACKBONES).
_SMALL_HRNET = dict(stem_channels=32, stage1_planes=16, stage1_blocks=1, stage_modules=(1, 1, 1),
                    stage_blocks=2)


def _hrnet_regressor(config: HRNetConfig) -> Callable[..., BackboneRegressor]:
  def build(num_joints, *, image_size, dropout, dtype, rngs):
    del image_size  # global average pooling takes any size
    return BackboneRegressor(HRNet(config, dtype=dtype, rngs=rngs), num_joints,
                             dropout=0.0 if dropout is None else dropout, dtype=dtype,
                             rngs=rngs)
  return build


def _alexnet(num_joints, *, image_size, dropout, dtype, rngs):
  return AlexNetRegressor(num_joints, image_size=image_size or 220,
                          dropout=0.6 if dropout is None else dropout, dtype=dtype, rngs=rngs)


def _small(num_joints, *, image_size, dropout, dtype, rngs, last_pool=True):
  return SmallRegressor(num_joints, image_size=image_size or 64,
                        dropout=0.3 if dropout is None else dropout, last_pool=last_pool,
                        dtype=dtype, rngs=rngs)


REGRESSORS: dict[str, Callable[..., nnx.Module]] = {
    "alexnet_deeppose": _alexnet,
    "deeppose_small": _small,
    "deeppose_small_fine": functools.partial(_small, last_pool=False),
    "hrnet_w32_regress": _hrnet_regressor(HRNetConfig(width=32)),
    "hrnet_w8_small_regress": _hrnet_regressor(HRNetConfig(width=8, **_SMALL_HRNET)),
}


def create_regressor(name: str, num_joints: int, *, image_size: int | None = None,
                     dtype=jnp.float32, dropout: float | None = None,
                     rngs: nnx.Rngs) -> nnx.Module:
  """A DeepPose regressor by name.

  Args:
    name: one of REGRESSORS: "alexnet_deeppose" (220 px), "deeppose_small" (64 px),
      "hrnet_w32_regress", "hrnet_w8_small_regress" (any size).
    num_joints: J.
    image_size: the input side the network is built for (default: the model's own; the
      HRNet regressors pool globally and take any size).
    dtype: compute dtype (parameters float32; outputs float32).
    dropout: rate on the F layers (default: the model's own, 0.6 / 0.3 / 0).
    rngs: parameter and dropout randomness.

  Returns:
    an nnx.Module, images [..., S, S, 3] -> [..., J, 2] float32 box-frame joints.
  """
  if name not in REGRESSORS:
    raise ValueError(f"Unknown regressor {name!r}; available: {sorted(REGRESSORS)}")
  return REGRESSORS[name](num_joints, image_size=image_size, dropout=dropout, dtype=dtype,
                          rngs=rngs)


def apply(graphdef: nnx.GraphDef, state: nnx.State, images, *, train: bool):
  """Pure functional call: (joints [..., J, 2] float32 box frame, new_state).

  With `train`, dropout is on (its key advances in the returned state) and BatchNorm uses batch
  statistics; otherwise both are in evaluation mode and the state comes back unchanged.
  """
  model = nnx.merge(graphdef, state, copy=True)
  if train:
    model.train()
  else:
    model.eval()
  return model(images), nnx.state(model)


__all__ = ["AlexNetRegressor", "BackboneRegressor", "REGRESSORS", "SmallRegressor", "apply",
           "create_regressor", "local_response_norm", "normalize_images"]
