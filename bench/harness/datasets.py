"""Dataset files in the harnesses' formats, with exact ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["exact_neighbors", "write_annb_hdf5"]


def exact_neighbors(
    train: np.ndarray, test: np.ndarray, metric: str, k: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k ids and distances by brute force: metric "euclidean" (L2) or "angular"
    (1 - cosine), ascending."""
    if metric == "angular":
        a = train / np.linalg.norm(train, axis=1, keepdims=True)
        b = test / np.linalg.norm(test, axis=1, keepdims=True)
        dist = 1.0 - b @ a.T
    elif metric == "euclidean":
        dist = np.sqrt(
            np.maximum(
                ((test**2).sum(1)[:, None] + (train**2).sum(1)[None] - 2 * test @ train.T), 0
            )
        )
    else:
        raise ValueError(f"expected metric angular or euclidean, got {metric!r}")
    ids = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return ids.astype(np.int32), np.take_along_axis(dist, ids, 1).astype(np.float32)


def write_annb_hdf5(path: str | Path, train: np.ndarray, test: np.ndarray, metric: str) -> None:
    """The ann-benchmarks layout: train, test, neighbors, distances and its attributes."""
    import h5py

    ids, dist = exact_neighbors(train, test, metric)
    with h5py.File(path, "w") as f:
        f.attrs["type"] = "dense"
        f.attrs["distance"] = metric
        f.attrs["dimension"] = train.shape[1]
        f.attrs["point_type"] = "float"
        f.create_dataset("train", data=train.astype(np.float32))
        f.create_dataset("test", data=test.astype(np.float32))
        f.create_dataset("neighbors", data=ids)
        f.create_dataset("distances", data=dist)
