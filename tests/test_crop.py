"""Person crops: the crop camera and the cropped pixels agree exactly."""

import numpy as np
import pytest

from posejax.data.real import crop


def _dot_image(height, width, x, y):
  image = np.zeros((height, width, 3), np.uint8)
  image[y, x] = 255
  return image


def _centroid(image):
  weights = image[..., 0].astype(np.float64)
  ys, xs = np.mgrid[:image.shape[0], :image.shape[1]]
  return np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()


@pytest.mark.parametrize("side", [40.0, 33.3, 64.0])  # shrink, odd shrink, unit zoom
def test_a_pixel_lands_where_the_crop_matrix_puts_it(side):
  frame = _dot_image(120, 160, x=70, y=50)
  centre, size = np.array([75.2, 48.7]), 32
  cropped = crop.crop_image(frame, centre, side, size)
  expected = crop.transform_points(crop.crop_matrix(centre, side, size), [[70, 50]])[0]
  # The antialiased resize spreads the dot symmetrically: its centroid is exact up to the
  # quantisation of the weights to uint8.
  np.testing.assert_allclose(_centroid(cropped), expected, atol=0.05)


def test_unit_zoom_is_a_plain_copy_and_outside_is_black():
  frame = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
  cropped = crop.crop_image(frame, centre=(4.5, 4.5), side=10, image_size=10)
  np.testing.assert_array_equal(cropped, frame[:10, :10])
  corner = crop.crop_image(frame, centre=(-0.5, -0.5), side=10, image_size=10)
  np.testing.assert_array_equal(corner[:5, :5], 0)
  np.testing.assert_array_equal(corner[5:, 5:], frame[:5, :5])


def test_crop_matrix_maps_the_box_centre_to_the_crop_centre():
  matrix = crop.crop_matrix((300.0, 200.0), 100.0, 256)
  np.testing.assert_allclose(crop.transform_points(matrix, [[300, 200]]), [[127.5, 127.5]])
  np.testing.assert_allclose(matrix[0, 0], 2.56)


def test_crop_view_composes_the_camera():
  intrinsics = np.array([[1000.0, 0, 500], [0, 1000, 400], [0, 0, 1]])
  point = np.array([100.0, -50, 4000])
  frame = np.zeros((800, 1000, 3), np.uint8)
  _, camera = crop.crop_view(frame, intrinsics, (520, 390), 200.0, 64)
  pixel = intrinsics @ point
  expected = crop.transform_points(crop.crop_matrix((520, 390), 200.0, 64), [pixel[:2] / pixel[2]])
  projected = camera @ point
  np.testing.assert_allclose(projected[:2] / projected[2], expected[0], atol=1e-3)
  np.testing.assert_allclose(camera[2], [0, 0, 1])


def test_square_box_and_its_errors():
  centre, side = crop.square_box([[0, 0], [10, 4], [99, 99]], [True, True, False], margin=1.5)
  np.testing.assert_allclose(centre, [5, 2])
  assert side == 15
  with pytest.raises(ValueError, match="finite point"):
    crop.square_box([[0, 0]], [False])
  with pytest.raises(ValueError, match="uint8"):
    crop.crop_image(np.zeros((4, 4, 3), np.float32), (1, 1), 2, 2)
