"""SemanticCache: category-aware semantic caching of LLM answers, per tenant and partition.

>>> cache = SemanticCache(store, CacheConfig())                          # doctest: +SKIP
>>> r = cache.lookup("acme", "how do I sort a list?", emb, model="gpt-x")
>>> if not r.hit:
...     answer = call_model(...)
...     cache.store_entry("acme", "how do I sort a list?", emb, answer, model="gpt-x")

Lookup: category (the caller's, else the tenant's classifier, else "general") -> its policy
(threshold and TTL adjusted to the model's load) -> exact tier (digest of the normalised
prompt) -> semantic tier (the `candidates` nearest entries of the partition; the most similar
one that is unexpired and at or above the threshold is served) -> otherwise a miss with its
reason. Only the partition (tenant, model, fingerprint, category) of the request is ever searched.

Store: the LMDB record is committed (with any evictions) before the entry becomes visible in
memory; quotas evict expired entries first, then the lowest utility (eviction.py). TTLs are
absolute: a hit never extends an entry's life. Hit counts are kept in memory and written back
by the background sweeper (they guide eviction; losing the last few on a crash is harmless),
which also removes expired entries. On start, every partition is rebuilt from LMDB; a graph
saved at the last clean shutdown is read back and reconciled instead of built again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import fasteners
import numpy as np

from curator.cache import entry as entry_codec
from curator.cache.categories import Categories
from curator.cache.config import CacheConfig
from curator.cache.entry import CacheEntry, EntryMeta
from curator.cache.eviction import QuotaView, plan_eviction
from curator.cache.load import LoadController
from curator.cache.partition import Partition, PartitionKey, prompt_digest
from curator.cache.policy import CategoryPolicy, check_category
from curator.cache.single_flight import SingleFlight
from curator.cache.validation import (
    check_model,
    check_prompt,
    check_ttl,
    partition_key,
    unit_vector,
)
from curator.errors import InvalidArgument, ResourceExhausted
from curator.results import CacheLookup, CacheStats, CacheStored, ModelLoad, PolicyState
from curator.storage.files import private_dir, private_tree
from curator.storage.store import Store

__all__ = ["CacheConfig", "SemanticCache"]

log = logging.getLogger(__name__)

_ID = struct.Struct(">Q")


class SemanticCache:
    """Thread-safe: lookups run in parallel, stores and invalidations are serialised.
    `clock` (unix seconds) is injectable for tests; `known_tenants` at start-up drops the
    entries of tenants that no longer exist; `graph_dir`: where HNSW graphs are saved at
    close and read back at the next start (None: always rebuilt)."""

    def __init__(
        self,
        store: Store,
        config: CacheConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        known_tenants: set[str] | None = None,
        background: bool = True,
        graph_dir: Path | None = None,
    ) -> None:
        self.store = store
        self.graph_dir = graph_dir
        self.config = config or CacheConfig()
        self.clock = clock
        self.load = LoadController(self.config.load_config(), clock)
        self.categories = Categories(store, self.config.classifier_min_similarity)
        self._params = self.config.partition_params()
        self.embedder: Any = None
        if self.config.embedder:
            from curator.cache.embedder import TextEmbedder

            if self.config.embedder != TextEmbedder.name:
                raise InvalidArgument(
                    f"expected embedder '' or {TextEmbedder.name!r}, got {self.config.embedder!r}"
                )
            self.embedder = TextEmbedder()
        self._lock = fasteners.ReaderWriterLock()
        self._write = threading.Lock()  # writers (stores, invalidations, sweeps)
        self._partitions: dict[PartitionKey, Partition] = {}
        self._metas: dict[int, EntryMeta] = {}
        self._groups: dict[tuple[str, str], dict[int, None]] = {}  # (tenant, category) -> ids
        self._group_bytes: dict[tuple[str, str], int] = {}
        self._tenant_totals: dict[str, tuple[int, int]] = {}  # tenant -> (entries, bytes)
        self._flights = SingleFlight(self.config.pending_ttl_s)
        self._dirty: set[int] = set()  # entries whose hit count is not written back yet
        self._counters: dict[tuple[str, str, str], int] = {}
        self._counter_lock = threading.Lock()
        self._load_from_store(known_tenants)
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        if background and self.config.sweep_every_s > 0 and not store.readonly:
            self._sweeper = threading.Thread(
                target=self._sweep_loop, name="curator-cache-sweep", daemon=True
            )
            self._sweeper.start()

    def close(self) -> None:
        """Stop the sweeper and write back hit counts."""
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join()
            self._sweeper = None
        if not self.store.readonly:
            self._flush_hits()
            self.save_graphs()

    # -- lookups --------------------------------------------------------------------------
    def lookup(
        self,
        tenant: str,
        prompt: str,
        embedding: Any,
        *,
        model: str,
        fingerprint: str = "",
        category: str | None = None,
        wait_s: float = 0.0,
    ) -> CacheLookup:
        """Is there a cached answer to `prompt` (its embedding (dim,)) for this tenant, model
        and fingerprint? With `wait_s` > 0, a lookup that finds the prompt pending (another
        caller generating it) waits up to that long for the answer."""
        check_prompt(prompt, self.config.max_prompt_bytes)
        x, fingerprint = self._vectors(
            [prompt], None if embedding is None else [embedding], fingerprint
        )
        q = x[0]
        if not isinstance(wait_s, int | float) or not 0 <= wait_s <= 600:
            raise InvalidArgument(f"expected wait_s in [0, 600], got {wait_s!r}")
        cat, source = self.categories.resolve(tenant, category, q)
        key = partition_key(tenant, model, fingerprint, cat)
        policy = self.policy(tenant, cat)
        pressure = self.load.pressure(model)
        threshold = policy.effective_threshold(pressure)

        def miss(reason: str, sim: float = math.nan, leader: bool = False) -> CacheLookup:
            self._count(tenant, cat, "miss_" + reason)
            return CacheLookup(False, reason, None, sim, 0, cat, source, threshold, leader)

        if not policy.cacheable:
            return miss("not_cacheable")
        digest = prompt_digest(prompt)
        now = self.clock()
        with self._lock.read_lock():
            part = self._partitions.get(key)
            if part is not None and part.dim != len(q):
                raise InvalidArgument(
                    f"expected an embedding of dimension {part.dim} for this model and "
                    f"fingerprint, got {len(q)}"
                )
            found: tuple[int, float, str] | None = None
            best, reason = math.nan, "empty"
            if part is not None and len(part):
                reason = "below_threshold"
                eid = part.exact.get(digest)
                if eid is not None and self._alive(eid, now, pressure):
                    found = (eid, 1.0, "exact")
                elif eid is not None:
                    best, reason = 1.0, "expired"
                if found is None and not policy.exact_only:
                    ids, sims = part.search(q, self.config.candidates)
                    if len(sims):
                        best = float(sims[0])
                    for e, s in zip(ids.tolist(), sims.tolist(), strict=True):
                        if s < threshold:
                            break
                        if self._alive(e, now, pressure):
                            found = (e, s, "semantic")
                            break
                        reason = "expired"
            if found is not None:
                eid, sim, tier = found
                with self.store.read() as txn:
                    raw = self.store.get_raw(txn, "cache", _ID.pack(eid))
                if raw is not None:
                    meta = self._metas[eid]
                    meta.hits += 1
                    meta.last_hit = now
                    self._dirty.add(eid)  # hit count to write back
                    self._count(tenant, cat, "hit_" + tier)
                    return CacheLookup(
                        True,
                        tier,
                        entry_codec.decode(eid, raw).response,
                        sim,
                        eid,
                        cat,
                        source,
                        threshold,
                        age_s=now - meta.created,
                    )
        self.load.record_miss(model)
        pending = self._flights.claim((key, digest), now)
        if pending is not None:
            if wait_s > 0 and pending.done.wait(wait_s):
                return self.lookup(
                    tenant, prompt, q, model=model, fingerprint=fingerprint, category=category
                )
            return miss("pending", best)
        return miss(reason, best, leader=True)

    def _vectors(
        self, prompts: list[str], embeddings: Any, fingerprint: str
    ) -> tuple[np.ndarray, str]:
        """Unit embeddings (n, dim) of the prompts: the caller's, or (embeddings None) the
        server embedder's, whose name then joins the fingerprint so that its vectors never
        share a partition with another model's."""
        if embeddings is None:
            if self.embedder is None:
                raise InvalidArgument(
                    "expected an embedding: this server embeds no text (CacheConfig.embedder)"
                )
            return self.embedder.embed(prompts), f"{fingerprint}|embedder={self.embedder.name}"
        rows = [unit_vector(e) for e in embeddings]
        if len({len(r) for r in rows}) != 1:
            raise InvalidArgument(
                f"expected embeddings of one dimension, got {sorted({len(r) for r in rows})}"
            )
        return np.stack(rows), fingerprint

    def _alive(self, eid: int, now: float, pressure: float) -> bool:
        m = self._metas[eid]
        if now < m.expires:
            return True
        if pressure <= 0:
            return False
        policy = self.policy(m.key.tenant, m.category)
        return now < m.created + policy.effective_ttl(m.expires - m.created, pressure)

    # -- writes -----------------------------------------------------------------------------
    def store_entry(
        self,
        tenant: str,
        prompt: str,
        embedding: Any,
        response: bytes | str,
        *,
        model: str,
        fingerprint: str = "",
        category: str | None = None,
        ttl_s: float | None = None,
        latency_s: float = 0.0,
        tokens: int = 0,
    ) -> CacheStored:
        """Cache `response` as the answer to `prompt`. ttl_s may shorten the category's TTL,
        and is capped at its max_ttl_s. A newer answer to the same (normalised) prompt
        replaces the older one."""
        return self.store_entries(
            tenant,
            [prompt],
            None if embedding is None else [embedding],
            [response],
            model=model,
            fingerprint=fingerprint,
            category=category,
            ttl_s=ttl_s,
            latency_s=latency_s,
            tokens=tokens,
        )[0]

    def store_entries(
        self,
        tenant: str,
        prompts: Sequence[str],
        embeddings: Any,
        responses: Sequence[bytes | str],
        *,
        model: str,
        fingerprint: str = "",
        category: str | None = None,
        ttl_s: float | None = None,
        latency_s: float = 0.0,
        tokens: int = 0,
    ) -> list[CacheStored]:
        """Cache several answers of one partition at once (warm-up, import): one LMDB
        transaction per category, one batched graph insert. Same rules as store_entry;
        without a `category`, each prompt is classified."""
        n_emb = len(prompts) if embeddings is None else len(embeddings)
        if len(prompts) != len(responses) or len(prompts) != n_emb:
            raise InvalidArgument(
                f"expected as many prompts, embeddings and responses, got {len(prompts)}, "
                f"{n_emb} and {len(responses)}"
            )
        if not len(prompts):
            return []
        for p in prompts:
            check_prompt(p, self.config.max_prompt_bytes)
        q, fingerprint = self._vectors(list(prompts), embeddings, fingerprint)
        key = partition_key(tenant, model, fingerprint, "")
        bodies = [r.encode() if isinstance(r, str) else r for r in responses]
        for body in bodies:
            if not isinstance(body, bytes):
                raise InvalidArgument(f"expected response as bytes or str, got {type(body)}")
            if len(body) > self.config.max_response_bytes:
                raise ResourceExhausted(
                    f"expected a response of at most {self.config.max_response_bytes} bytes, "
                    f"got {len(body)}"
                )
        if not isinstance(latency_s, int | float) or not 0 <= latency_s < math.inf:
            raise InvalidArgument(f"expected latency_s a finite number >= 0, got {latency_s!r}")
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise InvalidArgument(f"expected tokens an integer >= 0, got {tokens!r}")
        if ttl_s is not None:
            check_ttl(ttl_s)
        cats = [self.categories.resolve(tenant, category, v)[0] for v in q]
        out: list[CacheStored | None] = [None] * len(prompts)
        for cat in dict.fromkeys(cats):
            rows = [i for i, c in enumerate(cats) if c == cat]
            res = self._store_group(
                key, cat, [prompts[i] for i in rows], q[rows], [bodies[i] for i in rows],
                ttl_s, float(latency_s), tokens,
            )  # fmt: skip
            for i, r in zip(rows, res, strict=True):
                out[i] = r
        return [r for r in out if r is not None]

    def _store_group(
        self,
        key: PartitionKey,
        category: str,
        prompts: list[str],
        q: np.ndarray,
        bodies: list[bytes],
        ttl_s: float | None,
        latency_s: float,
        tokens: int,
    ) -> list[CacheStored]:
        tenant = key.tenant
        key = dataclasses.replace(key, category=category)
        policy = self.policy(tenant, category)
        digests = [prompt_digest(p) for p in prompts]
        if not policy.cacheable:
            for d in digests:
                self._flights.release((key, d))
            return [CacheStored(0, 0.0, 0, stored=False) for _ in prompts]
        ttl = min(policy.ttl_s if ttl_s is None else ttl_s, policy.max_ttl_s)
        # a later duplicate of a prompt in the batch wins, like a later store would
        last = {d: i for i, d in enumerate(digests)}
        keep = sorted(last.values())
        with self._write:
            part = self._partitions.get(key)
            if part is not None and part.dim != q.shape[1]:
                raise InvalidArgument(
                    f"expected an embedding of dimension {part.dim} for this model and "
                    f"fingerprint, got {q.shape[1]}"
                )
            now = self.clock()
            entries = [
                CacheEntry(
                    0,
                    tenant,
                    category,
                    key.model,
                    key.fingerprint,
                    prompts[i],
                    q[i],
                    bodies[i],
                    now,
                    now + ttl,
                    latency_s=latency_s,
                    tokens=tokens,
                )
                for i in keep
            ]
            metas = [e.meta(key) for e in entries]
            replaced = [] if part is None else [part.exact[d] for d in last if d in part.exact]
            victims = plan_eviction(
                self._quota_view(),
                (tenant, category),
                policy,
                len(entries),
                sum(m.size for m in metas),
                now,
                replaced,
            )
            gone = [int(v) for v in victims] + replaced

            def txn_fn(txn: Any) -> list[int]:
                ids = []
                for e in entries:
                    e.entry_id = self.store.next_counter(txn, b"next_cache_entry")
                    self.store.put_raw(txn, "cache", _ID.pack(e.entry_id), entry_codec.encode(e))
                    ids.append(e.entry_id)
                for v in gone:
                    self.store.delete_raw(txn, "cache", _ID.pack(v))
                return ids

            ids = self.store.write(txn_fn, sum(m.size for m in metas) + 256 * len(metas))
            with self._lock.write_lock():
                self._forget(gone)
                self._add_many(key, ids, metas, q[keep])
        for d in last:
            self._flights.release((key, d))
        self._count(tenant, category, "store", len(entries))
        if len(victims):
            self._count(tenant, category, "evicted", len(victims))
        by_digest = {
            m.digest: CacheStored(i, m.expires, 0) for i, m in zip(ids, metas, strict=True)
        }
        out = [by_digest[d] for d in digests]
        if len(victims):  # the evictions are reported once, on the last entry
            out[-1] = dataclasses.replace(out[-1], evicted=len(victims))
        return out

    def _quota_view(self) -> QuotaView:
        return QuotaView(
            self._groups,
            self._group_bytes,
            self._tenant_totals,
            self._metas,
            self.policy,
            self.config.tenant_max_entries,
            self.config.tenant_max_bytes,
            self.config.evict_slack,
        )

    def invalidate(
        self,
        tenant: str,
        *,
        category: str | None = None,
        model: str | None = None,
        fingerprint: str | None = None,
    ) -> int:
        """Remove the tenant's entries (of one category / model / fingerprint if given);
        returns how many."""
        if category is not None:
            check_category(category)
        with self._write:
            ids = [
                i
                for i, m in self._metas.items()
                if m.key.tenant == tenant
                and (category is None or m.category == category)
                and (model is None or m.key.model == model)
                and (fingerprint is None or m.key.fingerprint == fingerprint)
            ]
            self._delete(ids)
        if ids:
            self._count(tenant, category or "*", "invalidated", len(ids))
        return len(ids)

    def drop_tenant(self, tenant: str) -> None:
        """Forget everything of a tenant: entries, policies, classifier examples."""
        self.invalidate(tenant)
        self.categories.drop_tenant(tenant)

    # -- policies -------------------------------------------------------------------------
    def policy(self, tenant: str, category: str) -> CategoryPolicy:
        return self.categories.policy(tenant, category)

    def policies(self, tenant: str, model: str = "") -> dict[str, PolicyState]:
        """Every category of the tenant ("": the database-wide defaults): its policy and its
        current (load-adjusted) threshold and TTL for `model`."""
        pressure = self.load.pressure(model) if model else 0.0
        out = {}
        for c in self.categories.names(tenant):
            p = self.policy(tenant, c)
            out[c] = PolicyState(
                p, p.effective_threshold(pressure), p.effective_ttl(p.ttl_s, pressure), pressure
            )
        return out

    # -- load -------------------------------------------------------------------------------
    def report_load(self, model: str, load: float) -> ModelLoad:
        return self.load.report(check_model(model), load).view()

    def set_capacity(self, model: str, rps: float) -> None:
        self.load.set_capacity(check_model(model), rps)

    # -- stats, sweeping ---------------------------------------------------------------------
    def stats(self, tenant: str | None = None) -> CacheStats:
        """Counters by category and outcome, entries and bytes by category, model loads.
        A tenant sees only its own numbers; None: the whole database."""
        with self._counter_lock:
            counters = dict(self._counters)
        by_cat: dict[str, dict[str, int]] = {}
        for (t, c, what), n in counters.items():
            if tenant is None or t == tenant:
                d = by_cat.setdefault(c, {})
                d[what] = d.get(what, 0) + n
        with self._lock.read_lock():
            for (t, c), ids in self._groups.items():
                if tenant is None or t == tenant:
                    d = by_cat.setdefault(c, {})
                    d["entries"] = d.get("entries", 0) + len(ids)
                    d["bytes"] = d.get("bytes", 0) + self._group_bytes.get((t, c), 0)
            partitions = sum(1 for k in self._partitions if tenant is None or k.tenant == tenant)
        return CacheStats(
            categories=by_cat,
            partitions=partitions,
            entries=sum(d.get("entries", 0) for d in by_cat.values()),
            models={m: s.view() for m, s in self.load.state().items()},
        )

    def sweep(self) -> int:
        """Remove entries past their (load-adjusted) expiry, give up stale single-flight slots
        and write back hit counts. Returns the entries removed."""
        now = self.clock()
        with self._write:
            dead = [
                i
                for i, m in self._metas.items()
                if now >= m.expires and not self._alive(i, now, self.load.pressure(m.key.model))
            ]
            self._delete(dead)
        self._flights.expire(now)
        self._flush_hits()
        if dead:
            log.info("cache sweep removed %d expired entries", len(dead))
        return len(dead)

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.config.sweep_every_s):
            try:
                self.sweep()
            except Exception:  # keep sweeping; the next round retries
                log.exception("cache sweep failed")

    def _flush_hits(self) -> None:
        with self._write:
            ids, self._dirty = self._dirty, set()
            dirty = [(i, self._metas[i]) for i in ids if i in self._metas]
            if not dirty:
                return

            def txn_fn(txn: Any) -> None:
                for i, m in dirty:
                    raw = self.store.get_raw(txn, "cache", _ID.pack(i))
                    if raw is not None:
                        self.store.put_raw(
                            txn,
                            "cache",
                            _ID.pack(i),
                            entry_codec.with_hits(raw, m.hits, m.last_hit),
                        )

            self.store.write(txn_fn)

    # -- internals ---------------------------------------------------------------------------
    def _count(self, tenant: str, category: str, what: str, n: int = 1) -> None:
        k = (tenant, category, what)
        with self._counter_lock:
            self._counters[k] = self._counters.get(k, 0) + n

    def _delete(self, ids: list[int]) -> None:
        """Remove entries from LMDB, then from memory (writer lock `_write` held)."""
        if not ids:
            return
        for start in range(0, len(ids), 10_000):
            chunk = ids[start : start + 10_000]
            self._delete_records(chunk)
            with self._lock.write_lock():
                self._forget(chunk)

    def _forget(self, ids: list[int]) -> None:
        for i in ids:
            m = self._metas.pop(i, None)
            if m is None:
                continue
            part = self._partitions.get(m.key)
            if part is not None:
                part.remove(i, m.digest)
                if not len(part):
                    del self._partitions[m.key]
            n, b = self._tenant_totals[m.key.tenant]
            self._tenant_totals[m.key.tenant] = (n - 1, b - m.size)
            g = (m.key.tenant, m.category)
            ids_g = self._groups.get(g)
            if ids_g is not None:
                ids_g.pop(i, None)
                self._group_bytes[g] -= m.size
                if not ids_g:
                    del self._groups[g]
                    del self._group_bytes[g]

    def _add_many(
        self, key: PartitionKey, ids: list[int], metas: list[EntryMeta], x: np.ndarray
    ) -> None:
        if not ids:
            return
        part = self._partitions.get(key)
        if part is None:
            part = self._partitions[key] = Partition(x.shape[1], self._params)
        part.add(np.array(ids, np.int64), x, [m.digest for m in metas])
        self._register(key, ids, metas)

    def _register(self, key: PartitionKey, ids: list[int], metas: list[EntryMeta]) -> None:
        """Count entries already in their partition into the metadata and quota totals."""
        n, b = self._tenant_totals.get(key.tenant, (0, 0))
        self._tenant_totals[key.tenant] = (n + len(ids), b + sum(m.size for m in metas))
        for i, m in zip(ids, metas, strict=True):
            self._metas[i] = m
            g = (key.tenant, m.category)
            self._groups.setdefault(g, {})[i] = None
            self._group_bytes[g] = self._group_bytes.get(g, 0) + m.size

    def _load_from_store(self, known_tenants: set[str] | None) -> None:
        """Rebuild every partition from LMDB; a partition whose graph was saved at the last
        clean shutdown loads it and adds only what is missing from it."""
        now = self.clock()
        saved = self._saved_graphs()
        # per partition: ids, metas, and the embeddings packed in one buffer (not an array
        # object per entry: at 1M entries those cost more than the graph); none are packed
        # for a partition with a saved graph
        groups: dict[PartitionKey, tuple[list[int], list[EntryMeta], bytearray]] = {}
        stale: list[int] = []
        keys: dict[PartitionKey, PartitionKey] = {}  # one key object per partition
        with self.store.read() as txn:
            for k, v in self.store.scan_raw(txn, "cache"):
                eid = _ID.unpack(k)[0]
                e = entry_codec.decode(eid, v)
                if (known_tenants is not None and e.tenant not in known_tenants) or (
                    now >= e.expires
                ):
                    stale.append(eid)
                    continue
                key = keys.setdefault(e.key, e.key)
                ids, metas, vecs = groups.setdefault(key, ([], [], bytearray()))
                ids.append(eid)
                metas.append(e.meta(key))
                if key not in saved:
                    vecs += e.embedding.tobytes()
        from_graphs = 0
        for key in list(groups):
            ids, metas, vecs = groups.pop(key)
            if key in saved:
                ids, metas, vecs = self._load_graph(key, saved[key], ids, metas)
                from_graphs += key in self._partitions
            if ids:
                x = np.frombuffer(vecs, np.float32).reshape(len(ids), -1)
                self._add_many(key, ids, metas, x)
        if stale and not self.store.readonly:
            self._delete_records(stale)
        if self._metas:
            log.info(
                "cache: %d entries in %d partitions (%d from saved graphs) rebuilt from the "
                "store (%d expired dropped)",
                len(self._metas),
                len(self._partitions),
                from_graphs,
                len(stale),
            )

    def _load_graph(
        self, key: PartitionKey, path: Path, ids: list[int], metas: list[EntryMeta]
    ) -> tuple[list[int], list[EntryMeta], bytearray]:
        """Register the entries of a partition whose graph was saved, from that graph; returns
        what is left to add the usual way: the entries the graph lacks (all, if the graph is
        unusable), with their embeddings."""
        with self.store.read() as txn:
            first = self.store.get_raw(txn, "cache", _ID.pack(ids[0]))
        dim = len(entry_codec.decode(ids[0], first or b"").embedding) if first else 0
        try:
            part, missing = Partition.from_graph(
                path, dim, self._params, {i: m.digest for i, m in zip(ids, metas, strict=True)}
            )
        except ValueError as e:
            log.warning("cache: rebuilding a partition: %s", e)
            missing = ids
        else:
            self._partitions[key] = part
            todo = set(missing)
            self._register(
                key,
                [i for i in ids if i not in todo],
                [m for i, m in zip(ids, metas, strict=True) if i not in todo],
            )
        by_id = dict(zip(ids, metas, strict=True))
        vecs = bytearray()
        with self.store.read() as txn:
            for i in missing:
                raw = self.store.get_raw(txn, "cache", _ID.pack(i))
                vecs += entry_codec.decode(i, raw or b"").embedding.tobytes()
        return list(missing), [by_id[i] for i in missing], vecs

    def _saved_graphs(self) -> dict[PartitionKey, Path]:
        """Graphs saved at the last clean shutdown, by partition (files whose manifest reads)."""
        out: dict[PartitionKey, Path] = {}
        if self.graph_dir is None or not self.graph_dir.is_dir():
            return out
        for manifest in self.graph_dir.glob("*.json"):
            try:
                key = PartitionKey(**json.loads(manifest.read_text()))
            except (OSError, ValueError, TypeError):
                continue
            graph = manifest.with_suffix(".hnsw")
            if graph.exists():
                out[key] = graph
        return out

    def save_graphs(self) -> int:
        """Save every partition's HNSW graph next to the store (read back at the next start
        instead of rebuilding it) and drop saved graphs of partitions gone since. Returns the
        number saved."""
        if self.graph_dir is None or self.store.readonly:
            return 0
        private_dir(self.graph_dir)
        written: set[Path] = set()
        with self._write, self._lock.read_lock():
            for key, part in self._partitions.items():
                name = hashlib.blake2b(repr(dataclasses.astuple(key)).encode(), digest_size=16)
                graph = self.graph_dir / f"{name.hexdigest()}.hnsw"
                if part.save_graph(graph):
                    manifest = graph.with_suffix(".json")
                    manifest.write_text(json.dumps(dataclasses.asdict(key)))
                    written.update((graph, manifest))
        for f in self.graph_dir.iterdir():
            if f not in written:
                f.unlink(missing_ok=True)
        private_tree(self.graph_dir)  # manifests name tenants: 0600 like the rest
        return len(written) // 2

    def _delete_records(self, ids: list[int]) -> None:
        def txn_fn(txn: Any) -> None:
            for i in ids:
                self.store.delete_raw(txn, "cache", _ID.pack(i))

        self.store.write(txn_fn, frees=True)

    def entries(self, tenant: str) -> Iterator[CacheEntry]:
        """Every stored entry of a tenant (for inspection and tests), in id order."""
        with self.store.read() as txn:
            for k, v in self.store.scan_raw(txn, "cache"):
                e = entry_codec.decode(_ID.unpack(k)[0], v)
                if e.tenant == tenant:
                    yield e
