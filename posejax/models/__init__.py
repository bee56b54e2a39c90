"""Networks: backbones, PoseNet (image -> every prediction) and a registry for configs.

`create_model("hrnet_w32", rngs=nnx.Rngs(0))` builds a PoseNet; configs name models by these
keys (`model.name = "hrnet_w32"`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from posejax.models.hrnet import HRNet, HRNetConfig
from posejax.models.posenet import PoseNet, apply
from posejax.skeleton import H36M, Skeleton

# Published pose HRNets, and small variants (one module per stage, 2 blocks per branch, a
# narrower stem) for CPU runs.
_SMALL = dict(stem_channels=32, stage1_planes=16, stage1_blocks=1, stage_modules=(1, 1, 1),
              stage_blocks=2)
BACKBONES = {
    "hrnet_w32": HRNetConfig(width=32),
    "hrnet_w48": HRNetConfig(width=48),
    "hrnet_w16_small": HRNetConfig(width=16, **_SMALL),
    "hrnet_w8_small": HRNetConfig(width=8, **_SMALL),
    # All four resolutions concatenated (120 channels) for the head: 8 channels were too few to
    # carry 17 heatmaps and 17 depth maps (BUILD_NOTES.md, issue 6). The synthetic default up to
    # session 28; DeepPose's and the pose transformer's synthetic configs.
    "hrnetv2_w8_small": HRNetConfig(width=8, concat_branches=True, **_SMALL),
    # Its stride-4 branch twice as wide (16 channels; the others as above): the 2D is read from
    # that branch, and at 64 px it is the cheapest to widen. The synthetic main job's model:
    # 2D error 2.69 px against 2.94 on validation after stage 1, held-out MPJPE 168.3 mm
    # against 173.0, for 1.16-1.18x the job's time (docs/results.md 1.14).
    "hrnetv2_w8_small_hr16": HRNetConfig(width=16, branch_widths=(16, 16, 32, 64),
                                         concat_branches=True, **_SMALL),
    # Twice as wide: 2.4 px against 2.7 on the synthetic test set, for 1.74x the main job's time
    # (14 min 41 s against 8 min 26 s, session 24; 2.1x the stage-1 step in session 28's
    # benchmark, where session 22's loop logs had suggested 1.19x);
    # its weak stage 2 needs the knee prior to keep the depth the right way round
    # (docs/results.md 1.13).
    "hrnetv2_w16_small": HRNetConfig(width=16, concat_branches=True, **_SMALL),
    # The smallest HRNet with every structure (four branches, fusions, the concatenated head
    # input): one block everywhere. For tests and smoke runs, where compiling is the cost.
    "hrnetv2_w4_minimal": HRNetConfig(width=4, stem_channels=8, stage1_planes=4,
                                      stage1_blocks=1, stage_modules=(1, 1, 1), stage_blocks=1,
                                      concat_branches=True),
    # Not the published structure: stage 1 and one two-branch stage (strides 4 and 8), 14
    # convolutions to the minimal one's 53. For the tests of what does not depend on the
    # network (the loop, checkpoints, signals, processes, the tasks' plumbing): a train step
    # traces in a third of the minimal HRNet's time (BUILD_NOTES.md, session 11).
    "hrnetv2_w4_micro": HRNetConfig(width=4, stem_channels=8, stage1_planes=4, stage1_blocks=1,
                                    stage_modules=(1,), stage_blocks=1, concat_branches=True),
}


def create_model(name: str, *, skeleton: Skeleton = H36M, dtype=jnp.float32,
                 temperature: float = 50.0, rngs: nnx.Rngs) -> PoseNet:
  """A PoseNet with the named backbone. `dtype` is the compute dtype (parameters stay float32)."""
  if name not in BACKBONES:
    raise ValueError(f"Unknown model {name!r}; available: {sorted(BACKBONES)}")
  backbone = HRNet(BACKBONES[name], dtype=dtype, rngs=rngs)
  return PoseNet(backbone, skeleton, temperature=temperature, dtype=dtype, rngs=rngs)


def count_parameters(model: nnx.Module) -> int:
  """Trainable parameters (nnx.Param), as PyTorch's sum of p.numel() counts them."""
  return sum(x.size for x in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))


__all__ = ["BACKBONES", "HRNet", "HRNetConfig", "PoseNet", "apply", "count_parameters",
           "create_model"]
