"""Verification of a semantic candidate: is the cached prompt really the same question?

A bi-encoder's cosine cannot tell a paraphrase from a templated near-miss ("... Newton
County" / "... Carroll County"). Between the vector candidates and a hit, a category whose
policy has `verify` on runs each candidate at or above its `verify_floor` (a cosine
pre-threshold, so clear misses never pay) through a Verifier:

1. the lexical guard (lexical.veto) rejects a substituted number or name, a flipped negation
   or comparison, swapped arguments;
2. a learned head over the cosine and the lexical features (lexical.compare: word overlap,
   rarity-weighted differences, question word, order, ...) rescores the pair: a logistic
   regression or a small gradient-boosted tree ensemble, evaluated in pure Python. Its score
   is put back on the cosine scale (the cosine at which a cosine-only logistic fit gives the
   same odds), so the category's threshold, its load adaptation and its feedback
   calibration keep their meaning: a hit needs score >= threshold;
3. optionally a pair-scoring model (pair_model.py: a cross-encoder a deployment supplies as
   files) on the candidates the head scores at or above a pre-threshold.

The head's numbers (verifier_weights.py) are trained offline on qqp-dev's train split by
`python -m bench.train_verifier`. A deployment may plug in its own Verifier through
SemanticCache(verifier=...) or CacheConfig.pair_model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from curator.cache import lexical

__all__ = ["LexicalVerifier", "Verdict", "Verifier", "below_one"]


@dataclasses.dataclass(frozen=True)
class Verdict:
    """score: on the cosine scale (compared with the category's threshold); veto: why the
    guard rejected the pair, or None."""

    score: float
    veto: str | None = None


class Verifier(Protocol):
    def verify(self, prompt: str, cached_prompt: str, cosine: float) -> Verdict: ...


class LexicalVerifier:
    """The lexical guard plus the learned head. `weights` (the trainer's output, see
    verifier_weights.py): feature names (cosine first, then lexical.FEATURES names) and either
    a logistic head (kind "logistic": means and scales, coefficients, intercept) or a small
    gradient-boosted tree ensemble (kind "trees": init logit and trees as parallel lists
    feature / threshold / left / right / value, a leaf has feature -1); both with the
    cosine-only fit (cos_coef, cos_intercept) that maps the head's logit back to the cosine
    scale; floor: the lowest cosine trained on (below it the cosine is the score).
    guard=False: the head only."""

    def __init__(self, weights: Mapping[str, Any] | None = None, *, guard: bool = True) -> None:
        if weights is None:
            from curator.cache.verifier_weights import WEIGHTS

            weights = WEIGHTS
        names = list(weights["features"])
        if names[0] != "cosine" or set(names[1:]) - set(lexical.FEATURES):
            raise ValueError(f"expected features cosine + {lexical.FEATURES}, got {names}")
        self._index = [lexical.FEATURES.index(n) for n in names[1:]]
        self.kind = str(weights.get("kind", "logistic"))
        if self.kind == "logistic":
            self._mean = [float(v) for v in weights["mean"]]
            self._scale = [float(v) or 1.0 for v in weights["scale"]]
            self._coef = [float(v) for v in weights["coef"]]
            self._intercept = float(weights["intercept"])
            if not len(self._mean) == len(self._scale) == len(self._coef) == len(names):
                raise ValueError("expected mean, scale and coef of one length per feature")
        elif self.kind == "trees":
            self._init = float(weights["init"])
            self._forest = _Forest([_tree(t, len(names)) for t in weights["trees"]])
        else:
            raise ValueError(f"expected kind 'logistic' or 'trees', got {self.kind!r}")
        # below the cosines it was trained on the head knows nothing: the cosine stands
        self.floor = float(weights.get("floor", -1.0))
        self._cos_coef = float(weights["cos_coef"])
        self._cos_intercept = float(weights["cos_intercept"])
        if self._cos_coef <= 0:
            raise ValueError(f"expected cos_coef > 0, got {self._cos_coef}")
        self.guard = guard

    def logit(self, features: lexical.PairFeatures, cosine: float) -> float:
        v = features.vector()
        x = [cosine] + [v[i] for i in self._index]
        if self.kind == "trees":
            return self._init + self._forest.value(x)
        z = self._intercept
        for xi, m, s, c in zip(x, self._mean, self._scale, self._coef, strict=True):
            z += c * (xi - m) / s
        return z

    def to_cosine_scale(self, logit: float) -> float:
        """The cosine at which the cosine-only fit has these odds, clipped to [-1, 1]."""
        return min(1.0, max(-1.0, (logit - self._cos_intercept) / self._cos_coef))

    def verify(self, prompt: str, cached_prompt: str, cosine: float) -> Verdict:
        f = lexical.compare(prompt, cached_prompt)
        if self.guard:
            why = lexical.veto(f)
            if why is not None:
                return Verdict(-1.0, why)
        if cosine < self.floor:
            return Verdict(cosine)
        return Verdict(below_one(self.to_cosine_scale(self.logit(f, cosine)), cosine))

    def probability(self, prompt: str, cached_prompt: str, cosine: float) -> float:
        """The head's probability that the pair is a duplicate (for tuning and reports)."""
        z = self.logit(lexical.compare(prompt, cached_prompt), cosine)
        return 1.0 / (1.0 + math.exp(-z))


def below_one(score: float, cosine: float) -> float:
    """A verifier's score reaches 1.0 only where the cosine does: threshold 1.0 (a bound no
    feedback could show held) then still stops every semantic hit but near-identical ones."""
    return min(score, max(cosine, ALMOST_ONE))


ALMOST_ONE = 1.0 - 1e-6
_Tree = tuple[list[int], list[float], list[int], list[int], list[float]]


class _Forest:
    """The trees as padded arrays (trees, nodes), walked level by level for all trees at
    once: a leaf points to itself, so `depth` steps reach every tree's leaf."""

    def __init__(self, trees: list[_Tree]) -> None:
        if not trees:
            raise ValueError("expected at least one tree")
        n = max(len(t[0]) for t in trees)
        self.feature = np.zeros((len(trees), n), np.int64)
        self.threshold = np.full((len(trees), n), np.inf)
        self.left = np.tile(np.arange(n), (len(trees), 1))
        self.right = self.left.copy()
        self.leaf = np.zeros((len(trees), n))
        for k, (feature, threshold, left, right, value) in enumerate(trees):
            for i, f in enumerate(feature):
                if f >= 0:
                    self.feature[k, i], self.threshold[k, i] = f, threshold[i]
                    self.left[k, i], self.right[k, i] = left[i], right[i]
                else:
                    self.leaf[k, i] = value[i]
        self.rows = np.arange(len(trees))
        self.depth = max(_depth(t) for t in trees)

    def value(self, x: list[float]) -> float:
        xs = np.asarray(x, np.float64)
        node = np.zeros(len(self.rows), np.int64)
        for _ in range(self.depth):
            go_left = xs[self.feature[self.rows, node]] <= self.threshold[self.rows, node]
            node = np.where(go_left, self.left[self.rows, node], self.right[self.rows, node])
        return float(self.leaf[self.rows, node].sum())


def _depth(t: _Tree, node: int = 0) -> int:
    if t[0][node] < 0:
        return 0
    return 1 + max(_depth(t, t[2][node]), _depth(t, t[3][node]))


def _tree(t: Sequence[Sequence[float]], n_features: int) -> _Tree:
    """One tree's parallel lists, checked: features in range, children inside the tree."""
    feature, threshold, left, right, value = (list(c) for c in t)
    n = len(feature)
    if not n or not all(len(c) == n for c in (threshold, left, right, value)):
        raise ValueError("expected a tree's five lists of one non-zero length")
    for i, f in enumerate(feature):
        if f >= n_features or (f >= 0 and not (i < left[i] < n and i < right[i] < n)):
            raise ValueError(f"expected node {i} to name a feature and later children")
    return (
        [int(f) for f in feature],
        [float(v) for v in threshold],
        [int(v) for v in left],
        [int(v) for v in right],
        [float(v) for v in value],
    )
