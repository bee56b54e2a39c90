r"""Human3.6M with the paper's recipe (docs/method.md section 5): HRNet-W32 at 256x256, batches
of 128 2D-labeled images (MPII) + 32 multi-view samples x 4 views (Human3.6M S1, S5-S8, no
labels in "ws"), Adam 5e-4 -> 5e-5 at 50k of 60k steps; evaluation on S9 and S11 (every 64th
frame) per action.

    python -m experiments.prepare_data --dataset=mpii --manual_dir=~/mpii --data_dir=~/posejax_data
    python -m experiments.prepare_data --dataset=h36m --manual_dir=~/h36m --data_dir=~/posejax_data
    python -m experiments.train --config=experiments/configs/h36m.py --workdir=~/runs/h36m

Stage 1 ("2d", L_H on MPII) then stage 2 ("ws"; ":2d+fs" for the supervised baseline), one run.
In "ws", the stage-1 model first labels every Human3.6M training view once (its joints above
confidence 0.5, in the workdir's pseudo_labels.npz), and L_H trains on those too: the
regulariser for studio captures, whose constant backgrounds look nothing like MPII's.
Not run here (no dataset can be downloaded on the machines this was built on): the published
figures for this recipe are MPJPE 67.4 mm (ws) and 56.1 mm (fs), docs/method.md section 6. On
one GPU a step of this batch takes HRNet-W32 forward + backward over 256 images: run
`python -m experiments.benchmark --sections=train` for the figure on your machine.
"""

from ml_collections import config_dict

from experiments.configs import common


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
  config = common.pose25d(arg, default="2d+ws")
  config.data = config_dict.ConfigDict(dict(
      source="datasets",
      data_dir="~/posejax_data",
      # Human3.6M has no validation split and papers report on S9 / S11: the best checkpoint
      # (by MPJPE on S9 / S11) is for monitoring; report the latest one.
      streams=dict(train_2d="mpii", train_multiview="h36m", validation="h36m:test",
                   test="h36m"),
      options=dict(h36m=dict(image_size=256), mpii=dict(image_size=256)),
      workers=8,
  ))
  return config
