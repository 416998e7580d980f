"""Stopping promptly and cleanly on SIGINT and SIGTERM.

Every command enters :func:`stop_on_signals` (through
:func:`utils.cli.run_main`):

* SIGTERM, like SIGINT, raises :class:`Interrupted` (a ``KeyboardInterrupt``)
  in the main thread, so ``with`` and ``finally`` blocks run: atomic writes
  remove their temporary file, output locks are released. The command then
  ends by the signal itself (:func:`end_by_signal`; the shell sees 130 for
  SIGINT, 143 for SIGTERM), which also skips the interpreter's slow
  clean-up of the loaded libraries (most of a second with torch and dlib).
  Signals that arrive while it is stopping are ignored, so a second Ctrl-C
  cannot interrupt that clean-up half-way.
* Python runs signal handlers only between bytecodes of the main thread: a
  long call into C that keeps the GIL (dlib's CNN face detector takes seconds
  on a CPU) would delay the stop. A small watchdog process, woken by the
  C-level signal handler through :func:`signal.set_wakeup_fd`, kills the
  command with SIGKILL if it is still alive :data:`GRACE_SECONDS` after the
  signal, then removes the temporary files the command left in the folders
  registered with :func:`watch_folder` (temporary names carry the process id,
  see :func:`utils.atomic.temporary_owner`). Either way the command is gone
  within two seconds and only complete files remain.

SIGHUP (a closed terminal) is handled like SIGTERM. A signal that is ignored
when the command starts (``nohup``, background jobs) stays ignored. The
watchdog needs POSIX; elsewhere, or if it cannot be started, only the clean
stop remains.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["GRACE_SECONDS", "STOP_SIGNALS", "Interrupted", "stop_on_signals", "watch_folder", "end_by_signal"]

logger = logging.getLogger("uvapm.interrupts")

#: Seconds between a stop signal and the watchdog's SIGKILL.
GRACE_SECONDS = 1.0
#: SIGINT, SIGTERM and, where it exists, SIGHUP (the terminal was closed).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by SIGINT or SIGTERM.

    Attributes:
        signum: the signal number.
    """

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(signal.Signals(self.signum).name)

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process stopped by the signal: 128 + signal number."""
        return 128 + self.signum


# The watchdog: a separate interpreter without site packages; it needs the GIL of no one. It ignores the stop
# signals itself (a Ctrl-C reaches the whole process group), reads signal numbers from the wake-up pipe and
# folder names (hex of their bytes, one per line) from stdin, and exits when the command closes the pipe.
_WATCHDOG = r"""
import os, select, signal, sys, time
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)  # the command's signals are for the command
wake, parent, grace = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
stops = {int(s) for s in sys.argv[4].split(",")}
folders, pending, deadline = [], b"", None
inputs = [wake, 0]
while True:
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    ready = select.select(inputs, [], [], timeout)[0]
    if not ready:
        break
    if 0 in ready:
        data = os.read(0, 65536)
        if not data:
            inputs.remove(0)
        pending += data
        *lines, pending = pending.split(b"\n")
        folders += [bytes.fromhex(line.decode()) for line in lines if line]
    if wake in ready:
        data = os.read(wake, 256)
        if not data:
            sys.exit(0)
        if deadline is None and stops.intersection(data):
            deadline = time.monotonic() + grace
if os.getppid() != parent:  # the command has ended and its process id may be someone else's by now
    sys.exit(0)
os.kill(parent, signal.SIGKILL)
suffix = (".%d.part" % parent).encode()
for folder in folders:
    for root, _, files in os.walk(folder):
        for name in files:
            if name.startswith(b".") and name.endswith(suffix):
                try:
                    os.unlink(os.path.join(root, name))
                except OSError:
                    pass
"""


class _Watchdog:
    """The watchdog process and the wake-up pipe the C signal handler writes to.

    Raises:
        OSError: the process cannot be started.
    """

    def __init__(self, grace: float, signals: list[int]):
        read_end, self.wake = os.pipe()
        try:
            os.set_blocking(self.wake, False)
            stops = ",".join(str(int(s)) for s in signals)
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _WATCHDOG, str(read_end), str(os.getpid()), str(grace), stops],
                stdin=subprocess.PIPE, pass_fds=(read_end,), close_fds=True,
            )
        except BaseException:
            os.close(self.wake)
            raise
        finally:
            os.close(read_end)
        self.previous_wakeup = signal.set_wakeup_fd(self.wake, warn_on_full_buffer=False)

    def watch(self, folder: Path) -> None:
        with contextlib.suppress(OSError):
            self.process.stdin.write(os.fsencode(folder.resolve()).hex().encode() + b"\n")
            self.process.stdin.flush()

    def close(self) -> None:
        signal.set_wakeup_fd(self.previous_wakeup)
        os.close(self.wake)
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=0.5)  # longer only while forked children still hold the pipe

    def forget_in_child(self) -> None:
        """In a forked child (e.g. a data loader worker): drop the parent's pipe, so its end is seen."""
        with contextlib.suppress(ValueError):
            signal.set_wakeup_fd(-1)
        with contextlib.suppress(OSError):
            os.close(self.wake)


_installed = False
_active: _Watchdog | None = None
_stopping = False


def _after_fork_in_child() -> None:
    global _active
    if _active is not None:
        _active.forget_in_child()
        _active = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _raise_interrupted(signum, frame) -> None:
    global _stopping
    if _stopping:
        return
    _stopping = True
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_on_signals(grace: float = GRACE_SECONDS) -> Iterator[None]:
    """Turn SIGINT/SIGTERM into :class:`Interrupted` and bound the stop by ``grace`` seconds (module docstring).

    Outside the main thread, or when already active, it changes nothing.
    """
    global _active, _installed, _stopping
    if _installed or threading.current_thread() is not threading.main_thread():
        yield
        return
    handled = [s for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN]
    previous = {s: signal.signal(s, _raise_interrupted) for s in handled}
    _installed, _stopping = True, False
    try:
        if handled and os.name == "posix":
            try:
                _active = _Watchdog(grace, handled)
            except OSError as err:
                logger.debug("no interrupt watchdog (%s): a call into C that keeps the GIL delays the stop", err)
        yield
    finally:
        if _active is not None:
            _active.close()
            _active = None
        for s, handler in previous.items():
            signal.signal(s, handler)
        _installed = _stopping = False


def watch_folder(folder: str | os.PathLike) -> None:
    """Have the watchdog remove this process's temporary files under ``folder`` if it has to kill it."""
    if _active is not None:
        _active.watch(Path(folder))


def end_by_signal(signum: int) -> None:
    """End this process as ``signum`` would have, once the clean stop is done.

    The parent sees a process killed by the signal, as the Unix convention
    for programs that catch SIGINT asks (a shell loop then stops too), and
    the interpreter's finalisation is skipped: nothing is left to write.
    Returns only if the signal cannot end the process (outside the main thread).
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(ValueError, OSError):
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
