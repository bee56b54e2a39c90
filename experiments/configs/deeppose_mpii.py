r"""DeepPose with the paper's recipe (Toshev & Szegedy, arXiv 1312.4659) on real single-person
crops: the AlexNet regressor at 220 px (dropout 0.6), Adagrad 5e-4, batches of 128, flips, 3
stages with sigma = 2 torso diameters (their LSP setting; they chose among 1.5, 1.7, 2.0, 2.3
on held-out data). The colon argument is the DeepPose stage, each stage its own run:

    python -m experiments.prepare_data --dataset=lsp --manual_dir=~/lsp --data_dir=~/posejax_data --option=image_size=220
    python -m experiments.train --config=experiments/configs/deeppose_mpii.py:1 --workdir=~/runs/dp1
    python -m experiments.train --config=experiments/configs/deeppose_mpii.py:2 --workdir=~/runs/dp2 --config.deeppose.previous=~/runs/dp1
    python -m experiments.train --config=experiments/configs/deeppose_mpii.py:3 --workdir=~/runs/dp3 --config.deeppose.previous=~/runs/dp1,~/runs/dp2

Data: LSP + LSP-extended (11000 training images, the paper's LSP training set), tested on the
1000 LSP test images; the labelled joints (occluded ones included: LSP's annotators placed them)
train, and the evaluation reports visible and occluded joints apart (joints_2d_visible). MPII's
training images are `--config.data.streams.train_2d=mpii --config.deeppose.train_images=N`
(prepared at image_size 220). LSP has no validation split: the best checkpoint (by the error on
the test images) is for monitoring only; report the latest one, and choose sigma on a split of
the training images.

Steps: stage 1 300k (asanakoy/deeppose_tf#2: 300-400k iterations before the predictions leave
the mean pose; the paper gives no count); a refiner 40 N J / (batch k) steps, so that every
(image, joint) is drawn about 40 times, as in the paper (40 boxes per joint and image).
Not run here (no dataset can be downloaded on the machines this was built on). The paper's LSP
PCP@0.5 after stage 3: 0.61 mean (upper arm 0.56, lower arm 0.38, upper leg 0.77, lower leg
0.71).
"""

import math

from ml_collections import config_dict

from experiments.configs import deeppose_common

TRAIN_IMAGES = 11_000  # LSP's 1000 + LSP-extended's 10000
LSP_JOINTS = 14
BATCH = 128
BOXES_PER_IMAGE = 8
REFINE_STEPS = math.ceil(40 * TRAIN_IMAGES * LSP_JOINTS / (BATCH * BOXES_PER_IMAGE))  # 6016


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
  config = deeppose_common.deeppose(arg, steps=300_000, refine_steps=REFINE_STEPS)
  config.deeppose.update(train_images=TRAIN_IMAGES, samples_per_image=BOXES_PER_IMAGE)
  config.batch.update(labeled=BATCH)
  config.data = config_dict.ConfigDict(dict(
      source="datasets",
      data_dir="~/posejax_data",
      streams=dict(train_2d="lsp", validation="lsp:test", test="lsp:test"),
      options=dict(lsp=dict(image_size=220), mpii=dict(image_size=220)),
      workers=8,
  ))
  return config
