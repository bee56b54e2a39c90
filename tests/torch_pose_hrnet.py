"""A pose HRNet in PyTorch, written for the tests from the paper (Sun et al., CVPR 2019), as a
second implementation that posejax's imported weights must reproduce.

The HRNet authors' own `pose_hrnet.py` is not shipped and an offline CI cannot fetch it, so
the numerical parity of `posejax.models.import_torch` is checked in CI against this model;
`experiments/studies/hrnet_torch_parity.py` checks the same against the authors' file. Written
independently of theirs, it shares with it only what a `.pth` checkpoint fixes: the parameter
names of their state dict, and the architecture those names describe:

- stem: two 3x3 stride-2 convolutions with BatchNorm and ReLU (`conv1`, `bn1`, `conv2`, `bn2`);
- stage 1 (`layer1`): Bottleneck blocks (1x1, 3x3, 1x1 to 4x planes; a 1x1 `downsample`);
- `transition{s}`: a 3x3 convolution where a kept branch changes width; a new branch from the
  last one by stride-2 3x3 convolutions;
- `stage{s}`: modules of BasicBlock branches (`branches`) whose outputs are exchanged
  (`fuse_layers`: up by a 1x1 conv, BatchNorm and nearest upsampling; down by stride-2 3x3
  convs with BatchNorm, ReLU between them), each sum followed by ReLU; the last module of the
  pose network keeps only the highest-resolution output;
- `final_layer`: a 1x1 convolution with bias to the heatmaps.

BatchNorm has PyTorch's defaults (eps 1e-5), as theirs. Built from the same config dict as
theirs (`experiments.authors_hrnet.authors_config`).
"""

from __future__ import annotations

import torch
from torch import nn


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
  return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def _conv_bn(in_channels, out_channels, kernel_size, stride, relu):
  """Sequential(conv, BatchNorm[, ReLU]): keys `.0.weight`, `.1.*`."""
  layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                      padding=kernel_size // 2, bias=False), nn.BatchNorm2d(out_channels)]
  if relu:
    layers.append(nn.ReLU())
  return nn.Sequential(*layers)


class BasicBlock(nn.Module):
  def __init__(self, channels: int):
    super().__init__()
    self.conv1, self.bn1 = _conv3x3(channels, channels), nn.BatchNorm2d(channels)
    self.conv2, self.bn2 = _conv3x3(channels, channels), nn.BatchNorm2d(channels)

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    return torch.relu(self.bn2(self.conv2(y)) + x)


class Bottleneck(nn.Module):
  def __init__(self, in_channels: int, planes: int):
    super().__init__()
    self.conv1, self.bn1 = nn.Conv2d(in_channels, planes, 1, bias=False), nn.BatchNorm2d(planes)
    self.conv2, self.bn2 = _conv3x3(planes, planes), nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, 4 * planes, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(4 * planes)
    self.downsample = (_conv_bn(in_channels, 4 * planes, 1, 1, relu=False)
                       if in_channels != 4 * planes else None)

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = torch.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    shortcut = x if self.downsample is None else self.downsample(x)
    return torch.relu(y + shortcut)


class FusedModule(nn.Module):
  """One high-resolution module: BasicBlocks per branch, then every output sums all branches."""

  def __init__(self, channels: list[int], blocks: int, outputs: int):
    super().__init__()
    self.branches = nn.ModuleList(
        nn.Sequential(*[BasicBlock(c) for _ in range(blocks)]) for c in channels)
    rows = []
    for i in range(outputs):
      row = []
      for j, c in enumerate(channels):
        if j > i:
          row.append(nn.Sequential(nn.Conv2d(c, channels[i], 1, bias=False),
                                   nn.BatchNorm2d(channels[i]),
                                   nn.Upsample(scale_factor=2**(j - i), mode="nearest")))
        elif j == i:
          row.append(None)
        else:
          steps = [_conv_bn(c, c, 3, 2, relu=True) for _ in range(i - j - 1)]
          steps.append(_conv_bn(c, channels[i], 3, 2, relu=False))
          row.append(nn.Sequential(*steps))
      rows.append(nn.ModuleList(row))
    self.fuse_layers = nn.ModuleList(rows)

  def forward(self, xs):
    xs = [branch(x) for branch, x in zip(self.branches, xs)]
    return [torch.relu(sum(x if layer is None else layer(x) for layer, x in zip(row, xs)))
            for row in self.fuse_layers]


def _transition(previous: list[int], channels: list[int]) -> nn.ModuleList:
  layers = []
  for i, c in enumerate(channels):
    if i < len(previous):
      layers.append(_conv_bn(previous[i], c, 3, 1, relu=True) if previous[i] != c else None)
    else:  # a new, coarser branch from the coarsest one so far
      steps = [_conv_bn(previous[-1], previous[-1], 3, 2, relu=True)
               for _ in range(i - len(previous))]
      steps.append(_conv_bn(previous[-1], c, 3, 2, relu=True))
      layers.append(nn.Sequential(*steps))
  return nn.ModuleList(layers)


class PoseHRNet(nn.Module):
  """The pose HRNet for the authors' config dict `cfg["MODEL"]` (stages 2-4 from `EXTRA`)."""

  def __init__(self, cfg: dict, stem_channels: int = 64, stage1_planes: int = 64,
               stage1_blocks: int = 4):
    super().__init__()
    model = cfg["MODEL"]
    self.conv1, self.bn1 = _conv3x3(3, stem_channels, 2), nn.BatchNorm2d(stem_channels)
    self.conv2, self.bn2 = _conv3x3(stem_channels, stem_channels, 2), nn.BatchNorm2d(stem_channels)
    self.layer1 = nn.Sequential(*[
        Bottleneck(stem_channels if b == 0 else 4 * stage1_planes, stage1_planes)
        for b in range(stage1_blocks)])
    previous = [4 * stage1_planes]
    for s in (2, 3, 4):
      stage = model["EXTRA"][f"STAGE{s}"]
      channels = list(stage["NUM_CHANNELS"])
      setattr(self, f"transition{s - 1}", _transition(previous, channels))
      modules = stage["NUM_MODULES"]
      setattr(self, f"stage{s}", nn.Sequential(*[
          FusedModule(channels, stage["NUM_BLOCKS"][0],
                      outputs=1 if (s == 4 and m == modules - 1) else len(channels))
          for m in range(modules)]))
      previous = channels
    self.final_layer = nn.Conv2d(previous[0], model["NUM_JOINTS"], 1)

  def forward(self, images):
    x = torch.relu(self.bn1(self.conv1(images)))
    x = torch.relu(self.bn2(self.conv2(x)))
    xs = [self.layer1(x)]
    for s in (2, 3, 4):
      transition = getattr(self, f"transition{s - 1}")
      # A kept branch passes through (or through its width change); a new one starts from the
      # coarsest output so far.
      xs = [xs[i] if layer is None else layer(xs[min(i, len(xs) - 1)])
            for i, layer in enumerate(transition)]
      for module in getattr(self, f"stage{s}"):
        xs = module(xs)
    return self.final_layer(xs[0])
