r"""MPI-INF-3DHP with the paper's recipe (docs/method.md section 5): HRNet-W32 at 256x256, batches of
128 2D-labeled images (MPII) + 32 multi-view samples x 4 views (MPI-INF-3DHP S1-S8, a random
4 of the prepared cameras per sample, no labels in "ws"), Adam 5e-4 -> 5e-5 at 50k of 60k
steps; evaluation on the test set TS1-TS6 (valid frames): 3D PCK@150 mm and AUC on the
universal (height-normalised) skeletons, MPJPE, per activity.

    python -m experiments.prepare_data --dataset=mpii --manual_dir=~/mpii --data_dir=~/posejax_data
    python -m experiments.prepare_data --dataset=mpi_inf_3dhp --manual_dir=~/mpi_inf_3dhp \
        --data_dir=~/posejax_data
    python -m experiments.train --config=experiments/configs/mpi_inf_3dhp.py --workdir=~/runs/3dhp

Not run here (no dataset can be downloaded on the machines this was built on): the published
figures are 3D PCK 76.5 % (ws) and 80.2 % (fs), docs/method.md section 6.
"""

from ml_collections import config_dict

from experiments.configs import h36m


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
  config = h36m.get_config(arg)
  config.data.update(
      streams=dict(train_2d="mpii", train_multiview="mpi_inf_3dhp",
                   validation="mpi_inf_3dhp:test", test="mpi_inf_3dhp"),
      options=dict(mpi_inf_3dhp=dict(image_size=256), mpii=dict(image_size=256)))
  return config
