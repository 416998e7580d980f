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
import random
import sys
from collections.abc import Callable

import numpy as np
import torch

from .errors import ToolkitError, error_reason
from .interrupts import Interrupted, end_by_signal, stop_on_signals

__all__ = ["add_logging_args", "setup_logging", "seed_everything", "resolve_device", "run_main"]


def add_logging_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--verbose", "-v", action="store_true", help="debug logging and tracebacks on errors")
    group.add_argument("--quiet", "-q", action="store_true", help="only warnings and errors")


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``; a clear error if CUDA is missing."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ToolkitError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return device


def run_main(main: Callable[[], int], verbose: bool) -> int:
    """Run ``main`` with clean stops on signals; errors become a one-line message and exit code 2."""
    try:
        with stop_on_signals():
            return main()
    except (ToolkitError, OSError) as err:
        if verbose:
            logging.getLogger("uvapm").exception("failed")
        print(f"error: {error_reason(err)}", file=sys.stderr)
        return 2
    except Interrupted as err:
        print(f"interrupted by {err}; only complete output files were kept", file=sys.stderr)
        end_by_signal(err.signum)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
