"""Label predicates (curator.predicate) on the wire: protobuf messages and JSON objects.

JSON form: ``{"label": "lang:en"}``, ``{"not": P}``, ``{"and": [P, ...]}``, ``{"or": [P, ...]}``.
Both decoders check depth and size while they walk (a request is untrusted input: a deeply
nested message must cost nothing before it is refused) and return a checked Predicate.
"""

from __future__ import annotations

from typing import Any

from curator.errors import InvalidArgument
from curator.predicate import MAX_DEPTH, And, Label, Not, Or, Predicate, labels
from curator_api.v1 import curator_pb2 as pb

__all__ = ["predicate_from_json", "predicate_from_pb", "predicate_to_json", "predicate_to_pb"]


def predicate_to_pb(p: Predicate) -> pb.Predicate:
    labels(p)  # refuse a malformed predicate before encoding it
    return _to_pb(p)


def _to_pb(p: Predicate) -> pb.Predicate:
    if isinstance(p, Label):
        return pb.Predicate(label=str(p.name))
    if isinstance(p, Not):
        return pb.Predicate(**{"not": _to_pb(p.term)})
    terms = pb.Predicates(terms=[_to_pb(t) for t in p.terms])
    return pb.Predicate(**{"and" if isinstance(p, And) else "or": terms})


def predicate_from_pb(m: pb.Predicate) -> Predicate:
    p = _from_pb(m, 0)
    labels(p)  # size limits
    return p


def _from_pb(m: pb.Predicate, depth: int) -> Predicate:
    if depth > MAX_DEPTH:
        raise InvalidArgument(f"expected a predicate at most {MAX_DEPTH} deep, got deeper")
    which = m.WhichOneof("term")
    if which == "label":
        return Label(m.label)
    if which == "not":
        return Not(_from_pb(getattr(m, "not"), depth + 1))
    if which in ("and", "or"):
        terms = [_from_pb(t, depth + 1) for t in getattr(m, which).terms]
        return And(*terms) if which == "and" else Or(*terms)
    raise InvalidArgument("expected a predicate term (label, not, and, or), got none")


def predicate_to_json(p: Predicate) -> dict[str, Any]:
    labels(p)
    return _to_json(p)


def _to_json(p: Predicate) -> dict[str, Any]:
    if isinstance(p, Label):
        return {"label": p.name}
    if isinstance(p, Not):
        return {"not": _to_json(p.term)}
    return {"and" if isinstance(p, And) else "or": [_to_json(t) for t in p.terms]}


def predicate_from_json(v: Any) -> Predicate:
    p = _from_json(v, 0)
    labels(p)
    return p


def _from_json(v: Any, depth: int) -> Predicate:
    if depth > MAX_DEPTH:
        raise InvalidArgument(f"expected a predicate at most {MAX_DEPTH} deep, got deeper")
    if not isinstance(v, dict) or len(v) != 1:
        raise InvalidArgument(
            'expected a predicate object with one key ("label", "not", "and" or "or"), '
            f"got {type(v).__name__ if not isinstance(v, dict) else sorted(v)!r}"
        )
    ((key, value),) = v.items()
    if key == "label":
        if not isinstance(value, str):
            raise InvalidArgument(f"expected a label name string, got {type(value).__name__}")
        return Label(value)
    if key == "not":
        return Not(_from_json(value, depth + 1))
    if key in ("and", "or"):
        if not isinstance(value, list):
            raise InvalidArgument(f'expected a list of predicates for "{key}", got {value!r:.40}')
        terms = [_from_json(t, depth + 1) for t in value]
        return And(*terms) if key == "and" else Or(*terms)
    raise InvalidArgument(f'expected "label", "not", "and" or "or", got {key!r:.40}')
