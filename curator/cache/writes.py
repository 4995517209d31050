"""The write side of the semantic cache (a mixin of SemanticCache): stores, invalidations,
deletions.

Store: the LMDB record is committed (with any evictions) before the entry becomes visible in
memory; quotas evict expired entries first, then the lowest utility (eviction.py). TTLs are
absolute: a hit never extends an entry's life. A newer answer to the same (normalised) prompt
replaces the older one. Writers are serialised by `_write`; memory changes take the write
side of `_lock`.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Sequence
from typing import Any

import fasteners
import numpy as np

from curator.cache import entry as entry_codec
from curator.cache.categories import Categories
from curator.cache.config import CacheConfig
from curator.cache.entry import CacheEntry, EntryMeta
from curator.cache.eviction import plan_eviction
from curator.cache.ledger import Ledger
from curator.cache.partition import Partition, PartitionKey, prompt_digest
from curator.cache.policy import CategoryPolicy, check_category
from curator.cache.recovery import ID as _ID
from curator.cache.single_flight import SingleFlight
from curator.cache.validation import check_prompt, check_ttl, partition_key
from curator.errors import InvalidArgument, ResourceExhausted
from curator.results import CacheStored
from curator.storage.store import Store

__all__ = ["CacheWrites"]


class CacheWrites:
    """Needs the attributes and methods below from SemanticCache."""

    store: Store
    config: CacheConfig
    categories: Categories
    ledger: Ledger
    clock: Any
    _lock: fasteners.ReaderWriterLock
    _write: threading.Lock
    _partitions: dict[PartitionKey, Partition]
    _flights: SingleFlight

    def policy(self, tenant: str, category: str) -> CategoryPolicy:
        raise NotImplementedError

    def _vectors(
        self, prompts: list[str], embeddings: Any, fingerprint: str
    ) -> tuple[np.ndarray, str]:
        raise NotImplementedError

    def _count(self, tenant: str, category: str, what: str, n: int = 1) -> None:
        raise NotImplementedError

    def _forget(self, ids: list[int]) -> None:
        raise NotImplementedError

    def _add_many(
        self, key: PartitionKey, ids: list[int], metas: list[EntryMeta], x: np.ndarray
    ) -> None:
        raise NotImplementedError

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
                self.ledger.quota_view(
                    self.policy,
                    self.config.tenant_max_entries,
                    self.config.tenant_max_bytes,
                    self.config.evict_slack,
                ),
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
            ids = self.ledger.select(tenant, category, model, fingerprint)
            self._delete(ids)
        if ids:
            self._count(tenant, category or "*", "invalidated", len(ids))
        return len(ids)

    def _delete(self, ids: list[int]) -> None:
        """Remove entries from LMDB, then from memory (writer lock `_write` held)."""
        if not ids:
            return
        for start in range(0, len(ids), 10_000):
            chunk = ids[start : start + 10_000]
            self._delete_records(chunk)
            with self._lock.write_lock():
                self._forget(chunk)

    def _delete_records(self, ids: list[int]) -> None:
        def txn_fn(txn: Any) -> None:
            for i in ids:
                self.store.delete_raw(txn, "cache", _ID.pack(i))

        self.store.write(txn_fn, frees=True)  # frees space: allowed on a full store
