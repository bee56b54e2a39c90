"""experiments.studies.loss_landscape: the ws objective over free depths, on ground-truth 2D."""

import numpy as np
import pytest

from experiments.studies import loss_landscape
from posejax import geometry
from posejax.skeleton import H36M
from posejax.tasks.pose25d.objective import Objective
from posejax.train import step as step_lib

# The weights the objective used to carry by default (heatmap 1, psi 5, alpha 10, beta 100,
# scale 1), by term name.
WEIGHTS = dict(heatmap=1.0, depth=5.0, multiview=10.0, limb=100.0, knee=0.0, scale_bone=1.0,
               scale_tilt=1.0)


@pytest.fixture(scope="module")
def views():
  return loss_landscape.validation_views(2)


def test_the_true_depths_are_consistent_and_their_mirror_image_is_not(views):
  truth = geometry.relative_depth_target(views["joints_3d"], H36M)
  objective = Objective(mode="ws")
  consistency = {t: float(loss_landscape.ws_terms(t * truth, views, objective)["multiview"])
                 for t in (-1.0, 0.0, 1.0)}
  assert consistency[1.0] < 1e-3 < consistency[-1.0] < consistency[0.0]
  assert loss_landscape.mpjpe_mm(truth, views) < 50 < loss_landscape.mpjpe_mm(-truth, views)


def test_the_synthetic_knees_bend_forwards_and_their_mirror_images_do_not(views):
  truth = geometry.relative_depth_target(views["joints_3d"], H36M)
  objective = Objective(mode="ws")
  knee = {t: float(loss_landscape.ws_terms(t * truth, views, objective)["knee"])
          for t in (-1.0, 0.0, 1.0)}
  assert knee[1.0] == 0.0 and knee[-1.0] > 0.05 and knee[0.0] < 1e-3


def test_negating_bones(views):
  truth = np.asarray(geometry.relative_depth_target(views["joints_3d"], H36M))
  rng = np.random.default_rng(0)
  np.testing.assert_allclose(loss_landscape.with_bones_negated(truth, 0.0, rng), truth,
                             atol=1e-6)
  np.testing.assert_allclose(loss_landscape.with_bones_negated(truth, 1.0, rng), -truth,
                             atol=1e-6)  # every offset negated: the root's depth is 0


def test_fit_lowers_the_objective(views):
  objective = Objective(mode="ws", root_depth_gradient=False)
  start = np.random.default_rng(0).normal(size=views["joints_2d"].shape[:-1]) * 0.3
  before = step_lib.weighted_sum(loss_landscape.ws_terms(start, views, objective), WEIGHTS)
  _, terms = loss_landscape.fit(start, views, objective, WEIGHTS, steps=30, learning_rate=0.01)
  assert float(step_lib.weighted_sum(terms, WEIGHTS)) < float(before)
