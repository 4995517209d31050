"""qqp-dev (../shared/data/qqp-dev): questions, labelled pairs, groups, answer ids, the
train/validation split by group, and MiniLM embeddings cached under bench/out/.

Groups are the connected components of the labelled-pair graph; the split assigns whole groups
(seeded) so that no labelled pair crosses it. Answer id: component of the duplicate pairs only.

    python -m bench.qqp            # embed every question once (cached), print the split sizes
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import logging
import time
from pathlib import Path

import numpy as np

__all__ = ["QQP", "embeddings", "hashed", "kmeans", "load", "neighbours"]

log = logging.getLogger(__name__)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "qqp-dev"
OUT = Path(__file__).resolve().parent / "out"


def _find(parent: np.ndarray, i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression
        parent[i], i = root, parent[i]
    return root


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    parent = np.arange(n)
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        rx, ry = _find(parent, x), _find(parent, y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
    return np.array([_find(parent, i) for i in range(n)])


@dataclasses.dataclass
class QQP:
    """texts (n,); pairs a, b (m,) int64 and dup (m,) bool; group (n,): labelled-pair
    component; answer (n,): duplicate component; train (n,) bool: the question's group is in
    the train split (the rest is validation)."""

    texts: list[str]
    a: np.ndarray
    b: np.ndarray
    dup: np.ndarray
    group: np.ndarray
    answer: np.ndarray
    train: np.ndarray

    def pair_split(self) -> np.ndarray:
        """(m,) bool: the pair lies in the train split (pairs never cross the split)."""
        return self.train[self.a]


def load(data: Path = DATA, seed: int = 0, train_share: float = 0.5) -> QQP:
    with gzip.open(data / "questions.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    texts = [""] * len(rows)
    for r in rows:
        texts[r["id"]] = r["text"]
    with gzip.open(data / "pairs.jsonl.gz", "rt") as f:
        pairs = [json.loads(line) for line in f]
    a = np.array([p["a"] for p in pairs], np.int64)
    b = np.array([p["b"] for p in pairs], np.int64)
    dup = np.array([p["duplicate"] for p in pairs], bool)
    group = _components(len(texts), a, b)
    answer = _components(len(texts), a[dup], b[dup])
    groups = np.unique(group)
    rng = np.random.default_rng(seed)
    train_groups = rng.permutation(groups)[: int(len(groups) * train_share)]
    train = np.isin(group, train_groups)
    return QQP(texts, a, b, dup, group, answer, train)


def hashed(texts: list[str], dim: int = 384) -> np.ndarray:
    """(n, dim) unit bag-of-words vectors (hashed lower-case words): a stand-in embedder for
    tests and dry runs without the embed extra; not for reported numbers."""
    import zlib

    x = np.zeros((len(texts), dim), np.float32)
    for i, t in enumerate(texts):
        for w in t.lower().split():
            x[i, zlib.crc32(w.encode()) % dim] += 1.0
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def embeddings(q: QQP, batch: int = 64, fake: bool = False) -> np.ndarray:
    """(n, 384) float32 unit MiniLM embeddings of every question, cached in bench/out/
    (fake: hashed bag-of-words vectors instead, see `hashed`)."""
    if fake:
        return hashed(q.texts)
    path = OUT / f"qqp-dev-minilm-{len(q.texts)}.npy"
    if path.exists():
        return np.load(path)
    from curator.cache.embedder import TextEmbedder

    emb = TextEmbedder(batch_size=batch)
    t0 = time.perf_counter()
    parts = []
    for start in range(0, len(q.texts), 4096):
        parts.append(emb.embed(q.texts[start : start + 4096]))
        log.info("embedded %d / %d (%.0f s)", start + len(parts[-1]), len(q.texts),
                 time.perf_counter() - t0)  # fmt: skip
    x = np.concatenate(parts)
    OUT.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, x)
    tmp.rename(path)
    return x


def kmeans(x: np.ndarray, k: int, seed: int, iters: int = 20) -> np.ndarray:
    """(k, dim) unit centroids of the unit rows of x."""
    rng = np.random.default_rng(seed)
    c = x[rng.choice(len(x), k, replace=False)]
    for _ in range(iters):
        lab = np.argmax(x @ c.T, 1)
        for j in range(k):
            if (lab == j).any():
                m = x[lab == j].sum(0)
                c[j] = m / np.linalg.norm(m)
    return c


def neighbours(x: np.ndarray, k: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For each row i: the k most similar rows j < i (positions (n, k), -1 padded; cosines
    (n, k), -inf padded), most similar first."""
    n = len(x)
    pos = np.full((n, k), -1, np.int64)
    sim = np.full((n, k), -np.inf, np.float32)
    for s in range(0, n, block):
        e = min(n, s + block)
        if e <= 1:
            continue
        m = x[s:e] @ x[:e].T
        rows = np.arange(s, e)[:, None]
        m[np.arange(e)[None, :] >= rows] = -np.inf
        kk = min(k, e)
        top = np.argpartition(-m, kk - 1, axis=1)[:, :kk]
        v = np.take_along_axis(m, top, 1)
        order = np.argsort(-v, axis=1, kind="stable")
        pos[s:e, :kk] = np.take_along_axis(top, order, 1)
        sim[s:e, :kk] = np.take_along_axis(v, order, 1)
    pos[~np.isfinite(sim)] = -1
    return pos, sim


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    q = load(seed=args.seed)
    split = q.pair_split()
    print(
        f"{len(q.texts)} questions ({q.train.sum()} train), {len(q.a)} pairs "
        f"({split.sum()} train, {q.dup[split].sum()} / {q.dup[~split].sum()} duplicates)"
    )
    x = embeddings(q)
    print(f"embeddings {x.shape}")


if __name__ == "__main__":
    main()
