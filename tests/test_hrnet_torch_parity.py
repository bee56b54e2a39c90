"""HRNet weights imported from PyTorch compute what PyTorch computes (needs the torch extra).

The reference is `tests/torch_pose_hrnet.py`, a PyTorch pose HRNet written for the tests with
the authors' state-dict names (their own `pose_hrnet.py` is not shipped; the study
`experiments/studies/hrnet_torch_parity.py` checks against it when given its path). The
comparison runs every part an import relies on: the OIHW -> HWIO kernels, BatchNorm's epsilon
and statistics (randomised), the padding of strided convolutions, nearest upsampling in the
fusion layers, the head's bias.
"""

import pytest

from experiments.authors_hrnet import authors_config
from posejax.models import HRNetConfig

# Small and fast, but every structure of the published network: a Bottleneck stage 1 with its
# downsample shortcut, a width-changing transition, two fused modules in stage 2 (the second
# reads the first's fused outputs), stride-2 chains of two steps (branch 0 -> 2, 3), and the
# last module's single output.
_CONFIG = HRNetConfig(width=4, stem_channels=16, stage1_planes=8, stage1_blocks=2,
                      stage_modules=(2, 1, 1), stage_blocks=1)


def _reference(torch, config):
  from tests import torch_pose_hrnet  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  return torch_pose_hrnet.PoseHRNet(authors_config(config), stem_channels=config.stem_channels,
                                    stage1_planes=config.stage1_planes,
                                    stage1_blocks=config.stage1_blocks)


def test_imported_hrnet_reproduces_pytorch_heatmaps():
  torch = pytest.importorskip("torch", reason="the optional torch extra is not installed")
  from experiments.studies import hrnet_torch_parity  # pylint: disable=import-outside-toplevel
  reference = _reference(torch, _CONFIG)
  result = hrnet_torch_parity.check_parity(reference, torch, _CONFIG, image_shape=(2, 3, 96, 64))
  assert result["keys_copied"] == len(
      [k for k in reference.state_dict() if not k.endswith("num_batches_tracked")])
  assert result["max_abs_output"] > 0.1  # random BatchNorm keeps the maps far from zero
  # float32 on both sides (measured: 4.8e-7 of 1.5, PyTorch float32 vs float64 3.0e-7).
  assert result["max_abs_diff"] < 1e-5 * result["max_abs_output"], result


def test_parity_check_sees_a_wrong_import():
  """The check can fail: a BatchNorm epsilon other than PyTorch's changes the maps."""
  torch = pytest.importorskip("torch", reason="the optional torch extra is not installed")
  from experiments.studies import hrnet_torch_parity  # pylint: disable=import-outside-toplevel
  reference = _reference(torch, _CONFIG)
  for module in reference.modules():
    if isinstance(module, torch.nn.BatchNorm2d):
      module.eps = 1e-2
  result = hrnet_torch_parity.check_parity(reference, torch, _CONFIG, image_shape=(2, 3, 96, 64))
  assert result["max_abs_diff"] > 1e-3 * result["max_abs_output"], result
