"""Conversions between numpy / domain objects and the HTTP API's JSON (both directions), the
JSON counterpart of curator_api.convert.

- Vectors are lists of numbers (rows of a matrix); ids are integers.
- Distances and similarities that are not finite (padding, "no candidate") are null.
- Documents are any JSON value; a bytes document is {"$base64": "<base64>"} (so a JSON document
  of exactly that shape cannot be stored; send its bytes instead).
- Cache responses are "response" (UTF-8 text, null if not valid UTF-8) and "response_b64".
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
from typing import Any

import numpy as np

from curator.errors import InvalidArgument
from curator.results import NO_ID, CacheLookup, Document, Records, SearchResult

__all__ = [
    "document_from_json",
    "document_to_json",
    "lookup_to_json",
    "matrix_from_json",
    "matrix_to_json",
    "number_or_null",
    "records_to_json",
    "search_result_to_json",
    "to_json",
]

_B64 = "$base64"


def document_to_json(d: Document) -> Any:
    if isinstance(d, bytes | bytearray | memoryview):
        return {_B64: base64.b64encode(bytes(d)).decode()}
    return d


def document_from_json(v: Any) -> Document:
    if isinstance(v, dict) and set(v) == {_B64}:
        try:
            return base64.b64decode(v[_B64], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise InvalidArgument(f"expected base64 in {_B64}, got {v[_B64]!r}") from None
    doc: Document = v
    return doc


def matrix_from_json(rows: Any, what: str = "vectors") -> np.ndarray:
    """Rows of numbers (or one row) -> (n, d) float32."""
    try:
        x = np.asarray(rows, np.float32)
    except (TypeError, ValueError):
        raise InvalidArgument(f"expected {what} as rows of numbers of one length") from None
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2:
        raise InvalidArgument(f"expected {what} as rows of numbers, got shape {x.shape}")
    return x


def matrix_to_json(x: np.ndarray) -> list[list[float]]:
    return np.asarray(x, np.float32).tolist()


def number_or_null(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def search_result_to_json(r: SearchResult) -> dict[str, Any]:
    found = np.asarray(r.ids) != NO_ID
    ids = np.asarray(r.ids).view(np.uint64).tolist()
    out: dict[str, Any] = {  # padding: null id, null distance, "" owner
        "ids": [
            [i if f else None for i, f in zip(row, fr, strict=True)]
            for row, fr in zip(ids, found.tolist(), strict=True)
        ],
        "distances": [[number_or_null(v) for v in row] for row in r.distances.tolist()],
        "owners": r.owners,
        "seq": r.seq,
    }
    if r.documents is not None:
        out["documents"] = [[document_to_json(d) for d in row] for row in r.documents]
    if r.vectors is not None:
        out["vectors"] = np.asarray(r.vectors, np.float32).tolist()
    if r.plan is not None:
        out["plan"] = dataclasses.asdict(r.plan)
    return out


def records_to_json(r: Records) -> dict[str, Any]:
    return {
        "ids": r.ids.tolist(),
        "vectors": matrix_to_json(r.vectors),
        "owners": list(r.owners),
        "documents": [document_to_json(d) for d in r.documents],
    }


def lookup_to_json(r: CacheLookup) -> dict[str, Any]:
    out = to_json(r)
    raw = r.response
    out.pop("response")
    try:
        out["response"] = raw.decode() if raw is not None else None
    except UnicodeDecodeError:
        out["response"] = None
    out["response_b64"] = base64.b64encode(raw).decode() if raw is not None else None
    return out


def to_json(x: Any) -> Any:
    """A result dataclass (or a structure of them) as JSON values; non-finite floats -> null."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: to_json(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, dict):
        return {str(k): to_json(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [to_json(v) for v in x]
    if isinstance(x, float):
        return number_or_null(x)
    if isinstance(x, bytes):
        return document_to_json(x)
    return x
