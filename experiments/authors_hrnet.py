"""The HRNet authors' PyTorch pose HRNet, for the studies and benchmarks that compare with it.

Their `pose_hrnet.py` (github leoxiaobin/deep-high-resolution-net.pytorch, lib/models/) is not
shipped: pass its path with `--pose_hrnet`. It needs PyTorch only (pip install "posejax[torch]").

  load_pose_hrnet(path):          their module, imported from the file.
  authors_config(hrnet_config):   their config dict for a posejax HRNetConfig's stages 2-4.
  build_authors_model(...):       their PoseHighResolutionNet shaped as a posejax HRNetConfig,
                                  with a 1x1 head to `num_outputs` maps (see its docstring).
"""

from __future__ import annotations

import importlib.util
import types
import warnings

from absl import flags

from posejax.models import HRNetConfig

POSE_HRNET = flags.DEFINE_string(
    "pose_hrnet", None, "Path of the HRNet authors' pose_hrnet.py "
    "(deep-high-resolution-net.pytorch/lib/models/pose_hrnet.py; not shipped).")

# What their PoseHighResolutionNet hard-codes: the stem's channels and stage 1.
_AUTHORS_STEM = dict(stem_channels=64, stage1_planes=64, stage1_blocks=4)


def load_pose_hrnet(path: str) -> types.ModuleType:
  """Their pose_hrnet.py as a module (it imports torch)."""
  spec = importlib.util.spec_from_file_location("pose_hrnet", path)
  if spec is None or spec.loader is None:
    raise ValueError(f"Cannot load {path!r} as a Python module")
  module = importlib.util.module_from_spec(spec)
  with warnings.catch_warnings():  # its `pretrained_layers[0] is '*'`
    warnings.simplefilter("ignore", SyntaxWarning)
    spec.loader.exec_module(module)
  return module


def authors_config(config: HRNetConfig = HRNetConfig(), num_joints: int = 17) -> dict:
  """Their config dict (cfg['MODEL']) for `config`'s stages 2-4: the width, modules per stage
  and BasicBlocks per branch. `HRNetConfig(width=w)` gives their published W32 / W48 layout."""
  if len(config.stage_modules) != 3:
    raise ValueError(f"The authors' HRNet has stages 2-4; {config} has "
                     f"{len(config.stage_modules)} after stage 1")
  channels = config.branch_channels(4)
  stage = lambda modules, branches: dict(  # noqa: E731
      NUM_MODULES=modules, NUM_BRANCHES=branches, BLOCK="BASIC",
      NUM_BLOCKS=[config.stage_blocks] * branches, NUM_CHANNELS=channels[:branches],
      FUSE_METHOD="SUM")
  modules = config.stage_modules
  extra = dict(PRETRAINED_LAYERS=["*"], FINAL_CONV_KERNEL=1, STAGE2=stage(modules[0], 2),
               STAGE3=stage(modules[1], 3), STAGE4=stage(modules[2], 4))
  return dict(MODEL=dict(EXTRA=extra, NUM_JOINTS=num_joints, INIT_WEIGHTS=False, PRETRAINED=""))


def build_authors_model(pose_hrnet: types.ModuleType, config: HRNetConfig, num_outputs: int):
  """Their PoseHighResolutionNet with the same layers as posejax's `HRNet(config)` followed by a
  1x1 convolution (with bias) to `num_outputs` maps.

  Stages 2-4 come from their config dict. What the dict cannot say is rebuilt with their own
  builders after construction: a stem and stage 1 other than their 64 / 64 x 4 Bottlenecks
  (`_make_layer`, `_make_transition_layer`), and for `concat_branches` (HRNetV2) a last stage
  that keeps every branch (`_make_stage(multi_scale_output=True)`), whose outputs are upsampled
  to stride 4 (nearest, as posejax does) and concatenated before their `final_layer`.
  """
  torch, nn = pose_hrnet.torch, pose_hrnet.nn
  model = pose_hrnet.get_pose_net(authors_config(config, num_outputs), is_train=False)
  if any(getattr(config, k) != v for k, v in _AUTHORS_STEM.items()):
    stem = config.stem_channels
    model.conv1 = nn.Conv2d(3, stem, kernel_size=3, stride=2, padding=1, bias=False)
    model.bn1 = nn.BatchNorm2d(stem, momentum=pose_hrnet.BN_MOMENTUM)
    model.conv2 = nn.Conv2d(stem, stem, kernel_size=3, stride=2, padding=1, bias=False)
    model.bn2 = nn.BatchNorm2d(stem, momentum=pose_hrnet.BN_MOMENTUM)
    model.inplanes = stem
    model.layer1 = model._make_layer(pose_hrnet.Bottleneck, config.stage1_planes,  # pylint: disable=protected-access
                                     config.stage1_blocks)
    model.transition1 = model._make_transition_layer(  # pylint: disable=protected-access
        [config.stage1_planes * pose_hrnet.Bottleneck.expansion], config.branch_channels(2))
  if config.concat_branches:
    channels = config.branch_channels(4)
    stage4, _ = model._make_stage(model.stage4_cfg, channels,  # pylint: disable=protected-access
                                  multi_scale_output=True)

    class ConcatenatedBranches(nn.Module):
      """Their last stage with every branch kept, as one stride-4 map (HRNetV2)."""

      def __init__(self, stage):
        super().__init__()
        self.stage = stage

      def forward(self, branches):
        outputs = self.stage(branches)
        return [torch.cat([outputs[0]] + [
            nn.functional.interpolate(x, scale_factor=2**b, mode="nearest")
            for b, x in enumerate(outputs[1:], start=1)], dim=1)]

    model.stage4 = ConcatenatedBranches(stage4)
    model.final_layer = nn.Conv2d(sum(channels), num_outputs, kernel_size=1)
  return model
