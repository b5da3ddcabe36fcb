"""Reading the files that feed policy (manifests, keys files, bundles) so that nothing a file can do
escapes as an unexpected exception or a hang.

Every failure class ends as one `UnreadableFile` whose message names the file and the problem:
a path that vanished between listing and reading, a directory or a FIFO where a file belongs
(opening a FIFO would block the reader for ever), no permission, any other OSError, a file past
its size limit (read stops at the limit, so a huge file costs no memory), bytes that are not UTF-8.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MIB = 1024 * 1024


class UnreadableFile(Exception):
    """A file that cannot be used as it is; str() is one line naming the file and the problem."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def size_words(limit: int) -> str:
    return f"{limit // MIB} MiB" if limit % MIB == 0 else f"{limit} bytes"


def read_bounded(path: Path, limit: int) -> bytes:
    """The file's bytes, at most `limit` of them (past it, UnreadableFile)."""
    try:
        status = os.stat(path)
        if stat.S_ISDIR(status.st_mode):
            raise UnreadableFile(path, "is a directory where a file is expected")
        if not stat.S_ISREG(status.st_mode):
            raise UnreadableFile(path, "is not a regular file (a FIFO, socket or device)")
        if status.st_size > limit:
            raise UnreadableFile(path, f"is larger than the limit of {size_words(limit)}")
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise UnreadableFile(path, "does not exist (or vanished while being read)") from None
    except PermissionError:
        raise UnreadableFile(path, "cannot be read: permission denied") from None
    except OSError as error:
        raise UnreadableFile(path, f"cannot be read: {error.strerror or error}") from None
    if len(data) > limit:
        raise UnreadableFile(path, f"is larger than the limit of {size_words(limit)}")
    return data


def decode_utf8(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UnreadableFile(path, f"is not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start})"
                             ) from None


def read_text_bounded(path: Path, limit: int) -> str:
    return decode_utf8(path, read_bounded(path, limit))
