"""The LiteLLM adapter installed through LiteLLM's own `Cache` facade, driven by
`litellm.completion(..., mock_response=...)` (no network). Each call carries a different mock
answer, so an answer from an earlier call proves the fake LLM was not called."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch at import
pytest.importorskip("litellm")

import litellm
from litellm.caching.caching import Cache

from client.litellm_cache import CuratorLiteLLMCache, semantic_cache, split_messages
from tests.gateway_support import (
    cosine,
    engine_modules_after_import,
    open_backend,
    open_served,
    toy_embed,
)

pytestmark = [
    pytest.mark.timeout(60),
    # litellm's own pydantic models, built lazily on the first call
    pytest.mark.filterwarnings("ignore:.*ReadOnly.*:UserWarning"),
]

Q = "What is the capital of France?"
PARAPHRASE = "What is the capital city of France?"
UNRELATED = "How do I bake sourdough bread at home?"
MODEL = "gpt-4o-mini"


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Any]:
    with open_backend(tmp_path) as db:
        yield db
    litellm.disable_cache()


def _adapter(backend: Any, tenant: str = "a", **kw: Any) -> CuratorLiteLLMCache:
    kw.setdefault("category", "chat")
    return CuratorLiteLLMCache(backend, tenant=tenant, embed=toy_embed, embedder="toy-64", **kw)


def _install(adapter: CuratorLiteLLMCache, **kw: Any) -> CuratorLiteLLMCache:
    litellm.cache = semantic_cache(adapter, **kw)
    return adapter


def _ask(text: str, answer: str, model: str = MODEL, **kw: Any) -> Any:
    messages = [{"role": "user", "content": text}]
    return litellm.completion(model=model, messages=messages, mock_response=answer, **kw)


async def _aask(text: str, answer: str, model: str = MODEL) -> str:
    messages = [{"role": "user", "content": text}]
    r = await litellm.acompletion(model=model, messages=messages, mock_response=answer)
    return str(r.choices[0].message.content)


def _said(response: Any) -> str:
    return str(response.choices[0].message.content)


async def _stored(text: str, model: str = MODEL) -> None:
    """LiteLLM writes async results in a background task: wait until the entry is readable."""
    kw = {"model": model, "messages": [{"role": "user", "content": text}]}
    deadline = time.monotonic() + 10
    while await litellm.cache.async_get_cache(**kw) is None:
        assert time.monotonic() < deadline, "the background cache write never landed"
        await asyncio.sleep(0.02)


def test_repeated_prompt_is_answered_from_the_cache(backend: Any) -> None:
    _install(_adapter(backend, model=MODEL))
    assert _said(_ask(Q, "first")) == "first"
    second = _ask(Q, "second")
    assert _said(second) == "first"
    assert second._hidden_params.get("cache_hit") is True


def test_paraphrase_hits_with_its_similarity_and_unrelated_misses(backend: Any) -> None:
    _install(_adapter(backend, model=MODEL))
    _ask(Q, "first")
    metadata: dict[str, Any] = {}
    assert _said(_ask(PARAPHRASE, "second", metadata=metadata)) == "first"
    assert metadata["semantic-similarity"] == pytest.approx(cosine(Q, PARAPHRASE), abs=1e-4)
    metadata = {}
    assert _said(_ask(UNRELATED, "third", metadata=metadata)) == "third"
    assert metadata["semantic-similarity"] == pytest.approx(0.0, abs=1e-6)


def test_the_stored_value_is_what_litellm_handed_over(backend: Any) -> None:
    adapter = _install(_adapter(backend, model=MODEL))
    handed: list[Any] = []
    store = adapter.set_cache
    adapter.set_cache = lambda key, value, **kw: (handed.append(value), store(key, value, **kw))
    _ask(Q, "first")
    kw = {"model": MODEL, "messages": [{"role": "user", "content": Q}]}
    value = adapter.get_cache(litellm.cache.get_cache_key(**kw), **kw)
    assert value == handed[0]
    assert set(value) == {"timestamp", "response"}


def test_tenants_never_see_each_other(backend: Any) -> None:
    a, b = _adapter(backend, "a", model=MODEL), _adapter(backend, "b", model=MODEL)
    _install(a)
    _ask(Q, "a's answer")
    _install(b)
    assert _said(_ask(Q, "b's answer")) == "b's answer"
    _install(a)
    assert _said(_ask(Q, "again")) == "a's answer"


def test_another_model_is_neither_served_nor_stored(backend: Any) -> None:
    _install(_adapter(backend, model=MODEL))
    _ask(Q, "mini")
    assert _said(_ask(Q, "big", model="gpt-4o")) == "big"
    assert _said(_ask(Q, "big again", model="gpt-4o")) == "big again"
    assert _said(_ask(Q, "mini again")) == "mini"


def test_unbound_model_and_parameters_partition_through_the_key(backend: Any) -> None:
    # The sync read path passes neither model nor parameters: the facade's key carries them.
    _install(_adapter(backend))
    _ask(Q, "mini")
    assert _said(_ask(Q, "big", model="gpt-4o")) == "big"
    assert _said(_ask(Q, "hot", temperature=1.5)) == "hot"
    assert _said(_ask(PARAPHRASE, "x")) == "mini"
    assert _said(_ask(PARAPHRASE, "y", model="gpt-4o")) == "big"
    assert _said(_ask(PARAPHRASE, "z", temperature=1.5)) == "hot"


def test_a_default_type_facade_only_serves_exact_repeats(backend: Any) -> None:
    litellm.cache = Cache(_backend=_adapter(backend, model=MODEL))  # key hashes the prompt
    _ask(Q, "first")
    assert _said(_ask(Q, "second")) == "first"
    assert _said(_ask(PARAPHRASE, "third")) == "third"


def test_the_conversation_before_the_question_partitions(backend: Any) -> None:
    _install(_adapter(backend, model=MODEL))

    def ask(system: str, text: str, answer: str) -> str:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
        return _said(litellm.completion(model=MODEL, messages=messages, mock_response=answer))

    assert ask("Answer in French.", Q, "fr") == "fr"
    assert ask("Answer in German.", Q, "de") == "de"
    assert ask("Answer in French.", PARAPHRASE, "other") == "fr"


def test_ttl_is_honoured(backend: Any) -> None:
    _install(_adapter(backend, model=MODEL), ttl=1.5)
    _ask(Q, "first")
    assert _said(_ask(Q, "second")) == "first"
    time.sleep(1.8)
    assert _said(_ask(Q, "third")) == "third"


def test_clear_empties_only_its_tenant_and_category(backend: Any) -> None:
    chat_a = _adapter(backend, "a", model=MODEL)
    docs_a = _adapter(backend, "a", model=MODEL, category="docs")
    chat_b = _adapter(backend, "b", model=MODEL)
    for i, adapter in enumerate((chat_a, docs_a, chat_b)):
        _install(adapter)
        _ask(Q, f"old {i}")
    assert chat_a.clear() == 1
    answers = []
    for i, adapter in enumerate((chat_a, docs_a, chat_b)):
        _install(adapter)
        answers.append(_said(_ask(Q, f"new {i}")))
    # docs_a was served chat_a's identical prompt across categories (routing, issue 14), so
    # it holds no entry of its own: after the clear it is served chat_a's new answer
    assert answers == ["new 0", "new 0", "old 2"]


def test_async_completion(backend: Any) -> None:
    _install(_adapter(backend))

    async def run() -> list[str]:
        out = [await _aask(Q, "first")]
        await _stored(Q)
        out.append(await _aask(PARAPHRASE, "second"))
        out.append(await _aask(Q, "other model", model="gpt-4o"))
        out.append(await _aask(UNRELATED, "unrelated"))
        await _stored(Q, model="gpt-4o")  # let the background writes land before closing
        await _stored(UNRELATED)
        return out

    assert asyncio.run(run()) == ["first", "first", "other model", "unrelated"]


def test_batch_write_stores_and_disconnect_keeps_the_backend(backend: Any) -> None:
    adapter = _adapter(backend, model=MODEL)
    request = {"model": MODEL, "messages": [{"role": "user", "content": Q}]}
    value = {"timestamp": 1.0, "response": '{"x": 1}'}
    asyncio.run(adapter.batch_cache_write("k", value, **request))
    asyncio.run(adapter.disconnect())
    assert adapter.get_cache("k", **request) == value


def test_a_question_without_text_is_not_cached(backend: Any) -> None:
    _install(_adapter(backend, model=MODEL))
    image_only = [{"type": "image_url", "image_url": {"url": "a.png"}}]
    messages = [{"role": "user", "content": image_only}]
    first = litellm.completion(model=MODEL, messages=messages, mock_response="first")
    second = litellm.completion(model=MODEL, messages=messages, mock_response="second")
    assert (_said(first), _said(second)) == ("first", "second")


def test_embedding_responses_are_not_cached(backend: Any) -> None:
    adapter = _adapter(backend, model=MODEL)
    # even with chat-shaped kwargs, where a plain set_cache would store
    request = {"model": MODEL, "messages": [{"role": "user", "content": Q}], "input": [Q]}
    asyncio.run(adapter.async_set_cache_pipeline([("k", {"data": [0.1, 0.2]})], **request))
    assert adapter.get_cache("k", **request) is None
    adapter.set_cache("k", {"data": [0.1, 0.2]}, **request)
    assert adapter.get_cache("k", **request) == {"data": [0.1, 0.2]}


def test_split_messages() -> None:
    parts = [{"type": "text", "text": "What is"}, {"type": "text", "text": "this?"}]
    text, context, whole = split_messages(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": parts}]
    ) or ("", "", "")
    assert text == "What is this?"
    assert "be brief" in context
    assert "be brief" in whole and "this?" in whole
    assert split_messages([{"role": "user", "content": Q}]) == (
        Q,
        "",
        '[{"content": "What is the capital of France?", "role": "user"}]',
    )
    assert split_messages([{"role": "system", "content": "only"}]) is None

    def with_image(url: str) -> list[dict[str, Any]]:
        parts = [{"type": "text", "text": Q}, {"type": "image_url", "image_url": {"url": url}}]
        return [{"role": "user", "content": parts}]

    first, second = split_messages(with_image("a.png")), split_messages(with_image("b.png"))
    assert first is not None and second is not None
    assert first[0] == second[0] == Q
    assert first[1] != second[1]  # same question about another image: another partition

    def after_tool_call(city: str) -> list[dict[str, Any]]:
        call = {"id": "1", "type": "function", "function": {"name": "weather", "arguments": city}}
        return [{"role": "assistant", "tool_calls": [call]}, {"role": "user", "content": Q}]

    paris, rome = split_messages(after_tool_call("Paris")), split_messages(after_tool_call("Rome"))
    assert paris is not None and rome is not None and paris[1] != rome[1]


def test_through_a_grpc_server_with_tenant_keys(tmp_path: Path) -> None:
    try:
        with open_served(tmp_path) as (_, client_a, client_b):
            a = CuratorLiteLLMCache(client_a, tenant=None, embed=toy_embed, category="chat")
            b = CuratorLiteLLMCache(client_b, tenant=None, embed=toy_embed, category="chat")
            _install(a)
            _ask(Q, "a's answer")
            metadata: dict[str, Any] = {}
            assert _said(_ask(PARAPHRASE, "again", metadata=metadata)) == "a's answer"
            assert metadata["semantic-similarity"] == pytest.approx(cosine(Q, PARAPHRASE), abs=1e-4)
            _install(b)
            assert _said(_ask(Q, "b's answer")) == "b's answer"
            assert _said(_ask(Q, "b again")) == "b's answer"
            assert a.clear() == 1
            assert _said(_ask(Q, "b once more")) == "b's answer"
    finally:
        litellm.disable_cache()


def test_the_adapter_imports_without_the_engine() -> None:
    assert engine_modules_after_import("client.litellm_cache") == []


def test_feedback_reports_on_the_served_answer(backend: Any) -> None:
    adapter = _adapter(backend, model=MODEL, category="chat")
    asked = {"model": MODEL, "messages": [{"role": "user", "content": Q}]}
    adapter.set_cache("k", {"answer": 1}, **asked)
    meta: dict[str, Any] = {}
    paraphrase = {"model": MODEL, "messages": [{"role": "user", "content": PARAPHRASE}]}
    assert adapter.get_cache("k", metadata=meta, **paraphrase) == {"answer": 1}
    assert meta["curator-lookup-id"]
    assert adapter.feedback("k", correct=True)
    assert not adapter.feedback("k", correct=True)  # once per answer
    state = backend.cache_policies(tenant="a")["chat"]
    assert state.feedback == 1 and state.feedback_wrong == 0
