"""The byte layout of a tenant bundle: a JSON header plus raw little-endian arrays.

  magic b"CDBBNDL\\x00" | u32 format | u32 header length | header JSON (UTF-8) | arrays
The header's "arrays" maps each array's name to [dtype, shape, offset, nbytes] within the
array region, and "sha256" is the digest of that region, so truncation or corruption is
caught before anything is applied. Nothing is unpickled; only the dtypes below are accepted.
A bundle is untrusted input: every length, offset and shape is checked here, and the
meaning of the content is checked by curator/storage/bundle.py before any change.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

import numpy as np

from curator.errors import InvalidArgument

__all__ = ["FORMAT", "header", "pack", "unpack"]

MAGIC = b"CDBBNDL\x00"
FORMAT = 1
_HEAD = struct.Struct("<8sII")
_DTYPES = {"<f4", "<f8", "<u8", "<u4", "<i8", "|u1"}
MAX_HEADER = 64 << 20
MAX_DIMS = 2


def pack(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """Bytes of a bundle: `header` (JSON-serialisable) and named arrays (allowed dtypes)."""
    parts: list[bytes] = []
    table: dict[str, list[Any]] = {}
    offset = 0
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        dtype = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        a = a.astype(dtype, copy=False)
        if a.dtype.str not in _DTYPES:
            raise InvalidArgument(f"expected an array dtype in {sorted(_DTYPES)}, got {a.dtype}")
        raw = a.tobytes()
        table[name] = [a.dtype.str, list(a.shape), offset, len(raw)]
        parts.append(raw)
        offset += len(raw)
    body = b"".join(parts)
    head = dict(header, arrays=table, sha256=hashlib.sha256(body).hexdigest())
    text = json.dumps(head, separators=(",", ":")).encode()
    return _HEAD.pack(MAGIC, FORMAT, len(text)) + text + body


def unpack(data: bytes, max_bytes: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(header, arrays) of a bundle; InvalidArgument naming the first problem found."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidArgument(f"expected bundle bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_bytes:
        raise InvalidArgument(f"expected a bundle of at most {max_bytes} bytes, got {len(data)}")
    if len(data) < _HEAD.size:
        raise InvalidArgument(f"expected a bundle header of {_HEAD.size} bytes, got {len(data)}")
    magic, fmt, hlen = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise InvalidArgument(f"expected a Curator tenant bundle, got magic {magic!r}")
    if fmt != FORMAT:
        raise InvalidArgument(f"expected bundle format {FORMAT}, got {fmt}")
    if hlen > min(MAX_HEADER, len(data) - _HEAD.size):
        raise InvalidArgument(f"expected a header length within the bundle, got {hlen}")
    try:
        header = json.loads(data[_HEAD.size : _HEAD.size + hlen].decode())
    except (ValueError, RecursionError) as e:
        raise InvalidArgument(f"expected a JSON bundle header, got {type(e).__name__}") from None
    if not isinstance(header, dict):
        raise InvalidArgument(f"expected a JSON object header, got {type(header).__name__}")
    body = data[_HEAD.size + hlen :]
    if header.get("sha256") != hashlib.sha256(body).hexdigest():
        raise InvalidArgument("expected the bundle's arrays to match its digest, got a mismatch")
    table = header.get("arrays")
    if not isinstance(table, dict):
        raise InvalidArgument("expected an 'arrays' table in the bundle header")
    arrays = {name: _array(name, spec, body) for name, spec in table.items()}
    return header, arrays


def header(data: bytes) -> dict[str, Any]:
    """The header alone, unchecked beyond its framing (for a mover reading what it just
    had a node write; an import always goes through `unpack`)."""
    magic, _, hlen = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise InvalidArgument(f"expected a Curator tenant bundle, got magic {magic!r}")
    head: dict[str, Any] = json.loads(data[_HEAD.size : _HEAD.size + hlen])
    return head


def _array(name: str, spec: Any, body: bytes) -> np.ndarray:
    ok = isinstance(spec, list) and len(spec) == 4
    dtype, shape, offset, nbytes = spec if ok else (None, None, None, None)
    if not ok or dtype not in _DTYPES:
        raise InvalidArgument(f"expected array {name!r} of an allowed dtype, got {spec!r:.80}")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= MAX_DIMS
        or not all(type(n) is int and 0 <= n < 2**40 for n in shape)
    ):
        raise InvalidArgument(f"expected array {name!r} of 1 or 2 dims, got shape {shape!r:.80}")
    if type(offset) is not int or type(nbytes) is not int or offset < 0 or nbytes < 0:
        raise InvalidArgument(f"expected array {name!r} at an offset, got {offset!r}, {nbytes!r}")
    itemsize = np.dtype(dtype).itemsize
    if int(np.prod(shape, dtype=np.int64)) * itemsize != nbytes or offset + nbytes > len(body):
        raise InvalidArgument(
            f"expected array {name!r} of shape {shape} to fit the bundle, got {nbytes} bytes "
            f"at offset {offset} of {len(body)}"
        )
    return np.frombuffer(body, dtype, count=nbytes // itemsize, offset=offset).reshape(shape)
