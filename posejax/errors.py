"""Errors that are the user's to fix, not bugs: the command-line programs print their message
in one line (no traceback) and exit with status 2; `--debug` or POSEJAX_DEBUG=1 brings the
traceback back. Any other exception is a bug of ours and keeps its traceback.
"""


class UserError(Exception):
  """A mistake in what the user gave: a path, a config field, a file's contents."""


class ConfigError(UserError, ValueError):
  """A config field or command-line value that cannot work; the message names it."""


class InputError(UserError, ValueError):
  """An input file that is missing, malformed or of the wrong kind; the message names it."""
