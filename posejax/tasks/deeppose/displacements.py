"""The refiners' training boxes come from the previous stage's errors (Toshev & Szegedy, arXiv
1312.4659, eq. 7): when a DeepPose stage s >= 2 starts, the cascade of stages 1..s-1 predicts
every training image ONCE; the mean and standard deviation per joint of its displacements
(prediction - truth, in torso diameters of the truth: `posejax.deeppose.displacement_statistics`)
go to workdir/displacements.npz, and the refiner's boxes are drawn around the truth moved by
such displacements. A resumed run reads the file, so it draws from the same statistics (the
pattern of `posejax.tasks.pose25d.pseudo_labels.load_or_predict`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from posejax import deeppose
from posejax.data.batching.sources import Source
from posejax.skeleton import Skeleton
from posejax.tasks.deeppose.evaluation import predict_views, sample_views
from posejax.tasks.deeppose.objective import (Settings, known_mask, torso_diameters,
                                              train_mask)

FILENAME = "displacements.npz"


def train_image_count(source: Source, train_images: int = 0) -> int:
  """How many training images the statistics cover: `train_images` when positive (at most the
  stream's size where it is known), else the whole finite "train_2d" stream.

  Raises:
    ValueError: neither is known (a source rendering without end, or a dataset that does not
      tell its training size: set deeppose.train_images).
  """
  size = getattr(source, "sizes", {}).get("train_2d")
  if train_images > 0:
    return min(train_images, size) if size else train_images
  if size is None:
    raise ValueError("The refiners' displacement statistics need the number of training "
                     "images: set deeppose.train_images (or data.in_memory=True with "
                     "data.sizes.train_2d)")
  return size


def compute(predict: Callable[[np.ndarray], np.ndarray], source: Source, count: int,
            settings: Settings, skeleton: Skeleton, batch_size: int) -> dict[str, np.ndarray]:
  """The previous stage's displacement statistics on the first `count` training images.

  Args:
    predict: images [n, S, S, 3] -> [stages, n, J, 2] (the cascade of stages 1..s-1).

  Returns:
    mean, std [J, 2] (torso diameters), predictions [count, J, 2] (stage s-1, crop pixels),
    counted [count, J] (the joints the statistics use), error_px (their mean error), count,
    previous (the workdirs, comma-separated).
  """
  data = predict_views(predict, sample_views(source, "train_2d", count), batch_size)
  gt, size, labelled = data["joints_2d"], data["image_size"], data["joints_2d_mask"]
  counted = train_mask(gt, labelled, size, size, settings.label_mask)
  diameter = torso_diameters(gt, known_mask(labelled, settings.label_mask), skeleton,
                             settings.diameter_joints)
  predictions = data["predictions"][-1]
  mean, std = (np.asarray(x) for x in deeppose.displacement_statistics(predictions, gt, counted,
                                                                       diameter))
  errors = np.linalg.norm(predictions - gt, axis=-1)
  return {"mean": mean, "std": std, "predictions": predictions, "counted": counted,
          "error_px": np.float64(np.sum(errors * counted) / max(counted.sum(), 1)),
          "count": np.int64(count), "previous": np.array(",".join(settings.previous))}


def load(path: str) -> dict[str, np.ndarray]:
  """The arrays of a displacements.npz."""
  with np.load(path) as stored:
    return {k: stored[k] for k in stored.files}


def load_or_compute(workdir: str, predict: Callable[[np.ndarray], np.ndarray], source: Source,
                    count: int, settings: Settings, skeleton: Skeleton, *, batch_size: int,
                    write: bool = True) -> dict[str, np.ndarray]:
  """The workdir's statistics: read from workdir/displacements.npz when a run made them before,
  else computed (`compute`) and, with `write` (process 0), saved there.

  Raises:
    ValueError: the file was made from other images or other previous stages (delete it to
      compute them again).
  """
  path = os.path.join(workdir, FILENAME)
  previous = ",".join(settings.previous)
  if os.path.exists(path):
    stats = load(path)
    if int(stats["count"]) != count or str(stats["previous"]) != previous or stats[
        "mean"].shape[0] != skeleton.num_joints:
      raise ValueError(
          f"{path} holds the statistics of {int(stats['count'])} images after stages "
          f"{str(stats['previous'])!r}, but this run has {count} images after {previous!r}: "
          "delete the file to compute them again")
    print(f"displacements: read {path}", flush=True)
  else:
    print(f"displacements: stage {settings.stage - 1} predicts {count} training images",
          flush=True)
    stats = compute(predict, source, count, settings, skeleton, batch_size)
    if write:
      partial = path + ".partial.npz"  # a run killed while writing leaves no half file behind
      np.savez(partial, **stats)
      os.replace(partial, path)
  spread = np.linalg.norm(stats["std"], axis=-1).mean()
  print(f"displacements: stage {settings.stage - 1} is {float(stats['error_px']):.2f} px off on "
        f"the training images; boxes drawn {spread:.3f} torso diameters around the truth "
        "(mean over joints)", flush=True)
  return stats
