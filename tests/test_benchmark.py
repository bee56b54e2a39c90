"""experiments.benchmark: the NumPy reference agrees with the JAX path (value and gradient);
every section measures what it says."""

import os

import jax
import numpy as np
import pytest

from experiments import benchmark
from posejax import geometry, losses
from posejax.data import pipeline, synthetic


def test_numpy_reference_matches_jax_loss_and_gradient():
  batch = benchmark.multiview_batch(num_samples=3, seed=1)
  poses, _, valid = geometry.reconstruct(batch["joints_2d"], batch["rel_depth"], batch["camera"])
  assert bool(valid.all())
  jax_loss, jax_gradient = jax.value_and_grad(losses.multiview_consistency_loss)(
      poses, batch["confidence"], valid)
  numpy_loss, numpy_gradient = benchmark.numpy_loss_and_pose_gradient(batch)
  assert numpy_loss > 0.01
  np.testing.assert_allclose(jax_loss, numpy_loss, rtol=1e-5)
  np.testing.assert_allclose(jax_gradient, numpy_gradient, atol=1e-5)


def test_geometry_section_reports_every_column():
  rows = benchmark.geometry_section(repeats=1, sizes=[2])
  assert len(rows) == 1
  row = rows[0]
  assert row["views"] == 8 and row["loss_rel_diff"] < 1e-4
  assert row["jax_ms"] > 0 and row["numpy_loop_ms"] > 0 and row["jax_compile_s"] > 0
  assert "reconstruct" in benchmark.format_table(rows)


def test_model_case_measures_both_passes():
  row = benchmark.model_case("hrnet_w8_small", image_size=32, batch_size=2, dtype="float32",
                             repeats=1)
  for key in ("fwd_img_s", "fwd+bwd_img_s", "fwd_compile_s", "fwd+bwd_compile_s"):
    assert row[key] > 0
  assert row["fwd+bwd_gflop_img"] > row["fwd_gflop_img"] > 0
  assert "fwd_peak_frac" not in row  # no peak FLOP/s is known for a CPU


def test_peak_flops_lookup():
  assert benchmark.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
  assert benchmark.peak_flops("NVIDIA H200", "float32") == 494e12
  assert benchmark.peak_flops("cpu", "float32") is None


def test_train_case_times_the_sharded_step_and_the_pipeline_feeds_the_same_batch():
  config = benchmark.train_config("ws:hrnet_w8_small:32:2:2")
  config.data.update(motion="procedural", occluder_probability=0.0)
  row = benchmark.train_case(config, jax.devices()[:2], repeats=1)
  assert (row["case"], row["devices"], row["device"]) == ("ws hrnet_w8_small 32px 2+2x4", 2, "cpu")
  assert row["compile_s"] > 0
  assert row["train_img_s"] == pytest.approx(10 / (row["step_ms"] / 1e3))  # 2 + 2 x 4 images
  source = pipeline.synthetic_source(synthetic.config_from(config.data))
  assert benchmark.pipeline_rate(source, config, workers=0, num_batches=1) > 0


def test_train_cases_parse_and_refuse_malformed_ones():
  config = benchmark.train_config("2d:hrnet_w32:256:4:8")
  assert (config.mode, config.model.name, config.data.image_size) == ("2d", "hrnet_w32", 256)
  assert (config.batch.labeled, config.batch.multiview) == (4, 0)  # 2d has no multi-view stream
  with pytest.raises(ValueError, match="'ws:hrnet_w8_small:128' is not mode:model"):
    benchmark.train_config("ws:hrnet_w8_small:128")
  assert benchmark._device_counts(["1", "all", "2"]) == sorted({1, 2, os.cpu_count()})
