"""What every entry point shares: quiet library logs, and a user's mistake said in one line.

`run(main)` is `absl.app.run(main)`, except that a user's mistake prints "error: MESSAGE" on
stderr and exits with status 2, where Python would print a traceback: a flag or config that
cannot be parsed or loaded (a wrong --config path, a misspelt --config.FIELD, a bad colon
argument), a `posejax.errors.UserError`, or a missing file (a wrong path). `--debug` (or
POSEJAX_DEBUG=1) lets the traceback through. Any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import os
import re
import sys

# Before TensorFlow can load (the dataset builders import it): no C++ INFO lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

# pylint: disable=wrong-import-position

from absl import app, flags

from posejax.errors import UserError

USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
               PermissionError)
_DEBUG = flags.DEFINE_bool("debug", False, "Show the traceback of a usage error too.")


def _debugging(argv=()) -> bool:
  return bool(os.environ.get("POSEJAX_DEBUG")) or "--debug" in argv or (
      flags.FLAGS.is_parsed() and _DEBUG.value)


def _fail(message: str):
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


def _one_line(error: Exception) -> str:
  """The message of an error raised while parsing flags: the last line of a quoted traceback,
  else all its lines joined."""
  lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
  if any(line.startswith("Traceback") for line in lines):
    return lines[-1]
  return " ".join(lines).replace("\\'", "'")


def _message(error: Exception) -> str:
  if isinstance(error, AttributeError):  # ml_collections: "'stepz'\nDid you mean "steps"..."
    names = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", str(error).split("\n")[0])
    guess = re.search(r'Did you mean "([^"]+)"', str(error))
    return (f"the config has no field {names[0]!r}" if names else "a config field is unknown") + (
        f" (did you mean {guess[1]!r}?)" if guess else "")
  missing = re.search(r"No such file or directory: '([^']+)'", str(error))
  if missing and "config" in str(error):
    return f"no such config file: {missing[1]}"
  return _one_line(error)


def _parser(config_flags):
  """A flags parser that also loads the configs now, so a config that cannot load is a
  one-line error here rather than a traceback inside main."""

  def parse(argv):
    try:
      args = flags.FLAGS(argv)
      for holder in config_flags:  # a config that failed to load raises on first use
        getattr(holder.value, "get", None)
      return args
    except (flags.Error, OSError, AttributeError, KeyError, TypeError, ValueError) as error:
      if _debugging(argv):
        raise
      cause = error.__cause__ if isinstance(error, OSError) and error.__cause__ else error
      _fail(_message(cause))

  return parse


def run(main, config_flags=()):
  """absl.app.run(main), with user errors in one line (see the module docstring);
  `config_flags`: the program's config flag holders, loaded while parsing."""

  def guarded(argv):
    from posejax.train.loop import quiet_library_logs  # pylint: disable=import-outside-toplevel
    quiet_library_logs()
    try:
      return main(argv)
    except USER_ERRORS as error:
      if _debugging():
        raise
      _fail(str(error))

  app.run(guarded, flags_parser=_parser(config_flags))


def run_parts(chosen, parts) -> None:
  """A study's `--parts`: runs each chosen part, in the order of `parts` (name -> function);
  an unknown name is a usage error that lists the choices."""
  unknown = set(chosen) - set(parts)
  if unknown:
    raise app.UsageError(f"Unknown parts {sorted(unknown)}; choose from {', '.join(parts)}")
  for name, run_part in parts.items():
    if name in chosen:
      run_part()
