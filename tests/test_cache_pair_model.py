"""The pair-scoring model slot (curator/cache/pair_model.py): gating, the cosine scale, the
cache's use of it, and a cross-encoder loaded from a directory (the rerank extra)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from curator import errors
from curator.cache.pair_model import CrossEncoderScorer, PairModelVerifier
from curator.cache.semantic_cache import SemanticCache
from curator.cache.verifier import LexicalVerifier, below_one
from tests.test_cache import Clock, emb, lookup, near, open_db, store


class Table:
    """A pair scorer answering from a table of (prompt, cached) -> probability."""

    def __init__(self, table: dict[tuple[str, str], float], default: float = 0.5) -> None:
        self.table, self.default, self.asked = table, default, 0

    def score(self, prompt: str, cached: Sequence[str]) -> list[float]:
        self.asked += 1
        return [self.table.get((prompt, c), self.default) for c in cached]


def test_the_model_runs_only_above_the_pre_threshold_and_after_the_guard() -> None:
    scorer = Table({("how do i sort a list", "how to sort a list"): 0.999})
    v = PairModelVerifier(scorer, pre_threshold=0.85)
    base = LexicalVerifier()
    low = v.verify("how do i sort a list", "how to sort a list", 0.5)
    assert scorer.asked == 0
    assert low == base.verify("how do i sort a list", "how to sort a list", 0.5)
    vetoed = v.verify("best phone under 10k", "best phone under 20k", 0.99)
    assert vetoed.veto == "number" and scorer.asked == 0
    high = v.verify("how do i sort a list", "how to sort a list", 0.97)
    assert scorer.asked == 1 and v.calls == 1
    assert high.score == pytest.approx(below_one(base.to_cosine_scale(math.log(999)), 0.97))
    doubt = v.verify("how do i sort a dict", "how to sort a list", 0.97)  # default 0.5
    assert doubt.score < high.score
    assert base.to_cosine_scale(0.0) == pytest.approx(doubt.score)
    with pytest.raises(errors.InvalidArgument):
        PairModelVerifier(scorer, pre_threshold=2.0)


def test_a_model_saying_no_turns_a_hit_into_a_miss(tmp_path: Path) -> None:
    d = open_db(tmp_path, Clock())
    d.create_tenant("a")
    scorer = Table({("what is the capital of france?", "what's the capital of france"): 0.99},
                   default=0.01)  # fmt: skip
    cache: SemanticCache = d.cache
    cache._verifier = PairModelVerifier(scorer)
    d.cache_set_policy("general", tenant="a", verify=True)
    base = emb(21)
    store(d, "what's the capital of france", base, "Paris")
    assert lookup(d, "what is the capital of france?", near(base, 0.97, 1)).hit
    r = lookup(d, "what is the capital of germany?", near(base, 0.97, 2))
    assert not r.hit and r.reason == "below_threshold" and scorer.asked == 2
    d.close()


def test_a_pair_model_directory_is_checked(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidArgument, match=r"config\.json"):
        CrossEncoderScorer(tmp_path)


def test_a_cross_encoder_loads_from_a_directory_and_scores_pairs(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the rerank extra (torch) is not installed")
    transformers = pytest.importorskip(
        "transformers", reason="the rerank extra (transformers) is not installed"
    )
    words = "[PAD] [UNK] [CLS] [SEP] [MASK] how do i sort a list to what is".split()
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = transformers.BertTokenizer(str(tmp_path / "vocab.txt"))
    cfg = transformers.BertConfig(
        vocab_size=len(words), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, max_position_embeddings=64, num_labels=1,
    )  # fmt: skip
    transformers.BertForSequenceClassification(cfg).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    scorer = CrossEncoderScorer(tmp_path / "m")
    got = scorer.score("how do i sort a list", ["how to sort a list", "what is a list"])
    assert len(got) == 2 and all(0.0 <= p <= 1.0 for p in got)
    assert scorer.score("how do i sort a list", ["how to sort a list"])[0] == pytest.approx(got[0])
    assert scorer.score("x", []) == []
    # the cache builds the verifier from CacheConfig.pair_model
    d = open_db(tmp_path / "db", Clock(), pair_model=str(tmp_path / "m"))
    assert isinstance(d.cache.verifier, PairModelVerifier)
    d.close()
