"""The pair-scoring model slot of the verifier: a cross-encoder a deployment supplies as files.

A cross-encoder reads the new prompt and the cached one together and says how likely one
answer serves both; it sees what a bi-encoder's cosine and the lexical head miss, at the cost
of a model call (milliseconds on a CPU). So it runs last and only where it can change the
outcome: `PairModelVerifier` first runs the lexical verifier (guard + head, microseconds);
a vetoed candidate or one whose head score is below `pre_threshold` is decided there, the
rest go to the `PairScorer`, whose probability is put on the cosine scale with the head's own
map (verifier.LexicalVerifier.to_cosine_scale), so thresholds keep their meaning.

`CrossEncoderScorer` loads a sequence-classification model (one logit: sigmoid; two: the
softmax of the second) and its tokenizer from a local directory, e.g. one written by
`python -m bench.train_pair_model` (fine-tuned from all-MiniLM-L6-v2 on labelled pairs). It
needs the `rerank` extra (transformers; torch installed first as `pip install torch==2.13.0`).
Nothing is fetched from a model hub.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from curator.cache.offline import offline_import
from curator.cache.verifier import LexicalVerifier, Verdict, Verifier, below_one
from curator.errors import InvalidArgument

__all__ = ["CrossEncoderScorer", "PairModelVerifier", "PairScorer"]

_INSTALL = 'pip install torch==2.13.0 "curator-db[rerank]"'
_EPS = 1e-6


class PairScorer(Protocol):
    def score(self, prompt: str, cached: Sequence[str]) -> list[float]:
        """Probability in [0, 1] that one answer serves `prompt` and each cached prompt."""
        ...


class PairModelVerifier:
    """Verifier: the lexical verifier, then the pair model on candidates whose head score
    is at or above `pre_threshold` (on the cosine scale)."""

    def __init__(
        self,
        scorer: PairScorer,
        *,
        base: LexicalVerifier | None = None,
        pre_threshold: float = 0.85,
    ) -> None:
        if not -1.0 <= pre_threshold <= 1.0:
            raise InvalidArgument(f"expected pre_threshold in [-1, 1], got {pre_threshold}")
        self.scorer = scorer
        self.base = base or LexicalVerifier()
        self.pre_threshold = pre_threshold
        self.calls = 0  # pair-model calls made (for reports and tests)

    def verify(self, prompt: str, cached_prompt: str, cosine: float) -> Verdict:
        v = self.base.verify(prompt, cached_prompt, cosine)
        if v.veto is not None or v.score < self.pre_threshold:
            return v
        self.calls += 1
        p = float(self.scorer.score(prompt, [cached_prompt])[0])
        if not math.isfinite(p):
            return v  # a broken model output never serves: keep the head's verdict
        p = min(1.0 - _EPS, max(_EPS, p))
        return Verdict(below_one(self.base.to_cosine_scale(math.log(p / (1.0 - p))), cosine))


class CrossEncoderScorer:
    """A sequence-classification model and its tokenizer from `path` (loaded on first use;
    FailedPrecondition without the rerank extra or without model files there)."""

    def __init__(self, path: str | Path, *, max_length: int = 128, threads: int = 0) -> None:
        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise InvalidArgument(f"expected a model directory with config.json, got {path}")
        self.max_length = max_length
        self.threads = threads
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._model is None:
                torch, tf = offline_import("torch", "transformers", install=_INSTALL)
                if self.threads:
                    torch.set_num_threads(self.threads)
                tok = tf.AutoTokenizer.from_pretrained(self.path, local_files_only=True)
                model = tf.AutoModelForSequenceClassification.from_pretrained(
                    self.path, local_files_only=True
                )
                model.eval()
                self._tokenizer, self._model = tok, model
            return self._tokenizer, self._model

    def score(self, prompt: str, cached: Sequence[str]) -> list[float]:
        if not cached:
            return []
        import torch

        tok, model = self._load()
        enc = tok(
            [prompt] * len(cached),
            list(cached),
            truncation=True,
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        )
        with torch.inference_mode():
            logits = model(**enc).logits
        if logits.shape[-1] == 1:
            p = torch.sigmoid(logits[:, 0])
        else:
            p = torch.softmax(logits, dim=-1)[:, 1]
        return [float(v) for v in p.tolist()]


def verifier_from_dir(path: str | Path, pre_threshold: float = 0.85) -> Verifier:
    """The verifier a deployment gets from a pair-model directory (CacheConfig.pair_model)."""
    return PairModelVerifier(CrossEncoderScorer(path), pre_threshold=pre_threshold)
