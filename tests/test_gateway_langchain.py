"""The LangChain adapter driven through LangChain's own cache path with fake models: the fake
model's call count tells a cache hit (not called) from a miss (called)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.globals import set_llm_cache
from langchain_core.language_models import FakeListChatModel, FakeListLLM
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from client.langchain_cache import CuratorLangChainCache, model_from_llm_string, split_prompt
from curator import errors
from tests.gateway_support import (
    cosine,
    engine_modules_after_import,
    open_backend,
    open_served,
    toy_embed,
)

pytestmark = [
    pytest.mark.timeout(60),
    # pytest resets warning filters per test, the module's own filter included
    pytest.mark.filterwarnings("ignore:The function `loads` is in beta"),
]

Q = "What is the capital of France?"
PARAPHRASE = "What is the capital city of France?"
UNRELATED = "How do I bake sourdough bread at home?"
ANSWERS = [f"answer {i}" for i in range(10)]


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Any]:
    with open_backend(tmp_path) as db:
        yield db


def _cache(backend: Any, tenant: str = "a", category: str | None = "chat") -> CuratorLangChainCache:
    return CuratorLangChainCache(
        backend, tenant=tenant, embed=toy_embed, category=category, embedder="toy-64"
    )


def _chat(cache: CuratorLangChainCache | None = None) -> FakeListChatModel:
    return FakeListChatModel(responses=ANSWERS, cache=cache)


def test_toy_embedder_separates_the_test_prompts() -> None:
    assert cosine(Q, PARAPHRASE) >= 0.85
    assert cosine(Q, UNRELATED) <= 0.3


def test_repeated_prompt_is_answered_from_the_cache(backend: Any) -> None:
    model = _chat(_cache(backend))
    first = model.invoke(Q)
    second = model.invoke(Q)
    assert model.i == 1  # the fake model ran once
    assert isinstance(second, AIMessage)
    assert second.content == first.content == "answer 0"


def test_paraphrase_hits_and_unrelated_prompt_misses(backend: Any) -> None:
    model = _chat(_cache(backend))
    model.invoke(Q)
    assert model.invoke(PARAPHRASE).content == "answer 0"
    assert model.i == 1
    assert model.invoke(UNRELATED).content == "answer 1"
    assert model.i == 2


def test_tenants_never_see_each_other(backend: Any) -> None:
    model_a, model_b = _chat(_cache(backend, "a")), _chat(_cache(backend, "b"))
    model_a.invoke(Q)
    assert model_b.invoke(Q).content == "answer 0"  # b's own model had to answer
    assert model_b.i == 1
    assert model_a.invoke(Q).content == "answer 0"
    assert model_a.i == 1


def test_a_different_llm_string_misses(backend: Any) -> None:
    cache = _cache(backend)
    model = _chat(cache)
    model.invoke(Q)
    model.invoke(Q, stop=["END"])  # same model, other invocation parameters
    assert model.i == 2
    other = FakeListChatModel(responses=["other model"], cache=cache)
    assert other.invoke(Q).content == "other model"  # a hit would have said "answer 0"
    assert model.invoke(Q).content == "answer 0"  # the first entry is still there
    assert model.i == 2


def test_the_conversation_before_the_question_partitions(backend: Any) -> None:
    model = _chat(_cache(backend))
    model.invoke([SystemMessage("Answer in French."), HumanMessage(Q)])
    model.invoke([SystemMessage("Answer in German."), HumanMessage(Q)])
    assert model.i == 2
    model.invoke([SystemMessage("Answer in French."), HumanMessage(PARAPHRASE)])
    assert model.i == 2


def test_single_flight_waiters_get_the_leaders_answer(backend: Any) -> None:
    cache = CuratorLangChainCache(
        backend, tenant="a", embed=toy_embed, category="chat", wait_s=10.0
    )
    model = FakeListChatModel(responses=ANSWERS, cache=cache, sleep=0.5)  # a slow model
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: str(model.invoke(Q).content), range(4)))
    assert answers == ["answer 0"] * 4
    assert model.i == 1  # one caller generated, three waited for its answer


def test_clear_empties_only_its_tenant_and_category(backend: Any) -> None:
    chat_a, docs_a, chat_b = (
        _cache(backend, "a", "chat"),
        _cache(backend, "a", "docs"),
        _cache(backend, "b", "chat"),
    )
    models = [_chat(c) for c in (chat_a, docs_a, chat_b)]
    for m in models:
        m.invoke(Q)
    # docs_a was served chat_a's identical prompt across categories (routing, issue 14)
    assert [m.i for m in models] == [1, 0, 1]
    docs_a.update("a docs-only question", "llm", [])  # an entry of docs alone
    chat_a.clear()
    assert backend.cache_stats(tenant="a").categories["docs"]["entries"] == 1
    for m in models:
        m.invoke(Q)
    assert [m.i for m in models] == [2, 0, 1]  # chat_a generates again; tenant b untouched


def test_text_llm_through_the_global_cache(backend: Any) -> None:
    llm = FakeListLLM(responses=ANSWERS)
    set_llm_cache(_cache(backend))
    try:
        assert llm.invoke(Q) == "answer 0"
        assert llm.invoke(Q) == "answer 0"
        assert llm.invoke(PARAPHRASE) == "answer 0"
        assert llm.i == 1
        assert llm.invoke(UNRELATED) == "answer 1"
    finally:
        set_llm_cache(None)


def test_chat_generation_round_trips(backend: Any) -> None:
    cache = _cache(backend)
    model = _chat(cache)
    model.invoke(Q)
    prompt = dumps([HumanMessage(Q)])
    (gen,) = cache.lookup(prompt, model._get_llm_string()) or []
    assert type(gen).__name__ == "ChatGeneration"
    assert isinstance(gen.message, AIMessage)
    assert gen.message.content == gen.text == "answer 0"


def test_async_variants(backend: Any) -> None:
    cache = _cache(backend)
    model = _chat(cache)

    async def run() -> list[str]:
        out = [(await model.ainvoke(Q)).content, (await model.ainvoke(PARAPHRASE)).content]
        await cache.aclear()
        out.append((await model.ainvoke(Q)).content)
        return [str(x) for x in out]

    assert asyncio.run(run()) == ["answer 0", "answer 0", "answer 1"]
    assert model.i == 2


def test_split_prompt() -> None:
    chat = dumps([SystemMessage("s"), HumanMessage("first"), AIMessage("x"), HumanMessage(Q)])
    text, context = split_prompt(chat)
    assert text == Q
    assert "first" in context and "s" in context
    assert split_prompt(dumps([HumanMessage(Q)])) == (Q, "")
    assert split_prompt(Q) == (Q, "")
    assert split_prompt("[not a message list") == ("[not a message list", "")

    def with_image(url: str) -> str:
        parts = [{"type": "text", "text": Q}, {"type": "image_url", "image_url": {"url": url}}]
        return dumps([HumanMessage(parts)])

    (t1, c1), (t2, c2) = split_prompt(with_image("a.png")), split_prompt(with_image("b.png"))
    assert t1 == t2 == Q
    assert c1 != c2  # same question about another image: another partition

    def after_tool_call(city: str) -> str:
        call = {"name": "weather", "args": {"city": city}, "id": "1"}
        return dumps([AIMessage("", tool_calls=[call]), HumanMessage(Q)])

    assert split_prompt(after_tool_call("Paris"))[1] != split_prompt(after_tool_call("Rome"))[1]


def test_model_from_llm_string() -> None:
    assert model_from_llm_string("[('model_name', 'gpt-4o'), ('temperature', 0.0)]") == "gpt-4o"
    assert model_from_llm_string(_chat()._get_llm_string()) == "fake-list-chat-model"
    assert model_from_llm_string("opaque") == "langchain"

    class Serializable(FakeListChatModel):  # how provider models (ChatOpenAI...) build it
        model_name: str = ""

        @classmethod
        def is_lc_serializable(cls) -> bool:
            return True

    named = Serializable(responses=["x"], model_name="gpt-4o-mini")
    assert model_from_llm_string(named._get_llm_string(temperature=0.2)) == "gpt-4o-mini"
    assert model_from_llm_string(Serializable(responses=["x"])._get_llm_string()) == "Serializable"


def test_through_a_grpc_server_with_tenant_keys(tmp_path: Path) -> None:
    with open_served(tmp_path) as (_, client_a, client_b):
        # tenant=None: the tenant of the client's API key
        cache_a = CuratorLangChainCache(client_a, tenant=None, embed=toy_embed, category="chat")
        cache_b = CuratorLangChainCache(client_b, tenant=None, embed=toy_embed, category="chat")
        model_a, model_b = _chat(cache_a), _chat(cache_b)
        assert model_a.invoke(Q).content == "answer 0"
        assert model_a.invoke(PARAPHRASE).content == "answer 0"
        assert model_a.i == 1
        assert model_b.invoke(Q).content == "answer 0"
        assert model_b.i == 1  # b's own model answered: a's entry is not b's
        cache_a.clear()
        assert model_a.invoke(Q).content == "answer 1"
        assert model_b.invoke(Q).content == "answer 0"
        assert model_b.i == 1


class _Down:
    """A backend whose server is unreachable (or, with error=..., rejects the call)."""

    def __init__(self, error: type[Exception] = errors.Unavailable) -> None:
        self.error = error

    def cache_lookup(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error("expected a reachable server, got connection refused")

    cache_store = cache_invalidate = cache_lookup


def test_uncacheable_prompts_go_to_the_model(backend: Any) -> None:
    model = _chat(_cache(backend))
    image_only = [HumanMessage([{"type": "image_url", "image_url": {"url": "a.png"}}])]
    assert model.invoke(image_only).content == "answer 0"
    assert model.invoke(image_only).content == "answer 1"  # no text to match: not cached
    huge = "word " * 20_000  # past the server's prompt size limit (ResourceExhausted)
    assert model.invoke(huge).content == "answer 2"
    assert model.invoke(huge).content == "answer 3"


def test_an_entry_that_is_not_generations_reads_as_a_miss(backend: Any) -> None:
    cache = _cache(backend)
    model = _chat(cache)
    prompt, llm_string = dumps([HumanMessage(Q)]), model._get_llm_string()
    sent, vector, name, fingerprint = cache._query(prompt, llm_string) or ("", None, "", "")
    for junk in ("not json", '{"lc": 1, "type": "constructor", "id": ["os", "system"]}', "{}"):
        backend.cache_store(
            sent, vector, junk, tenant="a", model=name, fingerprint=fingerprint, category="chat"
        )
        found = backend.cache_lookup(
            sent, vector, tenant="a", model=name, fingerprint=fingerprint, category="chat"
        )
        assert found.hit and found.response == junk.encode()  # served: the adapter refuses it
        assert cache.lookup(prompt, llm_string) is None
    assert model.invoke(Q).content == "answer 0"


def test_a_cache_outage_does_not_fail_the_model_call() -> None:
    model = _chat(_cache(_Down()))
    assert model.invoke(Q).content == "answer 0"
    assert model.invoke(Q).content == "answer 1"  # nothing cached, nothing raised
    with pytest.raises(errors.InvalidArgument):
        _chat(_cache(_Down(errors.InvalidArgument))).invoke(Q)


def test_the_adapter_imports_without_the_engine() -> None:
    assert engine_modules_after_import("client.langchain_cache") == []


def test_feedback_reports_on_the_served_answer(backend: Any) -> None:
    from langchain_core.outputs import Generation

    cache = _cache(backend)
    cache.update(Q, "llm", [Generation(text="x")])
    assert not cache.feedback(Q, "llm", correct=False)  # nothing served yet
    assert cache.lookup(PARAPHRASE, "llm") is not None  # a semantic hit
    assert cache.feedback(PARAPHRASE, "llm", correct=False)
    assert not cache.feedback(PARAPHRASE, "llm", correct=False)  # once per answer
    state = backend.cache_policies(tenant="a")["chat"]
    assert state.feedback == 1 and state.feedback_wrong == 1
