"""The wire protocol of ``aitrader serve`` (version 1), shared by the server and the client.

A message is a ZeroMQ multipart message. On a DEALER/REQ client it is ``[header]`` or
``[header, body]`` (a REQ socket adds its empty delimiter frame itself; the server's ROUTER sees
``[identity, (b""), header, (body)]`` and answers on the same envelope).

* ``header``: a msgpack map. Requests: ``v`` (protocol version, 1), ``id`` (any int or str the
  client picks; echoed back), ``op`` (``predict``, ``info``, ``health``, ``reload``, ``train``,
  ``job``, ``feedback``) and the op's fields. Replies: ``v``, ``id``, ``ok`` (bool), ``error``
  (a message, when not ok), ``code`` (a short machine-readable reason, when not ok), ``model`` and
  ``digest`` (the model that answered, when one did), ``t_us`` (server time spent, microseconds),
  and the op's fields.
* ``body``: raw little-endian floats, C order, described by the header: ``dtype`` (``f8`` or
  ``f4``) and ``shape`` (``[rows, columns]``). Feature rows of a ``predict`` request, and the
  ``[rows, 2]`` float64 matrix (prediction, confidence) of its reply.

A request larger than the server's ``max_bytes`` (all frames together) is refused with an error
reply (code ``too_large``) without being decoded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

VERSION = 1
OPS = ("predict", "info", "health", "reload", "train", "job", "feedback")
DTYPES: dict[str, np.dtype[Any]] = {"f8": np.dtype("<f8"), "f4": np.dtype("<f4")}
#: Default request size limit (all frames): 64 MiB, room for an 8,192-row batch of 1,000 features.
MAX_BYTES = 64 * 1024 * 1024
#: Most rows one predict request may carry.
MAX_ROWS = 100_000
#: Longest string id, and longest error message (a message quoting a huge value is cut).
MAX_ID = 256
MAX_ERROR = 2000


class ProtocolError(Exception):
    """A request the server cannot act on; ``code`` is the reply's machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Request:
    header: dict[str, Any]
    body: bytes | None

    @property
    def op(self) -> str:
        return str(self.header["op"])

    @property
    def id(self) -> Any:
        return self.header.get("id")


def pack(header: dict[str, Any]) -> bytes:
    return msgpack.packb(header, use_bin_type=True)


def unpack_header(frame: bytes) -> dict[str, Any]:
    """The msgpack map of a header frame, or ProtocolError(bad_header)."""
    try:
        header = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as exc:  # noqa: BLE001 - msgpack raises several types for garbage
        raise ProtocolError("bad_header", f"the header frame is not msgpack ({type(exc).__name__}); "
                            "send a msgpack map {v, id, op, ...}") from exc
    if not isinstance(header, dict):
        raise ProtocolError("bad_header", f"the header is a msgpack {type(header).__name__}, not a map; "
                            "send a map {v, id, op, ...}")
    return header


def parse_request(frames: list[bytes]) -> Request:
    """``[header]`` or ``[header, body]`` (the envelope already removed) -> Request, or ProtocolError."""
    if not frames or len(frames) > 2:
        raise ProtocolError("bad_frames", f"a request has 1 or 2 frames (header, body), got {len(frames)}")
    header = unpack_header(frames[0])
    v = header.get("v")
    if v != VERSION:
        raise ProtocolError("bad_version", f"protocol version {v!r} is not supported; send v={VERSION}")
    op = header.get("op")
    if op not in OPS:
        raise ProtocolError("unknown_op", f"unknown op {op!r}; one of {', '.join(OPS)}")
    rid = header.get("id")
    if rid is not None and (not isinstance(rid, int | str) or (isinstance(rid, str) and len(rid) > MAX_ID)):
        raise ProtocolError("bad_id", f"id must be an int or a string of at most {MAX_ID} characters, got a "
                            f"{type(rid).__name__}")
    return Request(header, frames[1] if len(frames) == 2 else None)


def decode_rows(header: dict[str, Any], body: bytes | None) -> np.ndarray:
    """The float64 ``(rows, columns)`` matrix a header describes (a read-only view of ``body`` for f8), or
    ProtocolError naming the problem."""
    if body is None:
        raise ProtocolError("no_body", "predict with rows needs a second frame: the rows as raw little-endian "
                            "floats (header dtype and shape)")
    name = header.get("dtype", "f8")
    dtype = DTYPES.get(name) if isinstance(name, str) else None
    if dtype is None:
        raise ProtocolError("bad_dtype", f"dtype {header.get('dtype')!r} is not supported; use 'f8' or 'f4'")
    shape = header.get("shape")
    if not isinstance(shape, list | tuple) or len(shape) != 2:
        raise ProtocolError("bad_shape", f"shape must be [rows, columns] of non-negative ints, got {shape!r}")
    rows, cols = shape
    if type(rows) is not int or type(cols) is not int or rows < 0 or cols < 0:  # bool is not int here
        raise ProtocolError("bad_shape", f"shape must be [rows, columns] of non-negative ints, got {shape!r}")
    if rows == 0 or rows > MAX_ROWS:
        raise ProtocolError("bad_shape", f"rows must be between 1 and {MAX_ROWS}, got {rows}")
    if rows * cols * dtype.itemsize != len(body):
        raise ProtocolError("bad_shape", f"shape {rows}x{cols} of {header.get('dtype', 'f8')} is "
                            f"{rows * cols * dtype.itemsize} bytes, the body has {len(body)}")
    X = np.frombuffer(body, dtype=dtype).reshape(rows, cols)  # read-only view of the frame, no copy
    return X if dtype.itemsize == 8 else X.astype(np.float64)


def encode_rows(X: np.ndarray, dtype: str = "f8") -> tuple[dict[str, Any], bytes]:
    """(header fields, body) for a matrix of rows."""
    A = np.ascontiguousarray(X, dtype=DTYPES[dtype])
    if A.ndim == 1:
        A = A.reshape(1, -1)
    return {"dtype": dtype, "shape": [int(A.shape[0]), int(A.shape[1])]}, A.tobytes()


def reply(rid: Any, ok: bool, **fields: Any) -> dict[str, Any]:
    return {"v": VERSION, "id": rid, "ok": ok, **fields}


def error_reply(rid: Any, code: str, message: str, **fields: Any) -> dict[str, Any]:
    if len(message) > MAX_ERROR:
        message = message[:MAX_ERROR] + " ..."
    return reply(rid, False, code=code, error=message, **fields)


def signal_of(score: float, confidence: float, threshold: float, strong: float) -> str:
    """BUY/SELL (STRONG_ at or past ``strong`` confidence) or NEUTRAL below ``threshold``."""
    if not math.isfinite(score) or score == 0.0 or confidence < threshold:
        return "NEUTRAL"
    side = "BUY" if score > 0 else "SELL"
    return f"STRONG_{side}" if confidence >= strong else side
