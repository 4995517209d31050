"""Boolean predicates over labels (AND / OR / NOT), evaluated to a sorted set of slots.

A label is a tenant-like name that vectors are granted to (`lang:en`); a predicate selects the
vectors whose labels satisfy it, always within what the caller may read:

>>> where = And(Label("lang:en"), Not(Label("section:web")))

Evaluation works on sorted slot arrays and never materialises the complement: every
sub-result is either a set of slots ("these") or the readable set minus a set of slots ("all
but these"), as Curator v2's qualifying-set walk does (research/curator.md §3.4). The cost is
O(m log m) in the sizes of the labels involved, not in the collection size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from curator.errors import InvalidArgument

__all__ = ["And", "Label", "Not", "Or", "Predicate", "evaluate", "labels", "relabel"]

#: Limits on a predicate's shape (a request is untrusted input).
MAX_DEPTH = 32
MAX_LABELS = 256


@dataclass(frozen=True)
class Label:
    name: str | int  # a label (tenant) name, or the database's numeric tenant id


@dataclass(frozen=True)
class Not:
    term: Predicate


@dataclass(frozen=True, init=False)
class And:
    terms: tuple[Predicate, ...]

    def __init__(self, *terms: Predicate) -> None:
        object.__setattr__(self, "terms", tuple(terms))


@dataclass(frozen=True, init=False)
class Or:
    terms: tuple[Predicate, ...]

    def __init__(self, *terms: Predicate) -> None:
        object.__setattr__(self, "terms", tuple(terms))


Predicate = Label | Not | And | Or


def labels(pred: Predicate) -> list[str | int]:
    """The label names a predicate mentions; InvalidArgument if it is malformed or too big."""
    out: list[str | int] = []
    _walk(pred, 0, out)
    return out


def relabel(pred: Predicate, names: dict[str | int, int]) -> Predicate:
    """`pred` with every label replaced by `names[label]` (e.g. names by tenant ids)."""
    if isinstance(pred, Label):
        return Label(names[pred.name])
    if isinstance(pred, Not):
        return Not(relabel(pred.term, names))
    terms = [relabel(t, names) for t in pred.terms]
    return And(*terms) if isinstance(pred, And) else Or(*terms)


def _walk(pred: object, depth: int, out: list[str | int]) -> None:
    if depth > MAX_DEPTH:
        raise InvalidArgument(f"expected a predicate at most {MAX_DEPTH} deep, got deeper")
    if isinstance(pred, Label):
        if isinstance(pred.name, bool) or not (
            isinstance(pred.name, str) or (isinstance(pred.name, int) and pred.name >= 0)
        ):
            raise InvalidArgument(f"expected a label name string, got {pred.name!r}")
        out.append(pred.name)
        if len(out) > MAX_LABELS:
            raise InvalidArgument(f"expected at most {MAX_LABELS} labels in a predicate, got more")
    elif isinstance(pred, Not):
        _walk(pred.term, depth + 1, out)
    elif isinstance(pred, And | Or):
        if not pred.terms:
            raise InvalidArgument(f"expected {type(pred).__name__} of at least one term, got none")
        for t in pred.terms:
            _walk(t, depth + 1, out)
    else:
        raise InvalidArgument(f"expected a Label, Not, And or Or, got {type(pred).__name__}")


def evaluate(
    pred: Predicate, readable: np.ndarray, slots_of: Callable[[str | int], np.ndarray]
) -> np.ndarray:
    """Slots (sorted, unique, int32) in `readable` (sorted unique int32) that satisfy `pred`;
    `slots_of(label)` gives a label's slots, sorted and unique. Checks the predicate first."""
    labels(pred)
    cache: dict[str | int, np.ndarray] = {}

    def leaf(name: str | int) -> np.ndarray:
        if name not in cache:
            cache[name] = np.asarray(slots_of(name), np.int32)
        return cache[name]

    neg, s = _eval(pred, leaf)
    out = np.setdiff1d(readable, s, True) if neg else np.intersect1d(readable, s, True)
    return out.astype(np.int32)


def _eval(pred: Predicate, leaf: Callable[[str | int], np.ndarray]) -> tuple[bool, np.ndarray]:
    """(False, S) means the set S; (True, S) means everything readable except S."""
    if isinstance(pred, Label):
        return False, leaf(pred.name)
    if isinstance(pred, Not):
        neg, s = _eval(pred.term, leaf)
        return not neg, s
    parts = [_eval(t, leaf) for t in pred.terms]
    neg, acc = parts[0]
    for n2, s2 in parts[1:]:
        if isinstance(pred, And):
            neg, acc = _and(neg, acc, n2, s2)
        else:  # Or(A, B) = Not(And(Not A, Not B))
            n, a = _and(not neg, acc, not n2, s2)
            neg, acc = not n, a
    return neg, acc


def _and(na: bool, a: np.ndarray, nb: bool, b: np.ndarray) -> tuple[bool, np.ndarray]:
    if not na and not nb:
        return False, np.intersect1d(a, b, True)
    if not na:
        return False, np.setdiff1d(a, b, True)
    if not nb:
        return False, np.setdiff1d(b, a, True)
    return True, np.union1d(a, b)
