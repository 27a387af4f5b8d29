"""experiments/rows.py: per-seed rows pooled into one row per method."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..',
                                'experiments'))
import rows  # pylint: disable=g-import-not-at-top,wrong-import-position


def _row(name, seed, fd, steps=8):
  metrics = {'fd': fd, 'precision': 0.5, 'recall': 0.1 * (seed + 1),
             'label_acc': 0.7}
  return rows.summarise([metrics], generator='maskgit', steps=steps,
                        method='policy:x', name=name, seeds=[seed], num=10)


def test_pool_merges_one_name_per_steps_in_first_seen_order():
  pooled = rows.pool([_row('a', 0, 1.0), _row('b', 0, 5.0),
                      _row('a', 1, 3.0), _row('a', 2, 9.0, steps=4)])
  assert [(r['name'], r['steps'], r['seeds']) for r in pooled] == [
      ('a', 8, [0, 1]), ('b', 8, [0]), ('a', 4, [2])]
  a = pooled[0]
  assert a['fd']['values'] == [1.0, 3.0]
  assert a['fd']['mean'] == 2.0 and a['fd']['std'] == 1.0
  np.testing.assert_allclose(a['recall']['values'], [0.1, 0.2])
  assert a['num'] == 10 and a['method'] == 'policy:x'
