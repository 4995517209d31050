"""Checks of caller input, done once at the edge before anything changes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from curator.errors import InvalidArgument

__all__ = ["MAX_ID", "MAX_K", "as_ids", "as_matrix", "check_k", "check_tenant", "check_tenants"]

#: 2**64 - 1 is reserved (it marks "no id" in some encodings); every other uint64 is valid.
MAX_ID = np.uint64(2**64 - 2)
MAX_K = 4096
MAX_TENANT_LEN = 256


def as_ids(ids: Any, unique: bool = True) -> np.ndarray:
    """Client ids as a (n,) uint64 array; rejects negatives, non-integers, the reserved id
    and (if `unique`) repeated ids."""
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise InvalidArgument(f"expected ids as a 1-d array, got shape {arr.shape}")
    if arr.size == 0:
        return np.empty(0, np.uint64)
    if arr.dtype.kind == "u":
        out = arr.astype(np.uint64)
    elif arr.dtype.kind == "i":
        if (arr < 0).any():
            raise InvalidArgument(f"expected ids >= 0, got {int(arr.min())}")
        out = arr.astype(np.uint64)
    elif arr.dtype.kind == "O":
        try:
            vals = [int(v) for v in arr]
        except (TypeError, ValueError):
            raise InvalidArgument("expected integer ids, got non-integer values") from None
        if min(vals) < 0 or max(vals) > int(MAX_ID):
            raise InvalidArgument(
                f"expected ids in [0, {int(MAX_ID)}], got {min(vals)}..{max(vals)}"
            )
        out = np.array(vals, np.uint64)
    else:
        raise InvalidArgument(f"expected integer ids, got dtype {arr.dtype}")
    if (out > MAX_ID).any():
        raise InvalidArgument(f"expected ids <= {int(MAX_ID)}, got {int(out.max())}")
    if unique and len(np.unique(out)) != len(out):
        uniq, counts = np.unique(out, return_counts=True)
        raise InvalidArgument(
            f"expected unique ids in one batch, got {int(uniq[counts > 1][0])} "
            f"{int(counts.max())} times"
        )
    return out


def as_matrix(x: Any, dim: int, what: str = "vectors", check_finite: bool = True) -> np.ndarray:
    """A (n, dim) C-contiguous float32 array (of finite values, if `check_finite`)."""
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidArgument(f"expected {what} as numbers, got {type(x).__name__}") from None
    if arr.ndim == 1 and arr.size == dim:
        arr = arr.reshape(1, dim)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise InvalidArgument(f"expected {what} of shape (n, {dim}), got {arr.shape}")
    if check_finite and not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr).all(1))[0])
        raise InvalidArgument(f"expected finite {what}, got NaN or inf in row {bad}")
    return np.ascontiguousarray(arr)


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= MAX_K:
        raise InvalidArgument(f"expected k an integer in [1, {MAX_K}], got {k!r}")
    return int(k)


def check_tenant(name: Any) -> str:
    if not isinstance(name, str) or not name or len(name) > MAX_TENANT_LEN:
        raise InvalidArgument(
            f"expected tenant a non-empty string of at most {MAX_TENANT_LEN} characters, "
            f"got {name!r}"
        )
    return name


def check_tenants(names: str | Sequence[str]) -> list[str]:
    if isinstance(names, str):
        return [check_tenant(names)]
    out = [check_tenant(n) for n in names]
    if not out:
        raise InvalidArgument("expected at least one tenant, got none")
    return out
