"""Read a small regular file without ever blocking on it.

A FIFO or a device given where a config or secret file belongs would hang a plain `open()`
(a FIFO blocks until a writer appears) or read forever (`/dev/zero`). The file is opened
with `O_NONBLOCK`, checked to be a regular file, and read up to a limit.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class FileProblem(Exception):  # noqa: N818 - "raise FileProblem(reason)"
    """The file cannot be used; `reason` is a short phrase for an error message."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _size(limit: int) -> str:
    return f"{limit // (1 << 20)} MiB" if limit >= 1 << 20 else f"{limit // 1024} KiB"


def read_small_file(path: Path, limit: int) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them, or `FileProblem`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as err:
        raise FileProblem(err.strerror or str(err)) from err
    except ValueError as err:  # a NUL byte in the path
        raise FileProblem("the path contains a NUL byte") from err
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = (
                "a FIFO"
                if stat.S_ISFIFO(info.st_mode)
                else "a directory"
                if stat.S_ISDIR(info.st_mode)
                else "a device"
                if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)
                else "a socket"
                if stat.S_ISSOCK(info.st_mode)
                else "not a plain file"
            )
            raise FileProblem(f"expected a regular file, found {kind}")
        if info.st_size > limit:
            raise FileProblem(f"larger than {_size(limit)}")
        chunks: list[bytes] = []
        total = 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 16, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:  # it grew while we read it
            raise FileProblem(f"larger than {_size(limit)}")
        return b"".join(chunks)
    except OSError as err:
        raise FileProblem(err.strerror or str(err)) from err
    finally:
        os.close(fd)
