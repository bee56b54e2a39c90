"""HRNet (Sun et al., CVPR 2019) in Flax NNX, faithful to the published pose HRNet.

Stem (two stride-2 3x3 convs), stage 1 (Bottleneck blocks), then stages 2-4 with 2/3/4 parallel
branches of BasicBlocks at strides 4/8/16/32 and channels W, 2W, 4W, 8W (or a config's
`branch_widths`), joined by repeated multi-resolution fusion; the output is the stride-4
branch (W channels). The attribute names
mirror the authors' PyTorch modules (`conv1`, `layer1`, `transition1`, `stage2[0].branches`,
`fuse_layers`, ...) so that `posejax.models.import_torch` can translate checkpoint keys
mechanically. Padding is explicit (PyTorch's `padding=1`; 'SAME' would pad stride-2 convs
asymmetrically and break weight compatibility); BatchNorm momentum 0.9 is PyTorch's 0.1.

Channels-last: images [B, H, W, C]. Parameters are float32; `dtype` sets the compute dtype.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from posejax.errors import ConfigError
from posejax.models.batch_norm import BatchNorm

BATCH_NORM_MOMENTUM = 0.9  # PyTorch's momentum 0.1
BATCH_NORM_EPSILON = 1e-5


@dataclasses.dataclass(frozen=True)
class HRNetConfig:
  """Shape of an HRNet.

  Attributes:
    width: channels of the highest-resolution branch (W32, W48, ...); branch b has width * 2^b.
    stem_channels: channels of the two stem convolutions (64 in the paper).
    stage1_planes: Bottleneck planes of stage 1 (64; the stage outputs 4x that).
    stage1_blocks: Bottleneck blocks in stage 1 (4).
    stage_modules: high-resolution modules in stages 2, 3, 4 ((1, 4, 3)); a shorter tuple
      stops earlier (stage s has s branches), as the test backbone `hrnetv2_w4_micro` does.
    stage_blocks: BasicBlocks per branch in every module (4).
    concat_branches: output every branch, upsampled to the highest resolution and concatenated
      (the HRNetV2 representation of Sun et al. 2019), instead of the pose HRNet's fused
      highest-resolution branch alone; the head then sees width x 15 channels, not width.
    branch_widths: channels of every branch, highest resolution first, where they are not
      width x 2^b (the published rule); the first must be `width`. Ours, for CPU runs: a
      wider stride-4 branch costs little at small inputs and is where the 2D is read.
  """

  width: int = 32
  stem_channels: int = 64
  stage1_planes: int = 64
  stage1_blocks: int = 4
  stage_modules: tuple[int, ...] = (1, 4, 3)
  stage_blocks: int = 4
  concat_branches: bool = False
  branch_widths: tuple[int, ...] | None = None

  def __post_init__(self):
    branches = 1 + len(self.stage_modules)
    if self.branch_widths is not None and (len(self.branch_widths) != branches
                                           or self.branch_widths[0] != self.width):
      raise ConfigError(f"HRNetConfig.branch_widths={self.branch_widths}: expected {branches} "
                        f"widths (1 + len(stage_modules)), the first equal to width="
                        f"{self.width}")

  def branch_channels(self, num_branches: int) -> list[int]:
    if self.branch_widths is not None:
      return list(self.branch_widths[:num_branches])
    return [self.width * 2**b for b in range(num_branches)]


def _conv(in_channels, out_channels, kernel_size, stride, dtype, rngs):
  padding = kernel_size // 2
  return nnx.Conv(in_channels, out_channels, (kernel_size, kernel_size), (stride, stride),
                  padding=((padding, padding), (padding, padding)), use_bias=False, dtype=dtype,
                  kernel_init=nnx.initializers.normal(0.001), rngs=rngs)


class RunningStatistic(nnx.BatchStat):
  """A BatchNorm running average (an `nnx.BatchStat`) that is cheap to update while tracing.

  `nnx.BatchNorm` writes its statistics with `stat[...] = x`, and Flax's `Variable.set_value`
  then compares `getattr(x, "sharding", None)` of the new and the old value. On a tracer that
  lookup raises, and JAX formats the AttributeError's message by walking every equation traced
  so far; once per statistic, that made tracing a train step quadratic in the model's size
  (half the trace of a train-mode gradient of the small HRNet; flax 0.12.8, jax 0.10.2;
  BUILD_NOTES.md, session 10). Between two tracers Flax ends in the plain replacement this
  makes directly (neither has a sharding); any other update goes through Flax."""

  def set_value(self, value, **kwargs):
    old = self.get_raw_value()
    if (kwargs.get("index") is Ellipsis and isinstance(value, jax.core.Tracer)
        and isinstance(old, jax.core.Tracer) and value.shape == old.shape
        and value.dtype == old.dtype and self.get_metadata("on_set_value", None) is None):
      self.set_raw_value(value)
    else:
      super().set_value(value, **kwargs)


def _batch_norm(channels, dtype, rngs):
  # Two-pass variance (mean first): Flax's fast E[x^2] - E[x]^2 loses the variance to
  # cancellation where the mean dwarfs it, and then 1 and 8 devices (other summation orders)
  # gave gradients 1e-3 apart on the synthetic images (tests/test_train_step.py). Its backward
  # pass is written out (posejax/models/batch_norm.py): the same numbers, a faster train step.
  norm = BatchNorm(channels, momentum=BATCH_NORM_MOMENTUM, epsilon=BATCH_NORM_EPSILON,
                   use_fast_variance=False, dtype=dtype, rngs=rngs)
  norm.mean = RunningStatistic(norm.mean.get_value())
  norm.var = RunningStatistic(norm.var.get_value())
  return norm


class ConvBN(nnx.Module):
  """Conv (no bias) + BatchNorm, optionally followed by ReLU."""

  def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, *, relu=True,
               dtype=jnp.float32, rngs: nnx.Rngs):
    self.conv = _conv(in_channels, out_channels, kernel_size, stride, dtype, rngs)
    self.bn = _batch_norm(out_channels, dtype, rngs)
    self.relu = relu

  def __call__(self, x):
    x = self.bn(self.conv(x))
    return nnx.relu(x) if self.relu else x


def _shortcut(in_channels, out_channels, stride, dtype, rngs) -> ConvBN | None:
  """The residual path of a block: identity, or a 1x1 conv + BN where the shape changes."""
  if stride == 1 and in_channels == out_channels:
    return None
  return ConvBN(in_channels, out_channels, 1, stride, relu=False, dtype=dtype, rngs=rngs)


class BasicBlock(nnx.Module):
  expansion = 1

  def __init__(self, in_channels, planes, stride=1, *, dtype=jnp.float32, rngs: nnx.Rngs):
    out_channels = planes * self.expansion
    self.conv1 = _conv(in_channels, planes, 3, stride, dtype, rngs)
    self.bn1 = _batch_norm(planes, dtype, rngs)
    self.conv2 = _conv(planes, out_channels, 3, 1, dtype, rngs)
    self.bn2 = _batch_norm(out_channels, dtype, rngs)
    self.downsample = _shortcut(in_channels, out_channels, stride, dtype, rngs)

  def __call__(self, x):
    residual = x if self.downsample is None else self.downsample(x)
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return nnx.relu(y + residual)


class Bottleneck(nnx.Module):
  expansion = 4

  def __init__(self, in_channels, planes, stride=1, *, dtype=jnp.float32, rngs: nnx.Rngs):
    out_channels = planes * self.expansion
    self.conv1 = _conv(in_channels, planes, 1, 1, dtype, rngs)
    self.bn1 = _batch_norm(planes, dtype, rngs)
    self.conv2 = _conv(planes, planes, 3, stride, dtype, rngs)
    self.bn2 = _batch_norm(planes, dtype, rngs)
    self.conv3 = _conv(planes, out_channels, 1, 1, dtype, rngs)
    self.bn3 = _batch_norm(out_channels, dtype, rngs)
    self.downsample = _shortcut(in_channels, out_channels, stride, dtype, rngs)

  def __call__(self, x):
    residual = x if self.downsample is None else self.downsample(x)
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = nnx.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return nnx.relu(y + residual)


def _upsample_nearest(x, factor):
  return jnp.repeat(jnp.repeat(x, factor, axis=-3), factor, axis=-2)


class HighResolutionModule(nnx.Module):
  """Parallel branches of BasicBlocks followed by multi-resolution fusion.

  Output i sums every branch j resampled to branch i: j > i by 1x1 conv + BN + nearest
  upsampling, j < i by (i - j) stride-2 3x3 conv + BN steps (ReLU between them), then ReLU.
  With `multi_scale_output=False` only the highest-resolution output is produced (the last
  module of the pose HRNet).
  """

  def __init__(self, channels: list[int], num_blocks: int, multi_scale_output: bool = True, *,
               dtype=jnp.float32, rngs: nnx.Rngs):
    num_branches = len(channels)
    self.branches = nnx.List([
        nnx.List([BasicBlock(c, c, dtype=dtype, rngs=rngs) for _ in range(num_blocks)])
        for c in channels
    ])
    num_outputs = num_branches if multi_scale_output else 1
    fuse_layers = []
    for i in range(num_outputs if num_branches > 1 else 0):
      row = []
      for j in range(num_branches):
        if j > i:
          row.append(ConvBN(channels[j], channels[i], 1, relu=False, dtype=dtype, rngs=rngs))
        elif j == i:
          row.append(None)
        else:
          steps = [ConvBN(channels[j], channels[j], 3, 2, relu=True, dtype=dtype, rngs=rngs)
                   for _ in range(i - j - 1)]
          steps.append(ConvBN(channels[j], channels[i], 3, 2, relu=False, dtype=dtype,
                              rngs=rngs))
          row.append(nnx.List(steps))
      fuse_layers.append(nnx.List(row))
    self.fuse_layers = nnx.List(fuse_layers)

  def __call__(self, inputs: list[jax.Array]) -> list[jax.Array]:
    features = []
    for blocks, x in zip(self.branches, inputs):
      for block in blocks:
        x = block(x)
      features.append(x)
    if not self.fuse_layers:
      return features
    fused = []
    for i, row in enumerate(self.fuse_layers):
      total = None
      for j, (layer, x) in enumerate(zip(row, features)):
        if j > i:
          x = _upsample_nearest(layer(x), 2**(j - i))
        elif j < i:
          for step in layer:
            x = step(x)
        total = x if total is None else total + x
      fused.append(nnx.relu(total))
    return fused


def _transition(previous: list[int], current: list[int], dtype, rngs) -> nnx.List:
  """Adapts the previous stage's branches to the next stage's: an existing branch changes
  channels by a 3x3 conv (or stays as it is: None); a new branch is a stride-2 3x3 conv chain
  from the lowest-resolution existing branch."""
  layers = []
  for i, channels in enumerate(current):
    if i < len(previous):
      layers.append(None if previous[i] == channels else
                    ConvBN(previous[i], channels, 3, 1, dtype=dtype, rngs=rngs))
    else:
      steps = []
      for step in range(i + 1 - len(previous)):
        in_channels = previous[-1]
        out_channels = channels if step == i - len(previous) else in_channels
        steps.append(ConvBN(in_channels, out_channels, 3, 2, dtype=dtype, rngs=rngs))
      layers.append(nnx.List(steps))
  return nnx.List(layers)


class HRNet(nnx.Module):
  """The pose HRNet backbone: image [B, H, W, 3] -> features [B, H/4, W/4, out_channels].

  With `concat_branches`, `branches(images)` gives the four maps (strides 4/8/16/32) before
  their concatenation, for multi-scale heads (posejax.models.pose_transformer).
  """

  def __init__(self, config: HRNetConfig = HRNetConfig(), *, dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.config = config
    stem = config.stem_channels
    self.conv1 = _conv(3, stem, 3, 2, dtype, rngs)
    self.bn1 = _batch_norm(stem, dtype, rngs)
    self.conv2 = _conv(stem, stem, 3, 2, dtype, rngs)
    self.bn2 = _batch_norm(stem, dtype, rngs)
    stage1_channels = config.stage1_planes * Bottleneck.expansion
    self.layer1 = nnx.List([
        Bottleneck(stem if b == 0 else stage1_channels, config.stage1_planes, dtype=dtype,
                   rngs=rngs) for b in range(config.stage1_blocks)
    ])
    previous = [stage1_channels]
    for stage, num_modules in enumerate(config.stage_modules, start=2):
      channels = config.branch_channels(stage)
      setattr(self, f"transition{stage - 1}", _transition(previous, channels, dtype, rngs))
      last_stage = stage == 1 + len(config.stage_modules)
      setattr(self, f"stage{stage}", nnx.List([
          HighResolutionModule(
              channels, config.stage_blocks,
              multi_scale_output=(config.concat_branches
                                  or not (last_stage and m == num_modules - 1)),
              dtype=dtype, rngs=rngs) for m in range(num_modules)
      ]))
      previous = channels

  @property
  def out_channels(self) -> int:
    if self.config.concat_branches:
      return sum(self.config.branch_channels(1 + len(self.config.stage_modules)))
    return self.config.width

  def _branch_features(self, images) -> list[jax.Array]:
    """Stem, stage 1 and stages 2-4: the last module's outputs, highest resolution first."""
    # Every fusion adds maps of one size only when the input is a multiple of the
    # lowest-resolution branch's stride (32 for four branches).
    height, width = images.shape[-3:-1]
    multiple = 4 * 2 ** len(self.config.stage_modules)
    if height % multiple or width % multiple:
      # A ConfigError (a ValueError): the size is a config's, and the CLI says it in one line.
      raise ConfigError(f"This HRNet's input must be a multiple of {multiple} px in height and "
                       f"width (its lowest-resolution branch is 1/{multiple}); got {height} x "
                       f"{width} (e.g. config.data.image_size)")
    x = nnx.relu(self.bn1(self.conv1(images)))
    x = nnx.relu(self.bn2(self.conv2(x)))
    for block in self.layer1:
      x = block(x)
    branches = [x]
    for stage in range(2, 2 + len(self.config.stage_modules)):
      transition = getattr(self, f"transition{stage - 1}")
      new_branches = []
      for i, layer in enumerate(transition):
        if i < len(branches):
          new_branches.append(branches[i] if layer is None else layer(branches[i]))
        else:
          x = branches[-1]
          for step in layer:
            x = step(x)
          new_branches.append(x)
      branches = new_branches
      for module in getattr(self, f"stage{stage}"):
        branches = module(branches)
    return branches

  def branches(self, images) -> list[jax.Array]:
    """The multi-resolution maps of the last stage, before concatenation or head.

    Needs `concat_branches=True` (otherwise the last module fuses into the highest resolution
    only and the other branches are never computed).

    Args:
      images: [B, H, W, 3] normalised images, as for `__call__`.

    Returns:
      list of 1 + len(stage_modules) maps (4 for the published shape), branch b of shape
      [B, H / 2^(b+2), W / 2^(b+2), config.branch_channels(...)[b]] (strides 4, 8, 16, 32;
      width * 2^b channels unless the config sets branch_widths).
    """
    if not self.config.concat_branches:
      raise ValueError("HRNet.branches needs an HRNetConfig with concat_branches=True: the "
                       "pose HRNet's last module outputs the stride-4 branch only")
    return self._branch_features(images)

  def __call__(self, images):
    branches = self._branch_features(images)
    if self.config.concat_branches:
      return jnp.concatenate([_upsample_nearest(x, 2**b) if b else x
                              for b, x in enumerate(branches)], axis=-1)
    return branches[0]
