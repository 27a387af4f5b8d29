"""Shared command-line plumbing: user errors become one line and exit 2."""

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


class _OwnInfoOnly(py_logging.Filter):
  """Orbax logs each checkpoint save in ~40 INFO lines: keep INFO records
  from adagen_jax only, and warnings and errors from everyone."""

  def filter(self, record):
    return (record.levelno >= py_logging.WARNING or
            f'{os.sep}adagen_jax{os.sep}' in record.pathname)


def run(main):
  """absl's app.run, with UserError and flag errors turned into exit 2."""
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
