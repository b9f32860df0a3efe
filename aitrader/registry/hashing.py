"""SHA256 of files, the checksum list and the version digest; durable copies.

The checksum list is written as ``checksums.sha256`` in ``sha256sum`` format (``<hex>  <path>``,
one line per file, sorted by path), so ``sha256sum -c checksums.sha256`` works inside a version
folder. The version digest is the SHA256 of that exact text, i.e. ``sha256sum checksums.sha256``.
Files are read in 1 MiB chunks into one reused buffer: memory stays flat for any artifact size and
hashlib releases the GIL while it hashes.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from aitrader.errors import RegistryError

CHUNK = 1 << 20
CHECKSUM_FILE = "checksums.sha256"


class NotRegularFileError(OSError):
    """A path that should be a regular file is a FIFO, socket, device, directory or symbolic link."""


def file_kind(mode: int) -> str:
    """A short word for what a ``st_mode`` is (for messages)."""
    for test, word in (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return word
    return "special file"


def sha256_file(path: Path) -> tuple[str, int]:
    """(hex digest, size in bytes) of one regular file, streamed.

    Anything else raises :class:`NotRegularFileError` without reading: the path is opened with
    ``O_NOFOLLOW | O_NONBLOCK`` (a symbolic link fails, a FIFO opens without waiting for a writer)
    and checked with ``fstat`` before the first read, so a FIFO or a device can never block or
    stream forever.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if Path(path).is_symlink():
            raise NotRegularFileError(f"{path} is a symbolic link") from exc
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(f"{path} is a {file_kind(mode)}, not a regular file")
        h = hashlib.sha256()
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        size = 0
        with os.fdopen(fd, "rb", buffering=0) as f:
            fd = -1  # owned by f now
            while n := f.readinto(buf):
                h.update(view[:n])
                size += n
        return h.hexdigest(), size
    finally:
        if fd >= 0:
            os.close(fd)


def copy_and_hash(src: Path, dst: Path) -> tuple[str, int]:
    """Copy ``src`` to a new file ``dst``, hashing the bytes as they are written, then fsync.

    Hashing what is written (not re-reading the source) means the recorded digest describes the
    stored copy even if the source changes during the copy.
    """
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    size = 0
    with src.open("rb", buffering=0) as fin, dst.open("xb", buffering=0) as fout:
        while n := fin.readinto(buf):
            chunk = view[:n]
            h.update(chunk)
            written = 0
            while written < n:  # raw writes may be partial
                written += fout.write(chunk[written:]) or 0
            size += n
        os.fsync(fout.fileno())
    return h.hexdigest(), size


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the data files are synced already
    finally:
        os.close(fd)


def write_durable(path: Path, text: str) -> None:
    with path.open("x", encoding="utf-8", newline="\n") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def checksum_text(hashes: dict[str, str]) -> str:
    """The ``sha256sum``-format list, sorted by path (the bytes the version digest covers)."""
    return "".join(f"{hashes[p]}  {p}\n" for p in sorted(hashes))


def digest_of(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_checksum_text(text: str) -> dict[str, str]:
    """Inverse of :func:`checksum_text`; malformed lines raise RegistryError."""
    out: dict[str, str] = {}
    for i, line in enumerate(text.splitlines(), 1):
        hexd, sep, rel = line.partition("  ")
        if not sep or len(hexd) != 64 or not rel:
            raise RegistryError(f"{CHECKSUM_FILE} line {i} is malformed: expected '<sha256>  <path>'")
        out[rel] = hexd
    return out


def _check_rel(rel: str, root: Path) -> None:
    if any(ch in rel for ch in "\n\r\\") or rel.startswith("-"):
        raise RegistryError(
            f"cannot register {root / rel}: file names with newlines, backslashes or a leading '-' "
            "cannot be listed safely in a sha256sum checksum file; rename the file"
        )
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise RegistryError(f"cannot register {root}: a file name is not valid UTF-8; rename it") from None


def artifact_files(root: Path) -> Iterator[tuple[str, Path]]:
    """Yield (posix relative path, path) for every regular file under ``root``, sorted.

    Symlinks and special files are refused: a link could point anywhere, and the registry stores
    copies of exactly what it hashed.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for d in dirnames:
            if (base / d).is_symlink():
                raise RegistryError(
                    f"cannot register {base / d}: symbolic links are not allowed in an artifact; copy the target in"
                )
        for fname in sorted(filenames):
            path = base / fname
            if path.is_symlink() or not path.is_file():
                raise RegistryError(
                    f"cannot register {path}: only regular files are allowed in an artifact "
                    "(no symbolic links, sockets or devices); copy the real file in"
                )
            rel = path.relative_to(root).as_posix()
            _check_rel(rel, root)
            yield rel, path
