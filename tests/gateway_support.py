"""Helpers of the gateway adapter tests: a deterministic toy embedder and the cache backend."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIM = 64
_WORD = re.compile(r"[a-z0-9]+")


def toy_embed(text: str) -> np.ndarray:
    """Bag of words hashed into DIM buckets, L2-normalised: (DIM,) float32. Texts sharing
    most words are close (cosine), texts sharing none are orthogonal-ish."""
    v = np.zeros(DIM, np.float32)
    for w in _WORD.findall(text.lower()):
        v[int.from_bytes(hashlib.blake2b(w.encode(), digest_size=4).digest(), "big") % DIM] += 1
    n = float(np.linalg.norm(v))
    return v / n if n else v


def cosine(a: str, b: str) -> float:
    return float(toy_embed(a) @ toy_embed(b))


@contextlib.contextmanager
def open_backend(tmp: Path) -> Iterator[Any]:
    """The real in-process Database, with tenants "a" and "b"."""
    from curator.config import DatabaseConfig
    from curator.database import Database

    db = Database(DatabaseConfig(data_dir=str(tmp)), background=False)
    try:
        db.create_tenant("a")
        db.create_tenant("b")
        yield db
    finally:
        db.close()


@contextlib.contextmanager
def open_served(tmp: Path) -> Iterator[tuple[Any, Any, Any]]:
    """A real gRPC server on 127.0.0.1 (ephemeral port) over a Database with tenants "a" and
    "b"; yields (served, SDK client with a's key, SDK client with b's key)."""
    from tests.test_server import Served

    served = Served(tmp)
    try:
        with served.client() as admin:
            admin.create_tenant("a")
            admin.create_tenant("b")
            _, key_a = admin.issue_key("a")
            _, key_b = admin.issue_key("b")
        with served.client(key_a) as a, served.client(key_b) as b:
            yield served, a, b
    finally:
        served.close()


def engine_modules_after_import(module: str) -> list[str]:
    """Which of faiss, hnswlib, lmdb, numba a fresh interpreter holds after importing
    `module` (the SDK and its adapters must need none of them)."""
    code = (
        f"import sys, {module}; "
        "print(' '.join(m for m in ('faiss', 'hnswlib', 'lmdb', 'numba') if m in sys.modules))"
    )
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True
    )
    return out.stdout.split()
