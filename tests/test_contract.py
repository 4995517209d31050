"""The one contract (curator.api): the async Protocols mirror the sync ones, the three
implementations have exactly the Protocols' signatures (and mypy agrees), and one scenario
gives the same results in-process, over the blocking Client and over the AsyncClient, each
against its own real server on an ephemeral port."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from client import Client
from client.aio import AsyncClient
from curator import api, errors
from curator.config import DatabaseConfig, IndexConfig, SearchParams
from curator.database import Database
from tests.test_server import ADMIN, Served

ROOT = Path(__file__).resolve().parents[1]
DIM = 8
PAIRS = [
    (api.AdminAPI, api.AsyncAdminAPI),
    (api.VectorsAPI, api.AsyncVectorsAPI),
    (api.CacheAPI, api.AsyncCacheAPI),
]


def _methods(proto: type) -> dict[str, Callable[..., Any]]:
    return {n: f for n, f in vars(proto).items() if inspect.isfunction(f) and not n.startswith("_")}


@pytest.mark.parametrize(("sync", "aio"), PAIRS, ids=lambda p: p.__name__)
def test_async_protocols_mirror_the_sync_ones(sync: type, aio: type) -> None:
    s, a = _methods(sync), _methods(aio)
    assert sorted(s) == sorted(a)
    for name in s:
        assert inspect.iscoroutinefunction(a[name]), name
        assert inspect.signature(a[name]) == inspect.signature(s[name]), name


@pytest.mark.parametrize(
    ("impl", "protos"),
    [
        (Database, [p for p, _ in PAIRS]),
        (Client, [p for p, _ in PAIRS]),
        (AsyncClient, [a for _, a in PAIRS]),
    ],
    ids=lambda x: getattr(x, "__name__", ""),
)
def test_implementations_have_the_protocol_signatures(impl: type, protos: list[type]) -> None:
    """Same parameters, kinds and defaults; an implementation may only add optional keyword
    parameters (the SDK's batch_size, progress, timeout)."""
    for proto in protos:
        for name, want in _methods(proto).items():
            got = getattr(impl, name)
            assert inspect.iscoroutinefunction(got) == inspect.iscoroutinefunction(want), name
            g, w = inspect.signature(got).parameters, inspect.signature(want).parameters
            assert list(g)[: len(w)] == list(w), f"{impl.__name__}.{name}"
            for p in w:
                assert (g[p].kind, g[p].default) == (w[p].kind, w[p].default), f"{name}({p})"
            for extra in list(g)[len(w) :]:
                assert g[extra].kind is inspect.Parameter.KEYWORD_ONLY, f"{name}({extra})"
                assert g[extra].default is not inspect.Parameter.empty, f"{name}({extra})"


@pytest.mark.timeout(180)
def test_mypy_holds_the_implementations_to_the_protocols(tmp_path: Path) -> None:
    mypy_api = pytest.importorskip("mypy.api")
    broken = tmp_path / "broken_contract.py"
    broken.write_text(
        textwrap.dedent(
            """
            from curator.api import CacheAPI

            class Wrong:
                def cache_reset_policy(self, category: str, *, tenant: str | None = None) -> None:
                    return None

            _: CacheAPI = Wrong()
            """
        )
    )
    out, err, status = mypy_api.run(
        ["--config-file", str(ROOT / "pyproject.toml"), str(ROOT / "tests/typing_contract.py")]
    )
    assert status == 0, out + err
    out, _, status = mypy_api.run(["--config-file", str(ROOT / "pyproject.toml"), str(broken)])
    assert status == 1 and "CacheAPI" in out, out


# -- congruence ---------------------------------------------------------------------------
class _Awaiting:
    """A sync implementation seen through the async contract (runs inline)."""

    def __init__(self, impl: Any) -> None:
        self._impl = impl

    def __getattr__(self, name: str) -> Any:
        f = getattr(self._impl, name)

        async def call(*args: Any, **kw: Any) -> Any:
            return f(*args, **kw)

        return call


def _vecs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _unit(seed: int, dim: int = 16) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def _plain(x: Any) -> Any:
    """Comparable form: arrays with their dtype and shape, dataclasses by field."""
    if isinstance(x, np.ndarray):
        return (str(x.dtype), x.shape, x.tolist())
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return (
            type(x).__name__,
            {f.name: _plain(getattr(x, f.name)) for f in dataclasses.fields(x)},
        )
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x


async def _scenario(db: Any) -> list[Any]:
    """Every contract method at least once; returns what must agree across the three."""
    out: list[Any] = []

    async def expect_error(call: Any) -> None:
        try:
            await call
            out.append("no error")
        except errors.CuratorError as e:
            out.append(type(e).__name__)

    # administration
    for t in ("a", "b"):
        await db.create_tenant(t)
    idx = IndexConfig(train_min_vectors=200, max_sl_size=16, seed=7)
    out.append(await db.create_collection("docs", DIM, "cosine", idx))
    await db.create_collection("tmp", 4)
    await db.drop_collection("tmp")
    out.append((await db.list_collections(), await db.list_tenants()))
    key = await db.issue_key("a", "first")
    out.append([(k.tenant, k.description) for k in await db.list_keys("a")])
    new = await db.rotate_key(key.key_id)
    assert new.key_id != key.key_id and new.secret.startswith("cdb_")
    out.append([(k.key_id == new.key_id, k.description) for k in await db.list_keys("a")])
    await db.revoke_key(new.key_id)
    ops = await db.issue_key(None, "ops")
    out.append(sorted((k.tenant, k.description) for k in await db.list_keys()))
    await db.revoke_key(ops.key_id)
    last = [k.key_id for k in await db.list_keys() if k.tenant is None]
    await expect_error(db.revoke_key(last[0]))  # the last admin key stays
    await expect_error(db.issue_key("ghost"))
    await expect_error(db.rotate_key("nope"))
    await db.create_tenant("c")
    await db.drop_tenant("c")
    # vectors
    x = _vecs(400, 0)
    docs = [f"d{i}" if i % 3 else {"n": i} for i in range(400)]
    out.append(await db.upsert("docs", np.arange(400), x, docs, tenant="a"))
    out.append(await db.upsert("docs", np.arange(400, 450), _vecs(50, 1), tenant="b"))
    await expect_error(db.grant("docs", [1], "b", tenant="a"))  # not allowed to share yet
    await db.allow_sharing("a", "b")
    out.append(await db.grant("docs", np.arange(0, 30), "b", tenant="a"))
    out.append(await db.revoke("docs", np.arange(0, 5), "b", tenant="a"))
    out.append(await db.revoke("docs", [5], "b", tenant="b", owner="a"))  # a grantee drops it
    out.append(await db.delete("docs", np.arange(390, 410), tenant="a"))
    out.append((await db.count("docs"), await db.count("docs", tenant="b")))
    for tenant in ("a", ["a", "b"]):
        res = await db.search(
            "docs",
            x[:5],
            4,
            tenant=tenant,
            params=SearchParams(search_ef=32),
            with_documents=True,
            with_vectors=True,
        )
        out.append(res)
    out.append(await db.get("docs", [3, 20, 420, 9999], tenant="b", owner="a"))
    out.append(await db.get("docs", [3, 20, 420, 9999], tenant="b"))  # b's own ids
    out.append(await db.get("docs", [9999], tenant="b"))  # nothing found
    out.append(await db.describe_collection("docs"))
    info = await db.server_info()
    out.append((info.version, info.principal, info.seq, info.collections, info.tenants))
    path = Path(await db.backup("first"))
    out.append((path.name, (path / "lmdb").is_dir()))
    await expect_error(db.backup("../escape"))
    await expect_error(db.upsert("docs", [1], x[:1]))  # the admin must name an owner
    await expect_error(db.search("docs", x[:1], 3))
    await expect_error(db.search("docs", x[:1, :4], 3, tenant="a"))
    await expect_error(db.grant("docs", [10], "a", tenant="b", owner="a"))  # a's, not b's
    out.append(await db.train("docs"))
    # semantic cache
    e = [_unit(i) for i in range(4)]
    stored = await db.cache_store("hello?", e[0], "hi", tenant="a", model="m", category="chat")
    out.append((stored.entry_id, stored.evicted, stored.stored))
    hit = await db.cache_lookup("hello!", e[0], tenant="a", model="m", category="chat")
    out.append((hit.hit, hit.reason, hit.response, hit.similarity, hit.category, hit.threshold))
    miss = await db.cache_lookup("other", e[1], tenant="a", model="m", category="chat")
    out.append((miss.hit, miss.reason, miss.leader))
    out.append(await db.cache_set_policy("chat", tenant="a", threshold=0.95))
    out.append(await db.cache_set_policy("news", threshold=0.97))  # database-wide default
    out.append(await db.cache_reset_policy("chat", tenant="a"))
    out.append(await db.cache_reset_policy("chat", tenant="a"))  # nothing left to reset
    out.append(await db.cache_add_examples("code", np.stack([e[2], e[3]]), tenant="a"))
    out.append(await db.cache_report_load("m", 0.5))
    await db.cache_set_capacity("m2", 10.0)
    out.append(await db.cache_policies(tenant="a", model="m"))
    out.append(await db.cache_policies())
    out.append(await db.cache_stats(tenant="a"))
    out.append(await db.cache_stats())
    out.append(await db.cache_invalidate(tenant="a", category="chat"))
    await expect_error(db.cache_lookup("q", e[0], model="m"))  # the admin names a tenant
    await expect_error(db.cache_lookup("q", e[0][:4], tenant="a", model="m"))
    await expect_error(db.cache_report_load("m", -1.0))
    return [_plain(v) for v in out]


@pytest.mark.timeout(240)
def test_same_results_in_process_over_the_client_and_the_async_client(tmp_path: Path) -> None:
    local = Database(DatabaseConfig(data_dir=str(tmp_path / "local")), background=False)
    local.keys.ensure(ADMIN, None, "test")
    try:
        expected = asyncio.run(_scenario(_Awaiting(local)))
    finally:
        local.close()

    served = Served(tmp_path / "sync")
    try:
        with served.client() as c:
            got_sync = asyncio.run(_scenario(_Awaiting(c)))
    finally:
        served.close()

    async def over_aio(address: str) -> list[Any]:
        async with AsyncClient(address, ADMIN, timeout=20) as c:
            return await _scenario(c)

    served = Served(tmp_path / "aio")
    try:
        got_aio = asyncio.run(over_aio(served.address))
    finally:
        served.close()

    for got in (got_sync, got_aio):
        assert len(got) == len(expected)
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert g == e or repr(g) == repr(e), f"step {i}"  # repr: NaN fields compare equal
