r"""The pose transformer's acceptance table: the training mean pose, posejax's fully supervised
2.5D model (task "pose25d", objective "fs"), the force-aligned transformer and the Hungarian
one, on the same held-out views, in one table (MPJPE, N-MPJPE, PA-MPJPE in mm, 3D PCK, AUC;
for the transformers the class read-out's agreement with the oracle matching and the oracle
MPJPE per decoder layer).

    python -m experiments.studies.pose_transformer_table --hungarian=RUNS/tr \
        --fixed=RUNS/tr_fixed --fs=RUNS/fs

Every workdir must have been trained on the same rendering (`config.data` apart from the
training streams' sizes). The mean pose is the mean of `--mean_pose_samples` training samples'
root-relative, scale-normalised poses (the transformer's target), scaled to mm like a
prediction (by its own mean bone lengths). Written to HUNGARIAN/table.json beside the console
table.
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags

from experiments import cli
from posejax.data.batching.sources import make_source
from posejax.evaluators import pose3d
from posejax.tasks import get_task
from posejax.tasks.pose_transformer import evaluation, objective
from posejax.train import checkpoints

_HUNGARIAN = flags.DEFINE_string("hungarian", None, "Workdir of the Hungarian-matched model.")
_FIXED = flags.DEFINE_string("fixed", None, "Workdir of the force-aligned model (optional).")
_FS = flags.DEFINE_string("fs", None, "Workdir of a pose25d model (optional).")
_MEAN_POSE_SAMPLES = flags.DEFINE_integer("mean_pose_samples", 1000,
                                          "Training samples the mean pose averages.")

_TRAIN_STREAM = "train_2d"  # the labelled stream the transformer trains on


def rendering(data) -> dict:
  """What decides the held-out views: the data section without the training streams' sizes."""
  data = data.to_dict()
  sizes = {k: v for k, v in data.pop("sizes", {}).items() if not k.startswith("train")}
  return dict(data, sizes=sizes)


def mean_pose(source, skeleton, samples: int) -> np.ndarray:
  """[J, 3] the mean root-relative, scale-normalised pose of the first training samples."""
  poses = [np.asarray(objective.target_pose(np.asarray(source(_TRAIN_STREAM, i)["joints_3d"]),
                                            skeleton)).reshape(-1, skeleton.num_joints, 3)
           for i in range(samples)]
  return np.concatenate(poses).mean(axis=0)


def constant_predict(pose: np.ndarray):
  """A "model" that predicts the same normalised pose for every image, scaled as a
  prediction is (`evaluation.metric_poses`)."""
  pose_mm, _ = evaluation.metric_poses(pose[None])

  def predict(images, cameras):
    del cameras
    return {"pose_3d_mm": np.repeat(pose_mm, len(images), axis=0),
            "valid": np.ones(len(images), bool)}

  return predict


def format_table(rows: dict[str, dict]) -> str:
  """One line per row: the 3D errors, then the transformers' own figures where present."""
  lines = [f"{'':<26}{'MPJPE':>8}{'N-MPJPE':>9}{'PA-MPJPE':>9}{'PCK':>7}{'AUC':>7}{'views':>7}"
           f"{'class=oracle':>14}  oracle MPJPE per layer"]
  for name, r in rows.items():
    line = (f"{name:<26}{r['mpjpe']:8.1f}{r['n_mpjpe']:9.1f}{r['pa_mpjpe']:9.1f}"
            f"{100 * r['pck']:6.1f}%{100 * r['auc']:6.1f}%{r['views']:7d}")
    if "class_matches_oracle" in r:
      layers = " ".join(f"{v:.1f}" for v in r["oracle_mpjpe_per_layer"])
      line += f"{100 * r['class_matches_oracle']:13.1f}%  {layers}"
    lines.append(line)
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _HUNGARIAN.value:
    raise app.UsageError("--hungarian is required")
  workdirs = {"Hungarian transformer": _HUNGARIAN.value, "force-aligned transformer":
              _FIXED.value, "fs 2.5D (pose25d)": _FS.value}
  workdirs = {name: path for name, path in workdirs.items() if path}
  loaded = {name: checkpoints.restore_model(path) for name, path in workdirs.items()}
  expected_tasks = {"fs 2.5D (pose25d)": "pose25d"}
  config = loaded["Hungarian transformer"][1]
  for name, (_, other) in loaded.items():
    task_name = expected_tasks.get(name, "pose_transformer")
    if other.get("task") != task_name:
      raise ValueError(f"{workdirs[name]} is a {other.get('task')!r} workdir; {name} must be "
                       f"a {task_name!r} one")
    if rendering(other.data) != rendering(config.data):
      raise ValueError(f"{workdirs[name]} was trained on another rendering than "
                       f"{workdirs['Hungarian transformer']}; the table compares models on the "
                       "same held-out views")
  source = make_source(config.data)
  samples = config.eval.samples
  task = get_task(config)
  print(f"Evaluating {len(loaded)} models and the mean pose on "
        f"{pose3d.sample_count(source, 'test', samples)} held-out samples", flush=True)
  rows = {"mean pose": pose3d.evaluate(
      constant_predict(mean_pose(source, task.skeleton, _MEAN_POSE_SAMPLES.value)), source,
      stream="test", samples=samples)}
  for name in ("fs 2.5D (pose25d)", "force-aligned transformer", "Hungarian transformer"):
    if name in loaded:
      model, model_config = loaded[name]
      rows[name] = get_task(model_config).evaluate(model, source, stream="test", samples=samples)
  print(format_table(rows))
  path = os.path.join(os.path.expanduser(_HUNGARIAN.value), "table.json")
  with open(path, "w") as f:
    json.dump(rows, f, indent=1)
  print(f"Written to {path}")


if __name__ == "__main__":
  cli.run(main)
