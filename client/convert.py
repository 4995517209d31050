"""Conversions between numpy / domain objects and protobuf messages (both directions).

Used by the client SDK and by the server, so that both encode the wire format the same way
(the server depends on this module, not the other way round).
Imports only numpy, protobuf and the light `curator.errors` / `curator.results` modules.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from curator.errors import InvalidArgument
from curator.results import Document
from curator_api.v1 import curator_pb2 as pb

__all__ = [
    "METRIC_NAMES",
    "decode_document",
    "decode_matrix",
    "encode_document",
    "encode_matrix",
    "metric_from_pb",
    "metric_to_pb",
]

METRIC_NAMES: dict[int, str] = {
    pb.METRIC_UNSPECIFIED: "l2",
    pb.METRIC_L2: "l2",
    pb.METRIC_IP: "ip",
    pb.METRIC_COSINE: "cosine",
}
_METRIC_PB: dict[str, pb.Metric] = {
    "l2": pb.METRIC_L2,
    "ip": pb.METRIC_IP,
    "cosine": pb.METRIC_COSINE,
}

_LE_F32 = np.dtype("<f4")


def encode_matrix(x: np.ndarray) -> pb.Matrix:
    """(n, d) float32 -> Matrix with packed little-endian bytes."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise InvalidArgument(f"expected a 2-d matrix, got shape {x.shape}")
    return pb.Matrix(dim=x.shape[1], data=np.ascontiguousarray(x, _LE_F32).tobytes())


def decode_matrix(m: pb.Matrix, what: str = "vectors", rows: int | None = None) -> np.ndarray:
    """Matrix -> (n, dim) float32 (a copy); checks the byte count against dim (and rows)."""
    if m.dim == 0:
        if m.data:
            raise InvalidArgument(f"expected {what}.dim > 0 with data, got dim 0")
        return np.zeros((0, 0), np.float32)
    row_bytes = 4 * m.dim
    if len(m.data) % row_bytes:
        raise InvalidArgument(
            f"expected {what} data of a multiple of {row_bytes} bytes "
            f"(dim {m.dim} x float32), got {len(m.data)}"
        )
    x = np.frombuffer(m.data, _LE_F32).reshape(-1, m.dim).astype(np.float32)
    if rows is not None and len(x) != rows:
        raise InvalidArgument(f"expected {rows} rows of {what}, got {len(x)}")
    return x


def encode_document(doc: Document) -> pb.Document:
    if doc is None:
        return pb.Document()
    if isinstance(doc, bytes | bytearray | memoryview):
        return pb.Document(raw=bytes(doc))
    if isinstance(doc, str):
        return pb.Document(text=doc)
    return pb.Document(json=json.dumps(doc, separators=(",", ":")))


def decode_document(d: pb.Document) -> Document:
    kind = d.WhichOneof("payload")
    if kind is None:
        return None
    if kind == "raw":
        return bytes(d.raw)
    if kind == "text":
        return str(d.text)
    try:
        value: Any = json.loads(d.json)
    except json.JSONDecodeError as e:
        raise InvalidArgument(f"expected a JSON document, got invalid JSON ({e})") from None
    return value


def metric_to_pb(name: str) -> pb.Metric:
    return _METRIC_PB[name]


def metric_from_pb(value: int) -> str:
    if value not in METRIC_NAMES:
        raise InvalidArgument(f"expected a known metric, got enum value {value}")
    return METRIC_NAMES[value]
