"""The tiny run of the tests that start `python -m experiments.train` (tests/cli_runs.py).

Augmentation stays on: each sample's augmentation is a function of its index, so the global
batch is the same for one process and for two.
"""

from experiments.configs import common, synthetic


def get_config(arg: str | None = None):
  config = synthetic.get_config(arg or "fs")  # fs: heatmap and depth losses, both streams
  # Every stage 2 steps, at the config's learning rate (5e-4), as the tolerances were measured.
  config.stages = common.stages(common.stage_objectives(arg, "fs"),
                                steps=dict.fromkeys(common.POSE25D_OBJECTIVES, 2),
                                optims={})
  config.data.update(image_size=32, num_views=2, motion="procedural", workers=0,
                     occluder_probability=0.0)
  config.batch.update(labeled=8, multiview=4, num_views=2)  # split over 2 processes x 2 devices
  # The cheapest HRNet (two branches): these runs test processes, signals and checkpoints, and
  # tracing and compiling are their cost. (The tolerances of tests/test_multiprocess.py were
  # measured with hrnet_w8_small and hold for it: BUILD_NOTES.md, sessions 10 and 11.)
  config.model.name = "hrnetv2_w4_micro"
  config.optim.clip_norm = 0.0
  config.loss_weights.depth = 5.0
  config.train.update(log_every=1, checkpoint_every=1)
  config.train.validate_every = 0  # the final evaluation is enough: each one compiles
  config.eval.samples = 1
  return config
