"""The pseudo-label regulariser: the stage-1 model's confident 2D joints on the multi-view
images, in ws batches (never the dataset's labels), made once per run and kept in the workdir."""

import numpy as np
import pytest
from flax import nnx

from posejax.data.batching import pipeline, sources
from posejax.data.render import synthetic
from posejax.models import create_model
from posejax.models.inference import predict_metric
from posejax.tasks import get_task
from posejax.tasks.pose25d import pseudo_labels
from posejax.train import loop
from tests.test_train_loop import tiny_config

DATA = synthetic.SyntheticConfig(image_size=64, num_views=2, seed=3, motion="procedural",
                                 occluder_probability=0.0)


def _uneven_source():
  """Three multi-view samples: two views; one view; two views of which the second is masked."""
  plain = sources.finite_source(sources.synthetic_source(DATA), {"train_multiview": 3})

  def source(stream, index):
    sample = dict(plain(stream, index))
    if index % 3 == 1:
      sample = {k: v[:1] for k, v in sample.items()}
    if index % 3 == 2:
      sample["view_mask"] = np.array([True, False])
    return sample

  source.sizes = plain.sizes
  return source


def test_labels_are_the_models_joints_and_only_confident_present_ones_count():
  model = create_model("hrnetv2_w4_micro", rngs=nnx.Rngs(0))
  model.eval()
  source = _uneven_source()
  assert pseudo_labels.stream_size(source) == 3
  # batch_size 3: batches cross sample boundaries and the last one is padded.
  free = pseudo_labels.predict(model, source, 3, threshold=-1.0, batch_size=3)
  threshold = float(np.median(free["confidence"][0]))
  labels = pseudo_labels.predict(model, source, 3, threshold=threshold, batch_size=3)
  assert labels["joints_2d"].shape == (3, 2, 17, 2) and labels["joints_2d_mask"].shape == (3, 2, 17)
  for index in range(3):
    sample = source("train_multiview", index)
    expected = predict_metric(model, sample["image"], sample["camera"])
    views = len(sample["image"])
    np.testing.assert_allclose(labels["joints_2d"][index, :views], expected["joints_2d"],
                               atol=1e-3)
    confident = expected["confidence"] > threshold
    confident &= sample["view_mask"][:, None]
    np.testing.assert_array_equal(labels["joints_2d_mask"][index, :views], confident)
  assert not labels["joints_2d_mask"][1, 1].any()  # the view sample 1 lacks
  assert not labels["joints_2d_mask"][2, 1].any()  # the view sample 2 masks
  assert 0 < labels["joints_2d_mask"][0].mean() < 1
  np.testing.assert_array_equal(free["joints_2d_mask"][0], True)


def test_weakly_supervised_batches_carry_the_pseudo_labels_never_the_datasets():
  plain = sources.finite_source(sources.synthetic_source(DATA),
                                {"train_2d": 4, "train_multiview": 4})
  truth = np.stack([plain("train_multiview", i)["joints_2d"] for i in range(4)])
  fake = truth + 7.0  # not the dataset's labels
  mask = np.zeros(truth.shape[:-1], bool)
  mask[..., ::2] = True
  labelled = sources.with_pseudo_labels(plain, fake, mask)
  config = tiny_config("2d+ws", 1)
  config.batch.update(labeled=2, multiview=2, augment=False)
  config.pseudo_labels.enabled = True
  task = get_task(config)
  spec = task.batch_spec("ws")
  assert "joints_2d" not in pipeline.make_batch(plain, spec, step=1)["multiview"]
  multiview = pipeline.make_batch(labelled, spec, step=1)["multiview"]  # samples 2 and 3
  np.testing.assert_array_equal(multiview["joints_2d"], fake[2:4])
  np.testing.assert_array_equal(multiview["joints_2d_mask"], mask[2:4])
  assert "joints_3d" not in multiview and "has_3d" not in multiview
  fs = pipeline.make_batch(labelled, task.batch_spec("fs"), step=1)
  np.testing.assert_array_equal(fs["multiview"]["joints_2d"], truth[2:4])  # fs: the dataset's
  labelled_2d = pipeline.make_batch(labelled, spec, step=1)["labeled"]
  np.testing.assert_array_equal(labelled_2d["joints_2d"],
                                pipeline.make_batch(plain, spec, step=1)["labeled"]["joints_2d"])
  with pytest.raises(ValueError, match="differ"):
    sources.with_pseudo_labels(plain, fake, mask[:, :1])


def _pseudo_config(steps):
  config = tiny_config("2d+ws", (1, steps - 1), validate_every=0)
  config.data.sizes.train_multiview = 6
  config.pseudo_labels.update(enabled=True, threshold=0.0, batch_size=8)
  return config


def test_a_run_predicts_the_labels_once_and_its_resumption_reads_them(tmp_path, capsys):
  loop.train_and_evaluate(_pseudo_config(2), str(tmp_path))
  out = capsys.readouterr().out
  assert "pseudo labels: 6 multi-view samples" in out and "read" not in out
  with np.load(tmp_path / pseudo_labels.FILENAME) as stored:
    made = {k: stored[k] for k in stored.files}
  assert made["joints_2d"].shape == (6, 2, 17, 2) and made["joints_2d_mask"].any()
  loop.train_and_evaluate(_pseudo_config(3), str(tmp_path))  # resumes in stage ws
  assert f"pseudo labels: read {tmp_path / pseudo_labels.FILENAME}" in capsys.readouterr().out
  config = _pseudo_config(4)
  config.pseudo_labels.threshold = 0.5
  with pytest.raises(ValueError, match="threshold 0.0, but this run has 6 at 0.5"):
    loop.train_and_evaluate(config, str(tmp_path))


def test_pseudo_labels_need_a_finite_multiview_stream(tmp_path):
  config = _pseudo_config(2)
  config.data.in_memory = False
  with pytest.raises(ValueError, match="finite 'train_multiview' stream"):
    loop.train_and_evaluate(config, str(tmp_path))
  assert not list((tmp_path / "checkpoints").iterdir())  # refused before stage 1 began


def test_quality_report_measures_kept_and_dropped_joints_against_the_datasets_labels():
  plain = sources.finite_source(sources.synthetic_source(DATA), {"train_multiview": 2})
  truth = np.stack([plain("train_multiview", i)["joints_2d"] for i in range(2)])
  offset = np.zeros_like(truth)
  offset[0] = (3.0, 4.0)  # sample 0: 5 px off, sample 1: exact
  confidence = np.where(np.arange(2)[:, None, None] == 0, 0.2, 0.9) * np.ones(truth.shape[:-1])
  labels = {"joints_2d": truth + offset, "confidence": confidence}
  errors, confidences = pseudo_labels.quality(labels, plain)
  labeled = np.stack([plain("train_multiview", i)["joints_2d_mask"] for i in range(2)])
  assert len(errors) == labeled.sum()
  np.testing.assert_allclose(errors, np.where(confidences < 0.5, 5.0, 0.0), atol=1e-4)
  table = pseudo_labels.format_quality(errors, confidences, [0.5]).splitlines()
  share = 100 * labeled[1].sum() / labeled.sum()
  assert table[2].split() == ["0.50", f"{share:.1f}%", "0.00", "0.00", "5.00"]
