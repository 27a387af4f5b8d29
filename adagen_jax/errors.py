"""User-facing errors: one clear line, exit code 2, never a traceback."""


class UserError(Exception):
  """Bad input from the user: a config value, a missing file, missing data.

  The message must say what is wrong and the command that fixes it, on one
  line. `adagen_jax.main` (and every other CLI) prints it and exits 2.
  """


def require_file(path, what: str, fix: str):
  """Raises UserError unless `path` exists; returns `path` as a string."""
  import os  # pylint: disable=g-import-not-at-top
  if not os.path.exists(path):
    raise UserError(f'{what} not found at {path}; {fix}')
  return str(path)
