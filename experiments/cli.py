"""What every entry point shares: quiet library logs, and a user's mistake said in one line.

`run(main)` is `absl.app.run(main)`, except that a `posejax.errors.UserError` or a missing
file (a wrong path) prints "error: MESSAGE" on stderr and exits with status 2, where Python
would print a traceback. `--debug` (or POSEJAX_DEBUG=1) lets the traceback through. Any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys

# Before TensorFlow can load (the dataset builders import it): no C++ INFO lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

# pylint: disable=wrong-import-position

from absl import app, flags

from posejax.errors import UserError

USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
               PermissionError)
_DEBUG = flags.DEFINE_bool("debug", False, "Show the traceback of a usage error too.")


def run(main):
  """absl.app.run(main), with user errors in one line (see the module docstring)."""

  def guarded(argv):
    from posejax.train.loop import quiet_library_logs  # pylint: disable=import-outside-toplevel
    quiet_library_logs()
    try:
      return main(argv)
    except USER_ERRORS as error:
      if _DEBUG.value or os.environ.get("POSEJAX_DEBUG"):
        raise
      print(f"error: {error}", file=sys.stderr, flush=True)
      sys.exit(2)

  app.run(guarded)
