"""Document payloads: bytes, text or JSON values, stored as tagged bytes."""

from __future__ import annotations

import json

from curator.errors import InvalidArgument, ResourceExhausted
from curator.results import Document

__all__ = ["MAX_DEPTH", "Document", "check_depth", "decode", "encode"]

#: JSON documents may nest at most this deep (deeper ones would exhaust the stack).
MAX_DEPTH = 64


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


def check_depth(doc: object) -> None:
    """InvalidArgument if `doc` nests dicts/lists deeper than MAX_DEPTH (checked without
    recursion, so a 100,000-deep document cannot overflow the stack here)."""
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > MAX_DEPTH:
                raise InvalidArgument(
                    f"expected a JSON document nested at most {MAX_DEPTH} deep, got deeper"
                )
            children = node.values() if isinstance(node, dict) else node
            stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
