"""Verification of a semantic candidate: is the cached prompt really the same question?

A bi-encoder's cosine cannot tell a paraphrase from a templated near-miss ("... Newton
County" / "... Carroll County"). Between the vector candidates and a hit, a category whose
policy has `verify` on runs each candidate at or above its `verify_floor` (a cosine
pre-threshold, so clear misses never pay) through a Verifier:

1. the lexical guard (lexical.veto) rejects a substituted number or name, a flipped negation
   or comparison, swapped arguments;
2. a logistic head over the cosine and the lexical features (lexical.compare) rescores the
   pair. Its score is put back on the cosine scale (the cosine at which a cosine-only
   logistic fit gives the same odds), so the category's threshold, its load adaptation and
   its feedback calibration keep their meaning: a hit needs score >= threshold.

The head's numbers (verifier_weights.py) are trained offline on qqp-dev's train split by
`python -m bench.train_verifier`. A deployment may plug in its own Verifier (e.g. a
cross-encoder it ships as model files) through SemanticCache(verifier=...).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Protocol

from curator.cache import lexical

__all__ = ["LexicalVerifier", "Verdict", "Verifier"]


@dataclasses.dataclass(frozen=True)
class Verdict:
    """score: on the cosine scale (compared with the category's threshold); veto: why the
    guard rejected the pair, or None."""

    score: float
    veto: str | None = None


class Verifier(Protocol):
    def verify(self, prompt: str, cached_prompt: str, cosine: float) -> Verdict: ...


class LexicalVerifier:
    """The lexical guard plus the logistic head. `weights` (the trainer's output, see
    verifier_weights.py): feature names, their means and scales, coefficients, intercept,
    and the cosine-only fit (cos_coef, cos_intercept) that maps the head's logit back to the
    cosine scale. guard=False: the head only."""

    def __init__(self, weights: Mapping[str, Any] | None = None, *, guard: bool = True) -> None:
        if weights is None:
            from curator.cache.verifier_weights import WEIGHTS

            weights = WEIGHTS
        names = list(weights["features"])
        if names[0] != "cosine" or set(names[1:]) - set(lexical.FEATURES):
            raise ValueError(f"expected features cosine + {lexical.FEATURES}, got {names}")
        self._index = [lexical.FEATURES.index(n) for n in names[1:]]
        self._mean = [float(v) for v in weights["mean"]]
        self._scale = [float(v) or 1.0 for v in weights["scale"]]
        self._coef = [float(v) for v in weights["coef"]]
        self._intercept = float(weights["intercept"])
        self._cos_coef = float(weights["cos_coef"])
        self._cos_intercept = float(weights["cos_intercept"])
        if not len(self._mean) == len(self._scale) == len(self._coef) == len(names):
            raise ValueError("expected mean, scale and coef of one length per feature")
        if self._cos_coef <= 0:
            raise ValueError(f"expected cos_coef > 0, got {self._cos_coef}")
        self.guard = guard

    def logit(self, features: lexical.PairFeatures, cosine: float) -> float:
        v = features.vector()
        x = [cosine] + [v[i] for i in self._index]
        z = self._intercept
        for xi, m, s, c in zip(x, self._mean, self._scale, self._coef, strict=True):
            z += c * (xi - m) / s
        return z

    def verify(self, prompt: str, cached_prompt: str, cosine: float) -> Verdict:
        f = lexical.compare(prompt, cached_prompt)
        if self.guard:
            why = lexical.veto(f)
            if why is not None:
                return Verdict(-1.0, why)
        score = (self.logit(f, cosine) - self._cos_intercept) / self._cos_coef
        return Verdict(min(1.0, max(-1.0, score)))

    def probability(self, prompt: str, cached_prompt: str, cosine: float) -> float:
        """The head's probability that the pair is a duplicate (for tuning and reports)."""
        z = self.logit(lexical.compare(prompt, cached_prompt), cosine)
        return 1.0 / (1.0 + math.exp(-z))
