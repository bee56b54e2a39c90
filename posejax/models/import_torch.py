"""Import the HRNet authors' PyTorch checkpoints into a posejax PoseNet.

Two kinds of checkpoint:
- `source="pose"`: the pose HRNets (`pose_hrnet_w32_256x256.pth`, trained on MPII, 16 joints;
  `pose_hrnet_w32_256x192.pth` / `w48`, trained on COCO, 17 joints). The backbone is copied
  exactly; the 2D-heatmap half of the PoseNet head comes from the checkpoint's `final_layer`,
  channel by channel through `joint_mapping` (the checkpoint's joints are not the model's: COCO's
  17 are not Human3.6M's 17); the depth half, and heatmaps of joints the checkpoint lacks, keep
  their fresh initialisation.
- `source="imagenet"`: the ImageNet HRNet classifiers (HRNet-Image-Classification). The backbone
  stages are copied; the classification head (`incre_modules`, `downsamp_modules`,
  `final_layer`, `classifier`) and the extra fusion outputs of the last module (the classifier
  keeps all four resolutions) are ignored; the PoseNet head stays freshly initialised.

Any other missing key, unexpected key or shape mismatch is an error that lists the keys, unless
the caller allows it with `allow_missing` / `allow_unexpected` (fnmatch patterns).

Reading `.pth` files needs PyTorch (`pip install "posejax[torch]"`); `import_hrnet_weights`
itself takes any mapping of names to arrays, so converted NumPy state dicts work without it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from collections.abc import Mapping, Sequence

import numpy as np
from flax import nnx

from posejax.models.hrnet import HRNet
from posejax.models.posenet import PoseNet
from posejax.skeleton import JointMapping

_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
               "var": "running_var"}
_SEQUENTIAL_INDEX = {"conv": "0", "bn": "1"}  # ConvBN mirrors PyTorch's Sequential(conv, bn)
_IMAGENET_HEAD = ("incre_modules.*", "downsamp_modules.*", "final_layer.*", "classifier.*")
_ALWAYS_IGNORED = ("*num_batches_tracked",)


class CheckpointError(ValueError):
  """A checkpoint does not fit the model (missing / unexpected keys, shape mismatches)."""


@dataclasses.dataclass
class ImportReport:
  """What an import did: torch keys copied, torch keys ignored, model entries left as they were."""
  copied: list[str]
  ignored: list[str]
  kept_initialisation: list[str]


def load_torch_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a PyTorch checkpoint into {name: float32 NumPy array}.

  Accepts a bare state dict or one wrapped as {"state_dict": ...} / {"model": ...}, and strips
  DataParallel's "module." prefixes.
  """
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise ImportError(
        "Reading a PyTorch .pth checkpoint needs PyTorch, which posejax does not install by "
        "default. Install it with `pip install \"posejax[torch]\"` (or any CPU build of torch), "
        "or convert the checkpoint to NumPy (.npz) elsewhere.") from error
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No checkpoint file at {path!r}")
  try:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as error:  # torch raises many types for corrupt or foreign files
    raise CheckpointError(f"Cannot read {path!r} as a PyTorch checkpoint: {error}") from error
  for wrapper in ("state_dict", "model"):
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(wrapper), Mapping):
      checkpoint = checkpoint[wrapper]
  if not isinstance(checkpoint, Mapping):
    raise CheckpointError(f"{path!r} holds a {type(checkpoint).__name__}, not a state dict")
  state_dict = {}
  for name, value in checkpoint.items():
    if hasattr(value, "detach"):
      state_dict[name.removeprefix("module.")] = value.detach().cpu().numpy()
  return state_dict


def torch_key(path: Sequence) -> str:
  """The PyTorch state-dict key of an HRNet state entry, e.g.
  ('transition1', 1, 0, 'conv', 'kernel') -> 'transition1.1.0.0.weight'."""
  *modules, leaf = (str(p) for p in path)
  return ".".join([_SEQUENTIAL_INDEX.get(m, m) for m in modules] + [_LEAF_NAMES[leaf]])


def _to_flax(value: np.ndarray) -> np.ndarray:
  value = np.asarray(value, np.float32)
  return value.transpose(2, 3, 1, 0) if value.ndim == 4 else value  # OIHW -> HWIO


def _matches(key: str, patterns: Sequence[str]) -> bool:
  return any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)


def _imagenet_extra_fusions(backbone: HRNet) -> tuple[str, ...]:
  """The classifier's last module fuses into all four resolutions; the pose net only into 1."""
  last_stage = 1 + len(backbone.config.stage_modules)
  last_module = backbone.config.stage_modules[-1] - 1
  return (f"stage{last_stage}.{last_module}.fuse_layers.[1-9].*",)


def import_hrnet_weights(model: PoseNet, state_dict: Mapping[str, np.ndarray], *,
                         source: str = "pose",
                         joint_mapping: JointMapping | str | None = None,
                         allow_missing: Sequence[str] = (),
                         allow_unexpected: Sequence[str] = ()) -> ImportReport:
  """Copies a PyTorch HRNet state dict into `model` (in place).

  Args:
    model: a PoseNet with an HRNet backbone of the checkpoint's width and depth.
    state_dict: {torch key: array} (torch tensors, NumPy arrays, ...), e.g. from
      `load_torch_checkpoint`.
    source: "pose" (pose HRNet, with a heatmap `final_layer`) or "imagenet" (classifier).
    joint_mapping: for source="pose", which joints the checkpoint's heatmaps are: a
      JointMapping onto the model's skeleton (MPII_TO_H36M for the MPII 256x256 models,
      COCO_TO_H36M for the COCO 256x192 ones), or "identity" if the checkpoint was trained on
      the model's own skeleton. Required: copying COCO's 17 channels in order into Human3.6M's
      17 joints would silently be wrong.
    allow_missing: fnmatch patterns of torch keys the model needs that may be absent (the
      entry keeps its initialisation).
    allow_unexpected: fnmatch patterns of checkpoint keys that may be left unused.

  Returns:
    An ImportReport.

  Raises:
    CheckpointError: missing or unexpected keys, or shape mismatches, listing all of them.
  """
  if source not in ("pose", "imagenet"):
    raise ValueError(f"source must be 'pose' or 'imagenet', got {source!r}")
  if not isinstance(model.backbone, HRNet):
    raise TypeError(f"Expected a PoseNet with an HRNet backbone, got "
                    f"{type(model.backbone).__name__}")
  if source == "pose" and joint_mapping is None:
    raise ValueError(
        "Say which joints the checkpoint's heatmaps are: joint_mapping=MPII_TO_H36M for the "
        "MPII models (256x256), COCO_TO_H36M for the COCO models (256x192), or 'identity' if "
        "the checkpoint was trained on this model's skeleton.")
  ignorable = list(_ALWAYS_IGNORED) + list(allow_unexpected)
  if source == "imagenet":
    ignorable += list(_IMAGENET_HEAD) + list(_imagenet_extra_fusions(model.backbone))

  state = nnx.state(model.backbone)
  new_values, missing, mismatched, copied = [], [], [], []
  for path, variable in nnx.to_flat_state(state):
    name = torch_key(path)
    if name not in state_dict:
      if not _matches(name, allow_missing):
        missing.append(name)
      continue
    array = _to_flax(state_dict[name])
    if array.shape != variable.get_value().shape:
      mismatched.append(f"{name}: checkpoint {tuple(np.shape(state_dict[name]))} -> "
                        f"{array.shape}, model {tuple(variable.get_value().shape)}")
      continue
    new_values.append((variable, array))
    copied.append(name)

  kept = []
  head_updates = {}
  if source == "pose":
    head_updates, head_kept, head_missing, head_mismatched = _head_from_final_layer(
        model, state_dict, joint_mapping)
    copied += [f"final_layer.{p}" for p in ("weight", "bias")] if head_updates else []
    kept += head_kept
    missing += head_missing
    mismatched += head_mismatched
  else:
    kept.append("head (all 2J channels)")

  used = set(copied)
  unexpected = sorted(k for k in state_dict if k not in used and not _matches(k, ignorable))
  problems = []
  if missing:
    problems.append(f"{len(missing)} keys missing from the checkpoint: {sorted(missing)}")
  if unexpected:
    problems.append(f"{len(unexpected)} unexpected keys in the checkpoint: {unexpected}")
  if mismatched:
    problems.append(f"{len(mismatched)} shape mismatches: {mismatched}")
  if problems:
    raise CheckpointError("Checkpoint does not fit the model (" + source + " HRNet-W"
                          f"{model.backbone.config.width}):\n  " + "\n  ".join(problems))

  for variable, array in new_values:  # only now: a failed import leaves the model untouched
    variable.set_value(array)
  nnx.update(model.backbone, state)
  for name, array in head_updates.items():
    getattr(model.head, name).set_value(array)
  ignored = sorted(k for k in state_dict if k not in used)
  return ImportReport(copied=copied, ignored=ignored, kept_initialisation=kept)


def _head_from_final_layer(model: PoseNet, state_dict, joint_mapping):
  """Heatmap half of the PoseNet head from the checkpoint's 1x1 `final_layer`.

  Returns:
    (updates {"kernel", "bias"} or {}, kept-initialisation notes, missing keys, mismatches).
  """
  missing = [f"final_layer.{p}" for p in ("weight", "bias") if f"final_layer.{p}" not in
             state_dict]
  if missing:
    return {}, [], missing, []
  weight = _to_flax(state_dict["final_layer.weight"])  # [1, 1, C, Jc]
  bias = np.asarray(state_dict["final_layer.bias"], np.float32)
  num_joints = model.skeleton.num_joints
  checkpoint_joints = weight.shape[-1]
  if joint_mapping == "identity":
    if checkpoint_joints != num_joints:
      return {}, [], [], [f"final_layer: {checkpoint_joints} heatmaps in the checkpoint, "
                          f"{num_joints} joints in the model (pass a JointMapping)"]
    source_indices = list(range(num_joints))
  elif (joint_mapping.target != model.skeleton
        or joint_mapping.num_source_joints != checkpoint_joints):
    return {}, [], [], [
        f"final_layer: joint_mapping {joint_mapping.name} maps {joint_mapping.num_source_joints}"
        f" joints onto {joint_mapping.target.name}; the checkpoint has {checkpoint_joints} "
        f"heatmaps and the model's skeleton is {model.skeleton.name}"]
  else:
    source_indices = list(joint_mapping.source_indices)
  kernel = np.array(model.head.kernel.get_value())
  head_bias = np.array(model.head.bias.get_value())
  if kernel.shape[:3] != weight.shape[:3]:
    return {}, [], [], [f"final_layer.weight: checkpoint input {weight.shape[:3]}, head "
                        f"{kernel.shape[:3]}"]
  kept = []
  for joint, source in enumerate(source_indices):
    if source < 0:
      kept.append(f"head heatmap channel {joint} ({model.skeleton.joint_names[joint]}: not in "
                  "the checkpoint)")
      continue
    kernel[..., joint] = weight[..., source]
    head_bias[joint] = bias[source]
  kept.append(f"head depth channels {num_joints}..{2 * num_joints - 1}")
  return {"kernel": kernel, "bias": head_bias}, kept, [], []
