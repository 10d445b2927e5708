"""Writing results so that nothing is ever half-written: temporary file (or folder) on the same
disk, flushed to the disk, then renamed into place; a full disk is one clear error.

A reader (a person, the next batch run, the Slicer module) therefore sees either the previous
complete file or the new complete one. In a result folder ``report.json`` is written last: a
folder with a ``report.json`` is complete.
"""
from __future__ import annotations

import csv
import errno
import io
import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError

#: OS errors that mean "this place cannot take the output" rather than a bug.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO}
REPORT = "report.json"


class OutputError(InputError):
    """The output cannot be written (disk full, read-only, no permission): a batch stops on it."""


@contextmanager
def writing(where: str | Path):
    """Turn a disk-level OSError inside the block into one clear OutputError naming ``where``."""
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        if exc.errno in DISK_ERRNOS:
            raise OutputError(str(where), f"cannot be written ({os.strerror(exc.errno).lower()}); "
                                          "nothing was left half-written") from None
        raise


def _write_and_sync(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _sync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return          # not possible on every platform; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """``path`` holds either its old content or ``data``, never a part of it."""
    path = Path(path)
    with writing(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            _write_and_sync(Path(tmp), data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _sync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_csv(path: str | Path, columns, rows) -> None:
    """A CSV with a header and ``rows`` (dicts; missing keys empty), written atomically."""
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: row.get(k, "") for k in columns})
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def staging_path(out_dir: Path) -> Path:
    """The name of a staging folder beside ``out_dir`` (same disk: the final rename is atomic), not
    yet made: the caller makes it inside its ``try``, so that a signal arriving at any moment (even
    just after the folder was made) finds a name to remove. (``mkdtemp`` made the folder and then
    returned its name: a signal in between left an orphan.)"""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return out_dir.parent / f".{out_dir.name}.partial-{secrets.token_hex(6)}"


def publish_folder(staged: Path, out_dir: Path) -> None:
    """Move a finished staging folder into place. A new ``out_dir`` appears whole (one rename);
    into an existing one the files move one by one with ``report.json`` removed first and put
    back last, so that at no moment does an old report describe new maps."""
    if not out_dir.exists():
        os.replace(staged, out_dir)
        _sync_dir(out_dir.parent)
        return
    (out_dir / REPORT).unlink(missing_ok=True)
    files = sorted(staged.iterdir(), key=lambda f: f.name == REPORT)       # report.json last
    for f in files:
        target = out_dir / f.name
        if target.is_dir() and not f.is_dir():
            shutil.rmtree(target)
        os.replace(f, target)
    staged.rmdir()
    _sync_dir(out_dir)


def case_folder(out: Path, case_id: str) -> Path:
    """``out/<case_id>``, refusing any id that would land elsewhere (manifest ids are checked when
    read; this is the last guard)."""
    folder = Path(out) / case_id
    if case_id in ("", ".", "..") or folder.resolve().parent != Path(out).resolve():
        raise InputError(f"case_id {case_id!r}", "would be written outside --out")
    return folder


def remove_stale_staging(folder: Path) -> list[Path]:
    """Delete staging folders and temporary files a killed run left in ``folder``."""
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if p.name.startswith(".") and (".partial-" in p.name or p.name.endswith(".tmp")):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed
