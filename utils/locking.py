"""One run per output folder.

A command that writes into a folder holds :class:`FolderLock` on it for the
whole run: the file ``<folder>/.uvapm.lock`` records the holder (process id,
host, start time, command, torchrun job) and is locked with ``flock``. A
second run on the same folder is refused with :class:`FolderLockedError`
naming the holder (the commands exit with code 2) instead of mixing its
outputs with the first run's.

A lock left behind by a run that died (killed, power loss) does not block:
on the same host, a recorded process that is no longer running (or whose
process id now belongs to a younger process) is stale and the lock is taken
over. A lock recorded by another host cannot be checked from here; the error
says which host and process to check and which file to delete.

Under ``torchrun`` only rank 0 takes the lock, for the whole job; the other
ranks learn the outcome from it (the commands broadcast it).

Taking a lock also removes the temporary files of dead writers in the folder
(:func:`utils.atomic.remove_stale_temporary_files`) and registers the folder
with the interrupt watchdog (:func:`utils.interrupts.watch_folder`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from .atomic import process_alive, remove_stale_temporary_files
from .errors import ToolkitError
from .interrupts import watch_folder

__all__ = ["LOCK_NAME", "FolderLockedError", "FolderLock", "lock_for_job"]

logger = logging.getLogger("uvapm.locking")

LOCK_NAME = ".uvapm.lock"

try:
    import fcntl
except ImportError:  # Windows: the recorded process id is the only check
    fcntl = None


class FolderLockedError(ToolkitError):
    """Another run holds the folder."""


def _process_start(pid: int) -> str | None:
    """Start time of a process (clock ticks since boot, Linux), to tell a reused process id; None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def _describe(holder: dict) -> str:
    if "pid" not in holder:
        return "another run, which is starting"
    job = f", torchrun job {holder['job']}" if holder.get("job") else ""
    return (f"{holder.get('command', 'a run')} (process {holder.get('pid')} on host {holder.get('host')}{job}, "
            f"since {holder.get('started', '?')})")


class FolderLock:
    """Exclusive use of ``folder`` by this process (see the module docstring).

    Use as a context manager, or call :meth:`acquire` and :meth:`release`.

    Args:
        folder: the output folder (created if missing).
        command: what holds it, for the message a second run shows.

    Raises:
        FolderLockedError: the folder is in use.
        ToolkitError: the folder or its lock file cannot be created (read-only, full, no permission).
    """

    def __init__(self, folder: str | os.PathLike, command: str):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.command = command
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _record(self) -> dict:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "process_start": _process_start(os.getpid()),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": self.command,
            "job": os.environ.get("TORCHELASTIC_RUN_ID", ""),
        }

    def _unwritable(self, err: OSError) -> ToolkitError:
        return ToolkitError(f"{self.folder}: cannot write to the output folder ({err.strerror or err})")

    def _open(self) -> int:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as err:
            raise self._unwritable(err) from None

    def _read(self, fd: int) -> dict:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            holder = json.loads(os.read(fd, 65536) or b"{}")
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def _stale(self, holder: dict) -> bool:
        pid = holder.get("pid")
        if not isinstance(pid, int):
            return True  # empty or unreadable: a writer that died before recording itself
        if holder.get("host") != socket.gethostname():
            return False
        if not process_alive(pid):
            return True
        recorded, now = holder.get("process_start"), _process_start(pid)
        return recorded is not None and now is not None and recorded != now

    def acquire(self) -> None:
        """Take the lock, taking over a stale one; see the class docstring for the errors."""
        if self._fd is not None:
            return
        while True:
            fd = self._open()
            try:
                if fcntl is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        raise FolderLockedError(self._refusal(self._read(fd))) from None
                    except OSError as err:  # file systems without flock: the recorded process decides
                        if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                            raise
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:  # released and removed by its holder between our open and flock: try again
                    os.close(fd)
                    continue
                holder = self._read(fd)
                if holder and not self._stale(holder):
                    raise FolderLockedError(self._refusal(holder))
                if holder:
                    logger.warning("%s: taking over the lock of %s, which is no longer running", self.folder,
                                   _describe(holder))
                data = json.dumps(self._record()).encode()
                try:
                    os.ftruncate(fd, 0)
                    os.lseek(fd, 0, os.SEEK_SET)
                    os.write(fd, data)
                    os.fsync(fd)
                except OSError as err:
                    raise self._unwritable(err) from None
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            break
        for path in remove_stale_temporary_files(self.folder):
            logger.info("removed %s, left by a run that did not finish", path)
        watch_folder(self.folder)

    def _refusal(self, holder: dict) -> str:
        if holder.get("host") not in (None, socket.gethostname()):
            hint = f"this host cannot check whether it still runs; if it does not, delete {self.path}"
        else:
            hint = "wait for it to finish or choose another output folder"
        return f"{self.folder}: output folder in use by {_describe(holder)}; {hint}"

    def release(self) -> None:
        """Remove the lock file and let go of it (a no-op if not held)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if os.fstat(self._fd).st_ino == os.stat(self.path).st_ino:
                self.path.unlink()
        os.close(self._fd)
        self._fd = None


def lock_for_job(folder: str | os.PathLike, command: str, is_main: bool, broadcast: Callable[[object], object]
                 ) -> FolderLock | None:
    """The lock of a (possibly ``torchrun``) job: rank 0 takes it, every rank learns whether it was refused.

    Args:
        folder, command: as for :class:`FolderLock`.
        is_main: this process is rank 0 (or the only one).
        broadcast: sends rank 0's object to every rank (identity in a single process).

    Returns:
        The held lock on rank 0 (release it when the job ends), None on the other ranks.

    Raises:
        ToolkitError: on every rank, with rank 0's message, when the folder is in use or not writable.
    """
    lock = FolderLock(folder, command) if is_main else None
    error = None
    if lock is not None:
        try:
            lock.acquire()
        except ToolkitError as err:
            error = err
    refusal = broadcast(None if error is None else str(error))
    if error is not None:
        raise error
    if refusal is not None:
        raise ToolkitError(refusal)
    return lock
