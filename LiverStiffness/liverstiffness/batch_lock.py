"""One batch run per output folder: an exclusive lock on ``OUT/.liverstiffness-batch.lock``.

The lock is an operating-system lock on an open file (``flock`` on POSIX, ``msvcrt.locking`` on
Windows), not the file's existence: the kernel drops it the moment its process ends, however it
ends (kill -9 included), so a lock left by a killed run never blocks the next one. The file
keeps the holder's process id, host and start time, for the message a second run gets. Advisory
locks on network file systems (NFS) depend on the server's lock support.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from .errors import InputError

LOCK_NAME = ".liverstiffness-batch.lock"


class BatchLock:
    """``with BatchLock(out):`` — raises InputError when another run holds ``out``."""

    def __init__(self, out: str | Path, what: str = "--out"):
        self.out = Path(out)
        self.what = what
        self._fh = None

    def __enter__(self) -> BatchLock:  # noqa: PYI034 - typing.Self needs Python 3.11; Slicer ships older ones
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / LOCK_NAME
        fh = open(path, "a+")
        try:
            _lock(fh)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise InputError(f"{self.what} {self.out}", f"another batch run is using this folder ({holder}); "
                                                        "wait for it to end, or give another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            try:
                _unlock(self._fh)
            finally:
                self._fh.close()
                self._fh = None


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock(fh) -> None:
        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)

    def _unlock(fh) -> None:
        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _lock(fh) -> None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fh) -> None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
