"""Fréchet distance between feature Gaussians, as the reference computes it.

The reference (AdaGen utils/metrics.py) takes mean and covariance in float32,
moves them to float64 and uses the eigenvalues of S1 @ S2 for the trace of the
matrix square root, not scipy's sqrtm. We do the same in NumPy on the host:
these are [D, D] matrices, computed once per evaluation.
"""

import numpy as np


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """float [N, D] features -> (mu float64 [D], sigma float64 [D, D]).

  The covariance is centred and divided by N - 1 (np.cov's convention).
  """
  feats = np.asarray(feats, np.float32)
  if feats.ndim != 2 or feats.shape[0] < 2:
    raise ValueError(f'Need float [N>=2, D] features, got {feats.shape}.')
  mu = feats.mean(axis=0)
  centred = feats - mu
  sigma = centred.T @ centred / (feats.shape[0] - 1)
  return mu.astype(np.float64), sigma.astype(np.float64)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """|mu1 - mu2|^2 + tr S1 + tr S2 - 2 sum sqrt(eig(S1 S2)), in float64."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1 = np.asarray(sigma1, np.float64)
  sigma2 = np.asarray(sigma2, np.float64)
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise ValueError(f'Mismatched statistics: {mu1.shape} vs {mu2.shape}, '
                     f'{sigma1.shape} vs {sigma2.shape}.')
  eig = np.linalg.eigvals(sigma1 @ sigma2)
  # S1 S2 is similar to a PSD matrix, so its eigenvalues are real and >= 0 up
  # to round-off; the complex sqrt keeps tiny negative ones harmless.
  tr_covmean = np.sqrt(eig.astype(np.complex128)).real.sum()
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
               - 2.0 * tr_covmean)


def fd_from_features(feats1: np.ndarray, feats2: np.ndarray) -> float:
  return frechet_distance(*feature_stats(feats1), *feature_stats(feats2))
