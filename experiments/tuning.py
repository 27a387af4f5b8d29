"""The local search that follows a tuning grid (fmnist_table.py --stage=tune).

A grid whose best point lies on its edge has not found the optimum: the
search samples the best point's neighbours, one step past the edge, until
the best point is surrounded by worse ones.
"""

import numpy as np


def neighbourhood(grid: dict, trials: list[dict], best: dict,
                  upper: dict) -> dict:
  """The values of each constant next to `best`'s among those tried.

  At the edge of what was tried, one step (the last spacing) beyond it:
  down to at most half the smallest value (never to 0 or below, where a
  temperature is undefined), up to `upper`. Categorical constants stay at
  the best's value.

  Args:
    grid: {constant: values} of the first grid (its keys and kinds).
    trials: the points tried so far, {constant: value, ..., 'fd': ...}.
    best: the best point tried.
    upper: {constant: largest value allowed}.

  Returns:
    {constant: sorted values} whose product is the next points to try.
  """
  out = {}
  for k, values in grid.items():
    if not all(isinstance(v, (int, float)) for v in values):
      out[k] = (best[k],)
      continue
    tried = sorted({float(t[k]) for t in trials})
    i = tried.index(float(best[k]))
    v = tried[i]
    if i > 0:
      below = tried[i - 1]
    elif v > 0:
      step = tried[1] - v if len(tried) > 1 else v / 2
      below = v - step if v - step > 0 else v / 2
    else:
      below = None
    if i + 1 < len(tried):
      above = tried[i + 1]
    else:
      step = v - tried[i - 1] if i > 0 else max(v, 1.0)
      above = min(v + step, upper.get(k, np.inf))
    # Rounded: 0.9 - 0.1 must match a later 0.8.
    out[k] = tuple(sorted({round(x, 6) for x in (below, v, above)
                           if x is not None}))
  return out
