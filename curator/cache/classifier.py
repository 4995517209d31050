"""Category classifier: nearest category centroid among a tenant's labelled examples.

A tenant teaches it by storing labelled prompt embeddings (`add`); each category keeps the
running sum and count of its examples, so the centroid is their mean direction. A prompt
gets the category whose centroid is most similar (cosine), if that similarity reaches
`min_similarity`; otherwise the default category. Costs one (categories x dim) product.
"""

from __future__ import annotations

import struct
import threading

import numpy as np

__all__ = ["CentroidClassifier"]

_COUNT = struct.Struct(">Q")


class CentroidClassifier:
    """Per-tenant centroids. Thread-safe: one lock around every read and change, so a view
    built while examples are added can never outlive them (it is dropped under the same
    lock); classifying costs one small product, so the lock is held briefly."""

    def __init__(self, min_similarity: float = 0.3) -> None:
        self.min_similarity = min_similarity
        self._lock = threading.Lock()
        # tenant -> {category: (sum (dim,) float64, count)}
        self._sums: dict[str, dict[str, tuple[np.ndarray, int]]] = {}
        # tenant -> (categories, unit centroids (c, dim) float32), rebuilt after a change
        self._view: dict[str, tuple[list[str], np.ndarray]] = {}

    def add(self, tenant: str, category: str, x: np.ndarray) -> tuple[np.ndarray, int]:
        """Add unit vectors x (n, dim) as examples; returns the category's new (sum, count)."""
        with self._lock:
            return self._add(tenant, category, x)

    def _add(self, tenant: str, category: str, x: np.ndarray) -> tuple[np.ndarray, int]:
        cats = self._sums.setdefault(tenant, {})
        s, n = cats.get(category, (np.zeros(x.shape[1]), 0))
        if len(s) != x.shape[1]:  # another embedder: start the category over
            s, n = np.zeros(x.shape[1]), 0
        s, n = s + x.sum(0, dtype=np.float64), n + len(x)
        cats[category] = (s, n)
        self._view.pop(tenant, None)
        return s, n

    def load(self, tenant: str, category: str, s: np.ndarray, n: int) -> None:
        with self._lock:
            self._sums.setdefault(tenant, {})[category] = (s, n)
            self._view.pop(tenant, None)

    def forget(self, tenant: str, category: str | None = None) -> None:
        with self._lock:
            if category is None:
                self._sums.pop(tenant, None)
            else:
                self._sums.get(tenant, {}).pop(category, None)
            self._view.pop(tenant, None)

    def classify(self, tenant: str, q: np.ndarray) -> tuple[str, float] | None:
        """(category, similarity) for the unit vector q, or None if no centroid of this
        dimension is close enough."""
        with self._lock:
            view = self._view.get(tenant)
            if view is None:
                view = self._view[tenant] = self._build_view(tenant, len(q))
        names, centroids = view
        if not names or centroids.shape[1] != len(q):
            return None
        sims = centroids @ q
        best = int(np.argmax(sims))
        if sims[best] < self.min_similarity:
            return None
        return names[best], float(sims[best])

    def _build_view(self, tenant: str, dim: int) -> tuple[list[str], np.ndarray]:
        cats = [
            (c, s / max(np.linalg.norm(s), 1e-12))
            for c, (s, _) in sorted(self._sums.get(tenant, {}).items())
            if len(s) == dim
        ]
        centroids = np.array([v for _, v in cats], np.float32).reshape(len(cats), dim)
        return [c for c, _ in cats], centroids

    @staticmethod
    def encode(s: np.ndarray, n: int) -> bytes:
        return _COUNT.pack(n) + np.asarray(s, "<f8").tobytes()

    @staticmethod
    def decode(raw: bytes) -> tuple[np.ndarray, int]:
        return np.frombuffer(raw, "<f8", offset=_COUNT.size).copy(), _COUNT.unpack_from(raw)[0]
