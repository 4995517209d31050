"""Vector storage: every vector is stored once, in a row ("slot") of a growable matrix.

Per slot: the vector (float32, d), its squared norm, the client's id, the owner tenant and the
leaf of the shared tree it is routed to. Freed slots are reused.
"""

from __future__ import annotations

import numpy as np

from curator.index.tree import SharedTree
from curator.index.write_kernels import place_one, sq_norms

__all__ = ["VectorStore"]


class VectorStore:
    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self.vectors = np.zeros((capacity, dim), np.float32)
        self.vnorm = np.zeros(capacity, np.float32)
        self.ext_id = np.zeros(capacity, np.uint64)
        self.owner = np.full(capacity, -1, np.int32)
        self.leaf = np.zeros(capacity, np.int32)
        self.live = np.zeros(capacity, bool)
        self.high = 0  # slots [0, high) have been used at least once
        self._free = np.empty(0, np.int32)
        self.count = 0

    def __len__(self) -> int:
        return self.count

    @property
    def nbytes(self) -> int:
        arrays = (
            self.vectors,
            self.vnorm,
            self.ext_id,
            self.owner,
            self.leaf,
            self.live,
            self._free,
        )
        return sum(a.nbytes for a in arrays)

    def _grow(self, need: int) -> None:
        cap = len(self.live)
        if need <= cap:
            return
        new = max(need, cap + cap // 2, 1024)
        for name in ("vectors", "vnorm", "ext_id", "owner", "leaf", "live"):
            old = getattr(self, name)
            arr = np.zeros((new, *old.shape[1:]), old.dtype)
            if name == "owner":
                arr[:] = -1
            arr[: self.high] = old[: self.high]
            setattr(self, name, arr)

    def allocate(self, n: int) -> np.ndarray:
        """n fresh slots (n,) int32: reused ones first, then new rows."""
        if n == 1:  # the one-vector write: no concatenation
            if len(self._free):
                slot, self._free = self._free[:1].copy(), self._free[1:]
                return slot
            self._grow(self.high + 1)
            self.high += 1
            return np.array([self.high - 1], np.int32)
        reuse = self._free[:n]
        self._free = self._free[len(reuse) :]
        fresh = n - len(reuse)
        self._grow(self.high + fresh)
        slots = np.concatenate([reuse, np.arange(self.high, self.high + fresh, dtype=np.int32)])
        self.high += fresh
        return slots

    def put(
        self, slots: np.ndarray, ids: np.ndarray, x: np.ndarray, owner: int, leaves: np.ndarray
    ) -> None:
        self.vnorm[slots] = sq_norms(x)
        self.vectors[slots] = x
        self.ext_id[slots] = ids
        self.owner[slots] = owner
        self.leaf[slots] = leaves
        self.live[slots] = True
        self.count += len(slots)

    def put_routed(
        self, slot: int, ext_id: int, x: np.ndarray, owner: int, tree: SharedTree
    ) -> int:
        """`put` of one vector x (d,) float32 into `slot`, routed through `tree` (whose radius
        statistics count it) in the same compiled call; returns its leaf."""
        leaf = place_one(
            x,
            tree.centroids,
            tree.cnorm,
            tree.child_start,
            tree.child_count,
            tree.anc,
            tree.rad_sum,
            tree.rad_cnt,
            self.vectors,
            self.vnorm,
            slot,
        )
        self.ext_id[slot] = ext_id
        self.owner[slot] = owner
        self.leaf[slot] = leaf
        self.live[slot] = True
        self.count += 1
        return int(leaf)

    def release(self, slots: np.ndarray) -> None:
        if len(slots) == 1:
            s = int(slots[0])
            self.live[s] = False
            self.owner[s] = -1
            self.vectors[s] = 0
            self.vnorm[s] = 0
            self.count -= 1
            self._free = np.append(self._free, np.int32(s))
            return
        self.live[slots] = False
        self.owner[slots] = -1
        self.vectors[slots] = 0
        self.vnorm[slots] = 0
        self.count -= len(slots)
        self._free = np.concatenate([self._free, np.asarray(slots, np.int32)])

    def reordered(self, order: np.ndarray) -> VectorStore:
        """A new, compact store whose row i is this store's row `order[i]` (live rows only).
        Ordering rows by tree leaf makes a shortlist's vectors near each other in memory."""
        out = VectorStore(self.dim, max(len(order), 1024))
        n = len(order)
        for name in ("vectors", "vnorm", "ext_id", "owner", "leaf", "live"):
            getattr(out, name)[:n] = getattr(self, name)[order]
        out.high = out.count = n
        return out

    def live_slots(self) -> np.ndarray:
        return np.flatnonzero(self.live[: self.high]).astype(np.int32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        h = self.high
        return {
            "vec_vectors": self.vectors[:h],
            "vec_ext_id": self.ext_id[:h],
            "vec_owner": self.owner[:h],
            "vec_leaf": self.leaf[:h],
            "vec_live": self.live[:h],
        }

    @classmethod
    def from_arrays(cls, dim: int, a: dict[str, np.ndarray]) -> VectorStore:
        h = len(a["vec_live"])
        s = cls(dim, max(h, 1024))
        s.high = h
        s.vectors[:h] = a["vec_vectors"]
        s.vnorm[:h] = sq_norms(s.vectors[:h])
        s.ext_id[:h] = a["vec_ext_id"]
        s.owner[:h] = a["vec_owner"]
        s.leaf[:h] = a["vec_leaf"]
        s.live[:h] = a["vec_live"].astype(bool)
        s.count = int(s.live[:h].sum())
        s._free = np.flatnonzero(~s.live[:h]).astype(np.int32)
        return s
