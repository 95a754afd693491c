"""Entry points: one line and exit status 2 for a user's mistake, tracebacks for bugs, progress."""

import io
import os
import subprocess
import sys
import time

import pytest
from absl import app
from absl.testing import flagsaver

from common import cli
from common import files

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _raising(error):
  def main(argv):
    del argv
    raise error
  return main


def _run(main, *args):
  """Runs `main` through `cli.run`; returns its exit status."""
  with flagsaver.flagsaver(), pytest.raises(SystemExit) as exit_info:
    cli.run(main, argv=["job", *args])
  return exit_info.value.code


@pytest.mark.parametrize("error, line", [
    (ValueError("log.csv:3: expected 3 fields, got 2."),
     "error: log.csv:3: expected 3 fields, got 2.\n"),
    (FileNotFoundError("'in' does not exist."), "error: 'in' does not exist.\n"),
    (files.UnsafeOutputError("--output_dir=x is the working directory."),
     "error: --output_dir=x is the working directory.\n"),
    (app.UsageError("Unexpected arguments: ['x']"),
     "error: Unexpected arguments: ['x']. Pass --helpshort to list the flags.\n"),
])
def test_a_user_error_is_one_line_and_status_2(capsys, error, line):
  assert _run(_raising(error)) == cli.EXIT_USER_ERROR == 2
  assert capsys.readouterr().err == line


def test_a_flag_that_does_not_parse_is_a_user_error(capsys):
  assert _run(lambda argv: None, "--verbosity=loud") == 2
  assert capsys.readouterr().err == ("error: flag --verbosity=loud: invalid literal for int() with "
                                     "base 10: 'loud'. Pass --helpshort to list the flags.\n")


def test_a_long_message_is_cut_to_one_short_line(capsys):
  quoted = "u,0,0\n" * 100_000  # what pyarrow quotes after an unclosed '"'
  assert _run(_raising(ValueError(f"log.csv:2: could not parse {quoted}; fix line 2."))) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: log.csv:2: could not parse u,0,0 u,0,0")
  assert err.endswith(" u,0,0 ; fix line 2.\n")
  # 27 characters before the quote, 100,000 x 6 in it, 13 after; each newline became a space.
  assert "[... cut: 600,040 characters in all ...]" in err
  assert len(err) == len("error: ") + cli.MAX_MESSAGE_CHARS + 1 and err.count("\n") == 1


def test_one_line_keeps_short_messages():
  assert cli.one_line("a\n  b") == "a b"
  assert cli.one_line("x" * 500) == "x" * 500


def test_verbosity_1_shows_the_traceback_of_a_user_error(capsys):
  assert _run(_raising(ValueError("bad input")), "--verbosity=1") == 2
  err = capsys.readouterr().err
  assert err.startswith("Traceback (most recent call last):")
  assert err.endswith("ValueError: bad input\nerror: bad input\n")


def test_an_internal_error_keeps_its_traceback():
  # app.run re-raises it: the interpreter prints the traceback and exits with status 1.
  with flagsaver.flagsaver(), pytest.raises(KeyError, match="bug"):
    cli.run(_raising(KeyError("bug")), argv=["job"])


def test_success_passes_the_arguments_and_status_through():
  assert _run(lambda argv: len(argv)) == 1  # ["job"]: flags removed


@pytest.mark.parametrize("given, seen", [(None, "3"), ("0", "0")])
def test_importing_cli_quiets_tensorflow_unless_the_user_chose(given, seen):
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  if given is not None:
    env["TF_CPP_MIN_LOG_LEVEL"] = given
  result = subprocess.run(
      [sys.executable, "-c", "import os; from common import cli; "
                             "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"],
      capture_output=True, text=True, cwd=_REPO_ROOT, env=env, timeout=60, check=True)
  assert result.stdout == seen + "\n"


def test_progress_off_a_terminal_is_a_log_line_every_interval(monkeypatch):
  lines = []
  monkeypatch.setattr(cli.logging, "info", lambda message, *args: lines.append(message % args))
  monkeypatch.setattr(cli, "LOG_EVERY_S", 0.0)
  with cli.progress("Writing shards", 3_000_000, "rows") as advance:
    advance(1_000_000)
    advance(500_000)
  assert lines == ["Writing shards: 33% of 3.00M rows", "Writing shards: 50% of 3.00M rows"]


def test_progress_on_a_terminal_is_a_bar_that_is_cleared(monkeypatch):
  class Terminal(io.StringIO):
    def isatty(self):
      return True

  terminal = Terminal()
  monkeypatch.setattr(sys, "stderr", terminal)
  with cli.progress("Reading log.csv", 2_000_000, "B") as advance:
    time.sleep(1.05)  # the bar appears after a second
    advance(1_000_000)
  shown = terminal.getvalue()
  assert shown.startswith("\rReading log.csv:  50%|#####     | 1.00M/2.00M [00:0")
  assert shown.endswith("B/s]\r" + " " * len(shown.split("\r")[1]) + "\r")  # then blanked

