"""experiments/tuning.py: the local search past a tuning grid's edge."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..',
                                'experiments'))
import tuning  # pylint: disable=g-import-not-at-top,wrong-import-position

_GRID = dict(cfg=(0.0, 1.0, 2.0), schedule=('even', 'logsnr'),
             temp=(0.9, 1.0))


def _trials(grid):
  return [dict(cfg=c, schedule=s, temp=t, fd=0.0) for c in grid['cfg']
          for s in grid['schedule'] for t in grid['temp']]


def test_interior_point_keeps_its_neighbours():
  near = tuning.neighbourhood(_GRID, _trials(_GRID),
                              dict(cfg=1.0, schedule='logsnr', temp=1.0),
                              upper={'temp': 1.0})
  assert near == dict(cfg=(0.0, 1.0, 2.0), schedule=('logsnr',),
                      temp=(0.9, 1.0))


def test_edges_step_past_the_grid_within_bounds():
  near = tuning.neighbourhood(_GRID, _trials(_GRID),
                              dict(cfg=2.0, schedule='even', temp=0.9),
                              upper={})
  # One spacing past the top; down to 0.8 (not 0.7999...).
  assert near == dict(cfg=(1.0, 2.0, 3.0), schedule=('even',),
                      temp=(0.8, 0.9, 1.0))
  # Never below 0: guidance 0 has no lower neighbour.
  assert tuning.neighbourhood(
      _GRID, _trials(_GRID), dict(cfg=0.0, schedule='even', temp=1.0),
      upper={'temp': 1.0})['cfg'] == (0.0, 1.0)


def test_small_values_halve_instead_of_reaching_zero():
  grid = dict(temp=(0.1, 0.5))
  trials = [dict(temp=0.1, fd=1.0), dict(temp=0.5, fd=2.0)]
  assert tuning.neighbourhood(grid, trials, dict(temp=0.1),
                              upper={}) == dict(temp=(0.05, 0.1, 0.5))
