"""posejax.data.render.synthetic_tfds: prepare once, read back the same samples, clear errors."""

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")

from posejax.data.batching import pipeline  # noqa: E402
from posejax.data.render import synthetic, synthetic_tfds

CONFIG = synthetic.SyntheticConfig(image_size=32, num_views=3, seed=5, motion="procedural")
SIZES = {"train_2d": 3, "train_multiview": 2, "test": 2}


def test_prepared_records_are_the_rendered_samples(tmp_path):
  builder = synthetic_tfds.prepare(CONFIG, SIZES, str(tmp_path))
  assert {s: builder.info.splits[s].num_examples for s in SIZES} == SIZES
  for stream, count in SIZES.items():
    records = builder.as_data_source(split=stream)
    seen = set()
    for position in range(count):
      record = records[position]
      index = int(record["index"])
      seen.add(index)
      expected = synthetic.sample(CONFIG, stream, index)
      got = synthetic_tfds.from_record(record, stream)
      assert set(got) == set(expected), stream
      for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{stream}/{key}")
    assert seen == set(range(count))
  assert not list(tmp_path.glob("**/incomplete*"))  # nothing half-written left behind

  source = synthetic_tfds.prepared_source(CONFIG, SIZES, str(tmp_path))
  spec = pipeline.BatchSpec(labeled=2, multiview=2, num_views=3)  # a "ws" batch's keys
  batch = pipeline.make_batch(source, spec, step=0)
  assert batch["multiview"]["image"].shape == (2, 3, 32, 32, 3)
  assert batch["labeled"]["joints_2d"].shape == (2, 17, 2)


def test_missing_prepared_data_names_the_command(tmp_path):
  with pytest.raises(FileNotFoundError, match="experiments.prepare_data"):
    synthetic_tfds.prepared_source(CONFIG, SIZES, str(tmp_path / "nothing_here"))
