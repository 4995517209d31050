"""Conversions between numpy / domain objects and protobuf messages (both directions).

Used by the client SDK and by the server, so that both encode the wire format the same way
(the server depends on this module, not the other way round).
Imports only numpy, protobuf and the light `curator.errors` / `curator.results` modules.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from curator.cache.policy import CategoryPolicy
from curator.errors import InvalidArgument
from curator.results import CacheLookup, CacheStored, Document
from curator.storage.documents import MAX_DEPTH, check_depth
from curator_api.v1 import curator_pb2 as pb

__all__ = [
    "METRIC_NAMES",
    "as_rows",
    "cache_stats_from_pb",
    "cache_stats_to_pb",
    "decode_vector",
    "encode_vector",
    "lookup_from_pb",
    "lookup_to_pb",
    "model_load_from_pb",
    "model_load_to_pb",
    "policies_from_pb",
    "policies_to_pb",
    "policy_fields_from_pb",
    "policy_from_pb",
    "policy_to_pb",
    "stored_from_pb",
    "stored_to_pb",
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
    check_depth(doc)
    return pb.Document(json=json.dumps(doc, separators=(",", ":")))


def decode_document(d: pb.Document) -> Document:
    kind = d.WhichOneof("payload")
    if kind is None:
        return None
    if kind == "raw":
        return bytes(d.raw)
    if kind == "text":
        return str(d.text)
    if _json_depth(d.json) > MAX_DEPTH:
        raise InvalidArgument(f"expected a JSON document nested at most {MAX_DEPTH} deep")
    try:
        value: Any = json.loads(d.json)
    except json.JSONDecodeError as e:
        raise InvalidArgument(f"expected a JSON document, got invalid JSON ({e})") from None
    return value


def _json_depth(text: str) -> int:
    """Bracket nesting depth of JSON text (string contents skipped), without parsing it."""
    outside = _JSON_STRING.sub("", text).encode()
    if not outside:
        return 0
    b = np.frombuffer(outside, np.uint8)
    step = np.isin(b, _OPEN).astype(np.int64) - np.isin(b, _CLOSE)
    return int(np.cumsum(step).max(initial=0))


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_OPEN = np.frombuffer(b"[{", np.uint8)
_CLOSE = np.frombuffer(b"]}", np.uint8)


def metric_to_pb(name: str) -> pb.Metric:
    return _METRIC_PB[name]


def metric_from_pb(value: int) -> str:
    if value not in METRIC_NAMES:
        raise InvalidArgument(f"expected a known metric, got enum value {value}")
    return METRIC_NAMES[value]


# -- semantic cache ----------------------------------------------------------------------------
_POLICY_FIELDS = (
    "threshold",
    "min_threshold",
    "alpha",
    "ttl_s",
    "max_ttl_s",
    "beta",
    "quota_entries",
    "quota_bytes",
    "floor_entries",
    "cacheable",
    "exact_only",
)


def encode_vector(v: Any) -> bytes:
    """(dim,) numbers -> packed little-endian float32."""
    arr = np.asarray(v, _LE_F32)
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1:
        raise InvalidArgument(f"expected an embedding of shape (dim,), got {arr.shape}")
    return arr.tobytes()


def as_rows(x: Any) -> np.ndarray:
    """Numbers as a 2-d float32 array (a single vector becomes one row)."""
    arr = np.asarray(x, np.float32)
    return arr.reshape(1, -1) if arr.ndim == 1 else arr


def decode_vector(data: bytes, what: str = "embedding") -> np.ndarray:
    if not data or len(data) % 4:
        raise InvalidArgument(f"expected {what} as packed float32 bytes, got {len(data)} bytes")
    return np.frombuffer(data, _LE_F32).astype(np.float32)


def policy_to_pb(p: CategoryPolicy) -> pb.CachePolicy:
    return pb.CachePolicy(**{f: getattr(p, f) for f in _POLICY_FIELDS})


def policy_fields_from_pb(m: pb.CachePolicy) -> dict[str, Any]:
    """The fields set in a CachePolicy message (a partial update)."""
    return {f: getattr(m, f) for f in _POLICY_FIELDS if m.HasField(f)}


def policy_from_pb(m: pb.CachePolicy) -> CategoryPolicy:
    return CategoryPolicy.from_json(policy_fields_from_pb(m))


def lookup_to_pb(r: CacheLookup) -> pb.CacheLookupResponse:
    return pb.CacheLookupResponse(
        hit=r.hit,
        reason=r.reason,
        response=r.response or b"",
        similarity=r.similarity,
        entry_id=r.entry_id,
        category=r.category,
        category_source=r.category_source,
        threshold=r.threshold,
        leader=r.leader,
        age_s=r.age_s,
    )


def lookup_from_pb(m: pb.CacheLookupResponse) -> CacheLookup:
    return CacheLookup(
        hit=m.hit,
        reason=m.reason,
        response=bytes(m.response) if m.hit else None,
        similarity=m.similarity,
        entry_id=m.entry_id,
        category=m.category,
        category_source=m.category_source,
        threshold=m.threshold,
        leader=m.leader,
        age_s=m.age_s,
    )


def stored_to_pb(r: CacheStored) -> pb.CacheStoreResponse:
    return pb.CacheStoreResponse(
        entry_id=r.entry_id, expires_at=r.expires_at, evicted=r.evicted, stored=r.stored
    )


def stored_from_pb(m: pb.CacheStoreResponse) -> CacheStored:
    return CacheStored(m.entry_id, m.expires_at, m.evicted, m.stored)


def model_load_to_pb(model: str, d: dict[str, Any]) -> pb.ModelLoad:
    return pb.ModelLoad(
        model=model,
        load=d["load"],
        overloaded=d["overloaded"],
        pressure=d["pressure"],
        source=d["source"],
        capacity_rps=d["capacity_rps"],
    )


def model_load_from_pb(m: pb.ModelLoad) -> dict[str, Any]:
    return {
        "load": m.load,
        "overloaded": m.overloaded,
        "pressure": m.pressure,
        "source": m.source,
        "capacity_rps": m.capacity_rps,
    }


def policies_to_pb(policies: dict[str, dict[str, Any]]) -> pb.GetCachePoliciesResponse:
    return pb.GetCachePoliciesResponse(
        categories=[
            pb.CategoryState(
                category=c,
                policy=policy_to_pb(d["policy"]),
                threshold=d["threshold"],
                ttl_s=d["ttl_s"],
                pressure=d["pressure"],
            )
            for c, d in policies.items()
        ]
    )


def policies_from_pb(m: pb.GetCachePoliciesResponse) -> dict[str, dict[str, Any]]:
    return {
        s.category: {
            "policy": policy_from_pb(s.policy),
            "threshold": s.threshold,
            "ttl_s": s.ttl_s,
            "pressure": s.pressure,
        }
        for s in m.categories
    }


def cache_stats_to_pb(stats: dict[str, Any]) -> pb.CacheStatsResponse:
    out = pb.CacheStatsResponse(entries=stats["entries"], partitions=stats["partitions"])
    for c, counters in stats["categories"].items():
        out.categories[c].counters.update(counters)
    out.models.extend(model_load_to_pb(m, d) for m, d in stats["models"].items())
    return out


def cache_stats_from_pb(m: pb.CacheStatsResponse) -> dict[str, Any]:
    return {
        "categories": {c: dict(v.counters) for c, v in m.categories.items()},
        "partitions": m.partitions,
        "entries": m.entries,
        "models": {x.model: model_load_from_pb(x) for x in m.models},
    }
