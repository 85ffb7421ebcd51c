"""One-line messages for operating-system errors met while writing a store.

An OSError raised by a write (disk full, quota, read-only file system) often carries no file
name: `[Errno 28] No space left on device` alone does not say which of several disks filled.
"""

from __future__ import annotations

import errno
from pathlib import Path

_HINTS = {
    errno.ENOSPC: "free space there and rerun the same command: finished work is kept",
    errno.EDQUOT: "the disk quota is exhausted; free space there and rerun the same command: finished work is kept",
    errno.EROFS: "the file system is read-only; choose a writable location",
    errno.EACCES: "no permission to write there",
}


def os_error_line(exc: OSError, *, writing: str | Path) -> str:
    """"<file or `writing`>: <reason> while writing; <what to do>" in one line."""
    where = exc.filename if exc.filename else writing
    reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    hint = _HINTS.get(exc.errno or -1)
    return f"{where}: {reason} (errno {exc.errno}) while writing" + (f"; {hint}" if hint else "")
