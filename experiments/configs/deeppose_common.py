r"""Shared pieces of the DeepPose configs (task "deeppose"): the stage from the colon argument
and the recipe without data. Not a config itself. (Its place is experiments/configs/common.py;
it stays apart while DeepPose lands in files of its own.)
"""

from __future__ import annotations

from ml_collections import config_dict


def stage_of(arg: str | None) -> int:
  """The DeepPose stage a config's colon argument names: "1" (the default), "2", "3", ..."""
  try:
    stage = int(arg or 1)
  except ValueError:
    stage = 0
  if stage < 1:
    raise ValueError(f"Unknown DeepPose stage {arg!r} after the colon: use the stage number, "
                     "1 (regression), 2 or 3 (refiners, with --config.deeppose.previous)")
  return stage


def deeppose(arg: str | None, *, steps: int, refine_steps: int) -> config_dict.ConfigDict:
  """The paper's recipe for one DeepPose stage, without data (Toshev & Szegedy, arXiv
  1312.4659): the AlexNet regressor at 220 px with dropout 0.6, Adagrad at 5e-4, batches of 128,
  sigma 2.0 (their LSP setting), 3 stages. Stage 1 ("regress") trains `steps` steps, a refiner
  ("refine") `refine_steps`; each stage is its own run, a refiner with the workdirs of the
  stages before it in `deeppose.previous` (comma-separated)."""
  stage = stage_of(arg)
  config = config_dict.ConfigDict()
  config.task = "deeppose"
  config.seed = 0
  config.init_from = ""
  objective = "regress" if stage == 1 else "refine"
  config.stages = config_dict.ConfigDict(dict(stage1=dict(
      objective=objective, steps=steps if stage == 1 else refine_steps)))
  config.deeppose = config_dict.ConfigDict(dict(
      stage=stage,
      num_stages=3,  # the paper's S (a fourth stage stopped helping on held-out data)
      previous="",  # stage s >= 2: the workdirs of stages 1..s-1, comma-separated
      sigma=2.0,  # sub-box side in torso diameters (the paper: 1.0 FLIC, 2.0 LSP)
      stage1_size=220,
      refine_size=220,
      samples_per_image=8,  # refiner boxes per image and step
      displacement_scale=1.0,  # x the displacements' std (0: boxes on the truth + mean)
      loss="l2",  # or "smooth_l1" (mmpose's regression baseline)
      smooth_l1_beta=0.05,
      context_weight=0.0,  # > 0: the refiner's other rows train too (posejax; 0 is the paper)
      diameter_joints=("left_shoulder", "right_hip"),
      label_mask="labelled",  # real data: the labelled joints inside the crop count
      visible_key="joints_2d_visible",  # evaluation: visible vs occluded (LSP has the flag)
      train_images=0,  # images the displacement statistics cover (0: the finite stream's)
      mean_pose_samples=1000,  # training images of the mean-pose baseline
      predict_batch_size=64,
  ))
  config.model = config_dict.ConfigDict(dict(name="alexnet_deeppose", dtype="float32",
                                             dropout=0.6))
  config.batch = config_dict.ConfigDict(dict(labeled=128, augment=True, scale_range=0.2,
                                             max_rotation_deg=0.0, flip_probability=0.5))
  config.optim = config_dict.ConfigDict(dict(name="adagrad", learning_rate=5e-4,
                                             decay_steps=(), clip_norm=0.0))
  config.loss_weights = config_dict.ConfigDict(dict(joints=1.0, refine=1.0))
  config.train = config_dict.ConfigDict(dict(steps=0, log_every=100, checkpoint_every=2_000,
                                             validate_every=5_000))
  config.eval = config_dict.ConfigDict(dict(samples=0, validation_samples=500,
                                            pdj=(0.05, 0.1, 0.2), pcp_threshold=0.5))
  return config
