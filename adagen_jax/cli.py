"""Shared command-line plumbing: user errors become one line and exit 2.

On Linux with glibc >= 2.35 every command re-executes itself once with
GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (`reexec_with_huge_pages`); set
GLIBC_TUNABLES=glibc.malloc.hugetlb=0 to opt out.

One JAX CPU device per core (JAX_NUM_CPU_DEVICES=2 on 2 cores) runs a
sharded rollout 1.3-1.5x faster (docs/RESULTS.md, Speed). It is not the
default, so that the measured runs keep their one-device numbers; training
and sampling both split their batches over the devices when it is set
(the FD reward's eigvalsh then goes one matrix at a time: with jaxlib 0.10
two devices running LAPACK's batched kernel at once deadlocked XLA's
intra-op pool, `rl.rewards._eigvalsh`).
"""

import logging as py_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from adagen_jax import errors


def _flag_error_line(e: Exception) -> str:
  # absl/ml_collections flag errors are multi-line; the first line names the
  # flag and the problem.
  return str(e).strip().splitlines()[0] if str(e).strip() else repr(e)


_CONFIG_ERRORS = (KeyError, AttributeError, TypeError, ValueError, IOError,
                  errors.UserError)


def define_config(default: str | None, help_text: str):
  """config_flags.DEFINE_config_file('config', ...), with clean errors.

  With a default file, ml_collections applies `--config.key=value` overrides
  from sys.argv while *defining* the flag, so a bad key fails at import time;
  report it like any other flag error.
  """
  try:
    return config_flags.DEFINE_config_file('config', default, help_text,
                                           lock_config=True)
  except _CONFIG_ERRORS as e:
    print(f'error: bad --config override: {_flag_error_line(e)} (see --help)',
          file=sys.stderr)
    sys.exit(2)


_HUGETLB = 'glibc.malloc.hugetlb'
_THP = '/sys/kernel/mm/transparent_hugepage/enabled'


def _huge_pages_env(environ, libc: str, thp: str) -> dict | None:
  """The environment to re-execute with, or None to run as is.

  Args:
    environ: the current environment.
    libc: os.confstr('CS_GNU_LIBC_VERSION'), e.g. 'glibc 2.36' ('' if
      unknown).
    thp: the contents of _THP ('' if missing), e.g. 'always [madvise]
      never'.
  """
  tunables = environ.get('GLIBC_TUNABLES', '')
  if _HUGETLB in tunables or '[never]' in thp or not thp:
    return None  # set by the user (or by the re-exec), or no huge pages
  name, _, version = libc.partition(' ')
  try:
    if name != 'glibc' or tuple(map(int, version.split('.')[:2])) < (2, 35):
      return None  # the tunable is glibc 2.35's
  except ValueError:
    return None
  env = dict(environ)
  env['GLIBC_TUNABLES'] = ':'.join(filter(None, [tunables,
                                                 f'{_HUGETLB}=1']))
  return env


def reexec_with_huge_pages() -> None:
  """Re-executes this command with malloc's memory on transparent huge pages.

  Every entry point calls it first (`run`; the benchmarks too, so they time
  what training runs). XLA:CPU allocates a program's temporaries afresh
  every call (hundreds of MB for a rollout or a training step), and glibc
  maps blocks that large anew each time, so every call page-faults and
  zeroes them again in 4 KiB pages: measured 0.5-0.9 s of system time per
  step of the Fashion-MNIST VAR transformer, whose matmuls take 1.3 s.
  With glibc.malloc.hugetlb=1 malloc asks for 2 MiB pages (madvise), and
  that drops to ~0.1 s; the user time drops too (fewer TLB misses): the
  old width-192 VAR step went from 4.0 to 2.3 s of one core, the VQVAE
  step from 0.65 to 0.52 s, and the Fashion-MNIST MaskGIT rollout gains
  ~25% (docs/RESULTS.md, Speed).
  Numerics are unchanged (allocation only). glibc reads its tunables at
  process start, hence the re-execution (same PID, arguments, interpreter
  options).
  """
  if sys.platform != 'linux':
    return
  try:
    with open(_THP) as f:
      thp = f.read()
  except OSError:
    thp = ''
  try:
    libc = os.confstr('CS_GNU_LIBC_VERSION') or ''
  except (ValueError, OSError):
    libc = ''
  env = _huge_pages_env(os.environ, libc, thp)
  if env is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)


class _OwnInfoOnly(py_logging.Filter):
  """Orbax logs each checkpoint save in ~40 INFO lines: keep INFO records
  from adagen_jax only, and warnings and errors from everyone."""

  def filter(self, record):
    return (record.levelno >= py_logging.WARNING or
            f'{os.sep}adagen_jax{os.sep}' in record.pathname)


def run(main):
  """absl's app.run, with UserError and flag errors turned into exit 2."""
  reexec_with_huge_pages()
  logging.get_absl_handler().addFilter(_OwnInfoOnly())
  try:
    app.run(main, flags_parser=_parse_flags)
  except errors.UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


def _check_config_path(argv):
  for a in argv[1:]:
    if a.startswith('--config='):
      path = a.split('=', 1)[1].split(':', 1)[0]
      if not os.path.isfile(path):
        print(f'error: config file {path} not found; pass an existing file, '
              'e.g. --config=configs/fmnist_maskgit.py', file=sys.stderr)
        sys.exit(2)


def _parse_flags(argv):
  _check_config_path(argv)
  try:
    argv = flags.FLAGS(argv)
    # Config files and `--config.key=value` overrides load lazily; load them
    # now so a bad key, value or path is reported here, not as a traceback.
    # (A config that failed to load is a proxy raising on attribute access.)
    for name in list(flags.FLAGS):
      hasattr(getattr(flags.FLAGS, name), 'to_dict')
    return argv
  except flags.Error as e:
    print(f'error: {_flag_error_line(e)} (see --help)', file=sys.stderr)
    sys.exit(2)
  except _CONFIG_ERRORS as e:
    # config_flags raises these for an unknown override key, a wrong type or
    # a config file that does not exist / does not load.
    print(f'error: bad --config: {_flag_error_line(e)}', file=sys.stderr)
    sys.exit(2)
