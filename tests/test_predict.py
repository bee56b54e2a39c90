"""experiments.predict and posejax.models.inference: a trained workdir's poses on image files."""

import json

import jax
import numpy as np
import pytest
from absl import app
from absl.testing import flagsaver
from flax import nnx
from PIL import Image

from experiments import predict
from experiments.configs import synthetic as synthetic_config
from posejax import geometry
from posejax.data.real import crop
from posejax.data.render import synthetic
from posejax.models import PoseNet
from posejax.models.inference import predict_metric
from posejax.skeleton import H36M
from posejax.train import checkpoints, loop

SIZE = 64


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A workdir trained for one step (the model is untrained: only the plumbing is tested)."""
  config = synthetic_config.get_config("2d")
  config.data.update(image_size=SIZE, num_views=1, motion="procedural", workers=0,
                     occluder_probability=0.0)
  config.batch.update(labeled=8)
  config.model.name = "hrnetv2_w4_minimal"  # only the plumbing is tested: the cheapest HRNet
  config.stages.stage1.steps = 1
  config.train.update(log_every=1, checkpoint_every=1)
  config.eval.update(samples=1, validation_samples=1)
  path = tmp_path_factory.mktemp("workdir")
  loop.train_and_evaluate(config, str(path))
  return str(path)


@pytest.fixture(scope="module")
def photo():
  """[80, 100, 3]: a rendered person crop pasted at (x, y) = (20, 10) on a grey frame."""
  frame = np.full((80, 100, 3), 90, np.uint8)
  frame[10:10 + SIZE, 20:20 + SIZE] = synthetic.sample(
      synthetic.SyntheticConfig(image_size=SIZE, motion="procedural"), "train_2d", 0)["image"]
  return frame


class ColourBackbone(nnx.Module):
  """Stride-4 average of the (normalised) image: features that are the image's colours."""

  out_channels = 3

  def __call__(self, images):
    return nnx.avg_pool(images, (4, 4), strides=(4, 4))


def spread_model():
  """A PoseNet whose heatmaps are random linear functions of the colours, so that they peak at
  scattered places, and whose depth maps are 0: thorax and pelvis land on different pixels at
  equal depth, so the reconstruction is valid (c = -1 < 0 in docs/method.md section 3)."""
  model = PoseNet(ColourBackbone(), H36M, rngs=nnx.Rngs(0))
  kernel = np.asarray(jax.random.normal(jax.random.key(1), model.head.kernel.shape)) * 0.3
  kernel[..., H36M.num_joints:] = 0.0
  model.head.kernel[...] = kernel
  model.eval()
  return model


def test_cli_writes_a_consistent_json_and_picture(workdir, photo, tmp_path):
  path = tmp_path / "photo.png"
  Image.fromarray(photo).save(path)
  with flagsaver.flagsaver():
    argv = predict.flags.FLAGS(["predict", f"--workdir={workdir}", "--box=24,12,80,72",
                                "--focal_length=150", "--margin=1.5", str(path)])
    predict.main(argv)
  result = json.loads((tmp_path / "photo.pose.json").read_text())
  with Image.open(tmp_path / "photo.pose.png") as picture:
    assert picture.size == (3 * (256 + 4) + 4, 256 + 8)

  assert result["joint_names"] == list(H36M.joint_names)
  assert (result["image_height"], result["image_width"]) == (80, 100)
  camera = result["camera"]
  np.testing.assert_array_equal(camera["intrinsics"], [[150, 0, 49.5], [0, 150, 39.5], [0, 0, 1]])
  assert camera["focal_length_given"] and camera["crop_size"] == SIZE
  np.testing.assert_array_equal(camera["crop_centre"], [52, 42])
  assert camera["crop_side"] == 1.5 * 60
  matrix = np.array(camera["crop_matrix"])
  np.testing.assert_array_equal(matrix, crop.crop_matrix((52, 42), 90, SIZE))
  np.testing.assert_allclose(camera["crop_camera"], matrix @ camera["intrinsics"], rtol=1e-6)

  joints_2d, joints_crop = np.array(result["joints_2d"]), np.array(result["joints_2d_crop"])
  assert joints_2d.shape == joints_crop.shape == (17, 2)
  np.testing.assert_allclose(crop.transform_points(matrix, joints_2d), joints_crop, atol=1e-4)
  np.testing.assert_array_equal(np.array(result["joints_25d"])[:, :2], joints_crop)
  # The JSON holds exactly what the model predicts on the crop of the box.
  model, _ = checkpoints.restore_model(workdir)
  pixels, crop_camera = crop.crop_view(photo, camera["intrinsics"], (52, 42), 90, SIZE)
  expected = predict_metric(model, pixels[None], crop_camera[None])
  # (The JSON's decimals are float32's shortest forms: exact after conversion to float32.)
  np.testing.assert_array_equal(np.float32(joints_crop), expected["joints_2d"][0])
  np.testing.assert_array_equal(np.float32(result["joints_25d"])[:, 2], expected["rel_depth"][0])
  np.testing.assert_array_equal(np.float32(result["confidence"]), expected["confidence"][0])
  np.testing.assert_array_equal(np.float32(result["pose_3d_normalised"]), expected["pose_3d"][0])
  assert result["valid"] == bool(expected["valid"][0])
  scale = result["scale_mm"]
  np.testing.assert_allclose(result["pose_3d_mm"],
                             scale * np.array(result["pose_3d_normalised"]), rtol=1e-6)
  np.testing.assert_allclose(result["root_depth_mm"], scale * result["root_depth"], rtol=1e-6)


def test_a_valid_prediction_projects_onto_its_2d_joints(photo):
  model = spread_model()
  result, confident = predict.predict_image(model, SIZE, photo, focal_length=120.0)
  assert result["valid"]
  assert confident.shape == (17,) and confident.dtype == bool
  # Default box: the whole 100 x 80 frame, squared about its centre.
  assert result["camera"]["crop_centre"] == [49.5, 39.5] and result["camera"]["crop_side"] == 100
  normalised = np.array(result["pose_3d_normalised"], np.float64)
  pose_mm = np.array(result["pose_3d_mm"], np.float64)
  # The scale constraint holds (thorax-pelvis = 1) and the mm scale is docs/method.md section 5's.
  thorax, pelvis = H36M.scale_pair
  np.testing.assert_allclose(np.linalg.norm(normalised[thorax] - normalised[pelvis]), 1, 1e-5)
  child, parent = np.array(H36M.bones).T
  lengths = np.linalg.norm(normalised[child] - normalised[parent], axis=-1)
  mu = np.array(H36M.mean_bone_lengths_mm)
  np.testing.assert_allclose(result["scale_mm"], lengths @ mu / (lengths @ lengths), rtol=1e-5)
  # Zero relative depths: every joint at the root depth.
  np.testing.assert_allclose(pose_mm[:, 2], result["root_depth_mm"], rtol=1e-5)
  # Projection through the full-image camera gives the full-image joints; through the crop
  # camera, the crop joints.
  np.testing.assert_allclose(geometry.project(pose_mm, np.array(result["camera"]["intrinsics"])),
                             result["joints_2d"], atol=2e-3)
  np.testing.assert_allclose(geometry.project(normalised, np.array(result["camera"]["crop_camera"])),
                             result["joints_2d_crop"], atol=2e-3)
  assert np.ptp(np.array(result["joints_2d_crop"]), axis=0).min() > 2  # scattered joints


def test_predict_metric_scales_the_model_predictions():
  model = spread_model()
  images = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 3), np.uint8)
  cameras = np.tile(np.array([[80.0, 0, 31.5], [0, 80, 31.5], [0, 0, 1]], np.float32), (2, 1, 1))
  out = predict_metric(model, images, cameras)
  direct = nnx.jit(lambda m, x, k: m(x, k))(model, images, cameras)  # the model's own call
  for key in direct:
    np.testing.assert_allclose(out[key], direct[key], rtol=1e-4, atol=1e-5, err_msg=key)
  np.testing.assert_allclose(out["scale_mm"], geometry.estimate_scale(out["pose_3d"]), rtol=1e-6)
  np.testing.assert_allclose(out["pose_3d_mm"], out["pose_3d"] * out["scale_mm"][:, None, None],
                             rtol=1e-6)


@pytest.mark.parametrize("text, problem", [
    ("1,2,3", "four numbers"), ("a,b,c,d", "four numbers"), ("0,0,nan,5", "four numbers"),
    ("5,0,1,4", "empty"), ("0,4,5,4", "empty")])
def test_a_bad_box_is_a_usage_error(text, problem, tmp_path):
  with pytest.raises(ValueError, match=problem):
    predict.parse_box(text)
  with flagsaver.flagsaver(), pytest.raises(app.UsageError, match=problem):
    predict.main(predict.flags.FLAGS(["predict", f"--workdir={tmp_path}", f"--box={text}",
                                      "photo.png"]))


def test_box_parsing_and_default_camera():
  np.testing.assert_array_equal(predict.parse_box("1, 2.5,30,40"), [1, 2.5, 30, 40])
  np.testing.assert_array_equal(predict.default_intrinsics(480, 640),
                                [[640, 0, 319.5], [0, 640, 239.5], [0, 0, 1]])


def test_missing_or_unreadable_images_are_named_before_the_model_loads(photo, tmp_path):
  nowhere = str(tmp_path / "no_workdir")
  with pytest.raises(FileNotFoundError, match="missing.jpg"):
    predict.predict_files(nowhere, [str(tmp_path / "missing.jpg")])
  broken = tmp_path / "broken.png"
  broken.write_text("not an image")
  with pytest.raises(ValueError, match="broken.png.*cannot be read"):
    predict.predict_files(nowhere, [str(broken)])
  good = tmp_path / "good.png"
  Image.fromarray(photo).save(good)
  with pytest.raises(FileNotFoundError, match="no_workdir"):
    predict.predict_files(nowhere, [str(good)])
  (tmp_path / "other").mkdir()
  Image.fromarray(photo).save(tmp_path / "other" / "good.jpg")
  with pytest.raises(ValueError, match="same outputs"):
    predict.predict_files(nowhere, [str(good), str(tmp_path / "other" / "good.jpg")],
                          out=str(tmp_path / "out"))
  with pytest.raises(ValueError, match="focal_length must be positive"):
    predict.predict_files(nowhere, [str(good)], focal_length=0.0)
  with flagsaver.flagsaver(), pytest.raises(app.UsageError, match="at least one image"):
    predict.main(predict.flags.FLAGS(["predict", f"--workdir={nowhere}"]))


def test_a_workdir_without_checkpoint_is_refused(photo, tmp_path):
  (tmp_path / "config.json").write_text(synthetic_config.get_config("2d").to_json())
  good = tmp_path / "good.png"
  Image.fromarray(photo).save(good)
  with pytest.raises(FileNotFoundError, match="No checkpoint.*train first"):
    predict.predict_files(str(tmp_path), [str(good)])


def test_outputs_go_next_to_the_image_or_into_out():
  assert predict.output_stems(["a/b.jpg", "c.png"], None) == ["a/b.pose", "c.pose"]
  assert predict.output_stems(["a/b.jpg"], "out") == ["out/b.pose"]
