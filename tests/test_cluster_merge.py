"""merge_topk: the answers of several nodes to one search, merged by distance."""

from __future__ import annotations

import numpy as np
import pytest

from curator.cluster.merge import merge_topk
from curator.results import NO_ID, SearchResult


def _part(ids: list[list[int]], dist: list[list[float]], owner: str) -> SearchResult:
    i = np.array(ids, np.uint64)
    owners = [[owner if x != NO_ID else "" for x in row] for row in i.tolist()]
    docs = [[f"{owner}:{x}" for x in row] for row in i.tolist()]
    return SearchResult(i, np.array(dist, np.float32), docs, None, 3, owners)


def test_merge_is_topk_by_distance_with_ties_by_owner_then_id() -> None:
    a = _part([[5, 1, NO_ID]], [[0.1, 0.3, np.inf]], "a")
    b = _part([[2, 7, 9]], [[0.1, 0.2, 0.5]], "b")
    for parts in ([a, b], [b, a]):  # the order nodes replied in does not matter
        m = merge_topk(parts, 4)
        assert m.ids.tolist() == [[5, 2, 7, 1]]
        assert m.owners == [["a", "b", "b", "a"]]
        assert m.documents == [["a:5", "b:2", "b:7", "a:1"]]
        np.testing.assert_allclose(m.distances, [[0.1, 0.1, 0.2, 0.3]])
        assert m.seq == 3


def test_merge_pads_when_nodes_have_fewer_than_k() -> None:
    a = _part([[1], [NO_ID]], [[0.5], [np.inf]], "a")
    b = _part([[NO_ID], [4]], [[np.inf], [0.2]], "b")
    m = merge_topk([a, b], 2)
    assert m.ids.tolist() == [[1, NO_ID], [4, NO_ID]]
    assert m.found.tolist() == [[True, False], [True, False]]
    assert m.owners == [["a", ""], ["b", ""]]
    assert np.isinf(m.distances[:, 1]).all()


def test_merge_refuses_nothing_or_mismatched_queries() -> None:
    with pytest.raises(ValueError, match="at least one"):
        merge_topk([], 3)
    with pytest.raises(ValueError, match="same number of queries"):
        merge_topk([_part([[1]], [[0.1]], "a"), _part([[1], [2]], [[0.1], [0.2]], "b")], 3)
