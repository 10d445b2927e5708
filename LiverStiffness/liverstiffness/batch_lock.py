"""One batch run per output folder: an exclusive operating-system lock on the folder itself.

On POSIX the lock is ``flock`` on the open ``--out`` directory; on Windows ``msvcrt.locking`` on
``OUT/.liverstiffness-batch.lock``. Either way it belongs to the open file, not to a file's
existence: the kernel drops it the moment its process ends, however it ends (kill -9 included),
so a lock left by a killed run never blocks the next one. While it is held,
``OUT/.liverstiffness-batch.lock`` names the holder (process id, host, start time) for the
message a second run gets; the holder removes that note when it ends. Advisory locks on network
file systems (NFS) depend on the server's lock support.
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
        self._handle = None

    def __enter__(self) -> BatchLock:  # noqa: PYI034 - typing.Self needs Python 3.11; Slicer ships older ones
        self.out.mkdir(parents=True, exist_ok=True)
        note = self.out / LOCK_NAME
        try:
            self._handle = _lock(self.out, note)
        except OSError:
            try:
                holder = note.read_text().strip() or "another process"
            except OSError:
                holder = "another process"
            raise InputError(f"{self.what} {self.out}", f"another batch run is using this folder ({holder}); "
                                                        "wait for it to end, or give another --out") from None
        note.write_text(f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            try:
                if os.name != "nt":
                    (self.out / LOCK_NAME).unlink(missing_ok=True)   # the note; the lock is the folder's
            finally:
                _unlock(self._handle)
                self._handle = None


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock(folder: Path, note: Path):
        fh = open(note, "a+")  # noqa: SIM115 - held open: the lock lives as long as the file is open
        try:
            fh.seek(0)
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            fh.close()
            raise
        return fh

    def _unlock(fh) -> None:
        try:
            fh.seek(0)
            msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
        finally:
            fh.close()
else:
    import fcntl

    def _lock(folder: Path, note: Path) -> int:
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise
        return fd

    def _unlock(fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
