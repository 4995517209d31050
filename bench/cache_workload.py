"""Category-aware vs uniform semantic caching on a workload built from real text.

    python -m bench.cache_workload [--requests 30000] [--pool 1000] [--seed 7]

Workload (all seeded): the Debian package descriptions of ../shared/data/debian, grouped by
section into five categories with the traits the category-aware design is about:
  code    (devel, libdevel, python, perl, rust...)  Zipf 1.2 repetition, answers never stale,
          dense (families of near-identical -dev/-doc packages);
  docs    (doc, text, tex, localization)            Zipf 1.0, never stale;
  chat    (games, x11, sound, utils, misc...)       uniform repetition (the long tail);
  news    (net, web, mail, admin, httpd, comm)      Zipf 1.0, each answer changes every 3 h;
  finance (science, math, gnu-r, database...)       Zipf 1.1, answers change every 30 min,
          precision-critical.
A request picks a category (traffic shares below), an item of its pool (`--pool` items per
category, less those described like another: `distinct_items`) by the category's repetition
law, and one of six prompt variants of the item: the canonical description (30%), or one of
five rewordings (question forms, the long text alone,
25% word dropout, the terse "name + summary"), embedded with all-MiniLM-L6-v2 (the embed
extra; the canonical text's embedding is the dataset's own). The ground truth of every
request is its item and the item's current answer version, so a hit is correct, false
(another item's answer) or stale (the item's answer has changed since it was cached).

Simulated time, one tenant, one downstream model with a capacity of `--capacity` calls/s;
requests arrive at `--rate`/s, three times as fast in the middle third (a burst the model
cannot absorb). The cache measures the model's load from its own misses. On a miss the
"model" answers and the answer is stored. The same stream runs through each configuration:
  category-aware          the built-in category policies, load-adaptive;
  category-aware, static  the same thresholds and TTLs, load adaptation off;
  uniform 0.92 / 1 d      one threshold and TTL for every category (the general default);
  uniform 0.85 / 1 d      a looser uniform threshold.
Printed: per configuration and category, hit rate, false-hit rate (false hits / hits), stale
rate, model calls; model calls and false hits during the burst; and a threshold sweep per
category (nearest other-prompt neighbour: share above the threshold and its precision).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from curator.cache import CacheConfig
from curator.config import DatabaseConfig
from curator.database import Database

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "debian"
OUT = Path(__file__).resolve().parent / "out"

SECTIONS = {
    "code": "devel libdevel python perl ruby java javascript golang rust haskell ocaml lisp php "
    "interpreters vcs debug",
    "docs": "doc text tex localization",
    "chat": "games x11 sound misc graphics fonts gnome kde xfce video editors utils",
    "news": "net web mail comm httpd admin",
    "finance": "science math gnu-r electronics hamradio database",
}
TRAFFIC = {"code": 0.35, "chat": 0.25, "docs": 0.15, "news": 0.15, "finance": 0.10}
ZIPF = {"code": 1.2, "docs": 1.0, "chat": 0.0, "news": 1.0, "finance": 1.1}  # 0 = uniform
STALE_S = {"code": 0.0, "docs": 0.0, "chat": 0.0, "news": 3 * 3600.0, "finance": 1800.0}
P_CANONICAL = 0.3
MODEL = "llm"
DAY = 86400.0


@dataclass
class Item:
    row: int
    package: str
    short: str
    long: str
    text: str


def load_items() -> dict[str, list[Item]]:
    by_section = {s: c for c, ss in SECTIONS.items() for s in ss.split()}
    out: dict[str, list[Item]] = {c: [] for c in SECTIONS}
    with gzip.open(DATA / "base.jsonl.gz", "rt") as f:
        for line in f:
            d = json.loads(line)
            cat = by_section.get(d["section"])
            if cat is None:
                continue
            head, _, long = d["text"].partition(". ")
            short = head.split(": ", 1)[-1]
            out[cat].append(Item(d["id"], d["package"], short, long, d["text"]))
    return out


def variants(item: Item, rng: np.random.Generator) -> list[str]:
    """The canonical prompt and five rewordings of one item."""
    short = item.short.rstrip(".")
    low = short[:1].lower() + short[1:]
    words = item.text.split()
    keep = [w for w in words if rng.random() > 0.25] or words
    first = re.split(r"(?<=\.)\s", item.long, maxsplit=1)[0] if item.long else short
    return [
        item.text,
        f"What is a good {low}?",
        f"I am looking for software: {low}. Any suggestions?",
        first,
        " ".join(keep),
        f"{item.package} {low}",
    ]


def embed_all(texts: list[str]) -> np.ndarray:
    """Embeddings of `texts`, cached in bench/out/ by a digest of the list."""
    digest = hashlib.blake2b("\n".join(texts).encode(), digest_size=8).hexdigest()
    path = OUT / f"cache_workload_emb_{digest}.npy"
    if path.exists():
        return np.load(path)
    from curator.cache.embedder import TextEmbedder

    emb = TextEmbedder(batch_size=64)
    parts = [
        emb.embed(texts[s : s + 512])
        for s in tqdm(range(0, len(texts), 512), desc="embedding", unit="batch")
    ]
    x = np.concatenate(parts)
    OUT.mkdir(exist_ok=True)
    np.save(path, x)
    return x


@dataclass
class Workload:
    cats: list[str]
    prompts: list[list[str]]  # per pool item (global index), its variant texts
    emb: list[np.ndarray]  # per pool item, (6, 384)
    item_cat: np.ndarray  # pool index -> category index
    phase: np.ndarray  # pool index -> staleness phase (s)
    requests: list[tuple[float, int, int]] = field(default_factory=list)  # (t, item, variant)
    burst: tuple[float, float] = (0.0, 0.0)


def build(pool: int, n_requests: int, rate: float, seed: int) -> Workload:
    rng = np.random.default_rng(seed)
    items = load_items()
    base = np.load(DATA / "base.npy", mmap_mode="r")
    cats = list(SECTIONS)
    chosen: list[Item] = []
    item_cat = []
    for ci, c in enumerate(cats):
        pick = rng.choice(len(items[c]), min(pool, len(items[c])), replace=False)
        chosen += [items[c][i] for i in pick]
        item_cat += [ci] * len(pick)
    prompts = [variants(it, rng) for it in chosen]
    texts = [p for ps in prompts for p in ps[1:]]
    rewordings = embed_all(texts).reshape(len(chosen), 5, -1)
    canonical = np.asarray(base[[it.row for it in chosen]], np.float32)[:, None, :]
    emb = list(np.concatenate([canonical, rewordings], axis=1))
    w = Workload(cats, prompts, emb, np.array(item_cat), rng.uniform(0, 3600, len(chosen)))
    keep = distinct_items(w)
    by_cat = [np.flatnonzero((w.item_cat == ci) & keep) for ci in range(len(cats))]
    laws = []
    for ci, c in enumerate(cats):
        n = len(by_cat[ci])
        p = np.ones(n) if ZIPF[c] == 0 else 1.0 / np.arange(1, n + 1) ** ZIPF[c]
        laws.append(p / p.sum())
    share = np.array([TRAFFIC[c] for c in cats])
    t = 0.0
    third = n_requests // 3
    for r in range(n_requests):
        burst = third <= r < 2 * third
        t += rng.exponential(1.0 / (rate * (3.0 if burst else 1.0)))
        if r == third:
            w.burst = (t, 0.0)
        if r == 2 * third:
            w.burst = (w.burst[0], t)
        ci = int(rng.choice(len(cats), p=share))
        item = int(by_cat[ci][rng.choice(len(by_cat[ci]), p=laws[ci])])
        v = 0 if rng.random() < P_CANONICAL else int(rng.integers(1, 6))
        w.requests.append((t, item, v))
    return w


def distinct_items(w: Workload, same: float = 0.95) -> np.ndarray:
    """Mask of the pool items that requests may ask about: an item is left out when one of
    its prompts is word for word a prompt of another kept item, or its canonical description
    is at cosine >= `same` to another kept item's (two packages described alike are one
    question; counting an answer to either as false would blame the cache for the data)."""
    keep = np.zeros(len(w.prompts), bool)
    seen: set[str] = set()
    kept_by_cat: dict[int, list[int]] = {}
    for i, ps in enumerate(w.prompts):
        texts = {p.casefold() for p in ps}
        ci = int(w.item_cat[i])
        others = kept_by_cat.setdefault(ci, [])
        if texts & seen:
            continue
        if others and float((np.stack([w.emb[j][0] for j in others]) @ w.emb[i][0]).max()) >= same:
            continue
        keep[i] = True
        seen |= texts
        others.append(i)
    return keep


CONFIGS: dict[str, dict[str, Any] | None] = {
    "category-aware": None,
    "category-aware, static": {"alpha": 0.0, "beta": 0.0},
    "uniform 0.92 / 1 d": {
        "threshold": 0.92, "min_threshold": 0.92, "alpha": 0.0, "ttl_s": DAY,
        "max_ttl_s": DAY, "beta": 0.0,
    },
    "uniform 0.85 / 1 d": {
        "threshold": 0.85, "min_threshold": 0.85, "alpha": 0.0, "ttl_s": DAY,
        "max_ttl_s": DAY, "beta": 0.0,
    },
}  # fmt: skip


def run(w: Workload, name: str, overrides: dict[str, Any] | None, capacity: float) -> dict:
    root = Path(tempfile.mkdtemp(prefix="curator-cache-wl-"))
    now = [0.0]
    db = Database(
        DatabaseConfig(data_dir=str(root), sync=False),
        background=False,
        cache_config=CacheConfig(sweep_every_s=0, load_window_s=30.0),
        clock=lambda: now[0],
    )
    try:
        db.create_tenant("acme")
        db.cache_set_capacity(MODEL, capacity)
        for c in w.cats:
            if overrides:
                db.cache_set_policy(c, tenant=None, **overrides)
        n_cat = len(w.cats)
        stats = np.zeros((2, n_cat, 5), np.int64)  # [all|burst][cat][req, hit, false, stale, call]
        t0 = time.perf_counter()
        for t, item, v in tqdm(w.requests, desc=name, unit="req", leave=False):
            now[0] = t
            ci = int(w.item_cat[item])
            cat = w.cats[ci]
            period = STALE_S[cat]
            version = int((t + w.phase[item]) // period) if period else 0
            r = db.cache_lookup(
                w.prompts[item][v], w.emb[item][v], tenant="acme", model=MODEL, category=cat
            )
            rows = [0] + ([1] if w.burst[0] <= t < w.burst[1] else [])
            row: list[int]
            if r.hit:
                assert r.response is not None
                got_item, got_version = map(int, r.response.decode().split(":"))
                row = [1, 1, got_item != item, got_item == item and got_version != version, 0]
            else:
                row = [1, 0, 0, 0, 1]
                db.cache_store(
                    w.prompts[item][v],
                    w.emb[item][v],
                    f"{item}:{version}",
                    tenant="acme",
                    model=MODEL,
                    category=cat,
                    latency_s=1.0,
                )
            for k in rows:
                stats[k, ci] += row
        seconds = time.perf_counter() - t0
    finally:
        db.close()
        shutil.rmtree(root, ignore_errors=True)
    return {"name": name, "stats": stats, "seconds": seconds}


def sweep(w: Workload, thresholds: list[float]) -> dict[str, list[tuple[float, float]]]:
    """Per category and threshold: share of prompts whose nearest other-prompt neighbour in
    the category is at or above the threshold, and the precision of those (same item)."""
    out = {}
    keep = distinct_items(w)
    for ci, c in enumerate(w.cats):
        items = np.flatnonzero((w.item_cat == ci) & keep)
        x = np.concatenate([w.emb[i] for i in items])
        owner = np.repeat(items, 6)
        sims = x @ x.T
        np.fill_diagonal(sims, -1)
        nn = sims.argmax(1)
        best = sims[np.arange(len(x)), nn]
        same = owner[nn] == owner
        row = []
        for th in thresholds:
            above = best >= th
            share = float(above.mean())
            precision = float(same[above].mean()) if above.any() else 1.0
            row.append((share, precision))
        out[c] = row
    return out


def report(w: Workload, results: list[dict], sw: dict, thresholds: list[float]) -> str:
    lines = [
        "| config | category | requests | hit rate | false-hit rate | stale rate | model calls |"
    ]
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for res in results:
        s = res["stats"][0]
        for ci, c in enumerate([*w.cats, "all"]):
            req, hit, false, stale, call = s.sum(0) if c == "all" else s[ci]
            lines.append(
                f"| {res['name']} | {c} | {req} | {hit / max(req, 1):.3f} | "
                f"{false / max(hit, 1):.4f} | {stale / max(hit, 1):.4f} | {call} |"
            )
    lines.append("")
    lines.append("During the burst (3x traffic, the model over capacity):")
    lines.append("| config | requests | hit rate | false-hit rate | stale rate | model calls |")
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: |")
    calls = {}
    for res in results:
        req, hit, false, stale, call = res["stats"][1].sum(0)
        calls[res["name"]] = call
        lines.append(
            f"| {res['name']} | {req} | {hit / max(req, 1):.3f} | {false / max(hit, 1):.4f} | "
            f"{stale / max(hit, 1):.4f} | {call} |"
        )
    adaptive, static = calls["category-aware"], calls["category-aware, static"]
    lines.append("")
    lines.append(
        f"Load adaptation saved {static - adaptive} of {static} model calls during the burst "
        f"({(static - adaptive) / max(static, 1) * 100:.1f}%)."
    )
    lines.append("")
    lines.append(
        "Threshold sweep (nearest other-prompt neighbour in the category: share >= threshold "
        "/ precision):"
    )
    lines.append("| category | " + " | ".join(f"{t:.2f}" for t in thresholds) + " |")
    lines.append("| --- |" + " ---: |" * len(thresholds))
    for c, row in sw.items():
        lines.append(f"| {c} | " + " | ".join(f"{s:.2f} / {p:.3f}" for s, p in row) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=30_000)
    ap.add_argument("--pool", type=int, default=1000, help="items per category")
    ap.add_argument("--rate", type=float, default=6.0, help="requests/s outside the burst")
    ap.add_argument("--capacity", type=float, default=2.5, help="model calls/s at load 1")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    w = build(args.pool, args.requests, args.rate, args.seed)
    results = [run(w, name, o, args.capacity) for name, o in CONFIGS.items()]
    thresholds = [0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.95, 0.96, 0.97]
    text = report(w, results, sweep(w, thresholds), thresholds)
    print(text)
    for res in results:
        n = int(res["stats"][0].sum(0)[0])
        per = res["seconds"] / n * 1e6
        print(f"{res['name']}: {n} requests in {res['seconds']:.1f} s ({per:.0f} us each)")
    OUT.mkdir(exist_ok=True)
    (OUT / "cache_workload.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
