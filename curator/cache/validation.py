"""Checks of semantic-cache input, done once at the edge before anything changes."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from curator.cache.partition import PartitionKey
from curator.errors import InvalidArgument, ResourceExhausted

__all__ = ["check_model", "check_prompt", "check_ttl", "partition_key", "unit_vector"]


def partition_key(tenant: str, model: str, fingerprint: str, category: str) -> PartitionKey:
    if not isinstance(fingerprint, str) or len(fingerprint.encode("utf-8", "replace")) > 256:
        raise InvalidArgument(
            f"expected fingerprint a string of at most 256 characters, got {fingerprint!r}"
        )
    return PartitionKey(tenant, check_model(model), fingerprint, category)


def check_model(model: Any) -> str:
    if not isinstance(model, str) or not model or len(model.encode("utf-8", "replace")) > 256:
        raise InvalidArgument(f"expected model a non-empty string, got {model!r}")
    return model


def check_prompt(prompt: Any, limit: int) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidArgument(f"expected a non-empty prompt string, got {prompt!r:.40}")
    if len(prompt) > limit or len(prompt.encode()) > limit:
        raise ResourceExhausted(f"expected a prompt of at most {limit} bytes, got more")


def check_ttl(ttl: Any) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf:
        raise InvalidArgument(f"expected ttl_s a finite number > 0, got {ttl!r}")
    return float(ttl)


def unit_vector(embedding: Any) -> np.ndarray:
    """The embedding as a unit-length (dim,) float32 vector."""
    try:
        v = np.asarray(embedding, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidArgument(
            f"expected an embedding of numbers, got {type(embedding).__name__}"
        ) from None
    if v.ndim == 2 and v.shape[0] == 1:
        v = v[0]
    if v.ndim != 1 or not 1 <= v.size <= 65536:
        raise InvalidArgument(f"expected an embedding of shape (dim,), got {v.shape}")
    if not np.isfinite(v).all():
        raise InvalidArgument("expected a finite embedding, got NaN or inf")
    v64 = v.astype(np.float64)  # a float32 norm overflows above ~1.8e19 per component
    norm = float(np.linalg.norm(v64))
    if norm == 0:
        raise InvalidArgument("expected a non-zero embedding, got all zeros")
    return np.ascontiguousarray(v64 / norm, np.float32)
