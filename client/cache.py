"""The semantic-cache calls of the SDK, as plans (see client.calls): the contract is
curator.api.CacheAPI. `tenant=None` acts for the key's own tenant (the admin key must name
one, except for policies, where None is the database-wide default, and stats)."""

from __future__ import annotations

from typing import Any

from client.calls import Call, Plan
from curator.cache.policy import CategoryPolicy
from curator.errors import InvalidArgument
from curator.results import CacheLookup, CacheStats, CacheStored, ModelLoad, PolicyState
from curator_api import cache_wire, convert
from curator_api.v1 import curator_pb2 as pb

__all__: list[str] = []


def _embedding(v: Any) -> bytes:
    """None: the server embeds the prompt (if it runs an embedder)."""
    return b"" if v is None else convert.encode_vector(v)


def lookup(
    prompt: str,
    embedding: Any,
    tenant: str | None,
    model: str,
    fingerprint: str,
    category: str | None,
    wait_s: float,
) -> Plan[CacheLookup]:
    req = pb.CacheLookupRequest(
        tenant=tenant or "",
        model=model,
        fingerprint=fingerprint,
        category=category or "",
        prompt=prompt,
        embedding=_embedding(embedding),
        wait_s=wait_s,
    )
    timeout = None if wait_s <= 0 else wait_s + 30.0
    return cache_wire.lookup_from_pb((yield Call("Cache", "Lookup", req, timeout)))


def store(
    prompt: str,
    embedding: Any,
    response: bytes | str,
    tenant: str | None,
    model: str,
    fingerprint: str,
    category: str | None,
    ttl_s: float | None,
    latency_s: float,
    tokens: int,
) -> Plan[CacheStored]:
    req = pb.CacheStoreRequest(
        tenant=tenant or "",
        model=model,
        fingerprint=fingerprint,
        category=category or "",
        prompt=prompt,
        embedding=_embedding(embedding),
        response=response.encode() if isinstance(response, str) else bytes(response),
        latency_s=latency_s,
        tokens=tokens,
    )
    if ttl_s is not None:
        req.ttl_s = ttl_s
    return cache_wire.stored_from_pb((yield Call("Cache", "Store", req)))


def invalidate(
    tenant: str | None, category: str | None, model: str | None, fingerprint: str | None
) -> Plan[int]:
    req = pb.CacheInvalidateRequest(tenant=tenant or "")
    for f, v in (("category", category), ("model", model), ("fingerprint", fingerprint)):
        if v is not None:
            setattr(req, f, v)
    return int((yield Call("Cache", "Invalidate", req)).removed)


def set_policy(category: str, tenant: str | None, fields: dict[str, Any]) -> Plan[CategoryPolicy]:
    req = pb.SetCachePolicyRequest(
        tenant=tenant or "", category=category, policy=pb.CachePolicy(**fields)
    )
    return cache_wire.policy_from_pb((yield Call("Cache", "SetPolicy", req)))


def reset_policy(category: str, tenant: str | None) -> Plan[bool]:
    req = pb.ResetCachePolicyRequest(tenant=tenant or "", category=category)
    return bool((yield Call("Cache", "ResetPolicy", req)).reset)


def policies(tenant: str | None, model: str) -> Plan[dict[str, PolicyState]]:
    req = pb.GetCachePoliciesRequest(tenant=tenant or "", model=model)
    return cache_wire.policies_from_pb((yield Call("Cache", "GetPolicies", req)))


def add_examples(category: str, embeddings: Any, tenant: str | None) -> Plan[int]:
    req = pb.AddCacheExamplesRequest(
        tenant=tenant or "",
        category=category,
        embeddings=convert.encode_matrix(convert.as_rows(embeddings)),
    )
    return int((yield Call("Cache", "AddExamples", req)).count)


def report_load(model: str, load: float) -> Plan[ModelLoad]:
    req = pb.ReportLoadRequest(model=model, load=load)
    return cache_wire.model_load_from_pb((yield Call("Cache", "ReportLoad", req)))


def set_capacity(model: str, rps: float) -> Plan[None]:
    yield Call("Cache", "ReportLoad", pb.ReportLoadRequest(model=model, capacity_rps=rps))


def stats(tenant: str | None) -> Plan[CacheStats]:
    req = pb.CacheStatsRequest(tenant=tenant or "")
    return cache_wire.cache_stats_from_pb((yield Call("Cache", "Stats", req)))


def feedback(
    tenant: str | None, lookup_id: int, entry_id: int, correct: bool
) -> Plan[dict[str, Any]]:
    for name, v in (("lookup_id", lookup_id), ("entry_id", entry_id)):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 64:
            raise InvalidArgument(f"expected {name} an unsigned 64-bit integer, got {v!r}")
    if not isinstance(correct, bool):
        raise InvalidArgument(f"expected correct a bool, got {correct!r}")
    req = pb.CacheFeedbackRequest(
        tenant=tenant or "", lookup_id=lookup_id, entry_id=entry_id, correct=correct
    )
    return cache_wire.feedback_from_pb((yield Call("Cache", "Feedback", req)))
