"""posejax.data.batching.pipeline: batch keys per objective (the pose25d task's specs), no 3D in
weak supervision, sharding, resume."""

import jax
import numpy as np
import pytest
from ml_collections import config_dict

from posejax.data.batching import augment, pipeline, sources
from posejax.data.render import synthetic
from posejax.tasks import get_task
from posejax.train import step as step_lib

J = 17
POSE_3D_KEYS = ("joints_3d", "has_3d")


def task_and_spec(objective, **batch):
  """The pose25d task on a config with only these `batch` fields (the BatchSpec defaults
  otherwise, pseudo labels off) and its spec for `objective`."""
  task = get_task(config_dict.ConfigDict(dict(task="pose25d", batch=batch)))
  return task, task.batch_spec(objective)


def spec_of(objective, **batch):
  return task_and_spec(objective, **batch)[1]


def fake_source(num_views=6):
  """Samples whose every array encodes (stream, index), so provenance can be checked."""

  def source(stream, index):
    tag = float(index) + (0.5 if stream == "train_multiview" else 0.0)
    single = dict(image=np.full((8, 8, 3), index % 256, np.uint8),
                  camera=np.full((3, 3), tag, np.float32),
                  joints_2d=np.full((J, 2), tag, np.float32), joints_2d_mask=np.ones(J, bool),
                  joints_3d=np.full((J, 3), tag, np.float32))
    if stream == "train_2d":
      return single
    views = {k: np.stack([v] * num_views) for k, v in single.items()}
    views["camera"] = views["camera"] + np.arange(num_views)[:, None, None]  # tells views apart
    views["view_mask"] = np.ones(num_views, bool)
    return views

  return source


def test_weak_supervision_batches_carry_no_3d_and_no_multiview_labels():
  task, spec = task_and_spec("ws", labeled=4, multiview=2, num_views=4)
  batch = pipeline.make_batch(fake_source(), spec, step=0)
  assert set(batch["labeled"]) == {"image", "camera", "joints_2d", "joints_2d_mask",
                                   "augmentation"}
  assert set(batch["multiview"]) == {"image", "camera", "view_mask", "augmentation"}
  assert batch["labeled"]["image"].shape == (4, 8, 8, 3)
  assert batch["multiview"]["image"].shape == (2, 4, 8, 8, 3)
  step_lib.check_batch_keys(batch, task.batch_keys("ws"))  # what the train step accepts


def test_fully_supervised_and_2d_objectives():
  task, spec = task_and_spec("fs", labeled=4, multiview=2, num_views=4)
  batch = pipeline.make_batch(fake_source(), spec, step=0)
  assert batch["multiview"]["joints_3d"].shape == (2, 4, J, 3)
  # The views with 3D labels are the present ones (the depth loss masks by view_mask, there is
  # no has_3d any more); the 2D-labeled stream carries no 3D labels at all.
  assert set(batch["multiview"]) == {"image", "camera", "joints_2d", "joints_2d_mask",
                                     "joints_3d", "view_mask", "augmentation"}
  assert batch["multiview"]["view_mask"].all()
  assert set(batch["labeled"]) == {"image", "camera", "joints_2d", "joints_2d_mask",
                                   "augmentation"}
  assert not set(POSE_3D_KEYS) & set(batch["labeled"])
  step_lib.check_batch_keys(batch, task.batch_keys("fs"))
  with pytest.raises(ValueError, match="must not read"):  # a ws step refuses the fs batch
    step_lib.check_batch_keys(batch, task.batch_keys("ws"))
  only_2d = pipeline.make_batch(fake_source(),
                                spec_of("2d", labeled=4, multiview=2, augment=False), 0)
  assert set(only_2d) == {"labeled"}
  assert set(only_2d["labeled"]) == {"image", "camera", "joints_2d", "joints_2d_mask"}
  with pytest.raises(ValueError, match="objective 'semi'"):
    spec_of("semi")


def test_steps_hold_fixed_samples_and_processes_split_them():
  spec = spec_of("ws", labeled=4, multiview=2, num_views=4)
  whole = pipeline.make_batch(fake_source(), spec, step=3)
  np.testing.assert_array_equal(whole["labeled"]["camera"][:, 0, 0], [12, 13, 14, 15])
  parts = [pipeline.make_batch(fake_source(), spec, step=3, process_index=p, process_count=2)
           for p in range(2)]
  # Every key, the augmentation and the view choice included, is the same whatever the
  # number of processes (so 2 processes train exactly like 1).
  for stream in whole:
    for key in whole[stream]:
      np.testing.assert_array_equal(np.concatenate([p[stream][key] for p in parts]),
                                    whole[stream][key], err_msg=f"{stream}/{key}")
  np.testing.assert_array_equal(parts[1]["multiview"]["camera"][:, :, 0, 0] % 1, [[0.5] * 4])
  with pytest.raises(ValueError, match="does not split over 3"):
    pipeline.make_batch(fake_source(), spec, step=0, process_index=0, process_count=3)


def test_iterator_resumes_at_any_step_and_prefetching_changes_nothing():
  spec = spec_of("ws", labeled=2, multiview=2, num_views=4)
  straight = pipeline.batches(fake_source(), spec, prefetch=0)
  first_five = [next(straight) for _ in range(5)]
  resumed = pipeline.batches(fake_source(), spec, start_step=3, workers=2, prefetch=2)
  for expected in first_five[3:]:
    got = next(resumed)
    for stream in expected:
      for key in expected[stream]:
        np.testing.assert_array_equal(got[stream][key], expected[stream][key])


def test_select_views_subsets_or_pads():
  views = fake_source(num_views=6)("train_multiview", 0)
  rng = np.random.default_rng(0)
  chosen = pipeline.select_views(views, 4, rng)
  ids = chosen["camera"][:, 0, 0] - 0.5
  assert len(set(ids)) == 4 and set(ids) <= set(range(6)) and chosen["view_mask"].all()
  few = pipeline.select_views(fake_source(num_views=2)("train_multiview", 0), 4, rng)
  np.testing.assert_array_equal(few["view_mask"], [True, True, False, False])
  assert few["image"].shape[0] == 4 and not few["image"][2:].any()


def test_augmented_synthetic_batches_stay_camera_exact_and_share_flips():
  config = synthetic.SyntheticConfig(image_size=48, num_views=4, seed=2, motion="procedural")
  # Both streams with their 3D labels, to check the augmented cameras against them.
  keys = pipeline.IMAGE_KEYS + pipeline.LABEL_2D_KEYS + ("joints_3d",)
  spec = pipeline.BatchSpec(labeled=4, multiview=3, num_views=4, labeled_keys=keys,
                            multiview_keys=keys, flip_probability=0.5)
  batch = pipeline.make_batch(sources.synthetic_source(config), spec, step=1)
  flips = np.linalg.det(batch["multiview"]["augmentation"][..., :2, :2]) < 0  # [S, V]
  assert np.all(flips == flips[:, :1])  # one flip decision per sample
  for stream in ("labeled", "multiview"):
    part = batch[stream]
    augmented = jax.jit(augment.augment_batch)(part, part["augmentation"])
    assert not np.array_equal(augmented["camera"], part["camera"])
    for labels in (part, augmented):  # before and after augmentation
      pixels = np.einsum("...ij,...nj->...ni", np.asarray(labels["camera"], np.float64),
                         np.asarray(labels["joints_3d"], np.float64))
      np.testing.assert_allclose(pixels[..., :2] / pixels[..., 2:], labels["joints_2d"],
                                 atol=1e-3)


def test_training_streams_rendered_in_processes_are_the_samples_rendered_here(monkeypatch):
  data = config_dict.ConfigDict(dict(
      source="synthetic", image_size=32, num_views=2, seed=3, motion="procedural",
      occluder_probability=0.5, workers=0, data_dir="", in_memory=True, render_processes=2,
      sizes=dict(train_2d=3, train_multiview=2, validation=1, test=1)))
  # Two spawned processes render the training streams; evaluation renders nothing up front.
  monkeypatch.setattr(sources, "render_in_processes",
                      lambda *args: pytest.fail("an evaluation's source rendered in processes"))
  sources.make_source(data)
  monkeypatch.undo()
  source = sources.make_source(data, for_training=True)
  config = synthetic.config_from(data)
  expected = {(stream, index): synthetic.sample(config, stream, index % data.sizes[stream])
              for stream, index in [("train_2d", 0), ("train_2d", 2), ("train_2d", 4),
                                    ("train_multiview", 1), ("test", 0)]}
  rendered_here = []
  render = synthetic.sample
  monkeypatch.setattr(synthetic, "sample", lambda *key: rendered_here.append(key[1:])
                      or render(*key))
  for (stream, index), here in expected.items():
    sample = source(stream, index)
    assert sample.keys() == here.keys()
    for key in here:
      np.testing.assert_array_equal(sample[key], here[key], err_msg=f"{stream} {key}")
  assert rendered_here == [("test", 0)]  # the training streams came from the processes
  assert source.sizes == dict(data.sizes)
