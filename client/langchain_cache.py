"""LangChain cache backed by Curator DB's semantic cache, bound to one tenant and category.

>>> from langchain_core.globals import set_llm_cache
>>> from client.langchain_cache import CuratorLangChainCache
>>> cache = CuratorLangChainCache(db, tenant="acme", embed=my_embed,   # doctest: +SKIP
...                               category="support", embedder="minilm-l6-v2")
>>> set_llm_cache(cache)        # or per model: ChatOpenAI(..., cache=cache)  # doctest: +SKIP

`db` is any backend with `cache_lookup` / `cache_store` / `cache_invalidate`: the in-process
`curator.database.Database` or the SDK `client.Client`. `embed(text) -> (d,) float32` is the
caller's embedder; `embedder` names it, and that name is part of the partition (vectors of two
embedders never meet). `embed=None` leaves embedding to the server (its `CacheConfig.embedder`,
the `embed` extra): the question alone is sent as the prompt, the rest is in the fingerprint.

Partitioning: LangChain's `llm_string` (model class, model name and every invocation
parameter) goes into the fingerprint, so a different model or temperature never shares
entries; it is never embedded. (Categories are kept apart by the database itself.) For a
chat model the prompt is
the serialized message list: the text of the last human message is what is embedded (the
semantic match), everything else (system prompt, earlier turns and tool calls in full, the
question's images) goes into the fingerprint, and the whole prompt is what is stored and
matched exactly. A text LLM's prompt is embedded whole.

A cache outage or limit (Unavailable, DeadlineExceeded, ResourceExhausted: e.g. a prompt past
the server's size limit) never fails the model call: the lookup is a miss and the answer goes
uncached (logged). So is a prompt whose question has no text. Other errors are raised.

Requires the `gateways` extra (langchain-core).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.load import dumps, loads
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, Generation, GenerationChunk

from client.served import Served
from curator import errors
from curator.api import CacheAPI
from curator.cache.fingerprint import make_fingerprint

__all__ = ["CuratorLangChainCache", "model_from_llm_string", "split_prompt"]

log = logging.getLogger(__name__)

# Classes `loads` may rebuild from a stored response (nothing else is instantiated).
_RESPONSE_CLASSES: list[type[Any]] = [
    Generation,
    GenerationChunk,
    ChatGeneration,
    ChatGenerationChunk,
    AIMessage,
    AIMessageChunk,
    HumanMessage,
    SystemMessage,
    ChatMessage,
    ToolMessage,
    FunctionMessage,
]
# A cache outage or a limit (prompt or response too large, disk full) must not fail the LLM
# call: it reads as a miss and the answer goes uncached. Any other error (bad input, unknown
# tenant or category) is a configuration mistake: raised.
_OUTAGE = (errors.Unavailable, errors.DeadlineExceeded, errors.ResourceExhausted)
_MODEL_KEYS = ("model", "model_name", "model_id")
_MODEL_PARAM = re.compile(r"\('(?:model|model_name|model_id)', '([^']+)'\)")
_TYPE_PARAM = re.compile(r"\('_type', '([^']+)'\)")


# `loads` is what langchain_core's own caches use to read generations back; it warns that it
# is in beta on each call site. Silenced for this module's calls only (set once: thread-safe,
# unlike warnings.catch_warnings around each call).
warnings.filterwarnings("ignore", message="The function `loads` is in beta", module=__name__)


def _loads(text: str, allowed: Any) -> Any:
    return loads(text, allowed_objects=allowed)


def _is_text(part: Any) -> bool:
    return isinstance(part, str) or (isinstance(part, dict) and part.get("type") == "text")


def _message_text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    parts = [p if isinstance(p, str) else p.get("text", "") for p in content if _is_text(p)]
    return " ".join(p for p in parts if p)


def split_prompt(prompt: str) -> tuple[str, str]:
    """(text to embed, context for the fingerprint) of a LangChain prompt string.

    A chat prompt (a serialized message list) gives the text of its last human message, and
    as context everything else in full: the messages before and after it, and the message's
    own non-text parts (an image must not be answered for another image with the same
    question). Any other prompt gives itself and no context.
    """
    if not prompt.startswith("["):
        return prompt, ""
    try:
        messages = _loads(prompt, "messages")
    except Exception:  # a text prompt that merely starts with "["
        return prompt, ""
    if not isinstance(messages, list) or not all(isinstance(m, BaseMessage) for m in messages):
        return prompt, ""
    last = max((i for i, m in enumerate(messages) if m.type == "human"), default=-1)
    if last < 0:
        return prompt, ""
    question = messages[last]
    others = messages[:last] + messages[last + 1 :]
    content = question.content
    extra = [] if isinstance(content, str) else [p for p in content if not _is_text(p)]
    context = ""
    if others or extra or question.additional_kwargs:
        context = json.dumps(
            [last, json.loads(dumps(others)), extra, question.additional_kwargs],
            sort_keys=True,
            default=str,
        )
    return _message_text(question), context


def model_from_llm_string(llm_string: str) -> str:
    """The model name in LangChain's llm_string, else the model class's name or `_type`.

    Serializable models give "<JSON of the model>---<parameters>", others the parameters
    alone (a repr of sorted (name, value) pairs).
    """
    head, sep, _ = llm_string.partition("---")
    if sep:
        try:
            spec = json.loads(head)
        except ValueError:
            spec = None
        if isinstance(spec, dict):
            kwargs = spec.get("kwargs") or {}
            for name in _MODEL_KEYS:
                if isinstance(kwargs.get(name), str) and kwargs[name]:
                    return str(kwargs[name])
            if isinstance(spec.get("name"), str):
                return str(spec["name"])
    found = _MODEL_PARAM.search(llm_string) or _TYPE_PARAM.search(llm_string)
    return found.group(1) if found else "langchain"


class CuratorLangChainCache(BaseCache):
    """A `langchain_core.caches.BaseCache` over a Curator DB backend.

    backend: Database or Client; tenant: the tenant every entry belongs to (None with the SDK:
    the API key's tenant); embed: text -> (d,) float32 vector, or None for the server's
    embedder; category: the cache category, or None to let the server classify; model: the
    partition's model name, else taken from the llm_string; embedder: id of the embedding
    model (part of the fingerprint); ttl_s: entry lifetime (None: the category's policy);
    wait_s: how long a lookup may wait for another caller computing the same prompt (single
    flight).
    """

    def __init__(
        self,
        backend: CacheAPI,
        *,
        tenant: str | None,
        embed: Callable[[str], np.ndarray] | None,
        category: str | None = None,
        model: str | None = None,
        embedder: str = "",
        ttl_s: float | None = None,
        wait_s: float = 0.0,
    ) -> None:
        self.backend = backend
        self.tenant = tenant
        self.embed = embed
        self.category = category
        self.model = model
        self.embedder = embedder
        self.ttl_s = ttl_s
        self.wait_s = wait_s
        self._served = Served()

    def feedback(self, prompt: str, llm_string: str, correct: bool) -> bool:
        """Report whether the answer this cache last served for (prompt, llm_string) was
        right (a thumbs-down, a judge, a regenerate click); calibrates the category's
        threshold. Returns False when no served answer of that call is remembered."""
        lookup_id = self._served.pop((prompt, llm_string))
        if not lookup_id:
            return False
        self.backend.cache_feedback(tenant=self.tenant, lookup_id=lookup_id, correct=correct)
        return True

    def _query(
        self, prompt: str, llm_string: str
    ) -> tuple[str, np.ndarray | None, str, str] | None:
        """(prompt to send, its embedding, model, fingerprint) of one call, or None when the
        question has no text (an image alone): nothing to match it on. Without `embed` the
        question alone is sent, for the server to embed (the rest is in the fingerprint)."""
        text, context = split_prompt(prompt)
        if not text.strip():
            return None
        params = {"llm_string": llm_string}
        fingerprint = make_fingerprint(params, system_prompt=context, embedder=self.embedder)
        model = self.model or model_from_llm_string(llm_string)
        if self.embed is None:
            return text, None, model, fingerprint
        return prompt, np.asarray(self.embed(text), dtype=np.float32), model, fingerprint

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        query = self._query(prompt, llm_string)
        if query is None:
            return None
        sent, vector, model, fingerprint = query
        try:
            found = self.backend.cache_lookup(
                sent,
                vector,
                tenant=self.tenant,
                model=model,
                fingerprint=fingerprint,
                category=self.category,
                wait_s=self.wait_s,
            )
        except _OUTAGE as e:
            log.warning("cache lookup failed, treated as a miss: %s", e)
            return None
        if not found.hit or found.response is None:
            log.debug("miss (%s) for tenant %s model %s", found.reason, self.tenant, model)
            return None
        raw = found.response
        try:
            generations = _loads(raw.decode() if isinstance(raw, bytes) else raw, _RESPONSE_CLASSES)
        except Exception as e:  # unreadable (another writer, an unserializable field): a miss
            log.warning("entry %d is not LangChain generations (%s); ignored", found.entry_id, e)
            return None
        if not isinstance(generations, list):
            log.warning("entry %d does not hold a list of generations; ignored", found.entry_id)
            return None
        self._served.put((prompt, llm_string), found.lookup_id)
        return generations

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        query = self._query(prompt, llm_string)
        if query is None:
            return
        sent, vector, model, fingerprint = query
        try:
            self.backend.cache_store(
                sent,
                vector,
                dumps(list(return_val)),
                tenant=self.tenant,
                model=model,
                fingerprint=fingerprint,
                category=self.category,
                ttl_s=self.ttl_s,
            )
        except _OUTAGE as e:
            log.warning("cache store failed, answer not cached: %s", e)

    def clear(self, **kwargs: Any) -> None:
        """Remove this tenant's entries of this category (all categories if unbound);
        `model=` narrows it to one model."""
        self.backend.cache_invalidate(
            tenant=self.tenant, category=self.category, model=kwargs.get("model")
        )

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        return await asyncio.to_thread(self.lookup, prompt, llm_string)

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        await asyncio.to_thread(self.update, prompt, llm_string, return_val)

    async def aclear(self, **kwargs: Any) -> None:
        await asyncio.to_thread(self.clear, **kwargs)
