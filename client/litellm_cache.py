"""LiteLLM cache backend backed by Curator DB's semantic cache, bound to one tenant.

>>> import litellm
>>> from client.litellm_cache import CuratorLiteLLMCache, semantic_cache
>>> backend = CuratorLiteLLMCache(db, tenant="acme", embed=my_embed,    # doctest: +SKIP
...                               model="gpt-4o-mini", category="support",
...                               embedder="minilm-l6-v2")
>>> litellm.cache = semantic_cache(backend)      # a Cache(_backend=backend)  # doctest: +SKIP
>>> litellm.completion(model="gpt-4o-mini", messages=[...], caching=True)  # doctest: +SKIP

`db` is any backend with `cache_lookup` / `cache_store` / `cache_invalidate`: the in-process
`curator.database.Database` or the SDK `client.Client`. `embed(text) -> (d,) float32` is the
caller's embedder; `embedder` names it (part of the partition). `embed=None` leaves embedding
to the server (its `CacheConfig.embedder`, the `embed` extra): the question alone is sent as the
prompt, the rest is in the fingerprint.

Scope: the tenant is the one this object was built for, never derived from the request
(LiteLLM bug #29086 came from scoping a semantic cache by a content hash instead of by who
asks). The semantic match is on the text of the last user message of `messages`; everything
else (the other messages in full, tool calls included, and the question's images) goes into
the fingerprint. (Categories are kept apart by the database itself.)

Partition: LiteLLM's synchronous read path hands a custom backend only the key, `messages`
and `metadata`; the model and the generation parameters reach it only through the key. So
the key goes into the fingerprint, and the facade must build it without the prompt: that is
its semantic mode (the prompt left out, the proxy's key/team/org identity folded in), which
`semantic_cache()` turns on. Installed with the facade's default type, the key hashes the
prompt too and only exact repeats hit (never a wrong answer, and a warning is logged).
`model` labels the partition (default "litellm"; `clear()` can target it); a request that
names another model than a bound one is neither served nor stored.

The value LiteLLM hands over (its timestamped response wrapper) is stored unchanged as JSON;
LiteLLM's `ttl` keyword (from `Cache(ttl=...)` or the request's `cache={"ttl": ...}`) sets
the entry's lifetime, else `ttl_s`, else the category's policy. On every read the best
similarity goes into `metadata["semantic-similarity"]`, as LiteLLM's own semantic caches do
(the proxy turns it into the `x-litellm-semantic-similarity` header). Errors of the backend
are raised; LiteLLM's facade logs them and carries on without the cache.

Requires the `gateways` extra (litellm; fastapi and soundfile because litellm 1.110 imports
proxy modules on every cache hit, BerriAI/litellm#42195).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import litellm
import numpy as np
from litellm.caching.base_cache import BaseCache
from litellm.caching.caching import Cache
from litellm.types.caching import LiteLLMCacheType

from client.served import Served
from curator.api import CacheAPI
from curator.cache.fingerprint import make_fingerprint

__all__ = ["CuratorLiteLLMCache", "semantic_cache", "split_messages"]

log = logging.getLogger(__name__)

# Facade types whose cache key leaves the prompt out (LiteLLM's semantic mode).
_SEMANTIC_TYPES = {
    LiteLLMCacheType.REDIS_SEMANTIC,
    LiteLLMCacheType.QDRANT_SEMANTIC,
    LiteLLMCacheType.VALKEY_SEMANTIC,
}


def _as_dict(message: Any) -> dict[str, Any]:
    if isinstance(message, Mapping):
        return dict(message)
    if hasattr(message, "model_dump"):  # litellm's pydantic Message
        return dict(message.model_dump())
    return {"role": "user", "content": str(message)}


def _is_text(part: Any) -> bool:
    return isinstance(part, Mapping) and part.get("type") == "text"


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):  # OpenAI content parts: keep the text ones
        parts = [p.get("text", "") for p in content if _is_text(p)]
        return " ".join(p for p in parts if p)
    return str(content)


def split_messages(messages: Sequence[Any]) -> tuple[str, str, str] | None:
    """(text to embed, context for the fingerprint, whole prompt) of OpenAI-style messages.

    The text of the last user message; as context everything else in full (the other
    messages, tool calls included, and the message's own non-text parts and fields: an image
    must not be answered for another image with the same question); the JSON of all. None
    when there is no user message.
    """
    msgs = [_as_dict(m) for m in messages]
    users = [i for i, m in enumerate(msgs) if m.get("role") == "user"]
    if not users:
        return None
    last = users[-1]
    question = msgs[last]
    content = question.get("content")
    extra = {k: v for k, v in question.items() if k not in ("role", "content")}
    if not isinstance(content, str | None):
        extra["parts"] = [p for p in content if not _is_text(p)]
    others = msgs[:last] + msgs[last + 1 :]
    context = ""
    if others or any(extra.values()):
        context = json.dumps([last, others, extra], sort_keys=True, default=str)
    whole = json.dumps(msgs, sort_keys=True, default=str)
    return _text(content), context, whole


def semantic_cache(backend: CuratorLiteLLMCache, **cache_kwargs: Any) -> Cache:
    """LiteLLM's `Cache` facade over `backend`, building its keys in semantic mode (prompt
    left out). A facade `type` is what selects that mode; with a `_backend` given, the type
    creates no client of its own. cache_kwargs: the facade's options (ttl, mode, namespace,
    supported_call_types, semantic_cache_scope, max_messages...)."""
    return Cache(type=LiteLLMCacheType.QDRANT_SEMANTIC, _backend=backend, **cache_kwargs)


class CuratorLiteLLMCache(BaseCache):
    """A LiteLLM `BaseCache` over a Curator DB backend (install: `semantic_cache(this)`).

    backend: Database or Client; tenant: the tenant every entry belongs to (None with the
    SDK: the API key's tenant); embed: text -> (d,) float32, or None for the server's
    embedder; model: the partition's model label, and the only model served when given (see
    the module docstring); category: the cache category, or None to let the server classify;
    params: extra values that partition (fingerprint); embedder: id of the embedding model;
    ttl_s: entry lifetime when LiteLLM passes no `ttl`; wait_s: how long a read may wait for
    another caller computing the same prompt (single flight).
    """

    def __init__(
        self,
        backend: CacheAPI,
        *,
        tenant: str | None,
        embed: Callable[[str], np.ndarray] | None,
        model: str | None = None,
        category: str | None = None,
        params: Mapping[str, Any] | None = None,
        embedder: str = "",
        ttl_s: float | None = None,
        wait_s: float = 0.0,
    ) -> None:
        super().__init__()
        self.backend = backend
        self.tenant = tenant
        self.embed = embed
        self.model = model
        self.category = category
        self.params = dict(params or {})
        self.embedder = embedder
        self.ttl_s = ttl_s
        self.wait_s = wait_s
        self._warned = False
        self._served = Served()

    def feedback(self, key: str = "", *, lookup_id: int = 0, correct: bool) -> bool:
        """Report whether an answer this cache served was right: by LiteLLM's cache `key`
        (the last answer served for it) or by the `lookup_id` put into the request's
        metadata ("curator-lookup-id"). Returns False when no such answer is remembered."""
        lookup_id = lookup_id or self._served.pop(key)
        if not lookup_id:
            return False
        self.backend.cache_feedback(tenant=self.tenant, lookup_id=lookup_id, correct=correct)
        return True

    def _query(
        self, key: str, kwargs: Mapping[str, Any]
    ) -> tuple[str, np.ndarray | None, str, str] | None:
        """(prompt, embedding, model, fingerprint) of a chat request, or None if it cannot
        be cached (no user message or no text in it, or a request for another model than the
        bound one)."""
        asked = kwargs.get("model") or (kwargs.get("metadata") or {}).get("model_group")
        if self.model is not None and asked and asked != self.model:
            log.debug("request for model %s ignored by the cache bound to %s", asked, self.model)
            return None
        split = split_messages(kwargs.get("messages") or [])
        if split is None:
            return None
        text, context, prompt = split
        if not text.strip():  # an image alone: nothing to match it on
            return None
        # The bound category partitions too (see CuratorLangChainCache._query).
        params = {**self.params, "litellm_key": key}
        fingerprint = make_fingerprint(params, system_prompt=context, embedder=self.embedder)
        model = self.model or "litellm"
        if self.embed is None:  # the server embeds what it is sent: the question alone
            return text, None, model, fingerprint
        return prompt, np.asarray(self.embed(text), dtype=np.float32), model, fingerprint

    def _check_facade(self) -> None:
        facade = litellm.cache
        if self._warned or facade is None or facade.cache is not self:
            return
        self._warned = True
        if facade.type not in _SEMANTIC_TYPES:
            log.warning(
                "installed in a %s-type Cache, whose keys hash the prompt: only exact repeats "
                "will hit; install it with semantic_cache()",
                facade.type,
            )

    def get_cache(self, key: str, **kwargs: Any) -> Any:
        self._check_facade()
        query = self._query(key, kwargs)
        if query is None:
            return None
        prompt, vector, model, fingerprint = query
        found = self.backend.cache_lookup(
            prompt,
            vector,
            tenant=self.tenant,
            model=model,
            fingerprint=fingerprint,
            category=self.category,
            wait_s=self.wait_s,
        )
        metadata = kwargs.get("metadata")
        if isinstance(metadata, dict):  # nan (no candidate at all) reads as 0, as in LiteLLM
            sim = float(found.similarity)
            metadata["semantic-similarity"] = sim if math.isfinite(sim) else 0.0
        if not found.hit or found.response is None:
            log.debug("miss (%s) for tenant %s model %s", found.reason, self.tenant, model)
            return None
        if isinstance(metadata, dict) and found.lookup_id:
            metadata["curator-lookup-id"] = found.lookup_id
        self._served.put(key, found.lookup_id)
        return json.loads(found.response)

    def set_cache(self, key: str, value: Any, **kwargs: Any) -> None:
        query = self._query(key, kwargs)
        if query is None:
            return
        prompt, vector, model, fingerprint = query
        ttl = kwargs.get("ttl")
        self.backend.cache_store(
            prompt,
            vector,
            json.dumps(value),
            tenant=self.tenant,
            model=model,
            fingerprint=fingerprint,
            category=self.category,
            ttl_s=float(ttl) if ttl is not None else self.ttl_s,
        )

    async def async_get_cache(self, key: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self.get_cache, key, **kwargs)

    async def async_set_cache(self, key: str, value: Any, **kwargs: Any) -> None:
        await asyncio.to_thread(self.set_cache, key, value, **kwargs)

    async def async_set_cache_pipeline(self, cache_list: Any, **kwargs: Any) -> None:
        # LiteLLM sends embedding responses this way (one entry per input text). A
        # semantic cache must not serve them: a near hit would return another text's vector.
        log.debug("%d embedding responses not cached", len(cache_list))

    async def batch_cache_write(self, key: str, value: Any, **kwargs: Any) -> None:
        await self.async_set_cache(key, value, **kwargs)

    async def disconnect(self) -> None:
        """Nothing to release: the backend belongs to the caller, who closes it."""

    def clear(self) -> int:
        """Remove this tenant's entries of this category under this model label; returns
        how many were removed."""
        return int(
            self.backend.cache_invalidate(
                tenant=self.tenant, category=self.category, model=self.model or "litellm"
            )
        )
