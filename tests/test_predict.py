"""experiments.predict and experiments.show_predictions (posejax.models.inference, the tasks'
predict): a trained workdir's poses on image files and beside the test truth, for a workdir of
each task (pose25d, DeepPose stages 1 and 2, the pose transformer; 1-step runs at tiny sizes)."""

import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from absl import app
from absl.testing import flagsaver
from flax import nnx
from PIL import Image

from experiments import predict
from experiments.configs import deeppose_synthetic, pose_transformer_synthetic
from experiments.configs import synthetic as synthetic_config
from experiments.studies import softargmax_temperature
from posejax import geometry, viz
from posejax.data.batching.sources import make_source
from posejax.data.real import crop
from posejax.data.render import synthetic
from posejax.models import PoseNet
from posejax.models import inference
from posejax.models.inference import predict_metric
from posejax.skeleton import H36M
from posejax.tasks import get_task
from posejax.train import checkpoints, loop
from tests.tiny_runs import shrink

# One worker builds the module's three trained workdirs (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("predict")

# experiments.show_predictions defines flags of the same names as experiments.predict (absl
# refuses both in one process): it runs as a program, as a user runs it.
ROOT = pathlib.Path(__file__).parents[1]
SIZE = 64
TINY_SIZE = 32  # the DeepPose and pose transformer workdirs' crops
# Only the plumbing is tested: the cheapest HRNet, two branches (two levels for the pose
# transformer).
TINY_HRNET_NAME = "hrnetv2_w4_micro"


@pytest.fixture(scope="session")  # built once: tests/conftest.py
def workdir(tmp_path_factory):
  """A workdir trained for one step (the model is untrained: only the plumbing is tested)."""
  config = synthetic_config.get_config("2d")
  config.data.update(image_size=SIZE, num_views=1, motion="procedural", workers=0,
                     occluder_probability=0.0)
  config.batch.update(labeled=8)
  config.model.name = TINY_HRNET_NAME
  config.stages.stage1.steps = 1
  config.train.update(log_every=1, checkpoint_every=1)
  config.eval.update(samples=1, validation_samples=1)
  path = tmp_path_factory.mktemp("workdir")
  loop.train_and_evaluate(config, str(path))
  return str(path)


def tiny_run(config):
  """`config` shrunk to one training step on 8 images of 32 px, one test sample of 2 views."""
  return shrink(config, steps=1, samples=1, train_images=8, checkpoint_every=1)


def deeppose_config(stage: int, previous: str = ""):
  config = tiny_run(deeppose_synthetic.get_config(str(stage)))
  config.deeppose.update(stage1_size=TINY_SIZE, refine_size=16, samples_per_image=1,
                         previous=previous, predict_batch_size=8)
  config.model.dropout = 0.0
  return config


@pytest.fixture(scope="session")  # built once: tests/conftest.py
def deeppose_workdir(tmp_path_factory):
  """A DeepPose stage-2 workdir (its stage-1 workdir beside it): a cascade of two stages."""
  root = tmp_path_factory.mktemp("deeppose")
  loop.train_and_evaluate(deeppose_config(1), str(root / "stage1"))
  loop.train_and_evaluate(deeppose_config(2, str(root / "stage1")), str(root / "stage2"))
  return str(root / "stage2")


@pytest.fixture(scope="session")  # built once: tests/conftest.py
def pose_transformer_workdir(tmp_path_factory):
  config = tiny_run(pose_transformer_synthetic.get_config())
  config.model.update(name=TINY_HRNET_NAME, d_model=16, num_heads=2, ffn_dim=32,
                      encoder_layers=1, decoder_layers=2, num_queries=20, num_levels=2,
                      dropout=0.0)
  config.objective.tolerances = (0.1, 0.0)
  path = tmp_path_factory.mktemp("pose_transformer")
  loop.train_and_evaluate(config, str(path))
  return str(path)


@pytest.fixture(scope="session")  # built once: tests/conftest.py
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


def run_predict(workdir, photo, tmp_path) -> tuple[dict, tuple[int, int]]:
  """`python -m experiments.predict` (in this process) on `photo`, the crop around the box
  (24, 12)-(80, 72) with margin 1.5: centre (52, 42), side 90. Returns the JSON and the size
  of the PNG."""
  path = tmp_path / "photo.png"
  Image.fromarray(photo).save(path)
  with flagsaver.flagsaver():
    argv = predict.flags.FLAGS(["predict", f"--workdir={workdir}", "--box=24,12,80,72",
                                "--focal_length=150", "--margin=1.5", str(path)])
    predict.main(argv)
  with Image.open(tmp_path / "photo.pose.png") as picture:
    return json.loads((tmp_path / "photo.pose.json").read_text()), picture.size


def row_of_panels(count: int, size: int = 256) -> tuple[int, int]:
  """The size of `count` square panels in one row (`viz.contact_sheet`'s 4-px gaps)."""
  return count * (size + 4) + 4, size + 8


def test_cli_writes_a_consistent_json_and_picture(workdir, photo, tmp_path):
  result, picture_size = run_predict(workdir, photo, tmp_path)
  assert picture_size == row_of_panels(3)

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
  pose25d = get_task(synthetic_config.get_config("2d"))
  result, confident = predict.predict_image(pose25d, model, SIZE, photo, focal_length=120.0)
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


def test_an_evaluation_walks_the_model_once_and_predicts_as_predict_metric(monkeypatch):
  # nnx.split walks the whole graph (107 ms for HRNet-W32 on the 2-core VM): the pose25d
  # task's evaluation splits once (inference.metric_predictor), not once per sample.
  model = spread_model()
  config = synthetic_config.get_config("2d")
  config.data.update(image_size=SIZE, num_views=2, motion="procedural", occluder_probability=0.0)
  source = make_source(config.data)
  splits = []
  split = nnx.split
  monkeypatch.setattr(inference.nnx, "split", lambda *a: splits.append(1) or split(*a))
  results = get_task(config).evaluate(model, source, stream="validation", samples=3)
  assert len(splits) == 1 and results["views"] == 6
  monkeypatch.undo()
  predict = inference.metric_predictor(model)
  for index in range(3):
    sample = source("validation", index)
    once, each = predict(sample["image"], sample["camera"]), predict_metric(
        model, sample["image"], sample["camera"])
    for key in each:
      np.testing.assert_array_equal(once[key], each[key], err_msg=key)


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


def test_the_temperature_study_decodes_as_a_model_built_at_that_temperature(workdir):
  config = checkpoints.load_config(workdir)
  source, samples = make_source(config.data), config.eval.validation_samples

  def restored(temperature):  # the workdir's model as if built at `temperature`
    config.model.temperature = temperature
    model, _ = checkpoints.restore_task_model(get_task(config),
                                              checkpoints.checkpoint_dir(workdir, "latest"))
    model.head.kernel[...] = model.head.kernel[...] * 1e3  # heatmaps that are not flat
    return model

  by_temperature = softargmax_temperature.decode_at_temperatures(
      get_task(config), restored(10.0), source, samples, [50.0, 10.0])
  for temperature, results in by_temperature.items():
    expected = get_task(config).evaluate(restored(temperature), source, stream="validation",
                                         samples=samples)
    for key in ("mpjpe", "error_2d_px"):
      assert results[key] == pytest.approx(expected[key], rel=1e-6)
  assert by_temperature[50.0]["error_2d_px"] != pytest.approx(by_temperature[10.0]["error_2d_px"])


def test_a_workdir_without_checkpoint_is_refused(photo, tmp_path):
  (tmp_path / "config.json").write_text(synthetic_config.get_config("2d").to_json())
  good = tmp_path / "good.png"
  Image.fromarray(photo).save(good)
  with pytest.raises(FileNotFoundError, match="No checkpoint.*train first"):
    predict.predict_files(str(tmp_path), [str(good)])


def test_outputs_go_next_to_the_image_or_into_out():
  assert predict.output_stems(["a/b.jpg", "c.png"], None) == ["a/b.pose", "c.pose"]
  assert predict.output_stems(["a/b.jpg"], "out") == ["out/b.pose"]


# ------------------------------------------------------------ DeepPose and the pose transformer

PANEL = 64  # show_predictions' --size
WRITTEN_ALWAYS = {"image", "workdir", "image_height", "image_width", "joint_names", "camera"}


def crop_prediction(workdir, photo, camera: dict) -> dict:
  """What the workdir's task predicts on the crop that a JSON's camera block describes."""
  model, config = checkpoints.restore_model(workdir)
  pixels, crop_camera = crop.crop_view(photo, camera["intrinsics"], camera["crop_centre"],
                                       camera["crop_side"], camera["crop_size"])
  return get_task(config).predict(model, pixels[None], crop_camera[None])


def assert_written_as_predicted(result: dict, expected: dict, names: dict):
  """Each JSON key of `names` ({JSON key: prediction key}) holds the prediction of the one
  image exactly (float32's shortest decimals)."""
  for key, name in names.items():
    np.testing.assert_array_equal(np.float32(result[key]), np.float32(expected[name][0]),
                                  err_msg=key)


def test_deeppose_writes_every_stage_in_image_and_crop_pixels(deeppose_workdir, photo,
                                                              tmp_path):
  result, picture_size = run_predict(deeppose_workdir, photo, tmp_path)
  assert set(result) == WRITTEN_ALWAYS | {"joints_2d", "joints_2d_crop", "joints_2d_stages",
                                          "joints_2d_stages_crop"}
  assert picture_size == row_of_panels(2)  # a panel per stage, no 3D
  assert np.shape(result["joints_2d_stages"]) == (2, 17, 2)
  # The image's pixels land on the crop's through the crop of the box given.
  matrix = crop.crop_matrix((52, 42), 90, TINY_SIZE)
  np.testing.assert_array_equal(result["camera"]["crop_matrix"], matrix)
  for key in ("joints_2d", "joints_2d_stages"):
    np.testing.assert_allclose(crop.transform_points(matrix, np.array(result[key])),
                               result[key + "_crop"], atol=1e-4, err_msg=key)
  expected = crop_prediction(deeppose_workdir, photo, result["camera"])
  assert_written_as_predicted(result, expected, {"joints_2d_crop": "joints_2d",
                                                 "joints_2d_stages_crop": "joints_2d_stages"})
  np.testing.assert_array_equal(result["joints_2d_stages"][-1], result["joints_2d"])


def test_pose_transformer_writes_its_3d_pose_and_every_layer(pose_transformer_workdir, photo,
                                                             tmp_path):
  result, picture_size = run_predict(pose_transformer_workdir, photo, tmp_path)
  assert set(result) == WRITTEN_ALWAYS | {"joint_scores", "scale_mm", "pose_3d_mm",
                                          "pose_3d_normalised", "pose_3d_layers_normalised",
                                          "valid"}
  assert picture_size == row_of_panels(3)  # the image, the 3D pose from the front and the side
  assert np.shape(result["pose_3d_layers_normalised"]) == (2, 17, 3)
  assert np.shape(result["pose_3d_mm"]) == (17, 3) and np.shape(result["joint_scores"]) == (17,)
  expected = crop_prediction(pose_transformer_workdir, photo, result["camera"])
  assert_written_as_predicted(result, expected, {
      "joint_scores": "joint_scores", "scale_mm": "scale_mm", "pose_3d_mm": "pose_3d_mm",
      "pose_3d_normalised": "pose_3d", "pose_3d_layers_normalised": "pose_3d_layers"})
  assert result["valid"] == bool(expected["valid"][0])


class OtherTask:
  """A task outside posejax whose `predict` returns the given keys (a batch of one)."""

  skeleton = H36M

  def __init__(self, **prediction):
    self.prediction = prediction

  def predict(self, model, images, cameras):
    del model, cameras
    return {k: np.asarray(v)[None] for k, v in self.prediction.items()}


def test_any_task_s_2d_joints_are_mapped_to_the_image(photo):
  # The default crop of the 100 x 80 photo: the square of side 100 about its centre
  # (49.5, 39.5), at 64 px: crop pixel c is image pixel (c - 31.5) * 100 / 64 + the centre.
  joints = np.zeros((17, 2))
  joints[0] = (31.5, 31.5)
  result, confident = predict.predict_image(OtherTask(joints_2d=joints), None, SIZE, photo)
  assert set(result) == {"image_height", "image_width", "joint_names", "joints_2d",
                         "joints_2d_crop", "camera"}
  assert confident is None  # no confidence: every joint drawn filled
  np.testing.assert_allclose(result["joints_2d"][0], (49.5, 39.5), atol=1e-6)
  np.testing.assert_allclose(result["joints_2d"][1], (49.5 - 49.21875, 39.5 - 49.21875),
                             atol=1e-6)


def test_a_prediction_predict_cannot_write_is_a_clear_error(photo, tmp_path):
  joints = np.zeros((17, 2))
  with pytest.raises(ValueError, match=r"Task OtherTask predicts \['keypoints'\], which "
                                       r"experiments.predict does not know"):
    predict.predict_image(OtherTask(joints_2d=joints, keypoints=joints), None, SIZE, photo)
  with pytest.raises(ValueError, match="neither joints_2d nor pose_3d_mm"):
    predict.predict_image(OtherTask(confidence=np.ones(17)), None, SIZE, photo)
  # A workdir of a task nobody registered.
  config = synthetic_config.get_config("2d")
  config.task = "no_such_task"
  (tmp_path / "config.json").write_text(config.to_json())
  good = tmp_path / "good.png"
  Image.fromarray(photo).save(good)
  with pytest.raises(ValueError, match="Unknown task 'no_such_task'"):
    predict.predict_files(str(tmp_path), [str(good)])


def show_predictions_sheet(workdir, out) -> np.ndarray:
  """`python -m experiments.show_predictions --workdir=WORKDIR --out=OUT --size=PANEL`, as a
  user runs it: the sheet's pixels."""
  run = subprocess.run([sys.executable, "-m", "experiments.show_predictions",
                        f"--workdir={workdir}", f"--out={out}", f"--size={PANEL}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, check=False)
  assert run.returncode == 0, run.stdout + run.stderr
  assert f"wrote {out}: 1 test samples" in run.stdout
  with Image.open(out) as sheet:
    return np.asarray(sheet.convert("RGB"))


def first_test_sample(workdir) -> tuple[dict, dict]:
  """(the first test sample, the task's predictions on its views) of a workdir."""
  model, config = checkpoints.restore_model(workdir)
  sample = make_source(config.data)("test", 0)
  assert np.all(sample.get("view_mask", True))  # every view is shown
  return sample, get_task(config).predict(model, sample["image"], sample["camera"])


def assert_rows(sheet: np.ndarray, rows: list[list], panels: int):
  """The sheet is `rows` (one per view) of `panels` panels each."""
  assert {len(row) for row in rows} == {panels}
  width, height = row_of_panels(panels, PANEL)
  assert sheet.shape == (len(rows) * (height - 4) + 4, width, 3)
  np.testing.assert_array_equal(sheet, np.asarray(viz.contact_sheet(rows)))


def test_show_predictions_puts_a_posenet_beside_the_3d_truth(workdir, tmp_path):
  sheet = show_predictions_sheet(workdir, tmp_path / "sheet.png")
  sample, p = first_test_sample(workdir)
  rows = [viz.prediction_and_truth(
      sample["image"][v], p["joints_2d"][v], p["pose_3d_mm"][v], sample["joints_3d"][v],
      joint_mask=p["confidence"][v] >= 0.5, valid=bool(p["valid"][v]), size=PANEL)
      for v in range(len(sample["image"]))]
  assert_rows(sheet, rows, 5)  # the crop with the 2D, the 3D prediction and truth, 2 views each


def test_show_predictions_draws_every_deeppose_stage_beside_the_2d_truth(deeppose_workdir,
                                                                        tmp_path):
  sheet = show_predictions_sheet(deeppose_workdir, tmp_path / "sheet.png")
  sample, p = first_test_sample(deeppose_workdir)
  rows = [viz.prediction_and_truth(
      sample["image"][v], p["joints_2d_stages"][v], None, None, truth_2d=sample["joints_2d"][v],
      truth_2d_mask=sample["joints_2d_mask"][v], size=PANEL) for v in range(2)]
  assert_rows(sheet, rows, 3)  # stage 1, stage 2, the truth


def test_show_predictions_puts_a_pose_transformer_beside_the_3d_truth(pose_transformer_workdir,
                                                                      tmp_path):
  sheet = show_predictions_sheet(pose_transformer_workdir, tmp_path / "sheet.png")
  sample, p = first_test_sample(pose_transformer_workdir)
  rows = [viz.prediction_and_truth(
      sample["image"][v], None, p["pose_3d_mm"][v], sample["joints_3d"][v],
      joint_mask=p["joint_scores"][v] >= 0.5, valid=bool(p["valid"][v]), size=PANEL)
      for v in range(2)]
  assert_rows(sheet, rows, 5)  # the crop, the 3D prediction and truth, 2 views each
