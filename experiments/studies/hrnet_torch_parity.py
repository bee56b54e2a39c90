r"""Checks posejax's HRNet against the authors' PyTorch pose HRNet, output for output.

    pip install "posejax[torch]"   # plus a checkout of the HRNet authors' code (not shipped)
    python -m experiments.studies.hrnet_torch_parity \
        --pose_hrnet=/path/to/deep-high-resolution-net.pytorch/lib/models/pose_hrnet.py

Builds their `PoseHighResolutionNet` (W32 and W16, the published stage layout) with random
weights AND random BatchNorm statistics, runs it in eval mode on random 256x192 inputs, imports
its state dict with `posejax.models.import_torch`, runs posejax on the same inputs and prints the
largest difference of the heatmaps next to PyTorch's own float32-vs-float64 difference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from experiments import authors_hrnet
from posejax.models import HRNet, HRNetConfig, PoseNet
from posejax.models.import_torch import import_hrnet_weights

flags.adopt_module_key_flags(authors_hrnet)  # --pose_hrnet (shared with experiments.benchmark)
_WIDTHS = flags.DEFINE_list("widths", ["32", "16"], "HRNet widths to check.")


def _randomise_batch_norm(model, torch):
  for module in model.modules():
    if isinstance(module, torch.nn.BatchNorm2d):
      with torch.no_grad():
        n = module.num_features
        module.running_mean.copy_(torch.randn(n) * 0.1)
        module.running_var.copy_(torch.empty(n).uniform_(0.5, 1.5))
        module.weight.copy_(torch.empty(n).uniform_(0.5, 1.5))
        module.bias.copy_(torch.randn(n) * 0.1)


def check_parity(reference, torch, config: HRNetConfig, image_shape=(2, 3, 256, 192)) -> dict:
  """posejax's PoseNet on `reference`'s imported weights against `reference` itself.

  Args:
    reference: a PyTorch pose HRNet shaped as `HRNet(config)` with a 1x1 `final_layer` to 17
      maps (the authors' `get_pose_net`, or the tests' own `tests/torch_pose_hrnet.py`); its
      BatchNorm parameters and statistics are randomised here.
    torch: the torch module.
    config: the posejax HRNetConfig.
    image_shape: NCHW of the random input.

  Returns:
    {"keys_copied", "max_abs_diff", "torch_f32_vs_f64", "max_abs_output"}: the largest
    difference of the heatmaps, beside PyTorch's own float32-vs-float64 difference.
  """
  _randomise_batch_norm(reference, torch)
  reference.eval()
  images = torch.randn(*image_shape)
  with torch.no_grad():
    expected = reference(images).numpy().transpose(0, 2, 3, 1)
    expected64 = reference.double()(images.double()).numpy().transpose(0, 2, 3, 1)
  reference.float()
  state_dict = {k: v.float().numpy() for k, v in reference.state_dict().items()}

  model = PoseNet(HRNet(config, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
  report = import_hrnet_weights(model, state_dict, source="pose", joint_mapping="identity")
  model.eval()
  graphdef, state = nnx.split(model)

  @jax.jit
  def heatmaps(state, x):
    net = nnx.merge(graphdef, state)
    return net.head(net.backbone(x))[..., :17]

  ours = np.asarray(heatmaps(state, jnp.asarray(images.numpy().transpose(0, 2, 3, 1))))
  return dict(keys_copied=len(report.copied),
              max_abs_diff=float(np.abs(ours - expected).max()),
              torch_f32_vs_f64=float(np.abs(expected - expected64).max()),
              max_abs_output=float(np.abs(expected).max()))


def check_width(pose_hrnet, torch, width: int) -> dict:
  """The authors' published layout at `width` (W32, W16, ...), 256x192 inputs."""
  torch.manual_seed(0)
  config = HRNetConfig(width=width)
  reference = pose_hrnet.get_pose_net(authors_hrnet.authors_config(config), is_train=False)
  return dict(width=width, **check_parity(reference, torch, config))


def main(argv):
  del argv
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise app.UsageError('This check needs PyTorch: pip install "posejax[torch]"') from error
  if not authors_hrnet.POSE_HRNET.value:
    raise app.UsageError("Pass --pose_hrnet=/path/to/deep-high-resolution-net.pytorch/lib/"
                         "models/pose_hrnet.py (the authors' model, not shipped)")
  try:
    pose_hrnet = authors_hrnet.load_pose_hrnet(authors_hrnet.POSE_HRNET.value)
  except ValueError as error:
    raise app.UsageError(str(error)) from error
  for width in _WIDTHS.value:
    print(check_width(pose_hrnet, torch, int(width)), flush=True)


if __name__ == "__main__":
  app.run(main)
