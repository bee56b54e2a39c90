"""experiments.benchmark: the NumPy reference agrees with the JAX path (value and gradient);
every section measures what it says."""

import os
import re

import jax
import numpy as np
import pytest

from experiments import benchmark
from posejax import geometry, losses, tasks
from posejax.data.batching import pipeline, sources
from posejax.data.render import synthetic


def test_numpy_reference_matches_jax_loss_and_gradient():
  batch = benchmark.multiview_batch(num_samples=3, seed=1)
  poses, _, valid = jax.jit(geometry.reconstruct)(batch["joints_2d"], batch["rel_depth"],
                                                   batch["camera"])
  assert bool(valid.all())
  # Jitted: one program compiles faster than the loss's ops compile one by one.
  jax_loss, jax_gradient = jax.jit(jax.value_and_grad(losses.multiview_consistency_loss))(
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
  row = benchmark.model_case("hrnetv2_w4_micro", image_size=32, batch_size=2, dtype="float32",
                             repeats=1)
  for key in ("fwd_img_s", "fwd+bwd_img_s", "fwd_compile_s", "fwd+bwd_compile_s"):
    assert row[key] > 0
  assert row["fwd+bwd_gflop_img"] > row["fwd_gflop_img"] > 0
  assert "fwd_peak_frac" not in row  # no peak FLOP/s is known for a CPU


def test_peak_flops_lookup():
  assert benchmark.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
  assert benchmark.peak_flops("NVIDIA H200", "float32") == 494e12
  assert benchmark.peak_flops("cpu", "float32") is None


def _conv(images, kernel, groups=1):
  return jax.lax.conv_general_dilated(images, kernel, (1, 1), "SAME", feature_group_count=groups,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_matmul_flops_counts_convolutions_products_and_their_gradients():
  images, kernel = np.ones((2, 16, 16, 8), np.float32), np.ones((3, 3, 8, 12), np.float32)
  forward = 2 * (2 * 16 * 16 * 12) * (3 * 3 * 8)  # 2 x outputs x MACs per output
  assert benchmark.matmul_flops(_conv, images, kernel) == forward
  # the gradient of the input and of the kernel cost one convolution each
  both_gradients = jax.grad(lambda x, w: _conv(x, w).sum(), argnums=(0, 1))
  assert benchmark.matmul_flops(both_gradients, images, kernel) == 3 * forward
  # Strided: the input gradient convolves the cotangent with zeros between its values; only
  # the products with a non-zero input count, so it too costs one forward convolution.
  strided = lambda x, w: jax.lax.conv_general_dilated(  # noqa: E731
      x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  strided_forward = 2 * (2 * 8 * 8 * 12) * (3 * 3 * 8)
  assert benchmark.matmul_flops(strided, images, kernel) == strided_forward
  strided_gradients = jax.grad(lambda x, w: strided(x, w).sum(), argnums=(0, 1))
  assert benchmark.matmul_flops(strided_gradients, images, kernel) == 3 * strided_forward
  grouped = np.ones((3, 3, 2, 12), np.float32)  # 4 groups of 2 input channels
  assert benchmark.matmul_flops(lambda x, w: _conv(x, w, 4), images, grouped) == forward / 4
  a, b = np.ones((5, 7), np.float32), np.ones((7, 3), np.float32)
  assert benchmark.matmul_flops(jax.numpy.dot, a, b) == 2 * 5 * 7 * 3
  loop = lambda a: jax.lax.scan(lambda c, _: (c @ b @ b.T, None), a, None, length=4)[0]
  assert benchmark.matmul_flops(jax.jit(loop), a) == 4 * 2 * (2 * 5 * 7 * 3)


def test_train_case_times_the_sharded_step_and_the_pipeline_feeds_the_same_batch():
  config = benchmark.train_config("ws:hrnetv2_w4_micro:32:2:2")
  config.data.update(motion="procedural", occluder_probability=0.0)
  row = benchmark.train_case(config, jax.devices()[:2], repeats=1)
  assert (row["case"], row["devices"], row["device"], row["cpu_fusions"]) == (
      "ws hrnetv2_w4_micro 32px float32 2+2x4", 2, "cpu", "xla")
  assert row["compile_s"] > 0
  assert row["train_img_s"] == pytest.approx(10 / (row["step_ms"] / 1e3))  # 2 + 2 x 4 images
  assert 0 < row["dispatch_ms"] <= row["step_ms"]  # the call returns before its results
  assert row["gflop_img"] > 0 and "peak_frac" not in row  # no peak FLOP/s known for a CPU
  source = sources.synthetic_source(synthetic.config_from(config.data))
  assert benchmark.pipeline_rate(source, config, workers=0, num_batches=1) > 0
  # The pipeline that pipeline_rate times yields the batch train_case's step was timed on.
  spec = tasks.get_task(config).batch_spec("ws")
  timed = pipeline.make_batch(source, spec, step=0)
  iterator = pipeline.batches(source, spec, workers=0, prefetch=1)
  fed = next(iterator)
  iterator.close()
  assert jax.tree.structure(fed) == jax.tree.structure(timed)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(fed), jax.tree.leaves(timed)):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def test_train_case_with_ynnpacks_fusions_counts_the_same_flops():
  # The FLOPs are counted on the step before jit: JAX refuses a jit with compiler options
  # inside another trace (make_jaxpr).
  config = benchmark.train_config("2d:hrnetv2_w4_micro:32:2:0")
  rows = [benchmark.train_case(config, jax.devices()[:1], 1, cpu_fusions)
          for cpu_fusions in ("xla", "ynn")]
  assert [row["cpu_fusions"] for row in rows] == ["xla", "ynn"]
  assert rows[0]["gflop_img"] == rows[1]["gflop_img"] > 0


def test_train_cases_parse_and_refuse_malformed_ones():
  config = benchmark.train_config("2d:hrnet_w32:256:4:8")
  assert (benchmark.objective_of(config), config.model.name, config.data.image_size) == (
      "2d", "hrnet_w32", 256)
  assert [s.objective for s in config.stages.values()] == ["2d"]  # the case's one stage
  assert (config.batch.labeled, config.batch.multiview) == (4, 0)  # 2d has no multi-view stream
  assert config.model.dtype == "float32"
  assert benchmark.train_config("ws:hrnet_w32:256:4:8:bfloat16").model.dtype == "bfloat16"
  for malformed in ("ws:hrnet_w8_small:128", "ws:hrnet_w32:256:4:8:float17",
                    "ws:hrnet_w32:256:4:8:bfloat16:x", "2d+ws:hrnet_w32:256:4:8"):
    with pytest.raises(ValueError, match=rf"'{re.escape(malformed)}' is not objective:model"):
      benchmark.train_config(malformed)
  with pytest.raises(ValueError, match="'wz'"):  # an objective the task does not have
    benchmark.train_config("wz:hrnet_w32:256:4:8")
  assert benchmark._device_counts(["1", "all", "2"]) == sorted({1, 2, os.cpu_count()})


def test_checkpoint_cost_study_saves_the_state_and_the_weights_alone():
  from experiments.studies import checkpoint_cost  # pylint: disable=import-outside-toplevel
  config = benchmark.train_config("2d:hrnetv2_w4_micro:32:2:0")
  config.data.update(motion="procedural", occluder_probability=0.0)
  state = checkpoint_cost.train_state(config)
  whole, weights, host, one = (checkpoint_cost.measure(form, config, repeats=2) for form in
                               ("TrainState", "weights", "host_copies", "one_buffer"))
  count = lambda tree: len(jax.tree_util.tree_leaves(tree))  # noqa: E731
  assert whole["arrays"] == count(state) > weights["arrays"] == count((state.params, state.rest))
  assert host["arrays"] == whole["arrays"] and one["arrays"] == 1
  assert whole["megabytes"] == host["megabytes"] > weights["megabytes"] > 0
  assert one["megabytes"] == pytest.approx(4 * sum(np.size(x) for x in
                                                   jax.tree_util.tree_leaves(state)) / 2**20,
                                           abs=1e-3)
  for row in (whole, weights, host, one):
    assert 0 < row["blocking_ms"] <= row["total_ms"]


def test_a_form_the_study_lacks_is_a_usage_error_that_names_it():
  from absl import app, flags  # pylint: disable=import-outside-toplevel
  from absl.testing import flagsaver  # pylint: disable=import-outside-toplevel
  from experiments.studies import train_case  # pylint: disable=import-outside-toplevel
  with flagsaver.flagsaver():
    flags.FLAGS(["study", "--forms=leaves,packed"])
    with pytest.raises(app.UsageError, match=r"\['packed'\] not among .*'TrainState', 'leaves'"):
      train_case.run_forms(("TrainState", "leaves"), measure=None)


def test_dispatch_overhead_study_times_both_forms_of_the_same_step():
  from experiments.studies import dispatch_overhead  # pylint: disable=import-outside-toplevel
  config = benchmark.train_config("2d:hrnetv2_w4_micro:32:2:0")
  config.data.update(motion="procedural", occluder_probability=0.0)
  rows = [dispatch_overhead.measure(form, config, repeats=2) for form in ("TrainState", "leaves")]
  assert [row["form"] for row in rows] == ["TrainState", "leaves"]
  assert rows[0]["state_arrays"] == rows[1]["state_arrays"] > 100
  for row in rows:
    assert 0 < row["dispatch_ms"] <= row["step_ms"] and row["queued_img_s"] > 0
