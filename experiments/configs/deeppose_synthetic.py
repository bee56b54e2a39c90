r"""DeepPose on the built-in synthetic data (no download), sized for a 2-core CPU; the colon
argument is the DeepPose stage (1, 2 or 3), each stage its own run, each refiner started from
the weights of the stage before it (`init_from`):

    python -m experiments.train --config=experiments/configs/deeppose_synthetic.py:1 --workdir=RUNS/dp1
    python -m experiments.train --config=experiments/configs/deeppose_synthetic.py:2 --workdir=RUNS/dp2 --config.deeppose.previous=RUNS/dp1 --config.init_from=RUNS/dp1
    python -m experiments.train --config=experiments/configs/deeppose_synthetic.py:3 --workdir=RUNS/dp3 --config.deeppose.previous=RUNS/dp1,RUNS/dp2 --config.init_from=RUNS/dp2
    python -m experiments.evaluate --workdir=RUNS/dp3

Stage 1 ("regress", 2500 steps, `deeppose_small`) sees the 128-px crop at 64 px; stages 2 and 3
("refine", 1200 steps each, `deeppose_small_fine`) see, per joint, a square of sigma = 1 torso
diameter around it at 32 px: nearly twice stage 1's resolution, the reason for the cascade.
Both networks have the same parameter shapes (a 4 x 4 x 128 map into the F layers), so a
refiner can start from the stage before it. When a refiner's run starts, the stages before it
predict the 4000 training images once, and their displacement statistics go to
workdir/displacements.npz. The refiners also train their other rows on the joints inside each
box (`deeppose.context_weight=1`, posejax's addition; the row of the box's joint alone is read,
as in the paper). Adam 5e-4 with x0.1 at 5/6 of each stage, gradient norm clipped to 1, no
flips (the synthetic people's white left limbs are the left/right cue). Every joint inside the
crop trains, hidden or not; the evaluation (100 held-out samples x 4 views) reports the visible
(joints_2d_mask) and the hidden joints apart, for each stage and for the mean-pose baseline.

The acceptance table adds posejax's heatmap 2D model on the same data (":heatmap", task
pose25d, HEATMAP_STEPS steps to fit the same 15 minutes) beside the cascade:

    python -m experiments.train --config=experiments/configs/deeppose_synthetic.py:heatmap --workdir=RUNS/heatmap
    python -m experiments.studies.deeppose_table --deeppose=RUNS/dp3 --heatmap=RUNS/heatmap

Measured on the 2-core VM, each command alone (BUILD_NOTES.md, session 12): the three stages in
834 s (266 + 279 + 289); held-out 2D error 17.00 px (mean pose), 11.16 (stage 1, 0.66 x),
9.41 (stage 2, -15.7 %), 8.72 (stage 3); PDJ@0.1 4.1, 14.4, 27.3, 32.1 %. That VM ran about
1.7 x faster than on the day of session 9, when stage 1 alone took 9.8 minutes.
"""

from ml_collections import config_dict

from experiments.configs import common, deeppose_common


HEATMAP = "heatmap"
STAGE1_STEPS = 2500
REFINE_STEPS = 1200
HEATMAP_STEPS = 1200  # fits the cascade's 15 minutes at 128 px


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
  config.stages = common.stages(["2d"], steps={"2d": HEATMAP_STEPS}, optims={})
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
