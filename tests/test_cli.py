"""adagen_jax/cli.py: huge pages and one CPU device per core for every command."""

import os
import subprocess
import sys

from adagen_jax import cli

_THP = 'always [madvise] never'


def test_huge_pages_are_asked_for_once_on_a_recent_glibc():
  env = cli._huge_pages_env(  # pylint: disable=protected-access
      {'PATH': '/bin'}, 'glibc 2.36', _THP)
  assert env == {'PATH': '/bin', 'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'}
  # The re-executed process sees the tunable and runs as is.
  assert cli._huge_pages_env(  # pylint: disable=protected-access
      env, 'glibc 2.36', _THP) is None


def test_other_tunables_are_kept():
  env = cli._huge_pages_env(  # pylint: disable=protected-access
      {'GLIBC_TUNABLES': 'glibc.malloc.trim_threshold=1'}, 'glibc 2.35',
      _THP)
  assert env['GLIBC_TUNABLES'] == (
      'glibc.malloc.trim_threshold=1:glibc.malloc.hugetlb=1')


def test_no_reexecution_where_it_cannot_help_or_is_opted_out():
  f = cli._huge_pages_env  # pylint: disable=protected-access
  assert f({}, 'glibc 2.34', _THP) is None        # no such tunable
  assert f({}, '', _THP) is None                  # not glibc (musl, ...)
  assert f({}, 'glibc 2.36', 'always madvise [never]') is None
  assert f({}, 'glibc 2.36', '') is None          # no THP support
  assert f({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}, 'glibc 2.36',
           _THP) is None                          # the user's choice


def test_cpu_device_count_is_a_power_of_two_up_to_8():
  assert [cli.cpu_device_count(c) for c in (1, 2, 3, 4, 6, 8, 12, 64)] == [
      1, 2, 2, 4, 4, 8, 8, 8]


_COUNT = ('from adagen_jax import cli; n = cli.cpu_devices_from_cores(); '
          'import jax; print(n, jax.device_count())')


def _count(**env):
  base = {k: v for k, v in os.environ.items()
          if k not in ('XLA_FLAGS', 'JAX_NUM_CPU_DEVICES')}
  out = subprocess.run([sys.executable, '-c', _COUNT],
                       env={**base, 'JAX_PLATFORMS': 'cpu', **env},
                       capture_output=True, text=True, check=True)
  return out.stdout.split()


def test_one_cpu_device_per_usable_core():
  n = cli.cpu_device_count(len(os.sched_getaffinity(0)))
  assert _count() == [str(n), str(n)]


def test_a_count_the_user_chose_is_kept():
  assert _count(JAX_NUM_CPU_DEVICES='3') == ['None', '3']
  assert _count(XLA_FLAGS='--xla_force_host_platform_device_count=5') == [
      'None', '5']
