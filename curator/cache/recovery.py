"""Start-up and shutdown persistence of the cache's in-memory state.

At start every partition is rebuilt from the LMDB records (expired entries and entries of
tenants that no longer exist are dropped). A partition whose HNSW graph was saved at the last
clean shutdown reads that graph back and is reconciled with the records instead of being
built again: nodes no longer live are marked deleted, records the graph lacks are added.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from curator.cache import entry as entry_codec
from curator.cache.entry import EntryMeta
from curator.cache.partition import Partition, PartitionKey
from curator.storage.files import private_dir, private_tree

if TYPE_CHECKING:
    from curator.cache.semantic_cache import SemanticCache

__all__ = ["ID", "rebuild", "save_graphs"]

log = logging.getLogger(__name__)

ID = struct.Struct(">Q")  # LMDB key of a cache record: entry id, big-endian


def rebuild(cache: SemanticCache, known_tenants: set[str] | None) -> None:
    """Fill `cache`'s partitions and ledger from its store (before any other thread runs)."""
    store = cache.store
    now = cache.clock()
    saved = _saved_graphs(cache.graph_dir)
    # per partition: ids, metas, and the embeddings packed in one buffer (not an array object
    # per entry: at 1M entries those cost more than the graph); none are packed for a
    # partition with a saved graph
    groups: dict[PartitionKey, tuple[list[int], list[EntryMeta], bytearray]] = {}
    stale: list[int] = []
    keys: dict[PartitionKey, PartitionKey] = {}  # one key object per partition
    with store.read() as txn:
        for k, v in store.scan_raw(txn, "cache"):
            eid = ID.unpack(k)[0]
            e = entry_codec.decode(eid, v)
            if (known_tenants is not None and e.tenant not in known_tenants) or (now >= e.expires):
                stale.append(eid)
                continue
            key = keys.setdefault(e.key, e.key)
            ids, metas, vecs = groups.setdefault(key, ([], [], bytearray()))
            ids.append(eid)
            metas.append(e.meta(key))
            if key not in saved:
                vecs += e.embedding.tobytes()
    from_graphs = 0
    for key in list(groups):
        ids, metas, vecs = groups.pop(key)
        if key in saved:
            ids, metas, vecs = _load_graph(cache, key, saved[key], ids, metas)
            from_graphs += key in cache._partitions
        if ids:
            x = np.frombuffer(vecs, np.float32).reshape(len(ids), -1)
            cache._add_many(key, ids, metas, x)
    if stale and not store.readonly:
        cache._delete_records(stale)
    if len(cache.ledger):
        log.info(
            "cache: %d entries in %d partitions (%d from saved graphs) rebuilt from the "
            "store (%d expired dropped)",
            len(cache.ledger),
            len(cache._partitions),
            from_graphs,
            len(stale),
        )


def _load_graph(
    cache: SemanticCache, key: PartitionKey, path: Path, ids: list[int], metas: list[EntryMeta]
) -> tuple[list[int], list[EntryMeta], bytearray]:
    """Register the entries of a partition whose graph was saved, from that graph; returns
    what is left to add the usual way: the entries the graph lacks (all, if the graph is
    unusable), with their embeddings."""
    store = cache.store
    with store.read() as txn:
        first = store.get_raw(txn, "cache", ID.pack(ids[0]))
    dim = len(entry_codec.decode(ids[0], first or b"").embedding) if first else 0
    try:
        part, missing = Partition.from_graph(
            path, dim, cache._params, {i: m.digest for i, m in zip(ids, metas, strict=True)}
        )
    except ValueError as e:
        log.warning("cache: rebuilding a partition: %s", e)
        missing = ids
    else:
        cache._attach(key, part)
        todo = set(missing)
        cache.ledger.register(
            key,
            [i for i in ids if i not in todo],
            [m for i, m in zip(ids, metas, strict=True) if i not in todo],
        )
    by_id = dict(zip(ids, metas, strict=True))
    vecs = bytearray()
    with store.read() as txn:
        for i in missing:
            raw = store.get_raw(txn, "cache", ID.pack(i))
            vecs += entry_codec.decode(i, raw or b"").embedding.tobytes()
    return list(missing), [by_id[i] for i in missing], vecs


def _saved_graphs(graph_dir: Path | None) -> dict[PartitionKey, Path]:
    """Graphs saved at the last clean shutdown, by partition (files whose manifest reads)."""
    out: dict[PartitionKey, Path] = {}
    if graph_dir is None or not graph_dir.is_dir():
        return out
    for manifest in graph_dir.glob("*.json"):
        try:
            key = PartitionKey(**json.loads(manifest.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        graph = manifest.with_suffix(".hnsw")
        if graph.exists():
            out[key] = graph
    return out


def save_graphs(cache: SemanticCache) -> int:
    """Save every partition's HNSW graph to `cache.graph_dir` and drop saved graphs of
    partitions gone since. Returns the number saved. Caller holds the writer mutex."""
    graph_dir = cache.graph_dir
    if graph_dir is None or cache.store.readonly:
        return 0
    private_dir(graph_dir)
    written: set[Path] = set()
    with cache._lock.read_lock():
        for key, part in cache._partitions.items():
            name = hashlib.blake2b(repr(dataclasses.astuple(key)).encode(), digest_size=16)
            graph = graph_dir / f"{name.hexdigest()}.hnsw"
            if part.save_graph(graph):
                manifest = graph.with_suffix(".json")
                manifest.write_text(json.dumps(dataclasses.asdict(key)))
                written.update((graph, manifest))
    for f in graph_dir.iterdir():
        if f not in written:
            f.unlink(missing_ok=True)
    private_tree(graph_dir)  # manifests name tenants: 0600 like the rest
    return len(written) // 2
