"""Partition fingerprints: what besides the prompt must match for a cached answer to apply."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["make_fingerprint"]


def make_fingerprint(
    params: Mapping[str, Any] | None = None, system_prompt: str = "", embedder: str = ""
) -> str:
    """A 32-hex-digit digest of the generation parameters (temperature, max_tokens, tools,
    response format...), the system prompt and the embedding model id. The downstream model is
    passed to the cache separately (`model=`); together with the tenant they name a partition."""
    canon = json.dumps(
        {"params": dict(params or {}), "system": system_prompt, "embedder": embedder},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.blake2b(canon.encode(), digest_size=16).hexdigest()
