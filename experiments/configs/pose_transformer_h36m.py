r"""The joint-query 3D pose transformer (task "pose_transformer") on Human3.6M, at paper scale:
HRNet-W32 at 256 px, d_model 256, 8 heads, FFN 1024, 6 encoder + 6 decoder layers, N = 100
queries, AdamW 1e-4 with the backbone at x0.1 (DETR's recipe), trained on single Human3.6M
views with their 3D labels (S1, S5-S8) and evaluated on S9 and S11 (every 64th frame) per
action. The colon argument picks the queries: ":hungarian" (default: 100 candidates, matched by
the Hungarian algorithm, read out by class) or ":fixed" (the force-aligned baseline: 17
queries, query j is joint j).

    python -m experiments.prepare_data --dataset=h36m --manual_dir=~/h36m --data_dir=~/posejax_data
    python -m experiments.train --config=experiments/configs/pose_transformer_h36m.py --workdir=~/runs/tr_h36m
    python -m experiments.train --config=experiments/configs/pose_transformer_h36m.py:fixed --workdir=~/runs/tr_h36m_fixed
    python -m experiments.evaluate --workdir=~/runs/tr_h36m

Not run here (no dataset can be downloaded on the machines this was built on); the source gives
no Human3.6M figure to reproduce. The encoder attends over all tokens ("full"): at 256 px the
four HRNet levels are 5440 tokens, where the paper's deformable attention would sample 4 points
per level instead (not implemented).
"""

from ml_collections import config_dict

from experiments.configs import common

OBJECTIVES = ("matched",)
MATCHINGS = ("hungarian", "fixed")


def matching_of(arg: str | None) -> str:
  """The colon argument: "hungarian" (default) or "fixed"."""
  matching = arg or "hungarian"
  if matching not in MATCHINGS:
    raise ValueError(f"Unknown queries {arg!r} after the colon: use one of {list(MATCHINGS)}")
  return matching


def recipe(arg: str | None = None) -> config_dict.ConfigDict:
  """The paper-scale recipe of task "pose_transformer", without data (DETR's optimiser, PRTR's
  matcher and loss weights; the coarse-to-fine tolerances and the layer weights are ours, the
  source's formulas being lost)."""
  config = config_dict.ConfigDict()
  config.task = "pose_transformer"
  config.seed = 0
  config.init_from = ""  # a workdir whose weights the first stage starts from
  # "" (the whole model, from a pose_transformer workdir) or "backbone" (the HRNet alone, from
  # any task's workdir with the same backbone: a PoseNet's 2D stage, as DETR starts from a
  # pretrained backbone).
  config.init_from_part = ""
  config.stages = common.stages(["matched"], steps={"matched": 60_000}, optims={})
  config.model = config_dict.ConfigDict(dict(
      name="hrnet_w32", dtype="bfloat16", d_model=256, num_heads=8, ffn_dim=1024,
      encoder_layers=6, decoder_layers=6, num_queries=100, num_levels=4, dropout=0.1,
      refine_from_previous=True, detach_previous=True, matching=matching_of(arg),
      attention="full"))
  # tau_l: a matched joint closer than tau_l (in thorax-pelvis units, ~0.3 m) costs nothing at
  # layer l, so the early layers learn the coarse pose and leave the details to the later ones.
  config.objective = config_dict.ConfigDict(dict(
      solver="optax", cost_class=1.0, cost_coord=5.0, eos_coef=0.1,
      tolerances=(0.2, 0.15, 0.1, 0.05, 0.02, 0.0), layer_gamma=1.0, aux_loss=True))
  config.loss_weights = config_dict.ConfigDict(dict(cls=1.0, coord=5.0))
  # Scale augmentation only: a rotated crop shows a turned person whose camera-frame 3D label
  # did not turn (the task refuses a rotation).
  config.batch = config_dict.ConfigDict(dict(labeled=32, augment=True, scale_range=0.2,
                                             max_rotation_deg=0.0, flip_probability=0.0))
  config.optim = config_dict.ConfigDict(dict(
      name="adamw", learning_rate=1e-4, weight_decay=1e-4, clip_norm=0.1,
      decay_steps=(50_000,), decay_factor=0.1, multipliers={"backbone": 0.1}))
  # cpu_fusions: as the pose25d configs' HRNet-W32 (experiments/configs/common.py).
  config.train = config_dict.ConfigDict(dict(steps=0, log_every=100, checkpoint_every=2_000,
                                             validate_every=5_000, cpu_fusions="ynn"))
  config.eval = config_dict.ConfigDict(dict(samples=0, validation_samples=500))  # 0: all
  return config


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
  config = recipe(arg)
  config.data = config_dict.ConfigDict(dict(
      source="datasets",
      data_dir="~/posejax_data",
      # Single Human3.6M views with 3D labels; S9 / S11 for validation and test (Human3.6M has
      # no validation split: the best checkpoint is for monitoring, report the latest one).
      streams=dict(train_2d="h36m", validation="h36m:test", test="h36m"),
      options=dict(h36m=dict(image_size=256)),
      workers=8,
  ))
  return config
