"""The semantic-cache calls of the SDK (a mixin of `Client`), named and shaped like the
Database's `cache_*` methods, so gateway adapters accept either. `tenant=None` acts for the
key's own tenant (the admin key must name one, except for policies and stats)."""

from __future__ import annotations

from typing import Any

from curator.cache.policy import CategoryPolicy
from curator.errors import InvalidArgument
from curator.results import CacheLookup, CacheStored
from curator_api import convert
from curator_api.v1 import curator_pb2 as pb

__all__ = ["CacheCalls"]


class CacheCalls:
    _cache: Any

    def _call(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        raise NotImplementedError  # provided by Client

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
    ) -> CacheLookup:
        """A cached answer to `prompt` (embedding (dim,)) in the partition (tenant, model,
        fingerprint), or a miss with its reason. embedding None: the server embeds the prompt
        (if it runs an embedder)."""
        req = pb.CacheLookupRequest(
            tenant=tenant or "",
            model=model,
            fingerprint=fingerprint,
            category=category or "",
            prompt=prompt,
            embedding=b"" if embedding is None else convert.encode_vector(embedding),
            wait_s=wait_s,
        )
        timeout = None if wait_s <= 0 else wait_s + 30.0
        return convert.lookup_from_pb(self._call(self._cache.Lookup, req, timeout))

    def cache_feedback(
        self,
        *,
        tenant: str | None = None,
        lookup_id: int = 0,
        entry_id: int = 0,
        correct: bool,
    ) -> dict[str, Any]:
        """Was the answer of a lookup (`lookup_id`, or the latest lookup served by
        `entry_id`) right? Returns the category's calibration state."""
        for name, v in (("lookup_id", lookup_id), ("entry_id", entry_id)):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 64:
                raise InvalidArgument(f"expected {name} an unsigned 64-bit integer, got {v!r}")
        if not isinstance(correct, bool):
            raise InvalidArgument(f"expected correct a bool, got {correct!r}")
        req = pb.CacheFeedbackRequest(
            tenant=tenant or "", lookup_id=lookup_id, entry_id=entry_id, correct=correct
        )
        return convert.feedback_from_pb(self._call(self._cache.Feedback, req))

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
        """Cache an answer; durable when this returns."""
        req = pb.CacheStoreRequest(
            tenant=tenant or "",
            model=model,
            fingerprint=fingerprint,
            category=category or "",
            prompt=prompt,
            embedding=b"" if embedding is None else convert.encode_vector(embedding),
            response=response.encode() if isinstance(response, str) else bytes(response),
            latency_s=latency_s,
            tokens=tokens,
        )
        if ttl_s is not None:
            req.ttl_s = ttl_s
        return convert.stored_from_pb(self._call(self._cache.Store, req))

    def cache_invalidate(
        self,
        *,
        tenant: str | None = None,
        category: str | None = None,
        model: str | None = None,
        fingerprint: str | None = None,
    ) -> int:
        req = pb.CacheInvalidateRequest(tenant=tenant or "")
        for f, v in (("category", category), ("model", model), ("fingerprint", fingerprint)):
            if v is not None:
                setattr(req, f, v)
        return int(self._call(self._cache.Invalidate, req).removed)

    def cache_set_policy(
        self, category: str, *, tenant: str | None = None, **fields: Any
    ) -> CategoryPolicy:
        """Change policy fields of a category (a tenant key: its own; the admin: `tenant`'s,
        or with tenant=None the database-wide default)."""
        req = pb.SetCachePolicyRequest(
            tenant=tenant or "", category=category, policy=pb.CachePolicy(**fields)
        )
        return convert.policy_from_pb(self._call(self._cache.SetPolicy, req))

    def cache_reset_policy(self, category: str, *, tenant: str | None = None) -> None:
        req = pb.ResetCachePolicyRequest(tenant=tenant or "", category=category)
        self._call(self._cache.ResetPolicy, req)

    def cache_policies(
        self, *, tenant: str | None = None, model: str = ""
    ) -> dict[str, dict[str, Any]]:
        req = pb.GetCachePoliciesRequest(tenant=tenant or "", model=model)
        return convert.policies_from_pb(self._call(self._cache.GetPolicies, req))

    def cache_add_examples(
        self, category: str, embeddings: Any, *, tenant: str | None = None
    ) -> int:
        req = pb.AddCacheExamplesRequest(
            tenant=tenant or "",
            category=category,
            embeddings=convert.encode_matrix(convert.as_rows(embeddings)),
        )
        return int(self._call(self._cache.AddExamples, req).count)

    def cache_report_load(self, model: str, load: float) -> dict[str, Any]:
        """Admin only: a model's utilisation (1.0 = at capacity)."""
        r = self._call(self._cache.ReportLoad, pb.ReportLoadRequest(model=model, load=load))
        return convert.model_load_from_pb(r)

    def cache_set_capacity(self, model: str, rps: float) -> None:
        """Admin only: the model's capacity; the server then measures its load."""
        self._call(self._cache.ReportLoad, pb.ReportLoadRequest(model=model, capacity_rps=rps))

    def cache_stats(self, *, tenant: str | None = None) -> dict[str, Any]:
        req = pb.CacheStatsRequest(tenant=tenant or "")
        return convert.cache_stats_from_pb(self._call(self._cache.Stats, req))
