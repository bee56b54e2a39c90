r"""DeepPose's acceptance table: the mean pose, every stage of a cascade and posejax's heatmap 2D
model, on the same held-out views, in one table (2D error, PDJ, PCP; crop pixels and %).

    python -m experiments.studies.deeppose_table --deeppose=RUNS/dp3 --heatmap=RUNS/heatmap

`--deeppose` is the workdir of the cascade's last stage (it names the ones before it);
`--heatmap` a workdir of task "pose25d" trained on the same data section, e.g. with
`experiments/configs/deeppose_synthetic.py:heatmap`. The heatmap model's joints are the
soft-argmax of its heatmaps, in the pixels of the same crops (the camera does not enter).
Written to DEEPPOSE/table.json beside the console table.
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags

from experiments import cli
from posejax.data.batching.sources import make_source
from posejax.evaluators.pose3d import sample_count
from posejax.models.inference import predict_metric
from posejax.tasks import get_task
from posejax.tasks.deeppose import evaluation
from posejax.train import checkpoints

_DEEPPOSE = flags.DEFINE_string("deeppose", None, "Workdir of the cascade's last stage.")
_HEATMAP = flags.DEFINE_string("heatmap", None, "Workdir of a pose25d (heatmap) model.")


def heatmap_predict(model):
  """images [n, S, S, 3] -> [1, n, J, 2]: the PoseNet's 2D joints as a one-stage "cascade"."""

  def predict(images):
    size = images.shape[1]
    # Any camera will do: joints_2d is the heatmaps' soft-argmax, before the camera enters.
    camera = np.array([[size, 0, (size - 1) / 2], [0, size, (size - 1) / 2], [0, 0, 1]],
                      np.float32)
    cameras = np.broadcast_to(camera, (len(images), 3, 3))
    return predict_metric(model, images, cameras)["joints_2d"][None]

  return predict


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _DEEPPOSE.value or not _HEATMAP.value:
    raise app.UsageError("--deeppose and --heatmap are both required")
  cascade, config = checkpoints.restore_model(_DEEPPOSE.value)
  heatmap, heatmap_config = checkpoints.restore_model(_HEATMAP.value)
  if config.get("task") != "deeppose" or heatmap_config.get("task") != "pose25d":
    raise ValueError(f"--deeppose must be a deeppose workdir and --heatmap a pose25d one; got "
                     f"{config.get('task')!r} and {heatmap_config.get('task')!r}")
  if heatmap_config.data.to_dict() != config.data.to_dict():
    raise ValueError("The two workdirs were trained on different data sections; the table "
                     "compares models on the same held-out views")
  task = get_task(config)
  source = make_source(config.data)
  count = sample_count(source, "test", config.eval.samples)
  print(f"Evaluating the cascade of {_DEEPPOSE.value} and the heatmap model of "
        f"{_HEATMAP.value} on {count} held-out samples", flush=True)
  results = task.evaluate(cascade, source, stream="test", samples=config.eval.samples)
  settings = task.settings
  heatmap_results = evaluation.evaluate(
      heatmap_predict(heatmap), task.mean_pose(source), source, stream="test", count=count,
      skeleton=task.skeleton, label_mask=settings.label_mask, visible_key=settings.visible_key,
      diameter_joints=settings.diameter_joints, batch_size=int(config.deeppose.predict_batch_size),
      fractions=tuple(config.eval.pdj), pcp_threshold=config.eval.pcp_threshold)
  results["other_rows"] = {"heatmap": heatmap_results["stages"][0]}
  print(evaluation.format_results(results, "held-out test"))
  path = os.path.join(os.path.expanduser(_DEEPPOSE.value), "table.json")
  with open(path, "w") as f:
    json.dump(results, f, indent=1)
  print(f"Written to {path}")


if __name__ == "__main__":
  cli.run(main)
