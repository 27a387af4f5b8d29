"""FD, feature statistics, precision/recall and IS against closed forms."""

import numpy as np
import pytest
import scipy.linalg

from adagen_jax.metrics import fid
from adagen_jax.metrics import inception_score
from adagen_jax.metrics import precision_recall


def _random_spd(rng, d):
  a = rng.standard_normal((d, d))
  return a @ a.T / d + 0.1 * np.eye(d)


def test_fd_of_diagonal_gaussians():
  rng = np.random.default_rng(0)
  mu1, mu2 = rng.standard_normal(16), rng.standard_normal(16)
  a, b = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
  want = np.sum((mu1 - mu2)**2) + np.sum((np.sqrt(a) - np.sqrt(b))**2)
  got = fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
  assert got == pytest.approx(want, rel=1e-10)


def test_fd_of_full_covariances_matches_sqrtm():
  rng = np.random.default_rng(1)
  s1, s2 = _random_spd(rng, 32), _random_spd(rng, 32)
  mu1, mu2 = rng.standard_normal(32), rng.standard_normal(32)
  covmean = scipy.linalg.sqrtm(s1 @ s2).real
  want = (np.sum((mu1 - mu2)**2) + np.trace(s1) + np.trace(s2)
          - 2 * np.trace(covmean))
  got = fid.frechet_distance(mu1, s1, mu2, s2)
  assert got == pytest.approx(want, rel=1e-8)
  assert fid.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-9)


def test_feature_stats_match_numpy():
  feats = np.random.default_rng(2).normal(3.0, 2.0, (500, 8))
  mu, sigma = fid.feature_stats(feats)
  assert mu.dtype == sigma.dtype == np.float64
  np.testing.assert_allclose(mu, feats.mean(0), rtol=1e-5)
  np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False), rtol=1e-4,
                             atol=1e-5)


def test_fd_from_features_of_shifted_samples():
  feats = np.random.default_rng(3).standard_normal((1000, 4))
  shift = np.array([1.0, -2.0, 0.0, 0.5])
  # Same covariance, so FD is exactly the squared mean shift.
  assert fid.fd_from_features(feats, feats + shift) == pytest.approx(
      shift @ shift, rel=1e-4)


def test_kth_radii_on_a_line():
  points = np.array([[0.0], [1.0], [3.0], [7.0]])
  np.testing.assert_allclose(precision_recall.kth_radii(points, k=1),
                             [1, 1, 4, 16])
  np.testing.assert_allclose(precision_recall.kth_radii(points, k=2),
                             [9, 4, 9, 36])


def test_precision_recall_closed_forms():
  rng = np.random.default_rng(4)
  cluster_a = rng.standard_normal((100, 8))
  cluster_b = rng.standard_normal((100, 8)) + 100.0
  real = np.concatenate([cluster_a, cluster_b])
  assert precision_recall.precision_recall(real, real) == (1.0, 1.0)
  far = rng.standard_normal((150, 8)) - 100.0
  assert precision_recall.precision_recall(real, far) == (0.0, 0.0)
  # Fakes = the real points of cluster A: all inside the real manifold, and
  # they cover exactly the real points of A (distance 0), none of B.
  assert precision_recall.precision_recall(real, cluster_a) == (1.0, 0.5)


def test_inception_score_identical_rows_is_one():
  logits = np.tile(np.random.default_rng(5).standard_normal(1008), (100, 1))
  mean, std = inception_score.inception_score(logits)
  assert mean == pytest.approx(1.0, abs=1e-12)
  assert std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_of_confident_even_classes_is_k():
  k, n = 8, 800
  logits = 60.0 * np.eye(k)[np.arange(n) % k]  # near one-hot rows
  mean, std = inception_score.inception_score(logits, splits=1)
  assert mean == pytest.approx(k, rel=1e-12) and std == 0.0


def test_inception_score_splits_follow_the_seeded_shuffle():
  # With one-hot predictions a split's score is exp(entropy of its class
  # histogram); the splits are contiguous chunks of RandomState(seed)'s
  # permutation, as in torch-fidelity.
  k, n, splits, seed = 5, 103, 4, 7
  labels = np.random.default_rng(6).integers(0, k, n)
  shuffled = labels[np.random.RandomState(seed).permutation(n)]
  want = []
  for i in range(splits):
    q = np.bincount(shuffled[i * n // splits:(i + 1) * n // splits],
                    minlength=k) / (((i + 1) * n // splits) - i * n // splits)
    q = q[q > 0]
    want.append(np.exp(-np.sum(q * np.log(q))))
  mean, std = inception_score.inception_score(60.0 * np.eye(k)[labels],
                                              splits=splits, seed=seed)
  assert mean == pytest.approx(np.mean(want), rel=1e-10)
  assert std == pytest.approx(np.std(want), rel=1e-8)
  assert std > 0


def test_inception_score_rejects_too_few_samples():
  with pytest.raises(ValueError, match='splits=10'):
    inception_score.inception_score(np.zeros((5, 3)))
