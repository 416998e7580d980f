"""Helpers shared by the command-line entry points.

Each command is a ``main(argv=None)`` that parses arguments, sets up logging,
loads its YAML config with overrides, and calls library functions. Errors the
toolkit raises on purpose, and files or folders the system cannot read or
write (a full disk, a read-only folder), are printed as one line (a traceback
only with ``--verbose``) and give exit code 2. SIGINT and SIGTERM stop the
command cleanly within two seconds (:mod:`utils.interrupts`); it then ends by
that signal (exit status 130 or 143 in a shell).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from .errors import ToolkitError, error_reason
from .interrupts import Interrupted, end_by_signal, stop_on_signals

__all__ = ["add_logging_args", "setup_logging", "default_help", "count", "run_main"]


def add_logging_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--verbose", "-v", action="store_true", help="debug logging and tracebacks on errors")
    group.add_argument("--quiet", "-q", action="store_true", help="only warnings and errors")


def default_help(text: str, default) -> str:
    """A flag's help text ending in its default (taken from the config dataclass, which the YAML mirrors)."""
    shown = ",".join(str(v) for v in default) if isinstance(default, (list, tuple)) else default
    return f"{text} (default: {shown if shown != '' else 'none'})"


def count(number: int, noun: str, plural: str | None = None) -> str:
    """``"1 face"``, ``"2 faces"``: a number with its noun in the right form."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Log to stderr at DEBUG (``--verbose``), WARNING (``--quiet``) or INFO.

    The level is set on the console handler only; the root logger passes INFO (DEBUG
    with ``--verbose``) on, so per-face logs (``log.txt``) keep their INFO lines
    whatever the console shows.
    """
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    console = logging.StreamHandler(sys.stderr)
    # A filter rather than a handler level: tqdm's logging_redirect_tqdm copies a handler's filters, not its level.
    console.addFilter(lambda record: record.levelno >= level)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.addHandler(console)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def _say(line: str) -> None:
    """Write one line to stderr in one write, so that the lines of processes sharing it (``torchrun`` ranks)
    never run into each other (``print`` writes the line and its newline separately)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def run_main(main: Callable[[], int], verbose: bool) -> int:
    """Run ``main`` with clean stops on signals; errors become a one-line message and exit code 2."""
    try:
        with stop_on_signals():
            return main()
    except (ToolkitError, OSError) as err:
        if verbose:
            logging.getLogger("uvapm").exception("failed")
        _say(f"error: {error_reason(err)}")
        return 2
    except Interrupted as err:
        _say(f"interrupted by {err}; only complete output files were kept")
        end_by_signal(err.signum)
        return err.exit_code
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
