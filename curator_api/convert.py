"""Conversions between numpy / domain objects and protobuf messages (both directions).

Used by the client SDK and by the server, so that both encode the wire format the same way
(the server depends on this module, not the other way round).
Imports only numpy, protobuf and the light `curator.errors` / `curator.results` modules.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import numpy as np

from curator.config import IndexConfig, SearchParams
from curator.errors import InvalidArgument
from curator.results import (
    CollectionInfo,
    Document,
    IdPage,
    IssuedKey,
    KeyInfo,
    Records,
    SearchPlan,
    SearchResult,
    ServerInfo,
    WriteResult,
)
from curator.validation import MAX_DEPTH, check_depth
from curator_api.v1 import curator_pb2 as pb

__all__ = [
    "METRIC_NAMES",
    "as_rows",
    "collection_info_from_pb",
    "collection_info_to_pb",
    "decode_document",
    "decode_matrix",
    "decode_vector",
    "encode_document",
    "encode_matrix",
    "encode_vector",
    "index_config_from_pb",
    "index_config_to_pb",
    "issued_key_from_pb",
    "issued_key_to_pb",
    "key_info_from_pb",
    "key_info_to_pb",
    "metric_from_pb",
    "metric_to_pb",
    "records_from_pb",
    "records_to_pb",
    "search_params_from_pb",
    "search_params_to_pb",
    "search_result_from_pb",
    "search_result_to_pb",
    "server_info_from_pb",
    "server_info_to_pb",
    "write_result_from_pb",
    "write_result_to_pb",
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


# -- administration ------------------------------------------------------------------------------
_INDEX_FIELDS = tuple(f.name for f in dataclasses.fields(IndexConfig))
_SEARCH_FIELDS = tuple(f.name for f in dataclasses.fields(SearchParams))


def index_config_to_pb(c: IndexConfig) -> pb.IndexParams:
    return pb.IndexParams(**{f: getattr(c, f) for f in _INDEX_FIELDS})


def index_config_from_pb(m: pb.IndexParams) -> IndexConfig:
    """Unset fields (and 0 in the first four, as older clients send) take the defaults."""
    first = ("branching", "max_leaf_size", "max_sl_size", "train_min_vectors")
    return IndexConfig(
        **{
            f: getattr(m, f)
            for f in _INDEX_FIELDS
            if m.HasField(f) and not (f in first and getattr(m, f) == 0)
        }
    )


def search_params_to_pb(p: SearchParams) -> pb.SearchParams:
    return pb.SearchParams(**{f: getattr(p, f) for f in _SEARCH_FIELDS})


def search_params_from_pb(m: pb.SearchParams) -> SearchParams | None:
    """None when no field is set (the collection's defaults apply)."""
    fields = {f: getattr(m, f) for f in _SEARCH_FIELDS if m.HasField(f)}
    return SearchParams(**fields) if fields else None


def collection_info_to_pb(c: CollectionInfo) -> pb.CollectionInfo:
    out = pb.CollectionInfo(
        name=c.name,
        dim=c.dim,
        metric=metric_to_pb(c.metric),
        index=index_config_to_pb(c.index),
        vector_count=c.vectors,
        tenant_count=c.tenants,
        trained=c.trained,
        seq=c.seq,
        quarantined=c.quarantined,
    )
    out.memory_bytes.update(c.memory)
    return out


def collection_info_from_pb(m: pb.CollectionInfo) -> CollectionInfo:
    return CollectionInfo(
        name=m.name,
        dim=m.dim,
        metric=metric_from_pb(m.metric),
        index=index_config_from_pb(m.index),
        vectors=m.vector_count,
        tenants=m.tenant_count,
        trained=m.trained,
        seq=m.seq,
        memory=dict(m.memory_bytes),
        quarantined=m.quarantined,
    )


def key_info_to_pb(k: KeyInfo) -> pb.KeyInfo:
    return pb.KeyInfo(
        key_id=k.key_id,
        tenant=k.tenant or "",
        description=k.description,
        created=k.created,
        admin=k.tenant is None,
    )


def key_info_from_pb(m: pb.KeyInfo) -> KeyInfo:
    return KeyInfo(m.key_id, None if m.admin else m.tenant, m.description, m.created)


def issued_key_to_pb(k: IssuedKey) -> pb.IssueKeyResponse:
    return pb.IssueKeyResponse(key_id=k.key_id, api_key=k.secret)


def issued_key_from_pb(m: pb.IssueKeyResponse) -> IssuedKey:
    return IssuedKey(m.key_id, m.api_key)


def server_info_to_pb(i: ServerInfo) -> pb.ServerInfoResponse:
    return pb.ServerInfoResponse(**dataclasses.asdict(i))


def server_info_from_pb(m: pb.ServerInfoResponse) -> ServerInfo:
    return ServerInfo(m.version, m.principal, m.seq, m.collections, m.tenants, m.uptime_seconds)


# -- vectors ---------------------------------------------------------------------------------
def write_result_to_pb(r: WriteResult) -> pb.WriteResponse:
    return pb.WriteResponse(seq=r.seq, count=r.count, tenant_seq=r.tenant_seq)


def write_result_from_pb(m: pb.WriteResponse) -> WriteResult:
    return WriteResult(m.seq, m.count, m.tenant_seq)


def records_to_pb(r: Records) -> pb.GetResponse:
    return pb.GetResponse(
        ids=r.ids.tolist(),
        vectors=encode_matrix(r.vectors),
        documents=[encode_document(d) for d in r.documents],
        owners=r.owners,
    )


def records_from_pb(m: pb.GetResponse) -> Records:
    ids = np.array(m.ids, np.uint64)
    x = decode_matrix(m.vectors, "vectors", rows=len(ids))
    return Records(ids, x, list(m.owners), [decode_document(d) for d in m.documents])


def id_page_to_pb(page: IdPage) -> pb.ListIdsResponse:
    out = pb.ListIdsResponse(ids=np.asarray(page.ids, np.uint64).tolist())
    if page.next_after is not None:
        out.next_after = page.next_after
    return out


def id_page_from_pb(m: pb.ListIdsResponse) -> IdPage:
    return IdPage(np.array(m.ids, np.uint64), m.next_after if m.HasField("next_after") else None)


def search_result_to_pb(r: SearchResult) -> pb.SearchResponse:
    nq, k = r.ids.shape
    names = sorted({o for row in r.owners or [] for o in row if o})
    slot = {n: i for i, n in enumerate(names)}
    out = pb.SearchResponse(
        nq=nq,
        k=k,
        ids=np.asarray(r.ids).view(np.uint64).ravel().tolist(),
        seq=r.seq,
        distances=np.ascontiguousarray(r.distances, _LE_F32).tobytes(),
        owner_names=names,
        owners=[slot.get(o, -1) for row in r.owners or [] for o in row],
    )
    if r.documents is not None:
        out.documents.extend(encode_document(d) for row in r.documents for d in row)
    if r.vectors is not None:
        out.vectors.CopyFrom(encode_matrix(r.vectors.reshape(nq * k, -1)))
    if r.plan is not None:
        out.plan.CopyFrom(pb.SearchPlan(**dataclasses.asdict(r.plan)))
    return out


def search_result_from_pb(m: pb.SearchResponse, with_documents: bool) -> SearchResult:
    """with_documents: whether documents were asked for (an empty list is then nq empty rows)."""
    ids = np.array(m.ids, np.uint64).reshape(m.nq, m.k)
    dist = np.frombuffer(m.distances, _LE_F32).astype(np.float32).reshape(m.nq, m.k)
    table = list(m.owner_names)
    flat_owners = [table[i] if 0 <= i < len(table) else "" for i in m.owners]
    owners = [flat_owners[i * m.k : (i + 1) * m.k] for i in range(m.nq)] if m.owners else None
    docs = None
    if with_documents:
        flat = [decode_document(d) for d in m.documents]
        docs = [flat[i * m.k : (i + 1) * m.k] for i in range(m.nq)]
    vecs = None
    if m.HasField("vectors"):
        x = decode_matrix(m.vectors, "vectors", rows=m.nq * m.k)
        vecs = x.reshape(m.nq, m.k, m.vectors.dim)
    plan = None
    if m.HasField("plan"):
        pl = m.plan
        plan = SearchPlan(pl.path, pl.filter_size, pl.ef, pl.touched, pl.queries)
    return SearchResult(ids, dist, docs, vecs, m.seq, owners, plan)


# -- cluster routing ---------------------------------------------------------------------------
