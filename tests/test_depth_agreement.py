"""experiments/studies/depth_agreement.py: the depth correlation and its figures on an oracle."""

import numpy as np

from experiments.configs import synthetic
from experiments.studies import depth_agreement
from posejax import geometry
from posejax.data.batching.sources import make_source
from posejax.skeleton import H36M


def test_depth_correlations_ignore_offset_and_scale_and_see_the_mirror():
  true = np.random.default_rng(0).normal(size=(5, 17))
  correlations = depth_agreement.depth_correlations(3.0 * true + 7.0, true)
  np.testing.assert_allclose(correlations, 1.0, atol=1e-12)
  np.testing.assert_allclose(depth_agreement.depth_correlations(-true, true), -1.0, atol=1e-12)
  flat = np.zeros((2, 17))
  np.testing.assert_array_equal(depth_agreement.depth_correlations(flat, true[:2]), 0.0)
  assert correlations.shape == (5,)


class _Oracle:
  """A "task" whose prediction is the sample's truth (2D and relative depth), or with
  `flat_depth` the true 2D with every relative depth 0."""

  def __init__(self, sample, flat_depth=False):
    self.sample, self.flat_depth = sample, flat_depth

  def predict(self, model, images, cameras):
    depth = np.asarray(geometry.relative_depth_target(self.sample["joints_3d"]))
    return {"joints_2d": self.sample["joints_2d"],
            "rel_depth": np.zeros_like(depth) if self.flat_depth else depth}


class _Model:
  skeleton = H36M


def _source_and_sample():
  """A tiny synthetic source (two views of 32 px) and its first validation sample."""
  config = synthetic.get_config()
  config.data.update(image_size=32, num_views=2, motion="procedural", workers=0)
  source = make_source(config.data)
  return source, source("validation", 0)


def test_the_truth_agrees_and_its_mirror_does_not():
  source, sample = _source_and_sample()
  results = depth_agreement.agreement(_Oracle(sample), _Model(), source, samples=1)
  assert results["views"] == 2 and results["anti_correlated"] == 0.0
  np.testing.assert_allclose(results["mean_correlation"], 1.0, atol=1e-6)
  np.testing.assert_allclose(results["rel_depth_spread"], results["true_rel_depth_spread"],
                             rtol=1e-6)
  # The true 2D is the prediction here; with the mean bone lengths' scale the error is the
  # person's build, not 0, and the mirror image is further off.
  assert results["mpjpe, predicted"] == results["mpjpe, true 2D"] < 60.0  # 28.8 mm
  assert results["mpjpe, true depth"] == results["mpjpe, predicted"]
  assert results["mpjpe, depth negated"] > 200.0  # 444.6 mm


def test_the_true_depth_column_puts_the_truth_back_where_the_prediction_lacks_it():
  source, sample = _source_and_sample()
  truth = depth_agreement.agreement(_Oracle(sample), _Model(), source, samples=1)
  flat = depth_agreement.agreement(_Oracle(sample, flat_depth=True), _Model(), source,
                                   samples=1)
  # Flat depths are far off; the true-depth column replaces them with the truth's.
  assert flat["mpjpe, predicted"] > truth["mpjpe, predicted"] + 50.0
  np.testing.assert_allclose(flat["mpjpe, true depth"], truth["mpjpe, predicted"], rtol=1e-5)
