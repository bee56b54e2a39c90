"""The tests that train a task through the real loop on tiny data: a config shrunk to a few
steps on 32-px crops."""


def shrink(config, *, steps: int, samples: int, train_images: int, **train):
  """`config` trained `steps` steps on `train_images` rendered images of 32 px (one per fake
  device: tests/conftest.py's 8 CPU devices), evaluated on `samples` samples of 2 views;
  `train` overrides config.train (logged every step, no validation unless given)."""
  config.data.update(image_size=32, num_views=2, motion="procedural", occluder_probability=0.0,
                     workers=0, sizes=dict(train_2d=train_images, validation=samples,
                                           test=samples))
  config.batch.labeled = 8
  config.stages.stage1.steps = steps
  config.optim.decay_steps = ()
  config.train.update(dict(dict(log_every=1, checkpoint_every=2, validate_every=0), **train))
  config.eval.update(samples=samples, validation_samples=samples)
  return config
