"""Inception Score, as torch-fidelity (and so the AdaGen reference) computes it.

IS = exp(E_x KL(p(y|x) || p(y))), with p(y|x) = softmax of the 1008-way
'logits_unbiased' of the FID Inception (metrics/inception.py). The samples are
shuffled with np.random.RandomState(seed).permutation, cut into `splits`
contiguous chunks, p(y) is the mean over each chunk, and the result is the
mean and (population) standard deviation of the per-chunk scores. All in
float64 on the host.
"""

import numpy as np


def inception_score(logits: np.ndarray, splits: int = 10,
                    seed: int = 2020) -> tuple[float, float]:
  """float [N, K] logits -> (mean, std) of the per-split Inception Scores."""
  logits = np.asarray(logits, np.float64)
  n = logits.shape[0]
  if logits.ndim != 2 or n < splits:
    raise ValueError(f'Need [N >= splits={splits}, K] logits, got '
                     f'{logits.shape}.')
  logits = logits[np.random.RandomState(seed).permutation(n)]
  # log-softmax directly, so 0 * log 0 never appears as 0 * -inf.
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  p = np.exp(log_p)
  scores = []
  for i in range(splits):
    chunk = slice(i * n // splits, (i + 1) * n // splits)
    log_q = np.log(p[chunk].mean(axis=0))
    kl = (p[chunk] * (log_p[chunk] - log_q)).sum(axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))
