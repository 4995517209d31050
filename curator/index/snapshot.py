"""Serialise a CuratorIndex to named numpy arrays and back (no pickle).

A snapshot is a dict of arrays: the vector store, the shared tree, the access pairs and every
tenant's shortlists in CSR form, plus `meta` (UTF-8 JSON: format version, dimension, metric,
config, tenant names). Expanded nodes are not stored: they are the ancestors of shortlist nodes.
The proximity graph's links (`graph_*`, ~8 % of the vectors at d 384) are stored when there is
a graph; without them the graph is built again when a search first needs it.
Files are written with `np.savez` to a temporary name and renamed, so a crash never leaves a
half-written snapshot under the final name.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from curator.config import IndexConfig, Metric
from curator.errors import FailedPrecondition
from curator.index.graph import ProximityGraph
from curator.index.sorted_map import SortedMap
from curator.index.tenant_tree import TenantTree
from curator.index.tree import SharedTree
from curator.index.vector_store import VectorStore

if TYPE_CHECKING:
    from curator.index.curator_index import CuratorIndex

__all__ = ["FORMAT_VERSION", "from_arrays", "load", "save", "save_arrays", "to_arrays"]

FORMAT_VERSION = 2  # 2: ids scoped per owner, tenant keys may be integers

_REQUIRED = (
    "meta",
    "vec_vectors",
    "vec_ext_id",
    "vec_owner",
    "vec_leaf",
    "vec_live",
    "tree_centroids",
    "tree_parent",
    "tree_child_start",
    "tree_child_count",
    "tree_rad_sum",
    "tree_rad_cnt",
    "access_keys",
    "sl_tenant",
    "sl_node",
    "sl_ptr",
    "sl_slots",
)


def to_arrays(index: CuratorIndex) -> dict[str, np.ndarray]:
    meta = {
        "format_version": FORMAT_VERSION,
        "dim": index.dim,
        "metric": index.metric.value,
        "config": dataclasses.asdict(index.config),
        "tenants": index._names,
        "trained_n": index._trained_n,
    }
    sl_tenant, sl_node, lens, parts = [], [], [], []
    for t, tree in enumerate(index._trees):
        if tree is None:
            continue
        for node, slots in tree.shortlists.items():
            sl_tenant.append(t)
            sl_node.append(node)
            lens.append(len(slots))
            parts.append(slots)
    sl_ptr = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=sl_ptr[1:])
    graph = index._graph.to_arrays(index._store.high) if index._graph is not None else {}
    return {
        **graph,
        "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8),
        **index._store.to_arrays(),
        **index._tree.to_arrays(),
        "access_keys": index._access.items()[0],
        "sl_tenant": np.array(sl_tenant, np.int32),
        "sl_node": np.array(sl_node, np.int32),
        "sl_ptr": sl_ptr,
        "sl_slots": np.concatenate(parts) if parts else np.empty(0, np.int32),
    }


def from_arrays(arrays: dict[str, np.ndarray]) -> CuratorIndex:
    from curator.index.curator_index import CuratorIndex

    missing = [k for k in _REQUIRED if k not in arrays]
    if missing:
        raise FailedPrecondition(f"expected a complete index snapshot, missing {missing}")
    try:
        meta = json.loads(bytes(np.asarray(arrays["meta"], np.uint8)).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FailedPrecondition(f"expected snapshot metadata as JSON, got {e}") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise FailedPrecondition(
            f"expected snapshot format version {FORMAT_VERSION}, got {meta.get('format_version')}"
        )
    index = CuratorIndex(meta["dim"], meta["metric"], IndexConfig(**meta["config"]))
    index._store = VectorStore.from_arrays(index.dim, arrays)
    index._tree = SharedTree.from_arrays(arrays)
    index._access = SortedMap.from_sorted(arrays["access_keys"])
    index._names = list(meta["tenants"])
    index._tenant_of = {n: t for t, n in enumerate(index._names) if n is not None}
    index._trees = [TenantTree() if n is not None else None for n in index._names]
    index._free = [t for t, n in enumerate(index._names) if n is None]
    index._rebuild_owned()
    index._trained_n = int(meta["trained_n"])
    tree = index._tree
    ptr, slots = arrays["sl_ptr"], arrays["sl_slots"]
    for i, (t, node) in enumerate(
        zip(arrays["sl_tenant"].tolist(), arrays["sl_node"].tolist(), strict=True)
    ):
        tt = index._trees[t]
        if tt is None or not 0 <= node < len(tree):
            raise FailedPrecondition(f"snapshot shortlist {i} names a missing tenant or node")
        sl = np.array(slots[ptr[i] : ptr[i + 1]], np.int32)
        tt.shortlists[node] = sl
        tt.size += len(sl)
        tt.expanded.update(tree.anc[node, : tree.depth[node]].tolist())
    ip = index.metric is not Metric.L2
    if "graph_nbr" in arrays:  # else built when first needed
        index._graph = ProximityGraph.from_arrays(arrays, ip, index._store)
    return index


def save(index: CuratorIndex, path: str | os.PathLike[str]) -> None:
    """Write the index's snapshot to `path` atomically."""
    save_arrays(to_arrays(index), path)


def save_arrays(arrays: dict[str, np.ndarray], path: str | os.PathLike[str]) -> None:
    """Write snapshot arrays to `path` atomically (fsynced temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: str | os.PathLike[str]) -> CuratorIndex:
    """Read a snapshot file; FailedPrecondition if it is unreadable, truncated or foreign."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise FailedPrecondition(f"expected a readable index snapshot at {path}, got {e}") from None
    return from_arrays(arrays)
