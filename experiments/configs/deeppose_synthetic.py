r"""DeepPose on the built-in synthetic data (no download), sized for a 2-core CPU; the colon
argument is the DeepPose stage (1, 2 or 3), each stage its own run:

    python -m experiments.train --config=experiments/configs/deeppose_synthetic.py:1 --workdir=RUNS/dp1
    python -m experiments.train --config=experiments/configs/deeppose_synthetic.py:2 --workdir=RUNS/dp2 --config.deeppose.previous=RUNS/dp1
    python -m experiments.train --config=experiments/configs/deeppose_synthetic.py:3 --workdir=RUNS/dp3 --config.deeppose.previous=RUNS/dp1,RUNS/dp2
    python -m experiments.evaluate --workdir=RUNS/dp3

Stage 1 ("regress", 3000 steps) sees the 128-px crop at 64 px; stages 2 and 3 ("refine", 2000
steps each) see, per joint, a square of sigma = 1 torso diameter around it at 32 px: twice stage
1's resolution, the reason for the cascade. When a refiner's run starts, the stages before it
predict the 4000 training images once, and their displacement statistics go to
workdir/displacements.npz. The small regressor (`deeppose_small`), Adam 5e-4 with x0.1 at 5/6
of each stage, gradient norm clipped to 1, no flips (the synthetic people's white left limbs
are the left/right cue). Every joint inside the crop trains, hidden or not; the evaluation
(100 held-out samples x 4 views) reports the visible (joints_2d_mask) and the hidden joints
apart, for each stage and for the mean-pose baseline.

The acceptance table adds posejax's heatmap 2D model on the same data (":heatmap", task
pose25d) beside the cascade:

    python -m experiments.train --config=experiments/configs/deeppose_synthetic.py:heatmap --workdir=RUNS/heatmap
    python -m experiments.studies.deeppose_table --deeppose=RUNS/dp3 --heatmap=RUNS/heatmap

Measured on the 2-core VM (BUILD_NOTES.md, session 9): stage 1 alone took 9.8 minutes and ends
at 10.75 px against the mean pose's 17.00 (0.63 x; PDJ@0.1 16.1 % against 4.1 %). Stage 2 did
not help enough: its validation error went from stage 1's 11.04 px to 10.62-10.88 px in 1350
steps (the acceptance asks for 15 % less), its boxes drawn 0.5 torso diameters around the truth
on average in boxes 1 diameter wide. Boxes of 2 diameters, or 1 diameter at 48 px, did no
better (session 10): the refiner re-estimates each joint about 11 px off wherever its box is
centred. Not yet met either: the 15 minutes for all three stages.
"""

from ml_collections import config_dict

from experiments.configs import common, deeppose_common


HEATMAP = "heatmap"
STAGE1_STEPS = 2500
REFINE_STEPS = 600
HEATMAP_STEPS = 3000  # its wall time is reported beside the cascade's


def data() -> config_dict.ConfigDict:
  return common.synthetic_data(image_size=128,
                               sizes=dict(train_2d=4000, validation=100, test=100))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
  if arg == HEATMAP:
    return heatmap_baseline()
  config = deeppose_common.deeppose(arg, steps=STAGE1_STEPS, refine_steps=REFINE_STEPS)
  config.deeppose.update(sigma=1.0, stage1_size=64, refine_size=32, label_mask="in_crop",
                         visible_key="joints_2d_mask", mean_pose_samples=0, context_weight=1.0)
  refiner = config.deeppose.stage > 1
  config.model.update(name="deeppose_small_fine" if refiner else "deeppose_small",
                      dtype="float32", dropout=0.3)
  config.data = data()
  config.batch.update(labeled=32, flip_probability=0.0, max_rotation_deg=30.0, scale_range=0.2)
  steps = config.stages.stage1.steps
  config.optim.update(name="adam", learning_rate=5e-4, decay_steps=(steps * 5 // 6,),
                      decay_factor=0.1, clip_norm=1.0)
  config.train.update(log_every=50, checkpoint_every=250, validate_every=250)
  config.eval.update(samples=100, validation_samples=25)
  return config


def heatmap_baseline() -> config_dict.ConfigDict:
  """posejax's heatmap 2D model beside the cascade (task "pose25d", objective "2d"): the same
  data, augmentation and batch, the small HRNet on the whole 128-px crop, for HEATMAP_STEPS
  steps. `python -m experiments.studies.deeppose_table` puts it beside the cascade."""
  config = common.pose25d("2d")
  config.stages = common.stages(["2d"], steps={"2d": HEATMAP_STEPS}, learning_rates={})
  config.data = data()
  config.batch.update(labeled=32, multiview=0, flip_probability=0.0, max_rotation_deg=30.0,
                      scale_range=0.2)
  config.model.update(name="hrnetv2_w8_small", dtype="float32")
  config.optim.update(learning_rate=5e-4, decay_steps=(HEATMAP_STEPS * 5 // 6,),
                      decay_factor=0.1, clip_norm=1.0)
  config.pseudo_labels.enabled = False
  config.train.update(log_every=50, checkpoint_every=250, validate_every=250)
  config.eval.update(samples=100, validation_samples=25)
  return config
