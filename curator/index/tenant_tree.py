"""A tenant's clustering tree, encoded as a sub-tree of the shared tree.

For one tenant T, every node N of the shared tree is in one of three states:
  - shortlist: N holds T's shortlist, the ids (slots) of *all* T's vectors under N;
  - expanded:  T has vectors under N, held by shortlists further down;
  - absent:    T has nothing under N.
Invariants (checked by `check`): on every root-to-leaf path at most one shortlist, below a
prefix of expanded nodes; a shortlist at an internal node holds at most `max_sl_size` slots
(leaf shortlists are unbounded, a leaf cannot split); no expanded node whose children could be
merged back (all children shortlist/absent and their total <= `max_sl_size`).

The membership is stored per tenant (node -> shortlist, set of expanded nodes) rather than as a
Bloom filter per node: it is exact (no false positives to walk into), and it holds one entry per
(tenant, sub-tree node) where a Bloom filter holds ~10 bits per tenant per node of the whole
tree. For search, `view()` flattens the sub-tree into arrays (cached until the next change).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numba
import numpy as np

from curator.errors import Internal
from curator.index.tree import SharedTree
from curator.index.write_kernels import drop_slots, patch_view_one

if TYPE_CHECKING:
    from curator.index.tenant_graph import Journal

__all__ = ["TenantTree", "TenantView"]


@dataclass(frozen=True)
class TenantView:
    """The tenant's sub-tree as arrays; index 0 is the shared root.

    node (m,) int32: shared-tree node of each sub-tree node (sub-tree parents first).
    child_ptr (m+1,) int64, child (m-1,) int32: sub-tree children, as indices into `node`.
    sl_ptr (m+1,) int64, slots (n,) int32: the shortlist of each node (empty if expanded).
    """

    node: np.ndarray
    child_ptr: np.ndarray
    child: np.ndarray
    sl_ptr: np.ndarray
    slots: np.ndarray

    @property
    def nbytes(self) -> int:
        return sum(
            a.nbytes for a in (self.node, self.child_ptr, self.child, self.sl_ptr, self.slots)
        )


class TenantTree:
    """Shortlists and expanded nodes of one tenant; slots are rows of the vector store."""

    __slots__ = ("__weakref__", "_exp", "_vp", "expanded", "journal", "shortlists", "size")

    def __init__(self) -> None:
        self.shortlists: dict[int, np.ndarray] = {}
        self.expanded: set[int] = set()
        self.size = 0
        # The cached search view and the edits made since it was built (applied by the next
        # view(): a write appends one, a search pays for them once), in one tuple so that
        # concurrent searches read a consistent pair.
        self._vp: tuple[TenantView | None, tuple[_Edit, ...]] = (None, ())
        self._exp: np.ndarray | None = None  # sorted copy of `expanded`, for locate()
        self.journal: Journal | None = None  # writes since its links' base (tenant_graph.py)

    # -- reads ---------------------------------------------------------------------------
    def slots(self) -> np.ndarray:
        """All slots of the tenant (n,) int32, unordered."""
        if not self.shortlists:
            return np.empty(0, np.int32)
        return np.concatenate(list(self.shortlists.values()))

    def locate(self, tree: SharedTree, leaves: np.ndarray) -> np.ndarray:
        """For vectors in the given leaves: the first non-expanded node on each root path,
        i.e. where the tenant's shortlist for that vector is (or would be created)."""
        out = np.full(len(leaves), -1, np.int32)
        todo = np.arange(len(leaves))
        if self._exp is None:
            self._exp = np.sort(np.fromiter(self.expanded, np.int32, len(self.expanded)))
        exp = self._exp
        for j in range(tree.max_depth + 1):
            nodes = tree.anc[leaves[todo], j]
            if len(exp):
                pos = np.minimum(np.searchsorted(exp, nodes), len(exp) - 1)
                here = exp[pos] != nodes
            else:
                here = np.ones(len(todo), bool)
            out[todo[here]] = nodes[here]
            todo = todo[~here]
            if not len(todo):
                break
        return out

    def _locate_one(self, tree: SharedTree, leaf: int) -> int:
        """`locate` of one vector's leaf: membership tests on the expanded set."""
        for a in tree.anc[leaf].tolist():  # (anc has max_depth + 1 columns)
            if a not in self.expanded:
                return int(a)
        raise Internal(f"expected a non-expanded node above leaf {leaf}")

    @property
    def _view(self) -> TenantView | None:
        """The last view built or patched (edits since may be pending)."""
        return self._vp[0]

    def view(self, tree: SharedTree) -> TenantView:
        v, edits = self._vp
        if v is not None and not edits:
            return v
        for node, slots, sign in edits:
            if v is None:
                break
            v = _edited(v, node, slots, sign)
        if v is None:  # none yet, or an edit was not where the view said: rebuild
            v = self._build_view(tree)
        self._vp = (v, ())
        return v

    def _build_view(self, tree: SharedTree) -> TenantView:
        # One pass in dict order (keys and values agree), then one compiled gather: a view is
        # rebuilt after every change, so it must cost O(n) in C, not a numpy call per
        # shortlist (a 60k-vector tenant has ~1,400 shortlists: 12 ms in Python).
        sl_nodes = np.fromiter(self.shortlists, np.int32, len(self.shortlists))
        parts = list(self.shortlists.values())
        nodes = np.concatenate([np.fromiter(self.expanded, np.int32, len(self.expanded)), sl_nodes])
        # Shared nodes are numbered breadth-first, so sorting puts parents before children.
        order = np.argsort(nodes, kind="stable")
        nodes = nodes[order]
        m = len(nodes)
        src_len = np.fromiter(map(len, parts), np.int64, len(parts))
        src_ptr = np.zeros(len(parts) + 1, np.int64)
        np.cumsum(src_len, out=src_ptr[1:])
        lens = np.zeros(m, np.int64)
        pos_sl = np.searchsorted(nodes, sl_nodes)
        lens[pos_sl] = src_len
        sl_ptr = np.zeros(m + 1, np.int64)
        np.cumsum(lens, out=sl_ptr[1:])
        src = np.concatenate(parts) if parts else np.empty(0, np.int32)
        slots = np.empty(int(sl_ptr[-1]), np.int32)
        _gather_sorted(src.astype(np.int32, copy=False), src_ptr, sl_ptr[pos_sl], slots)
        # Children: every non-root sub-tree node grouped under its parent's position.
        if m > 1:
            par_pos = np.searchsorted(nodes, tree.parent[nodes[1:]])
            child_order = np.argsort(par_pos, kind="stable")
            child = (child_order + 1).astype(np.int32)
            counts = np.bincount(par_pos, minlength=m)
        else:
            child = np.empty(0, np.int32)
            counts = np.zeros(m, np.int64)
        child_ptr = np.zeros(m + 1, np.int64)
        np.cumsum(counts, out=child_ptr[1:])
        return TenantView(nodes, child_ptr, child, sl_ptr, slots)

    # -- writes --------------------------------------------------------------------------
    def add(
        self, tree: SharedTree, slot_leaf: np.ndarray, slots: np.ndarray, max_sl_size: int
    ) -> None:
        """Give the tenant `slots` (n,) int32, none of which it has yet (grant rule)."""
        if not len(slots):
            return
        slots = np.asarray(slots, np.int32)
        self._note(slots, +1)
        if len(slots) == 1:  # the write path's common case: no sorting, no locate arrays
            s = int(slots[0])
            node = self._locate_one(tree, int(slot_leaf[s]))
            old = self.shortlists.get(node)
            merged = slots if old is None else np.concatenate((old, slots))
            n_exp = len(self.expanded)
            self._place(tree, slot_leaf, node, merged, max_sl_size)
            self.size += 1
            if old is not None and len(self.expanded) == n_exp:  # same shape: patch the view
                self._patch_one(node, slots, +1)
            else:
                self._changed()
            return
        dest = self.locate(tree, slot_leaf[slots])
        order = np.argsort(dest, kind="stable")
        for node, group in _runs(dest[order], slots[order]):
            old = self.shortlists.get(node)
            merged = group if old is None else np.concatenate([old, group])
            self._place(tree, slot_leaf, node, merged, max_sl_size)
        self.size += len(slots)
        self._changed()

    def _place(
        self,
        tree: SharedTree,
        slot_leaf: np.ndarray,
        node: int,
        slots: np.ndarray,
        max_sl_size: int,
    ) -> None:
        """Make `slots` the shortlist at `node`, splitting it down while it is too large."""
        if len(slots) <= max_sl_size or tree.child_count[node] == 0:
            self.shortlists[node] = slots
            return
        self.shortlists.pop(node, None)
        self.expanded.add(node)
        child = tree.anc[slot_leaf[slots], tree.depth[node] + 1]
        order = np.argsort(child, kind="stable")
        for c, group in _runs(child[order], slots[order]):
            self._place(tree, slot_leaf, c, group, max_sl_size)

    def remove(
        self, tree: SharedTree, slot_leaf: np.ndarray, slots: np.ndarray, max_sl_size: int
    ) -> None:
        """Take `slots` away (all of them must belong to the tenant), merging shortlists
        back up where the sub-tree became small enough (revoke rule)."""
        if not len(slots):
            return
        slots = np.asarray(slots, np.int32)
        self._note(slots, -1)
        if len(slots) == 1:
            self._remove_one(tree, slot_leaf, slots, max_sl_size)
            return
        slots = np.sort(slots)  # then each node's group is sorted too (a stable sort by node)
        where = self.locate(tree, slot_leaf[slots])
        order = np.argsort(where, kind="stable")
        touched = []
        groups = []
        shape = (len(self.shortlists), len(self.expanded))
        for node, gone in _runs(where[order], slots[order]):
            sl = self.shortlists.get(node)
            found = 0
            if sl is not None:
                keep, found = drop_slots(sl, gone)
            if found != len(gone):
                raise Internal(f"expected slots {gone[:5]} in the shortlist at node {node}")
            if len(keep):
                self.shortlists[node] = keep
            else:
                del self.shortlists[node]
            touched.append(node)
            groups.append((node, gone))
        self.size -= len(slots)
        parents = set()
        for node in touched:  # once per parent: the merge rule looks at all its children
            p = int(tree.parent[node])
            if p not in parents:
                parents.add(p)
                self._collapse_above(tree, node, max_sl_size)
        if shape == (len(self.shortlists), len(self.expanded)):  # same shape: patch the view
            self._patch_view(groups, -1)
        else:
            self._changed()

    def _note(self, slots: np.ndarray, sign: int) -> None:
        """Record a write in the journal of the tenant's links (dropped once too large)."""
        j = self.journal
        if j is not None and not j.note(slots, sign):
            self.journal = None

    def _remove_one(
        self, tree: SharedTree, slot_leaf: np.ndarray, slots: np.ndarray, max_sl_size: int
    ) -> None:
        """`remove` of one slot (1,) int32: its shortlist by set membership, then cut out in
        one compiled call."""
        s = int(slots[0])
        node = self._locate_one(tree, int(slot_leaf[s]))
        sl = self.shortlists.get(node)
        if sl is None:
            raise Internal(f"expected slot {s} in the shortlist at node {node}")
        keep, found = drop_slots(sl, slots)
        if found != 1:
            raise Internal(f"expected slot {s} in the shortlist at node {node}")
        shape = (len(self.shortlists), len(self.expanded))
        if len(keep):
            self.shortlists[node] = keep
        else:
            del self.shortlists[node]
        self.size -= 1
        self._collapse_above(tree, node, max_sl_size)
        if shape == (len(self.shortlists), len(self.expanded)):  # same shape: patch the view
            self._patch_one(node, slots, -1)
        else:
            self._changed()

    def _patch_one(self, node: int, slots: np.ndarray, sign: int) -> None:
        """`_patch_view` of one slot (1,) int32, without building a list of groups."""
        v, edits = self._vp
        if v is None:
            return
        if len(edits) >= _MAX_EDITS:
            self._changed()
            return
        self._vp = (v, (*edits, (node, slots, sign)))

    def _changed(self) -> None:
        self._vp = (None, ())
        self._exp = None

    def _patch_view(self, groups: list[tuple[int, np.ndarray]], sign: int) -> None:
        """Slots added to (sign +1) or removed from (-1) existing shortlists, the sub-tree's
        shape unchanged: the cached view is edited (O(n) memmoves, at the next view())
        instead of rebuilt (a rebuild regroups every shortlist)."""
        v, edits = self._vp
        if v is None:
            return
        if len(edits) + len(groups) > _MAX_EDITS:  # many writes, no search: rebuild once
            self._changed()
            return
        self._vp = (v, edits + tuple((node, g, sign) for node, g in groups))

    def _collapse_above(self, tree: SharedTree, node: int, max_sl_size: int) -> None:
        """Merge the children of `node`'s ancestors into them while the merge rule allows."""
        p = int(tree.parent[node])
        while p >= 0 and p in self.expanded:
            parts = []
            total = 0
            for c in tree.children(p):
                if c in self.expanded:
                    return
                sl = self.shortlists.get(c)
                if sl is not None:
                    parts.append(c)
                    total += len(sl)
            if total > max_sl_size:
                return
            self.expanded.discard(p)
            if parts:
                self.shortlists[p] = np.concatenate([self.shortlists.pop(c) for c in parts])
            p = int(tree.parent[p])

    # -- checks and sizes ------------------------------------------------------------------
    def check(self, tree: SharedTree, slot_leaf: np.ndarray, max_sl_size: int) -> None:
        """Raise Internal if an invariant of the module docstring does not hold."""
        total = 0
        for node, sl in self.shortlists.items():
            total += len(sl)
            if node in self.expanded:
                raise Internal(f"node {node} is both expanded and a shortlist")
            if tree.child_count[node] > 0 and len(sl) > max_sl_size:
                raise Internal(f"shortlist at internal node {node} has {len(sl)} > {max_sl_size}")
            if not len(sl):
                raise Internal(f"empty shortlist at node {node}")
            d = tree.depth[node]
            if (tree.anc[slot_leaf[sl], d] != node).any():
                raise Internal(f"shortlist at node {node} holds a vector outside its sub-tree")
            for a in tree.anc[node, :d].tolist():
                if a not in self.expanded:
                    raise Internal(f"ancestor {a} of shortlist node {node} is not expanded")
        if total != self.size:
            raise Internal(f"expected {self.size} slots in shortlists, found {total}")
        for node in self.expanded:
            kids = list(tree.children(node))
            if not any(c in self.expanded or c in self.shortlists for c in kids):
                raise Internal(f"expanded node {node} has nothing below it")
            if not any(c in self.expanded for c in kids):
                if sum(len(self.shortlists.get(c, ())) for c in kids) <= max_sl_size:
                    raise Internal(f"children of node {node} should have been merged")

    @property
    def nbytes(self) -> int:
        """Bytes of the shortlists and membership entries (arrays, plus ~100 bytes of
        dictionary and array header per shortlist / set entry)."""
        arrays = sum(a.nbytes + 112 for a in self.shortlists.values())
        entries = 64 * (len(self.shortlists) + len(self.expanded))
        view = self._view.nbytes if self._view is not None else 0
        return arrays + entries + view + 200


#: (shared node, slots, sign): slots added to (+1) or removed from (-1) its shortlist.
_Edit = tuple[int, np.ndarray, int]

#: Edits kept pending on a view; past this many, the next search rebuilds it instead.
_MAX_EDITS = 64


def _edited(v: TenantView, node: int, group: np.ndarray, sign: int) -> TenantView | None:
    """`v` with `group` (n,) int32 added to (sign +1) or removed from (-1) the shortlist of
    `node`, as a new view (a search may hold `v`); None if that is not where `v` says."""
    if len(group) == 1:  # the one-id write: one compiled call
        ok, sl_ptr, slots = patch_view_one(v.node, v.sl_ptr, v.slots, node, int(group[0]), sign)
        return TenantView(v.node, v.child_ptr, v.child, sl_ptr, slots) if ok else None
    p = int(np.searchsorted(v.node, node))
    if p >= len(v.node) or v.node[p] != node:
        return None
    a, b = int(v.sl_ptr[p]), int(v.sl_ptr[p + 1])
    g = np.sort(group)
    pos = a + np.searchsorted(v.slots[a:b], g)
    if sign < 0:
        if not np.array_equal(v.slots[np.minimum(pos, len(v.slots) - 1)], g):
            return None
        slots = np.delete(v.slots, pos)
    else:
        slots = np.insert(v.slots, pos, g)
    sl_ptr = v.sl_ptr.copy()
    sl_ptr[p + 1 :] += sign * len(g)
    return TenantView(v.node, v.child_ptr, v.child, sl_ptr, slots.astype(np.int32))


def _runs(keys: np.ndarray, values: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(key, values[a:b]) for each run a:b of equal `keys` (sorted (n,), n >= 1), as slices
    (np.split costs ~1 µs a piece)."""
    starts = [0, *(np.flatnonzero(keys[1:] != keys[:-1]) + 1).tolist()]
    ends = [*starts[1:], len(keys)]
    for key, a, b in zip(keys[starts].tolist(), starts, ends, strict=True):
        yield key, values[a:b]


@numba.njit(cache=True, nogil=True)
def _gather_sorted(src, src_ptr, dst_start, out):  # pragma: no cover - compiled
    """Copy segment i of `src` (src_ptr[i]:src_ptr[i+1]) sorted to out[dst_start[i]:]:
    ascending slots walk memory forwards, which the hardware prefetcher follows."""
    for i in range(src_ptr.shape[0] - 1):
        a, b = src_ptr[i], src_ptr[i + 1]
        d = dst_start[i]
        ordered = True
        for j in range(a + 1, b):  # new vectors take new (higher) slots: mostly in order
            if src[j] < src[j - 1]:
                ordered = False
                break
        if ordered:
            out[d : d + b - a] = src[a:b]
        else:
            out[d : d + b - a] = np.sort(src[a:b])
