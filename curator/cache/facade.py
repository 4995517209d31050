"""The semantic-cache methods of the Database (a mixin): tenant checks, then the cache.

The contract is curator.api.CacheAPI, which the client SDKs implement too (the gateway
adapters accept either). `tenant=None` is the admin, who must name a tenant for the calls on
a partition; for policies and stats None means the database-wide defaults / totals.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from curator.cache.policy import CategoryPolicy, check_category
from curator.cache.semantic_cache import SemanticCache
from curator.errors import InvalidArgument
from curator.results import CacheLookup, CacheStats, CacheStored, ModelLoad, PolicyState

__all__ = ["CacheFacade"]


class CacheFacade:
    cache: SemanticCache

    _write_lock: Any  # the Database's writer lock: cache writes never race a tenant drop
    _handoff: Any  # the Database's frozen / moved tenants (curator/storage/handoff.py)

    def _cache_tenant(self, name: str) -> str:  # provided by Database
        raise NotImplementedError

    def _partition_tenant(self, tenant: str | None) -> str:
        if tenant is None:
            raise InvalidArgument("expected a tenant to act as (the admin key acts for none)")
        self._cache_tenant(tenant)  # NotFound for an unknown tenant
        return tenant

    def cache_lookup(
        self,
        prompt: str,
        embedding: Any,
        *,
        tenant: str | None = None,
        model: str,
        fingerprint: str = "",
        category: str | None = None,
        wait_s: float = 0.0,
        active: Callable[[], bool] | None = None,
    ) -> CacheLookup:
        """A cached answer to `prompt` (embedding (dim,)) for the tenant's partition
        (model, fingerprint), or a miss with its reason; see SemanticCache.lookup. `active`:
        while waiting for a pending prompt, stop as soon as it returns False."""
        self._handoff.check_read(tenant)
        tenant = self._partition_tenant(tenant)
        return self.cache.lookup(
            self._cache_tenant(tenant),
            prompt,
            embedding,
            model=model,
            fingerprint=fingerprint,
            category=category,
            wait_s=wait_s,
            active=active,
        )

    def cache_feedback(
        self,
        *,
        tenant: str | None = None,
        lookup_id: int = 0,
        entry_id: int = 0,
        correct: bool,
    ) -> dict[str, Any]:
        """Was the answer of a lookup (`lookup_id`, or the latest lookup served by
        `entry_id`) right? Calibrates the category's threshold (SemanticCache.feedback);
        returns the category's calibration state."""
        key = self._cache_tenant(self._partition_tenant(tenant))
        with self._write_lock:  # persisted calibration: never racing a drop of the tenant
            self._handoff.check_write(tenant)
            return self.cache.feedback(key, lookup_id=lookup_id, entry_id=entry_id, correct=correct)

    def cache_store(
        self,
        prompt: str,
        embedding: Any,
        response: bytes | str,
        *,
        tenant: str | None = None,
        model: str,
        fingerprint: str = "",
        category: str | None = None,
        ttl_s: float | None = None,
        latency_s: float = 0.0,
        tokens: int = 0,
    ) -> CacheStored:
        """Cache an answer (durable when this returns); see SemanticCache.store_entry."""
        tenant = self._partition_tenant(tenant)
        with self._write_lock:  # the tenant is resolved and written for atomically
            self._handoff.check_write(tenant)
            return self.cache.store_entry(
                self._cache_tenant(tenant),
                prompt,
                embedding,
                response,
                model=model,
                fingerprint=fingerprint,
                category=category,
                ttl_s=ttl_s,
                latency_s=latency_s,
                tokens=tokens,
            )

    def cache_invalidate(
        self,
        *,
        tenant: str | None = None,
        category: str | None = None,
        model: str | None = None,
        fingerprint: str | None = None,
    ) -> int:
        """Remove the tenant's entries (of a category / model / fingerprint); returns how many."""
        tenant = self._partition_tenant(tenant)
        with self._write_lock:
            self._handoff.check_write(tenant)
            return self.cache.invalidate(
                self._cache_tenant(tenant), category=category, model=model, fingerprint=fingerprint
            )

    def cache_set_policy(
        self, category: str, *, tenant: str | None = None, **fields: Any
    ) -> CategoryPolicy:
        """Change a category's policy fields for a tenant (None: the database-wide default)."""
        with self._write_lock:
            self._handoff.check_write(tenant)
            key = self._cache_tenant(tenant) if tenant is not None else None
            return self.cache.categories.set_policy(key, category, **fields)

    def cache_reset_policy(self, category: str, *, tenant: str | None = None) -> bool:
        """Back to the default policy; False when there was nothing to reset."""
        category = check_category(category)
        with self._write_lock:
            self._handoff.check_write(tenant)
            key = self._cache_tenant(tenant) if tenant is not None else None
            return self.cache.categories.reset_policy(key, category)

    def cache_policies(
        self, *, tenant: str | None = None, model: str = ""
    ) -> dict[str, PolicyState]:
        """Each category's policy and its current threshold and TTL for `model` (tenant None:
        the database-wide defaults)."""
        # "" is the cache's owner of the database-wide defaults (curator.cache.categories)
        return self.cache.policies(self._cache_tenant(tenant) if tenant is not None else "", model)

    def cache_add_examples(
        self, category: str, embeddings: Any, *, tenant: str | None = None
    ) -> int:
        """Labelled examples for the tenant's category classifier; returns their count."""
        tenant = self._partition_tenant(tenant)
        with self._write_lock:
            self._handoff.check_write(tenant)
            return self.cache.categories.add_examples(
                self._cache_tenant(tenant), category, embeddings
            )

    def cache_report_load(self, model: str, load: float) -> ModelLoad:
        """The gateway's measure of a model's utilisation (1.0 = at capacity)."""
        return self.cache.report_load(model, load)

    def cache_set_capacity(self, model: str, rps: float) -> None:
        """Requests per second a model serves at capacity: the cache then measures its load
        from its own misses whenever the gateway does not report."""
        self.cache.set_capacity(model, rps)

    def cache_stats(self, *, tenant: str | None = None) -> CacheStats:
        """Counters of `tenant` (None: the whole database)."""
        return self.cache.stats(self._cache_tenant(tenant) if tenant is not None else None)
