"""Opening bar files safely: regular files only, compressed streams bounded, corruption named.

A bar file is read whole into memory, so what is read must be bounded: a path to ``/dev/zero``,
a FIFO or a decompression bomb would otherwise be read until the machine runs out of memory.
Only regular files are opened, and at most :func:`max_read_bytes` bytes (after decompression)
are read from any of them; ``AITRADER_MAX_BAR_BYTES`` raises or lowers the bound (default 4 GiB,
well above the ~115 MB of a million CSV bars at full float precision).

Compressed CSV (``.gz``, ``.bz2``, ``.xz``, ``.zip`` with exactly one member) is decompressed
here, not by pandas, so that a truncated or corrupt archive becomes one :class:`DataError`
naming the file instead of an ``EOFError`` (which the CLI framework turns into a bare
"Aborted.") or a library traceback.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import stat
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from aitrader.errors import ConfigError, DataError

MAX_BYTES_ENV = "AITRADER_MAX_BAR_BYTES"
DEFAULT_MAX_BYTES = 4 * 1024**3
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zip")

_Stream = IO[bytes] | io.BufferedIOBase

#: What the decompressors raise on a truncated or damaged stream.
CORRUPT_ERRORS: tuple[type[BaseException], ...] = (
    EOFError,
    zlib.error,
    lzma.LZMAError,
    zipfile.BadZipFile,
    gzip.BadGzipFile,
)


def max_read_bytes() -> int:
    """The most bytes read from one bar file after decompression (``$AITRADER_MAX_BAR_BYTES``)."""
    text = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(
            f"{MAX_BYTES_ENV}={text!r}: expected a positive whole number of bytes (default {DEFAULT_MAX_BYTES}); "
            f"fix or unset it"
        )
    return value


def is_compressed(path: Path) -> bool:
    return path.name.lower().endswith(COMPRESSED_SUFFIXES)


def require_regular_file(path: Path) -> os.stat_result:
    """``stat`` of ``path`` (through symlinks); a device, FIFO or socket is a DataError.

    ``stat`` never opens the file, so a FIFO without a writer cannot block here.
    """
    try:
        info = path.stat()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(info.st_mode):
        kind = (
            "a character device" if stat.S_ISCHR(info.st_mode)
            else "a block device" if stat.S_ISBLK(info.st_mode)
            else "a FIFO (named pipe)" if stat.S_ISFIFO(info.st_mode)
            else "a socket" if stat.S_ISSOCK(info.st_mode)
            else "not a regular file"
        )
        raise DataError(
            f"{path}: {kind}, not a regular file; bars are read from regular files only (an endless stream "
            "cannot be loaded whole): save the bars to a file and pass that"
        )
    return info


def too_big(path: Path, limit: int, what: str = "bytes") -> DataError:
    return DataError(
        f"{path.name}: more than {limit} {what} to read (the limit set by {MAX_BYTES_ENV}, default "
        f"{DEFAULT_MAX_BYTES} = 4 GiB, guards against endless streams and decompression bombs); split the file, "
        f"or raise {MAX_BYTES_ENV} if it is genuine"
    )


def corrupt(path: Path, exc: BaseException) -> DataError:
    detail = str(exc) or type(exc).__name__
    return DataError(
        f"{path.name}: the compressed file is truncated or corrupt ({detail}); re-download or re-create it"
    )


class BoundedReader(io.RawIOBase):
    """A read-only byte stream that raises :class:`DataError` past ``limit`` bytes.

    ``exceeded`` stays set so that a caller can recognise the cause even when a parser wraps the
    exception in its own.
    """

    def __init__(self, inner: _Stream, limit: int, path: Path) -> None:
        super().__init__()
        self._inner = inner
        self._limit = limit
        self._path = path
        self.total = 0
        self.exceeded = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.exceeded:
            raise too_big(self._path, self._limit)
        # Never ask for more than one byte past the limit, so an endless source is never over-read.
        want = min(len(buffer), self._limit - self.total + 1)
        data = self._inner.read(want)
        n = len(data)
        buffer[:n] = data
        self.total += n
        if self.total > self._limit:
            self.exceeded = True
            raise too_big(self._path, self._limit)
        return n

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            super().close()


def _zip_member(stack: contextlib.ExitStack[bool | None], path: Path) -> _Stream:
    archive = stack.enter_context(zipfile.ZipFile(path))
    members = [
        info for info in archive.infolist()
        if not info.is_dir() and not info.filename.startswith("__MACOSX/")
    ]
    if len(members) != 1:
        listed = ", ".join(info.filename for info in members[:5]) + (", ..." if len(members) > 5 else "")
        held = f"{len(members)} files ({listed})" if members else "no file"
        raise DataError(
            f"{path.name}: the zip archive holds {held}; expected exactly one CSV file inside (one symbol per "
            "archive): unzip it and pass the CSV files or their directory"
        )
    try:
        return stack.enter_context(archive.open(members[0]))
    except (RuntimeError, NotImplementedError) as exc:  # encrypted, or a compression zipfile lacks
        raise DataError(
            f"{path.name}: cannot open {members[0].filename} in the zip archive ({exc}); re-create the archive "
            "without a password, with deflate compression"
        ) from exc


@contextlib.contextmanager
def open_bounded(path: Path, limit: int) -> Iterator[BoundedReader]:
    """The decompressed bytes of a CSV file (plain, .gz, .bz2, .xz or single-member .zip), bounded."""
    name = path.name.lower()
    with contextlib.ExitStack() as stack:
        inner: _Stream
        if name.endswith(".gz"):
            inner = stack.enter_context(gzip.open(path, "rb"))
        elif name.endswith(".bz2"):
            inner = stack.enter_context(bz2.open(path, "rb"))
        elif name.endswith(".xz"):
            inner = stack.enter_context(lzma.open(path, "rb"))
        elif name.endswith(".zip"):
            inner = _zip_member(stack, path)
        else:
            inner = stack.enter_context(path.open("rb"))
        yield stack.enter_context(BoundedReader(inner, limit, path))
