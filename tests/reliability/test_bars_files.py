"""Broken and hostile bar files (issue 10, "Bars"): truncated or corrupt compressed files, zip
archives that are not one CSV, endless streams and non-regular files, decompression bombs.
Each gives one DataError naming the file (``error: ...`` and exit 1 on the CLI), never a
traceback, a bare "Aborted." or an unbounded read."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import socket
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from aitrader.cli.main import app
from aitrader.data import check_bars, generate_bars, load_bars
from aitrader.errors import ConfigError, DataError

runner = CliRunner()

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    ".csv.gz": gzip.compress,
    ".csv.bz2": bz2.compress,
    ".csv.xz": lzma.compress,
}


@pytest.fixture(scope="module")
def csv_bytes() -> bytes:
    bars = generate_bars(300, seed=11)
    return bars.rename_axis("timestamp").to_csv().encode()


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def assert_cli_error(path: Path, fragment: str) -> None:
    """``features build`` loads the bars: one ``error:`` line on stderr, exit 1, no traceback."""
    result = runner.invoke(app, ["features", "build", "--data", str(path), "--out", str(path.parent / "f.parquet")])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.output and "Aborted" not in result.output


def assert_check_problem(path: Path, fragment: str) -> None:
    """``data check`` reports the file problem in its output and exits 1."""
    result = runner.invoke(app, ["data", "check", str(path), "--json"])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert fragment in result.stdout
    assert result.stderr.startswith("error: ") and result.stderr.strip().endswith("problem(s); fix the file")


@pytest.mark.parametrize("suffix", list(COMPRESSORS))
@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_truncated_compressed_file(tmp_path: Path, csv_bytes: bytes, suffix: str, keep: float) -> None:
    packed = COMPRESSORS[suffix](csv_bytes)
    path = tmp_path / f"bars{suffix}"
    path.write_bytes(packed[: int(len(packed) * keep)])
    with pytest.raises(DataError) as info:
        load_bars(path)
    assert str(info.value).startswith(f"bars{suffix}: the compressed file is truncated or corrupt")
    assert_cli_error(path, "the compressed file is truncated or corrupt")
    assert_check_problem(path, "the compressed file is truncated or corrupt")


@pytest.mark.parametrize("suffix", list(COMPRESSORS))
def test_corrupt_compressed_file(tmp_path: Path, csv_bytes: bytes, suffix: str) -> None:
    packed = bytearray(COMPRESSORS[suffix](csv_bytes))
    middle = len(packed) // 2
    packed[middle : middle + 64] = b"\xa5" * 64
    path = tmp_path / f"bars{suffix}"
    path.write_bytes(bytes(packed))
    with pytest.raises(DataError, match=r"truncated or corrupt"):
        load_bars(path)


def test_intact_compressed_files_still_load(tmp_path: Path, csv_bytes: bytes) -> None:
    expected = load_bars(_write(tmp_path / "plain.csv", csv_bytes))
    for suffix, compress in COMPRESSORS.items():
        bars = load_bars(_write(tmp_path / f"x{suffix}", compress(csv_bytes)))
        assert bars.equals(expected), suffix
    bars = load_bars(_write(tmp_path / "z.csv.zip", zipped({"z.csv": csv_bytes})))
    assert bars.equals(expected)
    # A macOS archive carries a __MACOSX/ shadow entry: still one CSV inside.
    bars = load_bars(_write(tmp_path / "m.csv.zip", zipped({"m.csv": csv_bytes, "__MACOSX/._m.csv": b"\0\1"})))
    assert bars.equals(expected)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (
            lambda raw: zipped({"a.csv": raw, "b.csv": raw}),
            "the zip archive holds 2 files (a.csv, b.csv); expected exactly one",
        ),
        (lambda raw: zipped({}), "the zip archive holds no file; expected exactly one"),
        (lambda raw: b"this is not a zip archive at all\n", "the compressed file is truncated or corrupt"),
        (lambda raw: zipped({"a.csv": raw})[:-40], "the compressed file is truncated or corrupt"),
        (lambda raw: zipped({"a.csv": raw})[:200], "the compressed file is truncated or corrupt"),
    ],
    ids=["two members", "no member", "not a zip", "no central directory", "cut in the member"],
)
def test_bad_zip_archives(tmp_path: Path, csv_bytes: bytes, content: Callable[[bytes], bytes], fragment: str) -> None:
    path = _write(tmp_path / "bars.csv.zip", content(csv_bytes))
    with pytest.raises(DataError) as info:
        load_bars(path)
    assert fragment in str(info.value)
    assert_cli_error(path, fragment)


def test_zip_member_with_a_bad_crc(tmp_path: Path, csv_bytes: bytes) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("a.csv", csv_bytes)
    data = bytearray(buffer.getvalue())
    at = data.index(b"timestamp") + 200
    data[at] = ord("9") if data[at] != ord("9") else ord("8")  # a changed digit: still a CSV, wrong CRC
    with pytest.raises(DataError, match=r"truncated or corrupt \(Bad CRC-32"):
        load_bars(_write(tmp_path / "bars.csv.zip", bytes(data)))


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_dev_zero_and_dev_urandom_are_refused_without_reading(tmp_path: Path) -> None:
    for device in ("/dev/zero", "/dev/urandom"):
        link = tmp_path / "endless.csv"
        link.unlink(missing_ok=True)
        link.symlink_to(device)
        with pytest.raises(DataError, match=r"endless.csv: a character device, not a regular file"):
            load_bars(link)
        assert_cli_error(link, "a character device, not a regular file")
        assert_check_problem(link, "a character device, not a regular file")
    with pytest.raises(DataError, match=r"unsupported file type"):
        load_bars("/dev/zero")
    result = runner.invoke(app, ["data", "check", "/dev/zero"])
    assert result.exit_code == 1 and result.stderr.startswith("error: ")


@pytest.mark.skipif(sys.platform == "win32", reason="FIFOs and unix sockets")
def test_fifo_and_socket_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)  # opening it for reading would block forever: it must never be opened
    with pytest.raises(DataError, match=r"pipe.csv: a FIFO \(named pipe\), not a regular file"):
        load_bars(fifo)
    assert_cli_error(fifo, "a FIFO (named pipe), not a regular file")
    sock_path = tmp_path / "s.csv"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(str(sock_path))
        except OSError:
            pytest.skip("cannot bind a unix socket here")
        with pytest.raises(DataError, match=r"s.csv: a socket, not a regular file"):
            load_bars(sock_path)


def test_a_directory_skips_non_regular_bar_names(tmp_path: Path, csv_bytes: bytes) -> None:
    _write(tmp_path / "AAPL.csv", csv_bytes)
    os.mkfifo(tmp_path / "MSFT.csv")
    bars = load_bars(tmp_path)
    assert bars.attrs["symbol"] == "AAPL"
    assert [s.symbol for s in check_bars(tmp_path).symbols] == ["AAPL"]


def test_decompression_bomb_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 64 MB of zeros packs into ~64 KB; with a 1 MB bound it is refused after reading ~1 MB.
    bomb = tmp_path / "bomb.csv.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as out:
        out.write(b"timestamp,open,high,low,close,volume\n")
        chunk = b"0" * (1 << 20)
        for _ in range(64):
            out.write(chunk)
    monkeypatch.setenv("AITRADER_MAX_BAR_BYTES", str(1 << 20))
    with pytest.raises(DataError) as info:
        load_bars(bomb)
    message = str(info.value)
    assert message.startswith("bomb.csv.gz: more than 1048576 bytes to read")
    assert "AITRADER_MAX_BAR_BYTES" in message
    assert_cli_error(bomb, "more than 1048576 bytes to read")


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".csv.zip", ".parquet"])
def test_the_bound_applies_to_every_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    bars = generate_bars(2000, seed=2)
    raw = bars.rename_axis("timestamp").to_csv().encode()
    path = tmp_path / f"b{suffix}"
    if suffix == ".parquet":
        bars.to_parquet(path)
    elif suffix == ".csv.zip":
        path.write_bytes(zipped({"b.csv": raw}))
    else:
        path.write_bytes(gzip.compress(raw) if suffix.endswith(".gz") else raw)
    assert len(load_bars(path)) == 2000  # under the default bound
    monkeypatch.setenv("AITRADER_MAX_BAR_BYTES", "5000")
    with pytest.raises(DataError, match=r"more than 5000 bytes"):
        load_bars(path)


@pytest.mark.parametrize("value", ["lots", "0", "-5", "1.5"])
def test_a_bad_bound_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, csv_bytes: bytes,
                                       value: str) -> None:
    path = _write(tmp_path / "b.csv", csv_bytes)
    monkeypatch.setenv("AITRADER_MAX_BAR_BYTES", value)
    with pytest.raises(ConfigError, match=r"AITRADER_MAX_BAR_BYTES=.*expected a positive whole number of bytes"):
        load_bars(path)


def _flag_zip(csv_bytes: bytes, *, encrypted: bool = False, method: int | None = None) -> bytes:
    """A one-member zip whose headers claim encryption or a compression method zipfile lacks."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.csv", csv_bytes)
    data = bytearray(buffer.getvalue())
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    if encrypted:
        data[local + 6] |= 1
        data[central + 8] |= 1
    if method is not None:
        data[local + 8] = method
        data[central + 10] = method
    return bytes(data)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"encrypted": True}, "is encrypted, password required"), ({"method": 9}, "compression method is not supported")],
    ids=["encrypted", "deflate64"],
)
def test_zip_member_that_cannot_be_opened(tmp_path: Path, csv_bytes: bytes, kwargs: dict, fragment: str) -> None:
    path = _write(tmp_path / "bars.csv.zip", _flag_zip(csv_bytes, **kwargs))
    with pytest.raises(DataError, match=r"bars.csv.zip: cannot open a.csv in the zip archive") as info:
        load_bars(path)
    assert fragment in str(info.value)


def _parquet(path: Path, **columns: object) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    one = [1.0] * 3
    base: dict[str, object] = {"timestamp": pd.date_range("2020-01-01", periods=3), "open": one, "high": one,
                               "low": one, "close": one, "volume": one}
    base.update(columns)
    names = list(base)
    if "close_again" in base:  # a second column literally named close
        names[names.index("close_again")] = "close"
    pq.write_table(pa.Table.from_arrays([pa.array(v) for v in base.values()], names=names), path)
    return path


@pytest.mark.parametrize(
    ("columns", "fragment"),
    [
        ({"timestamp": [b"\xff\xfe"] * 3}, "column timestamp cannot be read as timestamps (UnicodeDecodeError"),
        ({"symbol": [b"\xff"] * 3}, "column symbol cannot be read as text (UnicodeDecodeError"),
        ({"timestamp": pd.array([3 * 10**17] * 3, dtype="int64").astype("datetime64[us]")},
         "column timestamp: timestamps outside 1677-2262 cannot be represented"),
        ({"close_again": [2.0] * 3}, "not a readable parquet file (Multiple matches for FieldRef.Name(close)"),
        ({"close": [b"\xff"] * 3}, "row 1 (2020-01-01): close \"b'\\\\xff'\" is not a number"),
    ],
    ids=["bytes stamps", "bytes symbols", "year 11476", "two close columns", "bytes prices"],
)
def test_parquet_columns_of_the_wrong_type(tmp_path: Path, columns: dict, fragment: str) -> None:
    path = _parquet(tmp_path / "bars.parquet", **columns)
    with pytest.raises(DataError) as info:
        load_bars(path)
    message = str(info.value)
    assert message.startswith("bars.parquet") and fragment in message and "\n" not in message
    report = check_bars(path)
    assert not report.valid


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root reads any file")
@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_unreadable_file_is_not_called_corrupt(tmp_path: Path, csv_bytes: bytes, suffix: str) -> None:
    path = _write(tmp_path / f"bars{suffix}", gzip.compress(csv_bytes) if suffix.endswith(".gz") else csv_bytes)
    path.chmod(0)
    try:
        with pytest.raises(DataError, match=rf"bars{suffix}: cannot read the file: Permission denied"):
            load_bars(path)
    finally:
        path.chmod(0o600)


def test_an_os_error_inside_an_archive_is_not_called_corrupt(tmp_path: Path, csv_bytes: bytes,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "bars.csv.gz", gzip.compress(csv_bytes))

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("aitrader.data._open.gzip.open", denied)
    with pytest.raises(DataError, match=r"bars.csv.gz: cannot read the file: Permission denied"):
        load_bars(path)
