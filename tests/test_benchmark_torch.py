"""experiments.benchmark's torch section: skipped, saying what is missing, without PyTorch or
the authors' pose_hrnet.py; with both, the authors' model has posejax's layers and both steps
run.

The tests that need PyTorch and the authors' file read its path from $POSEJAX_POSE_HRNET
(deep-high-resolution-net.pytorch/lib/models/pose_hrnet.py, not shipped) and skip without it.
Without the authors' file they skip with the one reason .ci/run expects (PyTorch itself is in
the dev extra).
"""

import math
import os
import sys
import time
import types

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import authors_hrnet, benchmark
from posejax import models
from posejax.errors import ConfigError

_INSTALL = 'pip install "posejax[torch]"'


def _torch():
  return pytest.importorskip("torch", reason="the optional torch extra is not installed")


def _pose_hrnet_path() -> str:
  path = os.environ.get("POSEJAX_POSE_HRNET")
  if not path or not os.path.isfile(path):
    pytest.skip("set POSEJAX_POSE_HRNET to the HRNet authors' lib/models/pose_hrnet.py")
  return path


def _section(path, **kwargs):
  return benchmark.torch_section(["hrnetv2_w4_minimal"], ["64"], batch_size=2, repeats=1,
                                 pose_hrnet_path=path, **kwargs)


def test_skipped_without_torch(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
  pose_hrnet = tmp_path / "pose_hrnet.py"
  pose_hrnet.write_text("")
  (row,) = _section(str(pose_hrnet))
  assert row["case"] == "skipped"
  assert row["reason"].startswith("PyTorch is not installed") and _INSTALL in row["reason"]
  assert "--pose_hrnet" not in row["reason"]
  (row,) = _section(None)  # both missing: both named
  assert _INSTALL in row["reason"] and "pass --pose_hrnet=" in row["reason"]
  assert "skipped" in benchmark.format_table([row])


@pytest.mark.parametrize("path", [None, "", "/nonexistent/pose_hrnet.py"])
def test_skipped_without_the_authors_file(path):
  (row,) = _section(path)
  assert row == dict(section="torch", case="skipped", reason=row["reason"])
  assert "--pose_hrnet" in row["reason"]
  assert ("is not a file" in row["reason"]) == bool(path)


def test_authors_config_is_the_published_layout():
  extra = authors_hrnet.authors_config(models.HRNetConfig(width=32))["MODEL"]["EXTRA"]
  assert [extra[f"STAGE{s}"]["NUM_MODULES"] for s in (2, 3, 4)] == [1, 4, 3]
  assert extra["STAGE4"]["NUM_CHANNELS"] == [32, 64, 128, 256]
  assert extra["STAGE4"]["NUM_BLOCKS"] == [4] * 4
  small = authors_hrnet.authors_config(models.BACKBONES["hrnetv2_w8_small"], 34)["MODEL"]
  assert small["NUM_JOINTS"] == 34 and small["EXTRA"]["STAGE3"]["NUM_BLOCKS"] == [2] * 3
  with pytest.raises(ValueError, match="stages 2-4"):
    authors_hrnet.authors_config(models.BACKBONES["hrnetv2_w4_micro"])


@pytest.mark.parametrize("name", ["hrnet_w32", "hrnetv2_w8_small", "hrnetv2_w8_small_hr16",
                                  "hrnet_w8_small", "hrnetv2_w4_minimal"])
def test_authors_model_has_posejax_layers(name):
  """Layer for layer: the same parameter count (posejax's shapes only, not initialised; the
  tiny run below checks that the authors' model runs and gives maps of the same shape)."""
  _torch()
  pose_hrnet = authors_hrnet.load_pose_hrnet(_pose_hrnet_path())
  config = models.BACKBONES[name]
  theirs = authors_hrnet.build_authors_model(pose_hrnet, config, benchmark.TORCH_OUTPUTS)
  ours = nnx.eval_shape(lambda: benchmark.MapNet(config, benchmark.TORCH_OUTPUTS,
                                                 rngs=nnx.Rngs(0)))
  assert models.count_parameters(ours) == sum(p.numel() for p in theirs.parameters())


def test_tiny_run_times_both():
  _torch()
  (row,) = _section(_pose_hrnet_path(), threads=1)
  assert row["case"] == "hrnetv2_w4_minimal 64px float32" and row["batch"] == 2
  assert row["params"] == row["torch_params"] and row["torch_threads"] == 1
  for key in ("posejax_img_s", "torch_img_s", "posejax_over_torch", "posejax_compile_s"):
    assert math.isfinite(row[key]) and row[key] > 0, (key, row[key])
  assert math.isclose(row["posejax_over_torch"], row["posejax_img_s"] / row["torch_img_s"])


def test_an_unknown_dtype_is_a_config_error_even_when_the_section_would_skip():
  with pytest.raises(ConfigError, match=r"--torch_dtypes: \['float16'\] not in"):
    _section(None, dtypes=["float32", "float16"])


def test_the_posejax_step_computes_in_bfloat16_and_its_loss_in_float32():
  # The same first step (same weights and inputs) in both dtypes: close, but not the same
  # numbers, so the network did compute in bfloat16; the loss stays float32.
  config = models.BACKBONES["hrnetv2_w4_micro"]
  losses = {}
  for dtype in ("float32", "bfloat16"):
    step, _, _ = benchmark.compiled_map_step(config, 32, 2, dtype)
    losses[dtype] = step()
    assert losses[dtype].dtype == jnp.float32
  assert losses["float32"] != losses["bfloat16"]
  np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=2e-2)


def test_the_step_counts_its_flops_where_the_devices_peak_is_known(monkeypatch):
  config = models.BACKBONES["hrnetv2_w4_micro"]
  step, _, _ = benchmark.compiled_map_step(config, 32, 2)
  assert step.flops is None  # no peak known for a CPU: no trace spent on counting
  monkeypatch.setattr(benchmark, "peak_flops", lambda device_kind, dtype: 1e12)
  step, _, _ = benchmark.compiled_map_step(config, 32, 2)
  # The forward pass, then the kernels' gradients (one forward each) and the inputs' gradients
  # (one forward each) except the first convolution's: the images need none.
  model = benchmark.MapNet(config, benchmark.TORCH_OUTPUTS, rngs=nnx.Rngs(0))
  model.eval()  # the same convolutions; BatchNorm with its statistics, traceable as a function
  graphdef, state = nnx.split(model)
  images = jnp.zeros((2, 32, 32, 3))
  forward = benchmark.matmul_flops(lambda x: nnx.merge(graphdef, state)(x), images)
  stem = 2 * (2 * 16 * 16 * config.stem_channels) * (3 * 3 * 3)  # 3x3, stride 2, RGB in
  assert step.flops == 3 * forward - stem


def test_the_pytorch_side_runs_where_jax_runs(monkeypatch):
  cuda = lambda available: types.SimpleNamespace(  # noqa: E731
      cuda=types.SimpleNamespace(is_available=lambda: available))
  assert benchmark.torch_device(cuda(True)) == "cpu"  # JAX on the CPU here
  monkeypatch.setattr(benchmark.jax, "default_backend", lambda: "gpu")
  assert benchmark.torch_device(cuda(True)) == "cuda"
  assert benchmark.torch_device(cuda(False)) == "cpu"  # a CPU build of PyTorch


def test_fractions_of_peak_from_the_counted_flops(monkeypatch):
  _torch()
  monkeypatch.setattr(benchmark, "peak_flops", lambda device_kind, dtype: 1e12)
  (row,) = _section(_pose_hrnet_path(), threads=1)
  for side in ("posejax", "torch"):
    assert row[f"{side}_peak_frac"] == pytest.approx(
        row["gflop_img"] * 1e9 * row[f"{side}_img_s"] / 1e12)
  assert row["torch_device"] == "cpu"


def test_on_a_cpu_fractions_of_the_measured_matmul_peak(monkeypatch):
  _torch()
  monkeypatch.setattr(benchmark, "cpu_matmul_peak", lambda torch, dtype: (2e11, "torch"))
  (row,) = _section(_pose_hrnet_path(), threads=1)
  assert row["peak_tflops"] == 0.2 and row["peak_from"] == "torch 2048x2048 matmul, measured"
  for side in ("posejax", "torch"):
    assert row[f"{side}_peak_frac"] == pytest.approx(
        row["gflop_img"] * 1e9 * row[f"{side}_img_s"] / 2e11)


def test_the_cpu_matmul_peak_is_the_faster_librarys(monkeypatch):
  torch = _torch()
  torch.set_num_threads(1)
  flops, library = benchmark.cpu_matmul_peak(torch, "float32", size=256, repeats=2)
  assert library in ("jax", "torch") and 1e8 < flops < 1e14
  slow = lambda a, b: time.sleep(0.05)  # noqa: E731  # 2 x 256^3 FLOP in 50 ms: 0.67 GFLOP/s
  monkeypatch.setattr(torch, "mm", slow)
  flops, library = benchmark.cpu_matmul_peak(torch, "float32", size=256, repeats=2)
  assert library == "jax" and flops > 1e9


def test_tiny_run_in_bfloat16_uses_autocast_on_pytorchs_side():
  _torch()
  (row,) = _section(_pose_hrnet_path(), threads=1, dtypes=["bfloat16"])
  assert row["case"] == "hrnetv2_w4_minimal 64px bfloat16"
  assert math.isfinite(row["torch_img_s"]) and row["torch_img_s"] > 0


def test_an_unknown_cpu_fusion_is_a_config_error_even_when_the_section_would_skip():
  with pytest.raises(ConfigError, match=r"cpu_fusions='ynnpack': expected one of"):
    _section(None, fusions=["xla", "ynnpack"])


def test_one_pytorch_timing_beside_each_of_posejaxs_cpu_fusions():
  _torch()
  rows = _section(_pose_hrnet_path(), threads=1, fusions=["xla", "ynn"])
  assert [(row["case"], row["cpu_fusions"]) for row in rows] == [
      ("hrnetv2_w4_minimal 64px float32", "xla"), ("hrnetv2_w4_minimal 64px float32", "ynn")]
  assert rows[0]["torch_img_s"] == rows[1]["torch_img_s"]  # PyTorch timed once
  for row in rows:
    assert math.isclose(row["posejax_over_torch"], row["posejax_img_s"] / row["torch_img_s"])
