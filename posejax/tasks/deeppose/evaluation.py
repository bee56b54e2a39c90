"""DeepPose's evaluation: every stage of the cascade and the mean-pose baseline on a held-out
stream, in the pixels of the stream's crops (Toshev & Szegedy, arXiv 1312.4659, section 4).

Per stage (and for the mean pose): the mean 2D error over the joints that count (`counted`:
known and inside the crop), over the visible ones and over the hidden ones apart; PDJ at the
fractions asked (a joint within fraction x the true torso diameter, <=; samples whose diameter
joints are not known do not count); PCP@threshold of the 10 LSP sticks under both rules ("both":
each end point within threshold x the true limb length; "mean": their mean error). Every figure
pools the joints (limbs) of all views, so visible and hidden joints average alike.

A multi-view sample (the synthetic validation and test streams) counts each present view as one
image; a single-image sample (LSP's test stream) as one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from posejax import metrics
from posejax.data.batching.sources import Source
from posejax.skeleton import Skeleton
from posejax.tasks.deeppose.objective import known_mask, torso_diameters, train_mask

PDJ_FRACTIONS = (0.05, 0.1, 0.2)
PCP_THRESHOLD = 0.5
BASELINE = "mean pose"


def sample_views(source: Source, stream: str, count: int,
                 visible_key: str = "joints_2d_mask") -> Iterator[dict]:
  """The present views of the first `count` samples of `stream`, one dict each: image [S, S, 3]
  uint8, joints_2d [J, 2], joints_2d_mask [J], visible [J] (`visible_key` where the sample has
  it, else its joints_2d_mask)."""
  for index in range(count):
    sample = source(stream, index)
    single = np.asarray(sample["image"]).ndim == 3
    take = (lambda x: np.asarray(x)[None]) if single else np.asarray  # noqa: E731
    images = take(sample["image"])
    present = take(sample["view_mask"]) if "view_mask" in sample else np.ones(len(images), bool)
    visible = take(sample.get(visible_key, sample["joints_2d_mask"]))
    joints, mask = take(sample["joints_2d"]), take(sample["joints_2d_mask"])
    for view in np.flatnonzero(present):
      yield dict(image=images[view], joints_2d=joints[view].astype(np.float32),
                 joints_2d_mask=mask[view].astype(bool), visible=visible[view].astype(bool))


def predict_views(predict: Callable[[np.ndarray], np.ndarray], views: Iterator[dict],
                  batch_size: int) -> dict[str, np.ndarray]:
  """Runs `predict` ([n, S, S, 3] -> [stages, n, J, 2]) over views in batches of `batch_size`
  (the last one padded with black images: one compilation serves all).

  Returns:
    predictions [stages, M, J, 2], joints_2d [M, J, 2], joints_2d_mask [M, J], visible [M, J],
    image_size (the crops' side; the views of a stream share it).
  """
  outputs, labels, pending = [], [], []

  def run():
    images = np.stack([v["image"] for v in pending])
    padding = batch_size - len(images)
    if padding:
      images = np.concatenate([images, np.zeros((padding,) + images.shape[1:], images.dtype)])
    outputs.append(np.asarray(predict(images))[:, :len(pending)])
    labels.extend({k: v[k] for k in ("joints_2d", "joints_2d_mask", "visible")}
                  for v in pending)
    pending.clear()

  size = None
  for view in views:
    if size is None:
      size = view["image"].shape[0]
    if view["image"].shape[:2] != (size, size):
      raise ValueError(f"The views of one stream must share their size: {size} x {size} and "
                       f"{view['image'].shape[:2]}")
    pending.append(view)
    if len(pending) == batch_size:
      run()
  if pending:
    run()
  if not labels:
    raise ValueError("No view to predict: the stream is empty")
  out = {k: np.stack([label[k] for label in labels]) for k in labels[0]}
  out["predictions"] = np.concatenate(outputs, axis=1)
  out["image_size"] = size
  return out


def row_metrics(pred, gt, counted, visible, diameter, limbs, *,
                fractions=PDJ_FRACTIONS, pcp_threshold: float = PCP_THRESHOLD) -> dict:
  """The metrics of one cascade stage (or the baseline), pooled over views.

  Args:
    pred, gt: [M, J, 2] crop pixels.
    counted: [M, J] bool, the joints that count; visible: [M, J] bool.
    diameter: [M] true torso diameters (0: unknown, the view's joints leave PDJ out).
    limbs: `metrics.lsp_like_limbs(skeleton)`.

  Returns:
    {name: float, or None where no joint (limb) of the kind counts}, and per_joint_error_px [J].
  """
  errors = np.asarray(metrics.joint_errors(pred, gt))
  visible = counted & visible
  hidden = counted & ~visible

  def mean(values, mask):
    return float(np.sum(values * mask) / np.sum(mask)) if np.any(mask) else None

  out = {"error_px": mean(errors, counted), "error_visible_px": mean(errors, visible),
         "error_hidden_px": mean(errors, hidden)}
  pdj_counted = counted & (diameter > 0)[:, None]
  for fraction in fractions:
    correct = errors <= fraction * diameter[:, None]
    out[f"pdj_{fraction:g}"] = mean(correct, pdj_counted)
    out[f"pdj_{fraction:g}_visible"] = mean(correct, pdj_counted & visible)
    out[f"pdj_{fraction:g}_hidden"] = mean(correct, pdj_counted & hidden)
  for rule in metrics.PCP_RULES:
    correct, limb_counted = (np.asarray(x) for x in metrics.limb_correct(
        pred, gt, limbs, counted, pcp_threshold, rule))
    out[f"pcp_{rule}"] = mean(correct, limb_counted)
  out["per_joint_error_px"] = [mean(errors[:, j], counted[:, j]) for j in range(gt.shape[1])]
  return out


def evaluate(predict: Callable[[np.ndarray], np.ndarray], mean_pose: np.ndarray,
             source: Source, *, stream: str, count: int, skeleton: Skeleton, label_mask: str,
             visible_key: str, diameter_joints, batch_size: int, fractions=PDJ_FRACTIONS,
             pcp_threshold: float = PCP_THRESHOLD) -> dict:
  """Every stage of a cascade and the mean pose on the first `count` samples of `stream`.

  Args:
    predict: images [n, S, S, 3] -> [stages, n, J, 2] crop pixels (the cascade).
    mean_pose: [J, 2] the training mean of N(y; b0), the baseline's prediction on every view.

  Returns:
    {"stages": [row per stage], "baseline": row, "views", "joints", "visible_joints",
    "hidden_joints", and the last stage's floats at the top level (error_px, pdj_0.2, ...:
    validation's scalars and the best checkpoint's metric)}; a row is `row_metrics`.
  """
  data = predict_views(predict, sample_views(source, stream, count, visible_key), batch_size)
  gt, size = data["joints_2d"], data["image_size"]
  counted = known_mask(data["joints_2d_mask"], label_mask) & train_mask(
      gt, data["joints_2d_mask"], size, size, "in_crop")
  visible = data["visible"]
  diameter = np.asarray(torso_diameters(gt, known_mask(data["joints_2d_mask"], label_mask),
                                        skeleton, diameter_joints))
  limbs = metrics.lsp_like_limbs(skeleton)
  row = lambda pred: row_metrics(pred, gt, counted, visible, diameter, limbs,  # noqa: E731
                                 fractions=fractions, pcp_threshold=pcp_threshold)
  centre = (size - 1) / 2
  baseline = np.broadcast_to(np.asarray(mean_pose, np.float32) * size + centre, gt.shape)
  results = {"stages": [row(pred) for pred in data["predictions"]], "baseline": row(baseline),
             "views": int(len(gt)), "joints": int(counted.sum()),
             "visible_joints": int((counted & visible).sum()),
             "hidden_joints": int((counted & ~visible).sum()), "image_size": int(size)}
  results.update({k: v for k, v in results["stages"][-1].items() if isinstance(v, float)})
  return results


def mean_pose(source: Source, count: int, label_mask: str) -> np.ndarray:
  """[J, 2] the mean of N(y; b0) (b0: the crop's square box) over the first `count` training
  images, per joint over the images where it counts (`train_mask`); 0 (the box centre) for a
  joint that never does."""
  total, seen = 0.0, 0.0
  for view in sample_views(source, "train_2d", count):
    size = view["image"].shape[0]
    mask = train_mask(view["joints_2d"], view["joints_2d_mask"], size, size, label_mask)
    normalised = (view["joints_2d"] - (size - 1) / 2) / size
    total = total + np.where(mask[:, None], normalised, 0.0)
    seen = seen + mask[:, None]
  return np.where(seen > 0, total / np.maximum(seen, 1), 0.0).astype(np.float32)


def _cell(value: float | None, percent: bool = False) -> str:
  if value is None:  # no joint of the kind
    return "-"
  return f"{100 * value:.1f}" if percent else f"{value:.2f}"


def format_results(results: dict, title: str = "held-out test") -> str:
  """A table of `evaluate`: the mean pose, then one row per stage, then any rows of other
  models on the same views (`results["other_rows"]`: {name: row}); errors in crop pixels, PDJ
  and PCP in percent."""
  fractions = sorted(float(k[4:]) for k in results["baseline"]
                     if k.startswith("pdj_") and k.count("_") == 1)
  columns = (["error px", "visible", "hidden"] + [f"PDJ@{f:g}" for f in fractions]
             + ["PCP both", "PCP mean"])
  lines = [f"DeepPose, {title}: {results['views']} views of {results['image_size']} px, "
           f"{results['joints']} joints in the crop ({results['visible_joints']} visible, "
           f"{results['hidden_joints']} hidden); errors in crop pixels, PDJ and PCP@0.5 in %",
           f"{'':<10}" + "".join(f"{c:>10}" for c in columns)]
  rows = ([(BASELINE, results["baseline"])]
          + [(f"stage {i + 1}", row) for i, row in enumerate(results["stages"])]
          + list(results.get("other_rows", {}).items()))
  for name, row in rows:
    cells = ([_cell(row["error_px"]), _cell(row["error_visible_px"]),
              _cell(row["error_hidden_px"])]
             + [_cell(row[f"pdj_{f:g}"], True) for f in fractions]
             + [_cell(row["pcp_both"], True), _cell(row["pcp_mean"], True)])
    lines.append(f"{name:<10}" + "".join(f"{c:>10}" for c in cells))
  return "\n".join(lines)
