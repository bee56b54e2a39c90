"""posejax.viz: the 3D pose picture, letterboxing and the prediction picture."""

import numpy as np
import pytest

from posejax import viz
from posejax.skeleton import H36M

LEFT, RIGHT = np.array(viz.LEFT), np.array(viz.RIGHT)


def standing_pose(left_depth=40.0, right_depth=-40.0):
  """[17, 3] mm: legs 40 mm either side of the root, arms out; left limbs at `left_depth`."""
  pose = np.zeros((17, 3))
  for name, (x, y) in dict(right_hip=(-20, 0), right_knee=(-20, 40), right_ankle=(-20, 80),
                           left_hip=(20, 0), left_knee=(20, 40), left_ankle=(20, 80),
                           spine=(0, -30), thorax=(0, -60), neck_nose=(0, -70),
                           head_top=(0, -90), left_shoulder=(30, -60), left_elbow=(60, -60),
                           left_wrist=(90, -60), right_shoulder=(-30, -60),
                           right_elbow=(-60, -60), right_wrist=(-90, -60)).items():
    depth = left_depth if name.startswith("left") else right_depth if name.startswith(
        "right") else 0.0
    pose[H36M.index(name)] = (x, y, depth)
  return pose + np.array([100.0, -200.0, 4000.0])  # anywhere: the root is centred


def has_colour(picture, rows, cols, colour):
  return bool(np.all(np.asarray(picture)[rows, cols] == colour, axis=-1).any())


def test_left_and_right_limbs_get_their_colours_front_and_side():
  pose = standing_pose()
  # 200 px for 200 mm: 1 px per mm, the root at pixel 99.5.
  front = viz.draw_pose_3d(pose, half_extent_mm=100, size=200)
  side = viz.draw_pose_3d(pose, yaw_degrees=90, half_extent_mm=100, size=200)
  assert front.size == side.size == (200, 200)
  # Lower legs, halfway between knee (y = 40) and ankle (y = 80): row 159.5.
  rows = slice(158, 162)
  assert has_colour(front, rows, slice(118, 122), LEFT)  # x = +20 mm
  assert not has_colour(front, rows, slice(118, 122), RIGHT)
  assert has_colour(front, rows, slice(78, 82), RIGHT)  # x = -20 mm
  assert not has_colour(front, rows, slice(78, 82), LEFT)
  # From the side the horizontal axis is the depth: left at z = +40, right at -40 mm.
  assert has_colour(side, rows, slice(138, 142), LEFT)
  assert has_colour(side, rows, slice(58, 62), RIGHT)
  assert not has_colour(side, rows, slice(78, 122), LEFT)


@pytest.mark.parametrize("left_depth, near", [(-10.0, LEFT), (10.0, RIGHT)])
def test_the_nearer_limb_is_drawn_over_the_farther(left_depth, near):
  pose = standing_pose(left_depth, -left_depth)
  # Cross the lower legs (root at (100, -200) mm): they meet 60 mm below the root, near pixel
  # (99.5, 159.5); both 2 px lines cover row 159, columns 98 to 100.
  pose[H36M.index("left_knee"), :2] = (70, -160)
  pose[H36M.index("left_ankle"), :2] = (130, -120)
  pose[H36M.index("right_knee"), :2] = (130, -160)
  pose[H36M.index("right_ankle"), :2] = (70, -120)
  front = np.asarray(viz.draw_pose_3d(pose, half_extent_mm=100, size=200))
  np.testing.assert_array_equal(front[159, 98:101], np.broadcast_to(near, (3, 3)))


def test_the_picture_is_deterministic_and_marks_invalid_poses():
  pose = standing_pose()
  first, second = (viz.pose_3d_views(pose, size=96) for _ in range(2))
  assert [p.size for p in first] == [(96, 96), (96, 96)]
  assert [p.tobytes() for p in first] == [p.tobytes() for p in second]
  for valid, invalid in zip(first, viz.pose_3d_views(pose, size=96, valid=False)):
    valid, invalid = np.asarray(valid, int), np.asarray(invalid, int)
    changed = np.any(valid != invalid, axis=-1)
    rows = np.nonzero(changed.any(axis=1))[0]
    assert 0 < rows.min() and rows.max() < 16  # only the title, in the top-left corner
    red, green = invalid[changed][:, 0], invalid[changed][:, 1]  # antialiased text
    assert np.all(red > green)  # grey turned red


def test_grid_steps_are_round_numbers():
  assert [viz._nice_step(x) for x in (1, 3, 24, 250, 260, 4000)] == [1, 5, 25, 250, 500, 5000]


def test_bad_poses_are_refused():
  with pytest.raises(ValueError, match=r"must be \[17, 3\], got shape \(16, 3\)"):
    viz.draw_pose_3d(np.zeros((16, 3)))
  with pytest.raises(ValueError, match="non-finite"):
    viz.pose_3d_views(np.full((17, 3), np.nan))
  with pytest.raises(ValueError, match="half_extent_mm must be positive"):
    viz.draw_pose_3d(np.zeros((17, 3)), half_extent_mm=0)


def test_letterbox_keeps_points_where_the_matrix_puts_them():
  image = np.zeros((30, 60, 3), np.uint8)
  image[5, 10] = 255
  square, matrix = viz.letterbox(image, 120)  # zoom 2, 30 px bars above and below
  assert square.shape == (120, 120, 3)
  np.testing.assert_allclose(matrix, [[2, 0, 0.5], [0, 2, 30.5], [0, 0, 1]])
  weights = square[..., 0].astype(np.float64)
  ys, xs = np.mgrid[:120, :120]
  centroid = np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()
  np.testing.assert_allclose(centroid, [20.5, 40.5], atol=1e-6)


def test_prediction_picture_puts_the_joints_on_the_image():
  image = np.zeros((40, 80, 3), np.uint8)
  joints = np.tile([20.0, 10.0], (17, 1))
  picture = viz.prediction_picture(image, joints, standing_pose(), size=64)
  assert picture.size == (3 * (64 + 4) + 4, 64 + 8)
  # Zoom 0.8 and 16 px bars: (20, 10) -> (15.9, 23.9), + 4 px of sheet border. The right
  # wrist is drawn last.
  assert has_colour(picture, slice(27, 29), slice(19, 21), RIGHT)
  assert not has_colour(picture, slice(4, 68), slice(28, 68), RIGHT)


def test_prediction_and_truth_share_one_scale_and_give_the_error():
  truth = standing_pose()
  pose = truth.copy()
  pose[H36M.index("left_wrist")] += (0.0, 0.0, 170.0)  # 10 mm mean error over 17 joints
  # The truth reaches 90 mm from the root (x of the wrists); the predicted left wrist is
  # 40 + 170 mm deep.
  extent = viz.fitting_half_extent(pose, truth)
  assert extent == pytest.approx(1.15 * 210.0)
  assert viz.fitting_half_extent(truth) == pytest.approx(1.15 * 90.0)
  panels = viz.prediction_and_truth(np.zeros((32, 32, 3), np.uint8), np.full((17, 2), 16.0),
                                    pose, truth, size=96)
  assert [p.size for p in panels] == [(96, 96)] * 5
  expected = [viz.draw_pose_3d(truth, yaw_degrees=yaw, half_extent_mm=extent, size=96,
                               title=f"truth, {title}")
              for yaw, title in ((0.0, "front: x right, y down"),
                                 (90.0, "side: depth z right, y down"))]
  assert [p.tobytes() for p in panels[3:]] == [p.tobytes() for p in expected]
  predicted = viz.draw_pose_3d(pose, half_extent_mm=extent, size=96,
                               title="predicted (10 mm), front: x right, y down")
  assert panels[1].tobytes() == predicted.tobytes()


def test_a_cascade_gets_a_panel_per_stage_the_last_titled_final():
  image = np.zeros((40, 80, 3), np.uint8)
  stages = np.stack([np.tile([20.0, 10.0], (17, 1)), np.tile([60.0, 30.0], (17, 1))])
  picture = viz.prediction_picture(image, stages, None, size=64)  # 2D only: no 3D panels
  assert picture.size == (2 * (64 + 4) + 4, 64 + 8)
  # Zoom 0.8 and 16 px bars: (20, 10) -> (15.9, 23.9) in the first panel (4 px of border),
  # (60, 30) -> (47.9, 39.9) in the second (72 px from the left).
  assert has_colour(picture, slice(27, 29), slice(19, 21), RIGHT)
  assert has_colour(picture, slice(43, 45), slice(119, 121), RIGHT)
  assert not has_colour(picture, slice(27, 29), slice(87, 89), RIGHT)  # stage 1 in panel 2
  panels = viz.skeleton_panels(image, stages, size=64)
  titled = [viz.skeleton_panel(image, joints, size=64, title=title)
            for joints, title in zip(stages, ("stage 1", "stage 2 (final)"))]
  assert [p.tobytes() for p in panels] == [p.tobytes() for p in titled]
  # The titles are written in the top-left corner, over the skeleton alone.
  untitled = np.asarray(viz.skeleton_panel(image, stages[1], size=64), int)
  rows = np.nonzero(np.any(np.asarray(panels[1], int) != untitled, axis=-1).any(axis=1))[0]
  assert len(rows) and rows.max() < 14


def test_without_a_2d_prediction_the_image_stands_alone():
  image = np.full((40, 80, 3), 120, np.uint8)
  picture = viz.prediction_picture(image, None, standing_pose(), size=64)
  assert picture.size == (3 * (64 + 4) + 4, 64 + 8)
  square, _ = viz.letterbox(image, 64)
  np.testing.assert_array_equal(np.asarray(picture)[4:68, 4:68], square)
  assert viz.skeleton_panels(image, None, size=64)[0].tobytes() == square.tobytes()


def test_a_2d_prediction_is_shown_beside_the_2d_truth():
  crop = np.zeros((32, 32, 3), np.uint8)
  stages = np.stack([np.full((17, 2), 10.0), np.full((17, 2), 20.0)])
  truth, mask = np.full((17, 2), 16.0), np.arange(17) % 2 == 0
  panels = viz.prediction_and_truth(crop, stages, None, None, truth_2d=truth,
                                    truth_2d_mask=mask, size=64)
  expected = viz.skeleton_panels(crop, stages, size=64) + [
      viz.skeleton_panel(crop, truth, joint_mask=mask, size=64, title="truth")]
  assert [p.tobytes() for p in panels] == [p.tobytes() for p in expected]
  with pytest.raises(ValueError, match="give both or neither"):
    viz.prediction_and_truth(crop, None, standing_pose(), None)


def test_what_is_drawn_of_a_task_s_prediction():
  joints, stages = np.zeros((17, 2)), np.zeros((3, 17, 2))
  assert viz.joints_to_draw({"joints_2d": joints}) is joints
  assert viz.joints_to_draw({"joints_2d": joints, "joints_2d_stages": stages}) is stages
  assert viz.joints_to_draw({"pose_3d_mm": np.zeros((17, 3))}) is None
  for key in ("confidence", "joint_scores"):
    np.testing.assert_array_equal(viz.confident_joints({key: [0.2, 0.5, 0.9]}),
                                  [False, True, True])
  assert viz.confident_joints({"joints_2d": joints}) is None
