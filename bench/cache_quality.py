"""Cache quality on real paraphrases: qqp-dev VALIDATION split (bench/qqp.py), MiniLM embeddings.

    python -m bench.cache_quality [--limit N] [--latency N]

A seeded stream of the validation questions, each asked once (setting 2 adds a share of
verbatim repeats). A topic router (k-means on TRAIN embeddings, one catalogue category per
topic) gives each question its category. On a miss the question is stored, on a hit not. A
hit is correct when the served question has the request's answer id (qqp.py); a hit no label
links counts as false, so false hits are an upper bound.

Decisions are replayed from each question's 16 nearest earlier questions (one exact matrix
product; candidates: the nearest 4 stored ones of the request's category, as the cache's
`candidates`), with the cache's own code for the choice (candidates.choose), the verifier
(verifier.LexicalVerifier) and calibration (calibration.fit); in one run:
the uniform-threshold curves 0.80-0.99 without and with the verifier, the catalogue
defaults, routing across categories, and calibration learned from feedback on the first
half of the stream and read on the second half only. `--latency N` also times the real
in-process cache (Database.cache_lookup) on N stored questions, verifier off and on.
Plots and a JSON summary go to bench/results/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench import qqp
from bench.qqp import kmeans, neighbours
from bench.train_verifier import load_head
from curator.cache.calibration import applied, fit
from curator.cache.candidates import Choice, choose
from curator.cache.entry_thresholds import entry_threshold
from curator.cache.policy import CATALOGUE
from curator.cache.verifier import LexicalVerifier, Verdict, below_one

RESULTS = Path(__file__).resolve().parent / "results"
TOPICS = ["general", "chat", "docs", "code", "news", "health"]  # one catalogue policy a topic
K_NEAR, CANDIDATES, FLOOR, ROUTE = 16, 4, 0.80, 0.97
GRID = [round(0.80 + 0.01 * i, 2) for i in range(20)]


@dataclasses.dataclass
class Stream:
    qid: np.ndarray  # (n,) question ids in stream order
    cat: np.ndarray  # (n,) topic index
    answer: np.ndarray  # (n,)
    texts: list[str]  # by stream position
    pos: np.ndarray  # (n, K) nearest earlier positions
    sim: np.ndarray  # (n, K)


@dataclasses.dataclass
class Run:
    """hits: (request position, served position, score) per hit; feedback: (position, topic,
    score, correct) of each scored candidate (hit or not)."""

    name: str
    hits: list[tuple[int, int, float]]
    feedback: list[tuple[int, int, float, bool]]
    routed: int = 0

    def metrics(self, s: Stream, lo: int = 0, hi: int | None = None, topic: int | None = None):  # type: ignore[no-untyped-def]
        hi = len(s.qid) if hi is None else hi
        sel = np.zeros(len(s.qid), bool)
        sel[lo:hi] = True
        if topic is not None:
            sel &= s.cat == topic
        n = int(sel.sum())
        h = [(i, j) for i, j, _ in self.hits if sel[i]]
        correct = sum(1 for i, j in h if s.answer[i] == s.answer[j])
        return {
            "lookups": n,
            "hits": len(h),
            "hit_rate": len(h) / max(n, 1),
            "correct_hit_rate": correct / max(n, 1),
            "false_hit_share": (len(h) - correct) / len(h) if h else 0.0,
            "false_hits_per_lookup": (len(h) - correct) / max(n, 1),
        }


class Verify:
    """The shipped verifier over stream positions, memoised by pair."""

    head: dict[str, Any] | None = None  # --head: another head's weights (None: the shipped)

    def __init__(self, s: Stream) -> None:
        self.s, self.v = s, LexicalVerifier(self.head)
        self.memo: dict[tuple[int, int], Verdict] = {}

    def __call__(self, i: int, j: int, cos: float) -> Verdict:
        key = (i, j)
        if key not in self.memo:
            self.memo[key] = self.v.verify(self.s.texts[i], self.s.texts[j], cos)
        return self.memo[key]


class PairVerify(Verify):
    """Verify with a pair model (pair_model.PairModelVerifier) over a model directory; the
    model's scores of every candidate pair are computed up front, in batches per request."""

    def __init__(self, s: Stream, path: str) -> None:
        from curator.cache.pair_model import CrossEncoderScorer, PairModelVerifier

        super().__init__(s)
        pv = PairModelVerifier(CrossEncoderScorer(path))
        self.v = pv.base
        t0, asked = time.perf_counter(), 0
        for i in range(len(s.qid)):
            need: list[tuple[int, float]] = []
            for j, c in zip(s.pos[i].tolist(), s.sim[i].tolist(), strict=True):
                if j < 0 or c < FLOOR:
                    break
                v = self.v.verify(s.texts[i], s.texts[j], c)
                self.memo[(i, j)] = v
                if v.veto is None and v.score >= pv.pre_threshold:
                    need.append((j, c))
            if need:
                probs = pv.scorer.score(s.texts[i], [s.texts[j] for j, _ in need])
                asked += len(need)
                for (j, c), p in zip(need, probs, strict=True):
                    p = min(1 - 1e-6, max(1e-6, p))
                    z = self.v.to_cosine_scale(np.log(p / (1 - p)))
                    self.memo[(i, j)] = Verdict(below_one(z, c))
        self.model_pairs, self.model_seconds = asked, time.perf_counter() - t0


class _PairVerifier:
    """Adapts Verify (positions) to the Verifier protocol (prompts) for candidates.choose."""

    def __init__(self, verify: Verify, i: int, by_text: dict[str, int]) -> None:
        self.verify_pos, self.i, self.by_text = verify, i, by_text

    def verify(self, prompt: str, cached_prompt: str, cosine: float) -> Verdict:
        return self.verify_pos(self.i, self.by_text[cached_prompt], cosine)


class EntryFeedback:
    """Per-entry thresholds (curator/cache/entry_thresholds.py) learned online: every scored
    candidate is judged by the labels right away (a gateway's LLM judge), as calibration's
    feedback is."""

    def __init__(self, delta: float, min_obs: int = 30) -> None:
        self.delta, self.min_obs = delta, min_obs
        self.obs: dict[int, tuple[list[float], list[bool]]] = {}

    def threshold_of(self, base: float) -> Callable[[int], float] | None:
        if not self.obs:
            return None

        def of(e: int) -> float:
            o = self.obs.get(e)
            if o is None:
                return base
            return entry_threshold(np.array(o[0]), np.array(o[1]), base, self.delta,
                                   self.min_obs)  # fmt: skip

        return of

    def record(self, e: int, score: float, correct: bool) -> None:
        o = self.obs.setdefault(e, ([], []))
        o[0].append(score)
        o[1].append(correct)


def simulate(
    s: Stream,
    name: str,
    thresholds: Callable[[int, int], float],
    verify: Verify | None,
    route: bool = False,
    entries: EntryFeedback | None = None,
) -> Run:
    """Replay the stream; thresholds(position, topic) -> threshold in force; `entries`:
    per-entry thresholds learned online from feedback on every scored candidate."""
    n = len(s.qid)
    stored = np.zeros(n, bool)
    run = Run(name, [], [])
    for i in range(n):
        c = int(s.cat[i])
        t = thresholds(i, c)
        cand = [(j, v) for j, v in zip(s.pos[i], s.sim[i], strict=True)
                if j >= 0 and stored[j] and s.cat[j] == c][:CANDIDATES]  # fmt: skip
        of = None if entries is None else entries.threshold_of(t)
        choice = _choose(s, i, cand, t, verify, threshold_of=of)
        if choice.scored is not None:
            ok = _correct(s, i, choice.scored[0])
            run.feedback.append((i, c, choice.scored[2], ok))
            if entries is not None:
                entries.record(choice.scored[0], choice.scored[2], ok)
        if choice.found is None and route:
            for j, v in zip(s.pos[i], s.sim[i], strict=True):
                if j < 0 or v < ROUTE:
                    break
                if stored[j] and s.cat[j] != c:
                    both = max(t, thresholds(i, int(s.cat[j])))
                    alt = _choose(s, i, [(j, v)], both, verify, floor=both)
                    if alt.found is not None:
                        choice = alt
                        run.routed += 1
                        break
        if choice.found is not None:
            run.hits.append((i, choice.found[0], choice.found[2]))
        else:
            stored[i] = True
    return run


def _correct(s: Stream, i: int, j: int) -> bool:
    return bool(s.answer[i] == s.answer[j])


def _choose(
    s: Stream,
    i: int,
    cand: list[tuple[int, float]],
    t: float,
    verify: Verify | None,
    floor: float = FLOOR,
    threshold_of: Callable[[int], float] | None = None,
) -> Choice:
    ids = np.array([j for j, _ in cand], np.int64)
    sims = np.array([v for _, v in cand], np.float32)
    by_text = {s.texts[j]: j for j, _ in cand}
    return choose(
        ids,
        sims,
        threshold=t,
        verify=None if verify is None else _PairVerifier(verify, i, by_text),
        floor=floor,
        alive=lambda e: True,
        prompt=s.texts[i],
        prompt_of=lambda e: s.texts[e],
        threshold_of=threshold_of,
    )


def _at_hit_rate(curve: list[dict[str, Any]], rate: float, key: str) -> float:
    """`key` interpolated on a curve at the given hit rate."""
    pts = sorted((p["hit_rate"], p[key]) for p in curve)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return float(np.interp(rate, xs, ys))


def _plot(
    curves: dict[str, list[dict[str, Any]]], points: dict[str, dict[str, Any]], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, curve in curves.items():
        ax.plot([p["false_hit_share"] for p in curve], [p["hit_rate"] for p in curve], "o-",
                ms=3, label=name)  # fmt: skip
    for name, p in points.items():
        ax.plot(p["false_hit_share"], p["hit_rate"], "*", ms=12, label=name)
    ax.set_xlabel("false hits / hits (by the labels: an upper bound)")
    ax.set_ylabel("hit rate")
    ax.set_title("qqp-dev validation stream, all-MiniLM-L6-v2")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def build_stream(data: qqp.QQP, emb: np.ndarray, seed: int, limit: int, repeats: float) -> Stream:
    val = np.flatnonzero(~data.train)
    rng = np.random.default_rng(seed)
    qid = rng.permutation(val)[: limit or None]
    if repeats > 0:  # setting 2: a share of verbatim repeats of earlier questions
        out = []
        for i, q in enumerate(qid):
            out.append(q)
            if i and rng.uniform() < repeats:
                out.append(qid[rng.integers(0, i)])
        qid = np.array(out)
    centroids = kmeans(emb[data.train], len(TOPICS), seed)
    x = emb[qid]
    cat = np.argmax(x @ centroids.T, 1)
    pos, sim = neighbours(x, K_NEAR)
    texts = [data.texts[q] for q in qid]
    return Stream(qid, cat, data.answer[qid], texts, pos, sim)


def evaluate(
    s: Stream,
    deltas: tuple[float, ...] = (0.02, 0.05),
    entry_delta: float = 0.05,
    pair: Verify | None = None,
) -> dict[str, Any]:
    verify = Verify(s)
    n, half = len(s.qid), len(s.qid) // 2
    default = {k: CATALOGUE[name].threshold for k, name in enumerate(TOPICS)}
    out: dict[str, Any] = {"lookups": n, "topics": TOPICS}
    kinds: dict[str, tuple[Verify | None, bool]] = {
        "cosine": (None, False),
        "verifier": (verify, False),
        "cosine+entries": (None, True),
        "verifier+entries": (verify, True),
    }
    if pair is not None:
        kinds["pair model"] = (pair, False)
    curves: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    second: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    for t in GRID:
        for name, (v, per_entry) in kinds.items():
            if per_entry and round(t * 100) % 2:  # every other threshold: the run is long
                continue
            fb = EntryFeedback(entry_delta) if per_entry else None
            r = simulate(s, name, lambda i, c, t=t: t, v, entries=fb)
            curves[name].append({"threshold": t, **r.metrics(s)})
            second[name].append({"threshold": t, **r.metrics(s, half)})
    out["curves"] = curves
    out["entry_delta"] = entry_delta
    runs = {
        "defaults": simulate(s, "defaults", lambda i, c: default[c], None),
        "defaults+verifier": simulate(s, "defaults+verifier", lambda i, c: default[c], verify),
        "defaults+routing": simulate(s, "r", lambda i, c: default[c], None, route=True),
        "defaults+verifier+routing": simulate(s, "vr", lambda i, c: default[c], verify, True),
        "defaults+entries": simulate(
            s, "de", lambda i, c: default[c], None, entries=EntryFeedback(entry_delta)
        ),
        "defaults+verifier+entries": simulate(
            s, "dve", lambda i, c: default[c], verify, entries=EntryFeedback(entry_delta)
        ),
    }
    if pair is not None:
        runs["defaults+pair model"] = simulate(s, "dp", lambda i, c: default[c], pair)
    out["points"] = {k: {**r.metrics(s), "routed": r.routed} for k, r in runs.items()}
    out["per_topic"] = {
        k: {TOPICS[c]: r.metrics(s, topic=c) for c in range(len(TOPICS))} for k, r in runs.items()
    }
    base = out["points"]["defaults"]
    rate = base["hit_rate"]
    tv = out["target_verifier"] = {
        "at_hit_rate": rate,
        "false_share_cosine_curve": _at_hit_rate(curves["cosine"], rate, "false_hit_share"),
        "false_share_verifier_curve": _at_hit_rate(curves["verifier"], rate, "false_hit_share"),
    }
    tv["reduction"] = 1 - tv["false_share_verifier_curve"] / tv["false_share_cosine_curve"]
    for name in kinds:
        if name not in ("cosine", "verifier"):
            f = _at_hit_rate(curves[name], rate, "false_hit_share")
            tv[f"false_share_{name}_curve"] = f
            tv[f"reduction_{name}"] = 1 - f / tv["false_share_cosine_curve"]
        # the second half only, at the defaults' hit rate there (entries learned online)
        tv[f"second_half_false_share_{name}"] = _at_hit_rate(
            second[name], runs["defaults"].metrics(s, half)["hit_rate"], "false_hit_share"
        )
    # duplicates the router splits: the nearest earlier same-answer question in another topic
    split = sum(1 for i in range(n) for j in s.pos[i][:1]
                if j >= 0 and s.answer[i] == s.answer[j] and s.cat[i] != s.cat[j])  # fmt: skip
    out["split_duplicates"] = split
    # calibration: feedback on the first half (defaults in force, every scored candidate
    # judged by the labels), thresholds learned per topic, read on the second half only
    out["calibration"] = {}
    for name, v in (("cosine", None), ("verifier", verify)):
        warm = simulate(s, "warm", lambda i, c: default[c], v)
        for delta in deltas:
            learned = {}
            for c in range(len(TOPICS)):
                fb = [(sc, ok) for i, cc, sc, ok in warm.feedback if cc == c and i < half]
                sc = np.array([f[0] for f in fb], np.float64)
                ok = np.array([f[1] for f in fb], bool)
                learned[c] = applied(fit(sc, ok, delta, 30), default[c])
            r = simulate(s, "cal", lambda i, c, lt=learned: default[c] if i < half else lt[c], v)
            overall = r.metrics(s, half)
            same = _at_hit_rate(second[name], overall["hit_rate"], "false_hit_share")
            # the best uniform threshold at the same realised false-hit share (second half)
            fs = overall["false_hit_share"]
            ok_uniform = [p for p in second[name] if p["false_hit_share"] <= fs]
            best_uniform = max((p["correct_hit_rate"] for p in ok_uniform), default=0.0)
            out["calibration"][f"{name} delta={delta}"] = {
                "thresholds": {TOPICS[c]: round(t, 4) for c, t in learned.items()},
                "second_half": overall,
                "per_topic_false_share": {
                    TOPICS[c]: r.metrics(s, half, topic=c)["false_hit_share"]
                    for c in range(len(TOPICS))
                },
                "uniform_false_share_at_same_hit_rate": same,
                "best_uniform_correct_hit_rate_at_same_false_share": best_uniform,
            }
    return out


def latency(data: qqp.QQP, emb: np.ndarray, s: Stream, n: int) -> dict[str, Any]:
    """Per-lookup time of the in-process cache with n stored questions, verifier off and on
    (two categories holding the same entries, threshold 0.92, lookups interleaved so that
    both see the same machine load), plus the verifier's own cost per candidate."""
    import tempfile

    from curator.cache import CacheConfig
    from curator.config import DatabaseConfig
    from curator.database import Database

    out: dict[str, Any] = {"entries": n}
    cats = {False: "general", True: "chat"}
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(DatabaseConfig(data_dir=tmp, sync=False), background=False,
                      cache_config=CacheConfig(sweep_every_s=0, route_similarity=2.0))  # fmt: skip
        db.create_tenant("t")
        q = s.qid[: n + 2000]
        for verify, cat in cats.items():
            db.cache_set_policy(cat, tenant="t", verify=verify, threshold=0.92,
                                min_threshold=0.92, max_false_hit_rate=0.0)  # fmt: skip
            key = db._cache_tenant("t")  # the cache keys a tenant by its stable id
            db.cache.store_entries(key, [data.texts[i] for i in q[:n]], emb[q[:n]],
                                   ["answer"] * n, model="m", category=cat)  # fmt: skip
        probes = q[n:]
        rng = np.random.default_rng(0)
        clear = rng.standard_normal((len(probes), emb.shape[1])).astype(np.float32)
        for label, vecs, texts in (
            ("stream", emb[probes], [data.texts[i] for i in probes]),
            ("clear_miss", clear, ["zz"] * len(clear)),
        ):
            times: dict[bool, list[float]] = {False: [], True: []}
            for e, p in zip(vecs, texts, strict=True):
                for verify, cat in cats.items():
                    t0 = time.perf_counter()
                    db.cache_lookup(p, e, tenant="t", model="m", category=cat)
                    times[verify].append(time.perf_counter() - t0)
            for verify, ts in times.items():
                ms = np.array(ts) * 1e3
                out[f"{label} verify={verify}"] = {
                    "p50_ms": float(np.percentile(ms, 50)),
                    "p99_ms": float(np.percentile(ms, 99)),
                    "mean_ms": float(ms.mean()),
                }
        db.close()
    v = LexicalVerifier()
    pairs = [(s.texts[i], s.texts[j], float(c)) for i in range(min(len(s.qid), 3000))
             for j, c in zip(s.pos[i][:1], s.sim[i][:1], strict=True) if j >= 0]  # fmt: skip
    t0 = time.perf_counter()
    for a, b, c in pairs:
        v.verify(a, b + " ", c)  # a fresh string: not the token cache's
    out["verify_call_us"] = (time.perf_counter() - t0) / max(len(pairs), 1) * 1e6
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="stream length (0: all validation)")
    p.add_argument("--repeats", type=float, default=0.0, help="share of verbatim repeats")
    p.add_argument("--latency", type=int, default=0, help="stored entries for the timing")
    p.add_argument("--deltas", default="0.02,0.05,0.15,0.25", help="calibration bounds")
    p.add_argument("--fake", action="store_true", help="hashed bag-of-words (dry run only)")
    p.add_argument("--entry-delta", type=float, default=0.05, help="per-entry thresholds' bound")
    p.add_argument("--pair-model", default="", help="a pair-model directory (rerank extra)")
    p.add_argument("--head", default="", help="a verifier_weights.py written by train_verifier")
    args = p.parse_args()
    if args.head:
        Verify.head = load_head(args.head)
    t0 = time.perf_counter()
    data = qqp.load(seed=args.seed)
    emb = qqp.embeddings(data, fake=args.fake)
    s = build_stream(data, emb, args.seed, args.limit, args.repeats)
    pair = PairVerify(s, args.pair_model) if args.pair_model else None
    out = evaluate(s, tuple(float(d) for d in args.deltas.split(",")), args.entry_delta, pair)
    if pair is not None:
        out["pair_model"] = {"pairs_scored": pair.model_pairs, "seconds": pair.model_seconds}
    if args.latency:
        out["latency"] = latency(data, emb, s, args.latency)
    out["seconds"] = time.perf_counter() - t0
    out["loadavg"] = os.getloadavg()
    out["args"] = vars(args)
    tag = (f"-repeats{args.repeats}" if args.repeats else "") + ("-fake" if args.fake else "")
    RESULTS.mkdir(exist_ok=True)
    _plot(
        {f"uniform, {k}": c for k, c in out["curves"].items()},
        {k: out["points"][k] for k in ("defaults", "defaults+verifier")},
        RESULTS / f"cache_quality{tag}.png",
    )
    path = RESULTS / f"cache_quality{tag}.json"
    path.write_text(json.dumps(out, indent=1, default=float))
    _report(out)
    print(f"wrote {path} ({out['seconds']:.0f} s, load {out['loadavg']})")


def _report(out: dict[str, Any]) -> None:
    print(f"lookups {out['lookups']}, topics {out['topics']}")
    for name, curve in out["curves"].items():
        print(f"uniform curve, {name} (threshold: hit% / false% of hits):")
        print("  " + "  ".join(f"{p['threshold']:.2f}: {100 * p['hit_rate']:.2f}/"
                               f"{100 * p['false_hit_share']:.1f}" for p in curve))  # fmt: skip
    for k, v in out["points"].items():
        print(f"{k}: hit {100 * v['hit_rate']:.2f}% correct {100 * v['correct_hit_rate']:.2f}% "
              f"false {100 * v['false_hit_share']:.1f}% of hits, routed {v['routed']}")  # fmt: skip
    print("target (a)+(b):", {k: round(v, 4) for k, v in out["target_verifier"].items()})
    print("split duplicates:", out["split_duplicates"])
    for k, v in out["calibration"].items():
        h = v["second_half"]
        per = {t: round(100 * x, 1) for t, x in v["per_topic_false_share"].items()}
        print(f"calibration {k}: thresholds {v['thresholds']}")
        print(f"  2nd half: hit {100 * h['hit_rate']:.2f}% false {100 * h['false_hit_share']:.1f}%"
              f" correct {100 * h['correct_hit_rate']:.2f}%; false by topic {per}")  # fmt: skip
        u_false = v["uniform_false_share_at_same_hit_rate"]
        u_correct = v["best_uniform_correct_hit_rate_at_same_false_share"]
        print(f"  uniform at the same hit rate: false {100 * u_false:.1f}%; best uniform"
              f" correct at the same false share {100 * u_correct:.2f}%")  # fmt: skip
    if "latency" in out:
        print("latency:", json.dumps(out["latency"], indent=0))


if __name__ == "__main__":
    main()
