"""A cache entry: its durable record (LMDB value) and the small in-memory part lookups need.

Record layout (one LMDB value, key = entry id u64 big-endian):
  u32 header length | header JSON | float32[dim] embedding | prompt UTF-8 | response bytes
The header holds the strings and numbers (tenant, category, model, fingerprint, timestamps,
hit count, generation cost) and the lengths of the three binary parts.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import sys

import numpy as np

from curator.cache.partition import PartitionKey, prompt_digest
from curator.errors import Internal

__all__ = ["CacheEntry", "EntryMeta", "decode", "encode", "prompt_of"]

_LEN = struct.Struct(">I")
_VERSION = 1


@dataclasses.dataclass
class CacheEntry:
    """Everything stored about one cached answer."""

    entry_id: int
    tenant: str
    category: str
    model: str
    fingerprint: str
    prompt: str
    embedding: np.ndarray  # (dim,) float32, unit length
    response: bytes
    created: float
    expires: float
    hits: int = 0
    last_hit: float = 0.0
    latency_s: float = 0.0
    tokens: int = 0

    @property
    def key(self) -> PartitionKey:
        return PartitionKey(self.tenant, self.model, self.fingerprint, self.category)

    def meta(self, key: PartitionKey | None = None) -> EntryMeta:
        """The in-memory part; pass the partition's `key` object to share it (and its
        strings) among the partition's entries instead of a copy per entry."""
        return EntryMeta(
            key or self.key,
            sys.intern(self.category),
            prompt_digest(self.prompt),
            self.created,
            self.expires,
            self.hits,
            self.last_hit,
            1.0 + self.latency_s + self.tokens / 1000.0,
            len(self.prompt.encode()) + len(self.response) + 4 * len(self.embedding),
        )


@dataclasses.dataclass(slots=True)
class EntryMeta:
    """What lookups, expiry and eviction need, kept in memory for every entry.
    cost: what a hit saves (1 + generation seconds + thousands of tokens); size: bytes."""

    key: PartitionKey
    category: str
    digest: bytes
    created: float
    expires: float
    hits: int
    last_hit: float
    cost: float
    size: int


def encode(e: CacheEntry) -> bytes:
    emb = np.ascontiguousarray(e.embedding, "<f4").tobytes()
    prompt = e.prompt.encode()
    head = json.dumps(
        {
            "v": _VERSION,
            "tenant": e.tenant,
            "category": e.category,
            "model": e.model,
            "fingerprint": e.fingerprint,
            "created": e.created,
            "expires": e.expires,
            "hits": e.hits,
            "last_hit": e.last_hit,
            "latency_s": e.latency_s,
            "tokens": e.tokens,
            "n_emb": len(emb),
            "n_prompt": len(prompt),
        },
        separators=(",", ":"),
    ).encode()
    return b"".join((_LEN.pack(len(head)), head, emb, prompt, e.response))


def decode(entry_id: int, raw: bytes | memoryview) -> CacheEntry:
    raw = bytes(raw)
    (n,) = _LEN.unpack_from(raw)
    h = json.loads(raw[4 : 4 + n])
    if h.get("v") != _VERSION:
        raise Internal(f"expected cache record version {_VERSION}, got {h.get('v')}")
    a = 4 + n
    b = a + h["n_emb"]
    c = b + h["n_prompt"]
    return CacheEntry(
        entry_id=entry_id,
        tenant=h["tenant"],
        category=h["category"],
        model=h["model"],
        fingerprint=h["fingerprint"],
        prompt=raw[b:c].decode(),
        embedding=np.frombuffer(raw[a:b], "<f4").astype(np.float32),
        response=raw[c:],
        created=h["created"],
        expires=h["expires"],
        hits=h["hits"],
        last_hit=h["last_hit"],
        latency_s=h["latency_s"],
        tokens=h["tokens"],
    )


def with_hits(raw: bytes | memoryview, hits: int, last_hit: float) -> bytes:
    """The record `raw` with its hit count and last hit replaced."""
    raw = bytes(raw)
    (n,) = _LEN.unpack_from(raw)
    h = json.loads(raw[4 : 4 + n])
    h["hits"], h["last_hit"] = hits, last_hit
    head = json.dumps(h, separators=(",", ":")).encode()
    return _LEN.pack(len(head)) + head + raw[4 + n :]


def prompt_of(raw: bytes | memoryview) -> str:
    """The prompt of a record, without decoding the rest (the verifier reads candidates)."""
    mv = memoryview(raw)
    (n,) = _LEN.unpack_from(mv)
    h = json.loads(bytes(mv[4 : 4 + n]))
    a = 4 + n + h["n_emb"]
    return bytes(mv[a : a + h["n_prompt"]]).decode()
