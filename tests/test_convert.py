"""curator_api.convert: every to_pb / from_pb pair round-trips through the serialised wire
format (hypothesis), and malformed messages raise InvalidArgument."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curator.cache.policy import CATALOGUE
from curator.config import IndexConfig, Metric, SearchParams
from curator.errors import InvalidArgument
from curator.results import (
    CacheLookup,
    CacheStats,
    CacheStored,
    CollectionInfo,
    IssuedKey,
    KeyInfo,
    ModelLoad,
    PolicyState,
    Records,
    SearchResult,
    ServerInfo,
    WriteResult,
)
from curator_api import cache_wire, convert
from curator_api import jsonwire as jw
from curator_api.v1 import curator_pb2 as pb

FAST = settings(max_examples=40, deadline=None)

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
f64 = st.floats(allow_nan=False)
f32 = st.floats(allow_nan=False, width=32)
unit = st.floats(0, 1)
policies = st.sampled_from(list(CATALOGUE.values()))
metrics = st.sampled_from([m.value for m in Metric])


def wire(m: Any) -> Any:
    """The message as the other side decodes it."""
    return type(m).FromString(m.SerializeToString())


@st.composite
def matrices(draw: Any, rows: int | None = None, dim: int | None = None) -> np.ndarray:
    n = draw(st.integers(0, 5)) if rows is None else rows
    d = draw(st.integers(1, 6)) if dim is None else dim
    return np.array(draw(st.lists(f32, min_size=n * d, max_size=n * d)), np.float32).reshape(n, d)


documents = st.one_of(
    st.none(),
    st.binary(max_size=20),
    text,
    st.dictionaries(text, st.integers() | text, max_size=3),
    st.lists(st.integers(-(2**53), 2**53), max_size=3),
)
index_configs = st.builds(
    IndexConfig,
    branching=st.integers(2, 64),
    max_leaf_size=st.integers(1, 1 << 20),
    max_sl_size=st.integers(1, 1 << 20),
    max_depth=st.integers(1, 16),
    train_min_vectors=st.integers(1, 1 << 40),
    retrain_growth=st.just(0.0) | st.floats(1.01, 100),
    kmeans_niter=st.integers(1, 1000),
    kmeans_max_points_per_centroid=st.integers(1, 1 << 20),
    seed=st.integers(0, 2**63),
)
model_loads = st.builds(ModelLoad, f64, st.booleans(), unit, text, f64)


@FAST
@given(matrices())
def test_matrix(x: np.ndarray) -> None:
    np.testing.assert_array_equal(convert.decode_matrix(wire(convert.encode_matrix(x))), x)


@FAST
@given(documents)
def test_document(d: Any) -> None:
    assert convert.decode_document(wire(convert.encode_document(d))) == d


@given(metrics)
def test_metric(m: str) -> None:
    assert convert.metric_from_pb(convert.metric_to_pb(m)) == m


@FAST
@given(st.lists(f32, min_size=1, max_size=8))
def test_vector(v: list[float]) -> None:
    got = convert.decode_vector(convert.encode_vector(v))
    np.testing.assert_array_equal(got, np.array(v, np.float32))


@given(policies)
def test_policy(p: Any) -> None:
    assert cache_wire.policy_from_pb(wire(cache_wire.policy_to_pb(p))) == p


@FAST
@given(
    st.builds(
        CacheLookup, st.booleans(), text, st.binary(), f64, u64, text, text, f64, st.booleans(), f64
    )
)
def test_lookup(r: CacheLookup) -> None:
    got = cache_wire.lookup_from_pb(wire(cache_wire.lookup_to_pb(r)))
    want = r if r.hit else CacheLookup(**{**r.__dict__, "response": None})
    assert repr(got) == repr(want)  # repr: NaN fields (no candidate's score) compare equal


@FAST
@given(st.builds(CacheStored, u64, f64, u64, st.booleans()))
def test_stored(r: CacheStored) -> None:
    assert cache_wire.stored_from_pb(wire(cache_wire.stored_to_pb(r))) == r


@FAST
@given(model_loads)
def test_model_load(m: ModelLoad) -> None:
    assert cache_wire.model_load_from_pb(wire(cache_wire.model_load_to_pb("m", m))) == m


@FAST
@given(st.dictionaries(text, st.builds(PolicyState, policies, f64, f64, unit), max_size=4))
def test_policies(d: dict[str, PolicyState]) -> None:
    got = cache_wire.policies_from_pb(wire(cache_wire.policies_to_pb(d)))
    assert repr(got) == repr(d)  # repr: NaN (nothing learned yet) compares equal


@FAST
@given(
    st.builds(
        CacheStats,
        st.dictionaries(text, st.dictionaries(text, u64, max_size=3), max_size=3),
        u64,
        u64,
        st.dictionaries(text, model_loads, max_size=3),
    )
)
def test_cache_stats(s: CacheStats) -> None:
    assert cache_wire.cache_stats_from_pb(wire(cache_wire.cache_stats_to_pb(s))) == s


@FAST
@given(index_configs)
def test_index_config(c: IndexConfig) -> None:
    assert convert.index_config_from_pb(wire(convert.index_config_to_pb(c))) == c


def test_index_config_defaults_for_unset_or_zero_fields() -> None:
    assert convert.index_config_from_pb(pb.IndexParams()) == IndexConfig()
    assert convert.index_config_from_pb(pb.IndexParams(branching=0, seed=7)) == IndexConfig(seed=7)


@FAST
@given(
    st.builds(
        SearchParams,
        st.integers(1, 1 << 20),
        st.integers(0, 4096),
        st.floats(0, 10, width=32),
        st.integers(0, 1 << 40),
    )
)
def test_search_params(p: SearchParams) -> None:
    assert convert.search_params_from_pb(wire(convert.search_params_to_pb(p))) == p
    assert convert.search_params_from_pb(pb.SearchParams()) is None


@FAST
@given(
    st.builds(
        CollectionInfo,
        text,
        st.integers(1, 65536),
        metrics,
        index_configs,
        u64,
        u64,
        st.booleans(),
        u64,
        st.dictionaries(text, u64, max_size=4),
    )
)
def test_collection_info(c: CollectionInfo) -> None:
    assert convert.collection_info_from_pb(wire(convert.collection_info_to_pb(c))) == c


@FAST
@given(st.builds(KeyInfo, text, st.none() | text.filter(bool), text, f64))
def test_key_info(k: KeyInfo) -> None:
    assert convert.key_info_from_pb(wire(convert.key_info_to_pb(k))) == k


@FAST
@given(st.builds(IssuedKey, text, text))
def test_issued_key(k: IssuedKey) -> None:
    assert convert.issued_key_from_pb(wire(convert.issued_key_to_pb(k))) == k


@FAST
@given(st.builds(ServerInfo, text, text, u64, u32, u32, f64))
def test_server_info(i: ServerInfo) -> None:
    assert convert.server_info_from_pb(wire(convert.server_info_to_pb(i))) == i


@FAST
@given(st.builds(WriteResult, u64, u64))
def test_write_result(r: WriteResult) -> None:
    assert convert.write_result_from_pb(wire(convert.write_result_to_pb(r))) == r


@FAST
@given(st.data())
def test_records(data: Any) -> None:
    n = data.draw(st.integers(0, 4))
    x = data.draw(matrices(rows=n))
    ids = np.array(data.draw(st.lists(u64, min_size=n, max_size=n)), np.uint64)
    owners = data.draw(st.lists(text, min_size=n, max_size=n))
    docs = data.draw(st.lists(documents, min_size=n, max_size=n))
    got = convert.records_from_pb(wire(convert.records_to_pb(Records(ids, x, owners, docs))))
    np.testing.assert_array_equal(got.ids, ids)
    assert got.ids.dtype == np.uint64 and got.vectors.shape == x.shape
    np.testing.assert_array_equal(got.vectors, x)
    assert (got.owners, got.documents) == (owners, docs)


@FAST
@given(st.data())
def test_search_result(data: Any) -> None:
    nq, k, d = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4)), 3
    ids = np.array(  # uint64 ids up to 2**64 - 2, NO_ID padding
        data.draw(st.lists(st.integers(0, 2**64 - 1), min_size=nq * k, max_size=nq * k)),
        np.uint64,
    ).reshape(nq, k)
    names = ["a", "b\u00e9", ""]
    owners = [[data.draw(st.sampled_from(names)) for _ in range(k)] for _ in range(nq)]
    dist = data.draw(matrices(rows=nq, dim=k))
    with_docs = data.draw(st.booleans())
    docs = [data.draw(st.lists(documents, min_size=k, max_size=k)) for _ in range(nq)]
    vecs = data.draw(st.none() | matrices(rows=nq * k, dim=d).map(lambda v: v.reshape(nq, k, d)))
    r = SearchResult(ids, dist, docs if with_docs else None, vecs, data.draw(u64), owners)
    got = convert.search_result_from_pb(wire(convert.search_result_to_pb(r)), with_docs)
    np.testing.assert_array_equal(got.ids, r.ids)
    np.testing.assert_array_equal(got.distances, r.distances)
    assert got.ids.dtype == np.uint64 and got.distances.dtype == np.float32
    assert got.owners == owners
    assert got.documents == r.documents and got.seq == r.seq
    if vecs is None:
        assert got.vectors is None
    else:
        np.testing.assert_array_equal(got.vectors, vecs)


@pytest.mark.parametrize(
    "bad",
    [
        lambda: convert.decode_matrix(pb.Matrix(dim=3, data=b"\x00" * 5)),
        lambda: convert.decode_matrix(pb.Matrix(dim=0, data=b"\x00" * 4)),
        lambda: convert.decode_document(pb.Document(json="{nope")),
        lambda: convert.metric_from_pb(99),
        lambda: convert.decode_vector(b"\x00" * 3),
        lambda: convert.records_from_pb(
            pb.GetResponse(ids=[1, 2], vectors=pb.Matrix(dim=1, data=b"\x00" * 4))
        ),
    ],
)
def test_malformed_messages_raise_invalid_argument(bad: Any) -> None:
    with pytest.raises(InvalidArgument, match="expected"):
        bad()


def test_nan_similarity_crosses_the_wire() -> None:
    r = CacheLookup(False, "empty", None, math.nan, 0, "general", "default", 0.9)
    assert math.isnan(cache_wire.lookup_from_pb(wire(cache_wire.lookup_to_pb(r))).similarity)


# -- the HTTP API's JSON (curator_api/jsonwire.py) ----------------------------------------------
def json_wire(v: Any) -> Any:
    return json.loads(json.dumps(v, allow_nan=False))


@FAST
@given(documents)
def test_json_document(d: Any) -> None:
    assert jw.document_from_json(json_wire(jw.document_to_json(d))) == d


@FAST
@given(matrices().filter(lambda x: bool(np.isfinite(x).all())))
def test_json_matrix(x: np.ndarray) -> None:
    """Stored vectors are finite (the database refuses NaN and inf)."""
    got = jw.matrix_from_json(json_wire(jw.matrix_to_json(x)))
    if len(x):
        np.testing.assert_array_equal(got, x)


@FAST
@given(st.data())
def test_json_search_result_pads_with_null(data: Any) -> None:
    nq, k = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4))
    dist = data.draw(matrices(rows=nq, dim=k))
    dist[0, -1] = np.inf
    r = SearchResult(np.full((nq, k), -1, np.int64), dist, [[b"\x00"] * k] * nq, None, 3)
    got = json_wire(jw.search_result_to_json(r))
    assert got["distances"][0][-1] is None and got["documents"][0][0] == {"$base64": "AA=="}
    finite = np.isfinite(dist)
    np.testing.assert_array_equal(
        np.array([[v for v in row] for row in got["distances"]], np.float64)[finite], dist[finite]
    )


def test_json_rejects_bad_input() -> None:
    with pytest.raises(InvalidArgument, match="rows of numbers"):
        jw.matrix_from_json([[1, 2], [3]])
    with pytest.raises(InvalidArgument, match="expected base64"):
        jw.document_from_json({"$base64": "%%"})
    lookup = CacheLookup(True, "exact", b"\xff", math.nan, 1, "c", "caller", 0.9)
    got = json_wire(jw.lookup_to_json(lookup))
    assert (got["response"], got["response_b64"], got["similarity"]) == (None, "/w==", None)
