"""adagen_jax/cli.py: huge pages for every command."""

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
