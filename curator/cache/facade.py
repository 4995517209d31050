"""The semantic-cache methods of the Database (a mixin): tenant checks, then the cache.

The same method names and arguments exist on the client SDK (`client.Client`), so that code
written against one runs against the other (the gateway adapters rely on that).
"""

from __future__ import annotations

from typing import Any

from curator.cache.policy import CategoryPolicy, check_category
from curator.cache.semantic_cache import SemanticCache
from curator.results import CacheLookup, CacheStored

__all__ = ["CacheFacade"]


class CacheFacade:
    cache: SemanticCache

    _write_lock: Any  # the Database's writer lock: cache writes never race a tenant drop

    def _cache_tenant(self, name: str) -> str:  # provided by Database
        raise NotImplementedError

    def cache_lookup(
        self,
        prompt: str,
        embedding: Any,
        *,
        tenant: str,
        model: str,
        fingerprint: str = "",
        category: str | None = None,
        wait_s: float = 0.0,
    ) -> CacheLookup:
        """A cached answer to `prompt` (embedding (dim,)) for the tenant's partition
        (model, fingerprint), or a miss with its reason; see SemanticCache.lookup."""
        return self.cache.lookup(
            self._cache_tenant(tenant),
            prompt,
            embedding,
            model=model,
            fingerprint=fingerprint,
            category=category,
            wait_s=wait_s,
        )

    def cache_store(
        self,
        prompt: str,
        embedding: Any,
        response: bytes | str,
        *,
        tenant: str,
        model: str,
        fingerprint: str = "",
        category: str | None = None,
        ttl_s: float | None = None,
        latency_s: float = 0.0,
        tokens: int = 0,
    ) -> CacheStored:
        """Cache an answer (durable when this returns); see SemanticCache.store_entry."""
        with self._write_lock:  # the tenant is resolved and written for atomically
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
        tenant: str,
        category: str | None = None,
        model: str | None = None,
        fingerprint: str | None = None,
    ) -> int:
        """Remove the tenant's entries (of a category / model / fingerprint); returns how many."""
        with self._write_lock:
            return self.cache.invalidate(
                self._cache_tenant(tenant), category=category, model=model, fingerprint=fingerprint
            )

    def cache_set_policy(
        self, category: str, *, tenant: str | None, **fields: Any
    ) -> CategoryPolicy:
        """Change a category's policy fields for a tenant (None: the database-wide default)."""
        with self._write_lock:
            key = self._cache_tenant(tenant) if tenant is not None else None
            return self.cache.categories.set_policy(key, category, **fields)

    def cache_reset_policy(self, category: str, *, tenant: str | None) -> bool:
        category = check_category(category)
        with self._write_lock:
            key = self._cache_tenant(tenant) if tenant is not None else None
            return self.cache.categories.reset_policy(key, category)

    def cache_policies(self, *, tenant: str, model: str = "") -> dict[str, dict[str, Any]]:
        """Each category's policy and its current threshold and TTL for `model`."""
        return self.cache.policies(self._cache_tenant(tenant), model)

    def cache_add_examples(self, category: str, embeddings: Any, *, tenant: str) -> int:
        """Labelled examples for the tenant's category classifier; returns their count."""
        with self._write_lock:
            return self.cache.categories.add_examples(
                self._cache_tenant(tenant), category, embeddings
            )

    def cache_report_load(self, model: str, load: float) -> dict[str, Any]:
        """The gateway's measure of a model's utilisation (1.0 = at capacity)."""
        return self.cache.report_load(model, load)

    def cache_set_capacity(self, model: str, rps: float) -> None:
        """Requests per second a model serves at capacity: the cache then measures its load
        from its own misses whenever the gateway does not report."""
        self.cache.set_capacity(model, rps)

    def cache_stats(self, *, tenant: str | None = None) -> dict[str, Any]:
        return self.cache.stats(self._cache_tenant(tenant) if tenant is not None else None)
