"""Lexical comparison of two prompts: what a bi-encoder's cosine does not see.

Near-misses that survive a high cosine differ in one thing that changes the answer: a number
("under 10k" / "under 20k"), a named entity ("Newton County" / "Carroll County"), a negation,
a comparison's direction ("low" / "high blood sugar"), or the order of a relation's arguments
("USD to INR" / "INR to USD"). `compare` measures those differences as features (the learned
head's inputs, verifier.py) and `veto` is the guard: True when the prompts differ in a way
that changes the answer. Pure Python; a pair costs tens of microseconds.
"""

from __future__ import annotations

import dataclasses
import math
import re
from functools import lru_cache

from curator.cache.vocabulary import idf

__all__ = ["FEATURES", "PairFeatures", "Tokens", "compare", "stem", "tokens", "veto"]

_WORD = re.compile(r"[^\W_]+(?:['\u2019.,][^\W_]+)*", re.UNICODE)
_NUMBER = re.compile(r"^\d[\d.,]*(?:[a-z]{1,3})?$|^[a-z]{0,2}\d[\d.,]*$")
_NEGATION = frozenset(
    "not no never none nothing nobody neither nor without cannot can't don't doesn't didn't "
    "isn't aren't wasn't weren't won't wouldn't shouldn't couldn't haven't hasn't".split()
)
# one side of each pair; a prompt with one word of a pair and the other prompt with the other
# word (and not the first) asks the opposite
_OPPOSITES = [
    ("low", "high"), ("lower", "higher"), ("lowest", "highest"), ("increase", "decrease"),
    ("more", "less"), ("most", "least"), ("best", "worst"), ("better", "worse"),
    ("ascending", "descending"), ("before", "after"), ("min", "max"), ("minimum", "maximum"),
    ("cheap", "expensive"), ("cheapest", "costliest"), ("up", "down"), ("positive", "negative"),
    ("advantages", "disadvantages"), ("pros", "cons"), ("gain", "lose"), ("big", "small"),
    ("bigger", "smaller"), ("biggest", "smallest"), ("large", "small"), ("long", "short"),
    ("fast", "slow"), ("faster", "slower"), ("hot", "cold"), ("rich", "poor"), ("buy", "sell"),
    ("start", "stop"), ("open", "close"), ("male", "female"), ("men", "women"), ("boy", "girl"),
    ("true", "false"), ("good", "bad"), ("easy", "hard"), ("old", "new"), ("old", "young"),
    ("first", "last"), ("add", "remove"), ("enable", "disable"), ("import", "export"),
    ("legal", "illegal"), ("possible", "impossible"), ("like", "dislike"), ("love", "hate"),
]  # fmt: skip
_OPPOSITE: dict[str, set[str]] = {}
for _a, _b in _OPPOSITES:
    _OPPOSITE.setdefault(_a, set()).add(_b)
    _OPPOSITE.setdefault(_b, set()).add(_a)
# words whose argument order matters ("A to B" is not "B to A"); "and", "or", "vs" do not
_DIRECTED = frozenset("to than from into over under before after by for".split())
_WH = frozenset("what which who whom whose how why when where".split())
_STOP = frozenset(
    "a an the is are was were be been do does did of in on at to for with by from as and or "
    "what which who whom whose how why when where i you we they it my your me can could should "
    "would will that this these those there their its than vs".split()
)


@dataclasses.dataclass(frozen=True)
class Tokens:
    """What `compare` needs of one prompt, computed once (cached entries keep theirs)."""

    words: tuple[str, ...]  # lower-cased, in order
    numbers: frozenset[str]
    names: frozenset[str]  # lower-cased capitalised words not at a sentence start
    negations: int
    content: tuple[str, ...]  # words minus stop words, in order
    stems: tuple[str, ...]  # the content words' stems, in order
    wh: str  # the first question word ("how", "why", ...), "" if none


@lru_cache(maxsize=65536)
def tokens(text: str) -> Tokens:
    raw = _WORD.findall(text)
    words = tuple(w.lower().replace("\u2019", "'") for w in raw)
    names = set()
    start = True
    for w, lw in zip(raw, words, strict=True):
        if not start and w[:1].isupper() and lw not in _STOP:
            names.add(lw)
        start = False
    # a sentence start after ". ? !" is not a name either
    for m in re.finditer(r"[.?!]\s+([^\W\d_][\w'\u2019]*)", text):
        if m.group(1)[:1].isupper():
            names.discard(m.group(1).lower())
    numbers = frozenset(w.replace(",", "") for w in words if _NUMBER.match(w))
    content = tuple(w for w in words if w not in _STOP)
    return Tokens(
        words,
        numbers,
        frozenset(names - numbers),
        sum(1 for w in words if w in _NEGATION or w.endswith("n't")),
        content,
        tuple(stem(w) for w in content),
        next((w for w in words if w in _WH), ""),
    )


def stem(word: str) -> str:
    """A crude suffix stripper: plural and tense changes are not differences of meaning."""
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix) and not word.endswith("ss"):
            return word[: -len(suffix)]
    return word


@dataclasses.dataclass(frozen=True)
class PairFeatures:
    """jaccard: of the word sets; len_diff: |log(n_a / n_b)| of the word counts; n_diff:
    words in one prompt only; numbers, names: 1.0 when each prompt has one the other lacks
    (a substitution), 0.5 when only one prompt has such, else 0; negation, opposite, swap: 1.0
    when the negation parity, a comparison's direction or a directed relation's argument
    order differs. Over content-word stems weighted by their rarity (vocabulary.idf):
    idf_diff: the weight of the stems in one prompt only over the weight of all; idf_sub: the
    rarest stem one prompt lacks, the smaller of the two sides (a substituted rare word);
    idf_add: the larger of the two (a detail one prompt adds). wh: the prompts' question words
    differ ("how" / "why"); order: the share of common stem pairs in a different order."""

    jaccard: float
    len_diff: float
    n_diff: float
    numbers: float
    names: float
    negation: float
    opposite: float
    swap: float
    idf_diff: float
    idf_sub: float
    idf_add: float
    wh: float
    order: float

    def vector(self) -> list[float]:
        return [getattr(self, f) for f in FEATURES]


FEATURES = tuple(f.name for f in dataclasses.fields(PairFeatures))


def _mismatch(x: frozenset[str], y: frozenset[str], wx: set[str], wy: set[str]) -> float:
    """1.0: each side has one (of x / y) the other text lacks (a substitution); 0.5: only
    one side has such; 0.0: none."""
    only_x, only_y = x - wy, y - wx
    if only_x and only_y:
        return 1.0
    return 0.5 if only_x or only_y else 0.0


def _opposite(a: Tokens, b: Tokens) -> float:
    wa, wb = set(a.words), set(b.words)
    for w in wa - wb:
        if _OPPOSITE.get(w, set()) & (wb - wa):
            return 1.0
    return 0.0


def _swap(a: Tokens, b: Tokens) -> float:
    """The same content words, a directed relation, and a different order."""
    if a.content == b.content or sorted(a.content) != sorted(b.content) or len(a.content) < 2:
        return 0.0
    return 1.0 if _DIRECTED & set(a.words) & set(b.words) else 0.0


def _order(a: tuple[str, ...], b: tuple[str, ...]) -> float:
    """Share of the pairs of common stems whose order differs (0: same order)."""
    pos_b: dict[str, int] = {}
    for k, w in enumerate(b):
        pos_b.setdefault(w, k)
    seen: set[str] = set()
    seq = []
    for w in a:
        if w in pos_b and w not in seen:
            seen.add(w)
            seq.append(pos_b[w])
    n = len(seq)
    if n < 2:
        return 0.0
    inv = sum(1 for i in range(n) for j in range(i + 1, n) if seq[i] > seq[j])
    return inv / (n * (n - 1) / 2)


def compare(a: str, b: str) -> PairFeatures:
    ta, tb = tokens(a), tokens(b)
    sa, sb = set(ta.words), set(tb.words)
    union = len(sa | sb)
    ca, cb = set(ta.stems), set(tb.stems)
    only_a = [idf(w) for w in ca - cb]
    only_b = [idf(w) for w in cb - ca]
    total = sum(idf(w) for w in ca | cb)
    max_a, max_b = max(only_a, default=0.0), max(only_b, default=0.0)
    return PairFeatures(
        jaccard=len(sa & sb) / union if union else 1.0,
        len_diff=abs(math.log(len(ta.words) + 1) - math.log(len(tb.words) + 1)),
        n_diff=float(len(sa ^ sb)),
        numbers=_mismatch(ta.numbers, tb.numbers, sa, sb),
        names=_mismatch(ta.names, tb.names, sa, sb),
        negation=float((ta.negations % 2) != (tb.negations % 2)),
        opposite=_opposite(ta, tb),
        swap=_swap(ta, tb),
        idf_diff=(sum(only_a) + sum(only_b)) / total if total else 0.0,
        idf_sub=min(max_a, max_b),
        idf_add=max(max_a, max_b),
        wh=float(bool(ta.wh and tb.wh and ta.wh != tb.wh)),
        order=_order(ta.stems, tb.stems),
    )


def veto(f: PairFeatures) -> str | None:
    """Why the guard rejects a pair (None: it passes): a substituted number or name, a
    flipped negation, an opposite, or swapped arguments. Names only on one side (one prompt
    adds a detail) do not veto: that is the head's call."""
    if f.numbers == 1.0:
        return "number"
    if f.names == 1.0:
        return "entity"
    if f.negation:
        return "negation"
    if f.opposite:
        return "opposite"
    if f.swap:
        return "swap"
    return None
