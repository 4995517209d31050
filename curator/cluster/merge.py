"""Merging the answers of several nodes to one search: top-k by distance.

Each vector lives on exactly one node (its owner's home), so answers never overlap and no
deduplication is needed. Ties are broken by (owner, id) so that the merged answer does not
depend on the order in which nodes replied.
"""

from __future__ import annotations

import numpy as np

from curator.results import NO_ID, SearchResult

__all__ = ["merge_topk"]


def merge_topk(parts: list[SearchResult], k: int) -> SearchResult:
    """The best `k` hits per query over `parts` (each ids (nq, k_i), distances (nq, k_i));
    documents, vectors and owners follow their hits when every part has them; seq is the
    largest of the parts' (each node counts its own writes). Raises ValueError on parts of
    different query counts."""
    if not parts:
        raise ValueError("expected at least one partial result, got none")
    if len(parts) == 1 and parts[0].ids.shape[1] <= k:
        return parts[0]
    nq = parts[0].ids.shape[0]
    if any(p.ids.shape[0] != nq for p in parts):
        raise ValueError("expected partial results of the same number of queries")
    ids = np.concatenate([np.asarray(p.ids, np.uint64) for p in parts], axis=1)
    dist = np.concatenate([np.asarray(p.distances, np.float32) for p in parts], axis=1)
    width = ids.shape[1]
    owners = (
        [[o for p in parts for o in p.owners[i]] for i in range(nq)]  # type: ignore[index]
        if all(p.owners is not None for p in parts)
        else None
    )
    docs = (
        [[d for p in parts for d in p.documents[i]] for i in range(nq)]  # type: ignore[index]
        if all(p.documents is not None for p in parts)
        else None
    )
    vecs = (
        np.concatenate([p.vectors for p in parts], axis=1)
        if all(p.vectors is not None for p in parts)
        else None
    )
    out_ids = np.full((nq, k), NO_ID, np.uint64)
    out_dist = np.full((nq, k), np.inf, np.float32)
    out_owners: list[list[str]] = []
    out_docs: list[list[object]] = []
    rows = []
    for i in range(nq):
        row_owners = owners[i] if owners is not None else [""] * width
        order = sorted(
            (j for j in range(width) if ids[i, j] != NO_ID),
            key=lambda j: (float(dist[i, j]), row_owners[j], int(ids[i, j])),
        )[:k]
        rows.append(order)
        n = len(order)
        out_ids[i, :n] = ids[i, order]
        out_dist[i, :n] = dist[i, order]
        out_owners.append([row_owners[j] for j in order] + [""] * (k - n))
        if docs is not None:
            out_docs.append([docs[i][j] for j in order] + [None] * (k - n))
    out_vecs = None
    if vecs is not None:
        out_vecs = np.zeros((nq, k, vecs.shape[2]), np.float32)
        for i, order in enumerate(rows):
            out_vecs[i, : len(order)] = vecs[i, order]
    return SearchResult(
        out_ids,
        out_dist,
        out_docs if docs is not None else None,  # type: ignore[arg-type]
        out_vecs,
        max(p.seq for p in parts),
        out_owners if owners is not None else None,
    )
