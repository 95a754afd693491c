"""What every entry point shares: one-line errors for a user's mistakes, quiet start-up, progress.

    from common import cli  # before anything that imports TensorFlow (see below)

    def main(argv):
      ...

    def run():
      define_flags()
      cli.run(main)

`run(main)` runs `main` under `absl.app.run`. An exception that means bad input or bad
usage (`USER_ERRORS`: `ValueError`, `FileNotFoundError`, `PermissionError`, absl's
`app.UsageError`; `common.files.UnsafeOutputError` is a `ValueError`), and a flag that
does not parse, ends the program with one line `error: <message>` on stderr (cut to
about 500 characters) and exit status 2, without a traceback; `--verbosity=1` prints the
traceback first. Any other exception is a bug: it keeps its traceback and exit status 1.

Importing this module sets `TF_CPP_MIN_LOG_LEVEL=3` unless the user set it, so that
TensorFlow's C++ start-up lines (CPU features, "failed call to cuInit" on a machine
without a GPU, an ERROR-level line) are not shown; `TF_CPP_MIN_LOG_LEVEL=0` shows them.
It only takes effect before TensorFlow is first imported, hence the import order above.

`interrupt_on_sigterm()` makes SIGTERM (Kubernetes, `kill`) end a job like Ctrl-C, so
its `KeyboardInterrupt` handling (a checkpoint, a clean shutdown) runs.

`progress(description, total, unit)` reports a long step: a tqdm bar on a terminal (log
lines print above it), else a log line every `LOG_EVERY_S` seconds; its callers advance
it once per block or batch, never per event.
"""

import contextlib
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable, Iterator, List, NoReturn, Optional, Sequence

import tqdm
from absl import app
from absl import flags
from absl import logging

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, app.UsageError)
EXIT_USER_ERROR = 2
MAX_MESSAGE_CHARS = 500
LOG_EVERY_S = 10.0


def one_line(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
  """`message` on one line; its middle is cut when longer than `limit` (it may quote input)."""
  message = " ".join(message.split())
  if len(message) <= limit:
    return message
  marker = f" [... cut: {len(message):,} characters in all ...] "
  keep = limit - len(marker)
  head = keep * 2 // 3  # the start says where, the end usually how to fix it
  return message[:head] + marker + message[len(message) - (keep - head):]


def _exit_with_user_error(error: BaseException, show_traceback: bool) -> NoReturn:
  if show_traceback:
    traceback.print_exception(error)
  message = one_line(str(error) or type(error).__name__)
  if isinstance(error, (app.UsageError, flags.Error)):
    message = message.rstrip(".") + ". Pass --helpshort to list the flags."
  sys.stderr.write(f"error: {message}\n")
  sys.exit(EXIT_USER_ERROR)


def _parse_flags(argv: List[str]) -> List[str]:
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:  # before --verbosity is known: never a traceback
    _exit_with_user_error(error, show_traceback=False)


def run(main: Callable[[List[str]], Any], argv: Optional[Sequence[str]] = None) -> NoReturn:
  """Runs `main(argv)` under `absl.app.run`, reporting a user's mistake in one line.

  Never returns: it exits with `main`'s return value as the status, 2 for a user error.

  Args:
    main: the entry point's main; it gets the arguments left after the flags.
    argv: the command line, program name first (default: `sys.argv`; tests pass one).
  """

  def main_reporting_user_errors(args):
    try:
      return main(args)
    except USER_ERRORS as error:
      _exit_with_user_error(error, show_traceback=logging.level_debug())

  app.run(main_reporting_user_errors, argv=None if argv is None else list(argv),
          flags_parser=_parse_flags)


def interrupt_on_sigterm() -> None:
  """SIGTERM raises `KeyboardInterrupt` in the main thread, as Ctrl-C does."""

  def handler(signum, frame):
    del signum, frame
    raise KeyboardInterrupt("SIGTERM")

  signal.signal(signal.SIGTERM, handler)


def _suffix(unit: str) -> str:
  """A unit letter stays attached (12.3MB), a unit word gets a space (4.56M rows)."""
  return unit if len(unit) == 1 else f" {unit}"


class _LogLines:
  """Progress as a log line at most every `LOG_EVERY_S` seconds (for logs, not terminals)."""

  def __init__(self, description: str, total: Optional[int], unit: str):
    self._description, self._total, self._unit = description, total, unit
    self._done, self._last = 0, time.monotonic()

  def update(self, count: int) -> None:
    self._done += count
    now = time.monotonic()
    if now - self._last >= LOG_EVERY_S:
      self._last = now
      if self._total:
        logging.info("%s: %d%% of %s", self._description, 100 * self._done // self._total,
                     tqdm.tqdm.format_sizeof(self._total, _suffix(self._unit)))
      else:
        logging.info("%s: %s so far", self._description,
                     tqdm.tqdm.format_sizeof(self._done, _suffix(self._unit)))


class _AboveTheBars:
  """A stream for log lines that tqdm prints above its bars instead of through them."""

  def write(self, text: str) -> None:
    tqdm.tqdm.write(text, file=sys.stderr, end="")

  def flush(self) -> None:
    sys.stderr.flush()


@contextlib.contextmanager
def progress(description: str, total: Optional[int], unit: str) -> Iterator[Callable[[int], None]]:
  """Yields `advance(count)`, thread-safe, that reports `count` more of `total` done.

  Args:
    description: what runs, e.g. "Reading log.csv".
    total: the amount of work, in `unit`s; None when unknown (a count is shown).
    unit: "B" (bytes) or a word such as "rows".
  """
  with contextlib.ExitStack() as stack:
    if sys.stderr.isatty():
      # delay: steps shorter than a second show nothing; leave=False: the bar is cleared.
      reporter = stack.enter_context(tqdm.tqdm(
          total=total, desc=description, unit=_suffix(unit), unit_scale=True, delay=1.0,
          leave=False, file=sys.stderr))
      handler = logging.get_absl_handler().python_handler
      stack.callback(handler.setStream, handler.setStream(_AboveTheBars()))
    else:
      reporter = _LogLines(description, total, unit)
    lock = threading.Lock()

    def advance(count: int) -> None:
      with lock:
        reporter.update(count)

    yield advance
