"""Compile the index's numba kernels before the first request needs them.

numba compiles a kernel on its first call (20-30 s of CPU for all of them) or loads it
from its on-disk cache (`cache=True`; under NUMBA_CACHE_DIR when set). A server calls
`warm_kernels()` while it still reports NOT_SERVING, so that no query pays for it.
"""

from __future__ import annotations

import logging
import sys
import time

import numba
import numpy as np

from curator.config import IndexConfig, SearchParams
from curator.index import kernels
from curator.index.curator_index import CuratorIndex

__all__ = ["compiled_signatures", "warm_kernels"]

log = logging.getLogger(__name__)

#: A tree this small trains in milliseconds, yet takes every path a large one does.
_TINY = IndexConfig(branching=4, max_leaf_size=16, max_sl_size=8, train_min_vectors=256)


def compiled_signatures() -> dict[str, int]:
    """Number of compiled signatures of each numba kernel in the loaded `curator` modules, by
    qualified name (a kernel added anywhere in the core is counted without listing it)."""
    out = {}
    for mod_name, mod in list(sys.modules.items()):
        if mod_name == "curator" or mod_name.startswith("curator."):
            for name, obj in vars(mod).items():
                if isinstance(obj, numba.core.registry.CPUDispatcher):
                    out[f"{mod_name}.{name}"] = len(obj.signatures)
    return out


def warm_kernels() -> float:
    """Run every search, insert, share and delete path once on a tiny synthetic index (both
    metric families, single queries and batches, tree and exact scans, several tenants).
    Returns the seconds it took and logs them."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((330, 8)).astype(np.float32)
    ids = np.arange(len(x), dtype=np.uint64)
    tree_scan = SearchParams(exact_search_threshold=0)
    for metric in ("l2", "cosine"):
        idx = CuratorIndex(8, metric, _TINY)
        idx.insert(ids[:200], x[:200], owner="a")
        idx.insert(ids[200:320], x[200:320], owner="b")  # crosses train_min_vectors: trains
        idx.insert(ids[320:], x[320:], owner="b")  # a small batch into a trained tree
        idx.grant(ids[:50], "b", owner="a")
        idx.revoke(ids[:10], "b", owner="a")
        for nq in (1, kernels.PARALLEL_MIN_QUERIES):
            q = x[:nq]
            idx.search("a", q, k=5, params=tree_scan)
            idx.search("a", q, k=5)  # exact
            idx.search(["a", "b"], q, k=5, params=tree_scan)
            idx.search_and(("a", "b"), q, k=5, params=tree_scan)
            idx.hit_owners(idx.search_prepared(["a"], idx.prepare(q), 5)[2])
            # A tenant's own links (tenant_graph.py): linked and searched once.
            tt = idx._tenant_tree("b")
            links = idx._tenant_graphs.build_now(tt, tt.view(idx._tree), idx._store)
            links.search(q, 5, 8, metric != "l2", idx._store)
        # One-id writes (their own compiled steps: view patches, small map edits).
        idx.insert(ids[:1], x[:1], owner="a", readers=("b",))
        idx.revoke(ids[:1], "b", owner="a")
        idx.grant(ids[:1], "b", owner="a")
        idx.delete(ids[:1], owner="a")
        idx.delete(ids[:5], owner="a")
        idx.get_vectors(ids[5:10], owner="a")
        idx.can_read(ids[5:10], "a", "b")
    dt = time.perf_counter() - t0
    log.info("start-up: warm kernels in %.2f s (%d kernels)", dt, len(compiled_signatures()))
    return dt
