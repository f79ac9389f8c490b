"""Output files written whole or not at all.

A reader (a PACS administrator's script, the dashboard, `cad evaluate`) must never find half a
findings.json or a study folder without its SR: every output file is written to a temporary
name in its folder and renamed into place, and a study's folder is assembled beside its final
place and renamed in one step. When the disk is full, what was there before stays as it was.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import TypeGuard

#: errors that say the file system cannot take the outputs (an environment condition, not a defect)
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
NOT_WRITABLE_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def is_environment_error(exc: BaseException) -> TypeGuard[OSError]:
    """Whether ``exc`` is the file system refusing to store the outputs (full, over quota,
    read-only, not permitted): the machine's condition, which a retry after it changes cures."""
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS | NOT_WRITABLE_ERRNOS


def describe(exc: OSError) -> str:
    """What a person reads about a write that failed: ``no space left on device`` and the like."""
    if exc.errno in NO_SPACE_ERRNOS:
        return "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or "file too large").lower()
    return (exc.strerror or type(exc).__name__).lower()


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (temporary file, flushed, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary(path)
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """:func:`write_bytes` of UTF-8 text."""
    write_bytes(path, text.encode("utf-8"))


def staging_folder(final: Path) -> Path:
    """An empty folder beside ``final`` to assemble its contents in (hidden, per process)."""
    staging = _temporary(final)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def commit_folder(staging: Path, final: Path) -> None:
    """Put the assembled ``staging`` folder in ``final``'s place: a rename, after moving an
    earlier ``final`` aside (removed once the new one is in place)."""
    earlier = final.with_name(f".{final.name}.replaced-{os.getpid()}")
    shutil.rmtree(earlier, ignore_errors=True)
    if final.exists():
        os.rename(final, earlier)
    try:
        os.rename(staging, final)
    except BaseException:
        if earlier.exists() and not final.exists():
            os.rename(earlier, final)  # the earlier result stays as it was
        raise
    shutil.rmtree(earlier, ignore_errors=True)


def discard(folder: Path) -> None:
    """Remove a staging folder that will not be committed (freeing what it held)."""
    shutil.rmtree(folder, ignore_errors=True)
