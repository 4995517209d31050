"""What every peer adapter shares: a scratch directory, its size on disk, padded results.

An adapter follows bench/baselines.py: build(ds); search(tenant, q (nq, d) float32, k,
setting) -> (ids (nq, k) int64 -1 padded, dists (nq, k) float32 inf padded); insert_one(row,
x (d,), tenants); insert_batch(ids, x (m, d), lists); `settings`: its query-knob sweep. It adds
disk_bytes() (what it wrote under its directory) and server_pids() (processes outside this one
whose memory is the engine's, e.g. PostgreSQL's backends).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Peer", "dir_bytes", "pad_results", "tenant_key"]


def tenant_key(tenant: int) -> str:
    """Tenant ids are strings everywhere (Qdrant's keyword index needs them to be)."""
    return f"t{int(tenant)}"


def dir_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes allocated on disk under path (sparse files count what they use)."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                st = os.stat(os.path.join(root, f), follow_symlinks=False)
            except FileNotFoundError:
                continue
            total += min(st.st_size, st.st_blocks * 512)
    return total


def pad_results(rows: list[list[tuple[int, float]]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """rows[i]: (id, distance) pairs of query i, best first -> ids (nq, k), dists (nq, k)."""
    ids = np.full((len(rows), k), -1, np.int64)
    dist = np.full((len(rows), k), np.inf, np.float32)
    for i, r in enumerate(rows):
        for j, (a, b) in enumerate(r[:k]):
            ids[i, j], dist[i, j] = a, b
    return ids, dist


class Peer:
    """A scratch directory per instance, removed by close()."""

    name = "peer"
    settings: list[dict[str, Any]]

    def __init__(self, root: str | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"peer-{self.name.split()[0]}-", dir=root))

    def disk_bytes(self) -> int:
        return dir_bytes(self.dir)

    def server_pids(self) -> list[int]:
        return []

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
