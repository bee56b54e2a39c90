r"""Shared pieces of the configs: the stage list from the colon argument, and the 2.5D method's
settings as the paper gives them (docs/method.md section 5), which each dataset's config
adapts. Not a config itself.
"""

from __future__ import annotations

from ml_collections import config_dict

POSE25D_OBJECTIVES = ("2d", "fs", "ws")


def stage_objectives(arg: str | None, default: str, known=POSE25D_OBJECTIVES) -> list[str]:
  """The objectives of the stages named by a config's colon argument: "2d+ws" is stage 1 "2d"
  then stage 2 "ws"; "ws" alone is one stage (with `init_from`: from another run's weights)."""
  objectives = (arg or default).split("+")
  unknown = [o for o in objectives if o not in known]
  if unknown or len(set(objectives)) != len(objectives):
    raise ValueError(f"Unknown or repeated stage(s) {unknown or objectives} in "
                     f"{arg!r} after the colon: use objectives of {list(known)} joined by '+', "
                     f"e.g. {default}")
  return objectives


def stages(objectives: list[str], steps: dict[str, int],
           optims: dict[str, dict]) -> config_dict.ConfigDict:
  """`config.stages`: stage1, stage2, ... in order, each with its objective, steps and (where
  they differ from config.optim) its optimiser's fields, e.g. {"ws": {"learning_rate": 5e-5}}."""
  out = config_dict.ConfigDict()
  for index, objective in enumerate(objectives):
    stage = dict(objective=objective, steps=steps[objective])
    if objective in optims:
      stage["optim"] = dict(optims[objective])
    out[f"stage{index + 1}"] = stage
  return out


def synthetic_data(image_size: int, sizes: dict[str, int]) -> config_dict.ConfigDict:
  """`config.data` for the built-in synthetic people, rendered on the fly and kept in memory."""
  return config_dict.ConfigDict(dict(
      source="synthetic",
      image_size=image_size,
      num_views=4,
      seed=0,
      motion="auto",  # DeepMimic clips (pybullet) + procedural; or "procedural"; or a .npy path
      occluder_probability=0.2,
      workers=2,  # rendering threads
      data_dir="",  # a prepared dataset (experiments.prepare_data) instead of rendering
      in_memory=True,  # without data_dir: render each of `sizes` samples once, keep them
      # In memory: >0 renders the training streams in that many processes before training
      # (threads hold the GIL; for machines with cores to spare), 0 with `workers` threads
      # as batches first need them.
      render_processes=0,
      sizes=dict(sizes),
  ))


def pose25d(arg: str | None, default: str = "2d+ws") -> config_dict.ConfigDict:
  """The paper's recipe for task "pose25d", without data: HRNet-W32 at 256 px in bfloat16,
  128 2D-labeled images + 32 multi-view samples x 4 views, Adam 5e-4 -> 5e-5 at 50k of 60k
  steps, the 3D losses as written (they train the 2D too and differentiate through the root
  depth), the pseudo-label regulariser on. Stage 1's length is not in the source: 60k, like
  stage 2, is our choice."""
  objectives = stage_objectives(arg, default)
  config = config_dict.ConfigDict()
  config.task = "pose25d"
  config.seed = 0
  config.init_from = ""  # a workdir whose weights the first stage starts from
  config.stages = stages(objectives, steps={"2d": 60_000, "fs": 60_000, "ws": 60_000},
                         optims={})
  config.model = config_dict.ConfigDict(dict(name="hrnet_w32", dtype="bfloat16",
                                             temperature=50.0))
  # The augmentation's ranges (docs/method.md: scale +-20 %, rotation +-30 degrees), here so
  # that a command line can set them.
  config.batch = config_dict.ConfigDict(dict(labeled=128, multiview=32, num_views=4,
                                             augment=True, scale_range=0.2,
                                             max_rotation_deg=30.0, flip_probability=0.5))
  # schedule, warmup_steps, total_steps at posejax/train/optimizer.py's defaults, here so that
  # a command line can set them (e.g. --config.optim.schedule=cosine).
  config.optim = config_dict.ConfigDict(dict(name="adam", learning_rate=5e-4,
                                             schedule="step", decay_steps=(50_000,),
                                             decay_factor=0.1, warmup_steps=0, total_steps=0,
                                             clip_norm=0.0))
  # Terms by name: multiview = alpha (L_MC), limb = beta (L_B), depth = psi (L_Z, fs only).
  # scale_bone and scale_tilt keep reconstructions solvable (posejax/losses.py); not in L_B.
  # knee: ours, not the method's (posejax/losses.py knee_bend_loss); off in the paper's recipe.
  config.loss_weights = config_dict.ConfigDict(dict(heatmap=1.0, depth=5.0, multiview=0.1,
                                                    limb=1.0, knee=0.0, scale_bone=1.0,
                                                    scale_tilt=1.0))
  config.objective = config_dict.ConfigDict(dict(with_scale=False, heatmap_sigma=2.0,
                                                 losses_3d_move_2d=True,
                                                 max_scale_pair_gap=0.7,
                                                 root_depth_gradient=True, knee_margin=0.0))
  # The regulariser of docs/method.md section 4: in "ws", the stage-1 model's confident 2D
  # joints on the multi-view images, trained on with L_H (needs a finite multi-view stream).
  config.pseudo_labels = config_dict.ConfigDict(dict(enabled=True, threshold=0.5,
                                                     batch_size=256))
  config.train = config_dict.ConfigDict(dict(
      steps=0,  # > 0: stop after this many steps of the stages (0: all of them)
      log_every=100, checkpoint_every=2_000,
      validate_every=5_000,  # the best checkpoint (by validation MPJPE) is kept in workdir/best
      # On a CPU, YNNPACK's fusions (posejax.train.step.CPU_FUSIONS): HRNet-W32's step ran
      # 2.4x faster in float32 and 1.05x in bfloat16 (docs/results.md 3.5).
      cpu_fusions="ynn",
  ))
  config.eval = config_dict.ConfigDict(dict(samples=0, validation_samples=500))  # 0: all
  return config
