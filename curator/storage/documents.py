"""Document payloads: bytes, text or JSON values, stored as tagged bytes."""

from __future__ import annotations

import json

from curator.errors import InvalidArgument, ResourceExhausted
from curator.results import Document
from curator.validation import check_depth

__all__ = ["Document", "decode", "encode"]


_BYTES, _TEXT, _JSON = b"b", b"s", b"j"


def encode(doc: Document, limit: int) -> bytes | None:
    """Tagged bytes of a document (None stays None); ResourceExhausted past `limit` bytes."""
    if doc is None:
        return None
    if isinstance(doc, bytes | bytearray | memoryview):
        raw = _BYTES + bytes(doc)
    elif isinstance(doc, str):
        raw = _TEXT + doc.encode()
    elif isinstance(doc, dict | list):
        check_depth(doc)
        try:
            raw = _JSON + json.dumps(doc, separators=(",", ":")).encode()
        except (TypeError, ValueError) as e:
            raise InvalidArgument(f"expected a JSON-serialisable document, got {e}") from None
    else:
        raise InvalidArgument(
            f"expected a document of bytes, str, dict or list, got {type(doc).__name__}"
        )
    if len(raw) - 1 > limit:
        raise ResourceExhausted(f"expected documents of at most {limit} bytes, got {len(raw) - 1}")
    return raw


def decode(raw: bytes | None) -> Document:
    if raw is None:
        return None
    tag, body = raw[:1], raw[1:]
    if tag == _BYTES:
        return bytes(body)
    if tag == _TEXT:
        return bytes(body).decode()
    value: Document = json.loads(bytes(body))
    return value
