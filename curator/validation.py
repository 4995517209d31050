"""Checks of caller input, done once at the edge before anything changes."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from curator.errors import InvalidArgument

__all__ = [
    "MAX_ID",
    "MAX_K",
    "MAX_NAME_BYTES",
    "MAX_SQ_NORM",
    "as_ids",
    "as_matrix",
    "MAX_DEPTH",
    "check_depth",
    "check_k",
    "check_name",
    "check_tenant",
    "check_tenants",
    "name_ok",
    "prepare_vectors",
]

#: 2**64 - 1 is reserved (it marks "no id" in some encodings); every other uint64 is valid.
MAX_ID = np.uint64(2**64 - 2)
_MAX_ID_INT = int(MAX_ID)
MAX_K = 4096
#: Names (tenants, collections, categories, labels) are 1..MAX_NAME_BYTES bytes of UTF-8,
#: so that every LMDB key built from two of them stays under LMDB's 511-byte key limit.
MAX_NAME_BYTES = 128
#: A vector's squared L2 norm may not exceed this (a quarter of float32's largest value), so
#: that every distance between two accepted vectors is finite in float32.
MAX_SQ_NORM = 8.0e37
_NAME_PUNCT = frozenset("-_.:@+/=#")
#: JSON documents may nest at most this deep (deeper ones would exhaust the stack).
MAX_DEPTH = 64


def as_ids(ids: Any, unique: bool = True) -> np.ndarray:
    """Client ids as a (n,) uint64 array; rejects negatives, non-integers, the reserved id
    and (if `unique`) repeated ids."""
    if type(ids) is list and len(ids) == 1 and type(ids[0]) is int:  # the one-id write path
        if ids[0] < 0:
            raise InvalidArgument(f"expected ids >= 0, got {ids[0]}")
        if ids[0] > _MAX_ID_INT:
            raise InvalidArgument(f"expected ids <= {_MAX_ID_INT}, got {ids[0]}")
        return np.array(ids, np.uint64)
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise InvalidArgument(f"expected ids as a 1-d array, got shape {arr.shape}")
    if arr.size == 0:
        return np.empty(0, np.uint64)
    if arr.dtype.kind == "u":
        out = arr.astype(np.uint64)
        if (out > MAX_ID).any():
            raise InvalidArgument(f"expected ids <= {_MAX_ID_INT}, got {int(out.max())}")
    elif arr.dtype.kind == "i":  # (an int64 never exceeds MAX_ID)
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
    if unique and len(out) > 1 and _repeats(out):
        uniq, counts = np.unique(out, return_counts=True)
        raise InvalidArgument(
            f"expected unique ids in one batch, got {int(uniq[counts > 1][0])} "
            f"{int(counts.max())} times"
        )
    return out


def _repeats(ids: np.ndarray) -> bool:
    if len(ids) <= 32:  # a set of a few Python ints is cheaper than a sort
        return len(set(ids.tolist())) != len(ids)
    return len(np.unique(ids)) != len(ids)


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


def check_name(name: Any, what: str = "tenant") -> str:
    """A valid name: 1..MAX_NAME_BYTES bytes of UTF-8, of letters and digits (any script) and
    the punctuation `- _ . : @ + / = #`; no spaces, control or format characters."""
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"expected {what} a non-empty string, got {name!r}")
    if type(name) is str and name_ok(name):  # checked before: every write names tenants
        return name
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        raise InvalidArgument(
            f"expected {what} of at most {MAX_NAME_BYTES} bytes of UTF-8, got {size} bytes"
        )
    bad = next((ch for ch in name if not (ch.isalnum() or ch in _NAME_PUNCT)), None)
    if bad is not None or not name.isprintable():
        raise InvalidArgument(
            f"expected {what} of letters, digits and '-_.:@+/=#', got {name!r} (character {bad!r})"
        )
    return name


@functools.lru_cache(maxsize=8192)
def name_ok(name: str) -> bool:
    """Whether `check_name` accepts the str `name`, remembered for recent names: the
    character loop costs ~1 µs a call, and every write names a tenant or two."""
    if not name:
        return False
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return False
    return name.isprintable() and all(ch.isalnum() or ch in _NAME_PUNCT for ch in name)


def check_tenant(name: Any) -> str:
    return check_name(name, "tenant")


def check_tenants(names: str | Sequence[str]) -> list[str]:
    if isinstance(names, str):
        return [check_tenant(names)]
    out = [check_tenant(n) for n in names]
    if not out:
        raise InvalidArgument("expected at least one tenant, got none")
    return out


def prepare_vectors(x: Any, dim: int, normalize: bool, what: str = "vectors") -> np.ndarray:
    """(n, dim) float32 copy of `x`, checked once for every row: finite, squared norm at most
    MAX_SQ_NORM (summed in float64: no overflow), non-zero and scaled to unit length when
    `normalize` (cosine). Raises InvalidArgument naming the first bad row."""
    from curator.index.kernels import prepare_rows  # compiled; imported late (layering)

    arr = as_matrix(x, dim, what, check_finite=False)
    out, bad = prepare_rows(arr, normalize, MAX_SQ_NORM)
    if bad >= 0:
        row = arr[bad].astype(np.float64)
        if not np.isfinite(row).all():
            problem = "NaN or inf"
        elif float(np.dot(row, row)) > MAX_SQ_NORM:
            problem = f"a squared norm above {MAX_SQ_NORM:g}"
        else:
            problem = "a zero vector"
        raise InvalidArgument(f"expected finite, non-zero {what}, got {problem} in row {bad}")
    return out


def check_depth(doc: object) -> None:
    """InvalidArgument if `doc` nests dicts/lists deeper than MAX_DEPTH (checked without
    recursion, so a 100,000-deep document cannot overflow the stack here)."""
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > MAX_DEPTH:
                raise InvalidArgument(
                    f"expected a JSON document nested at most {MAX_DEPTH} deep, got deeper"
                )
            children = node.values() if isinstance(node, dict) else node
            stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
