"""Feedback calibration out of sample on qqp-dev VALIDATION: the labels' noise floor, which
bounds delta the labels can support, and category-aware vs uniform calibration.

    python -m bench.cache_calibration [--deltas 0.02,0.05,...] [--limit N] [--fake]

The stream, topics and decisions are bench/cache_quality.py's (same seed and split; nothing
tuned on validation). Feedback: every scored candidate of the FIRST half of the stream with
the catalogue defaults in force, judged by the labels (an LLM judge that agrees with QQP).
Then, per delta, thresholds are fitted with the shipped calibration.fit (fixed-sequence, 95%
Wilson bound, min_obs 30) and frozen, and the SECOND half is read:

- category-aware: one fit per topic on that topic's feedback;
- uniform calibrated: one fit on all the feedback, one threshold for every topic;
- the uniform curve (thresholds 0.80-0.995 on the second half): the best uniform threshold's
  correct hits at the same realised false-hit share (interpolated on the curve).

Noise floor: the labels' false share among the feedback at or above a score t (cosine, or the
verifier's score), and the lowest 95% upper bound any cut reaches (`supported_delta`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

from bench import qqp
from bench.cache_quality import (
    RESULTS,
    TOPICS,
    Stream,
    Verify,
    build_stream,
    load_head,
    simulate,
)
from curator.cache.calibration import applied, fit
from curator.cache.policy import CATALOGUE

CUTS = (0.90, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999)
CURVE = [*(round(0.80 + 0.01 * i, 2) for i in range(20)), 0.995]
MIN_OBS = 30


def noise_floor(fb: list[tuple[int, int, float, bool]]) -> dict[str, Any]:
    """The labels' false share at or above each cut, and the least bound a fit supports."""
    s = np.array([f[2] for f in fb])
    ok = np.array([f[3] for f in fb], bool)
    out: dict[str, Any] = {}
    for t in CUTS:
        sel = s >= t
        out[f">={t}"] = {
            "n": int(sel.sum()),
            "false": float(1 - ok[sel].mean()) if sel.any() else None,
        }
    out["supported_delta"] = fit(s, ok, 0.5, MIN_OBS).best_bound
    by_topic = {}
    for c, name in enumerate(TOPICS):
        m = np.array([f[1] == c for f in fb], bool)
        by_topic[name] = fit(s[m], ok[m], 0.5, MIN_OBS).best_bound if m.sum() >= MIN_OBS else None
    out["supported_delta_by_topic"] = by_topic
    return out


def _interp_correct(curve: list[dict[str, Any]], false_share: float) -> float:
    """Correct hits / lookups of the uniform curve at a false-hit share (interpolated)."""
    pts = sorted((p["false_hit_share"], p["correct_hit_rate"]) for p in curve)
    return float(np.interp(false_share, [p[0] for p in pts], [p[1] for p in pts]))


def evaluate(s: Stream, deltas: list[float]) -> dict[str, Any]:
    n, half = len(s.qid), len(s.qid) // 2
    default = {c: CATALOGUE[name].threshold for c, name in enumerate(TOPICS)}
    verify = Verify(s)
    out: dict[str, Any] = {"lookups": n, "second_half": n - half}
    for kind, v in (("cosine", None), ("verifier", verify)):
        warm = simulate(s, "warm", lambda i, c: default[c], v)
        fb = [f for f in warm.feedback if f[0] < half]
        res: dict[str, Any] = {"feedback": len(fb), "noise_floor": noise_floor(fb)}
        curve = []
        for t in CURVE:
            r = simulate(s, "u", lambda i, c, t=t: t, v)
            curve.append({"threshold": t, **r.metrics(s, half)})
        res["uniform_curve_second_half"] = curve
        sc = np.array([f[2] for f in fb])
        ok = np.array([f[3] for f in fb], bool)
        topic = np.array([f[1] for f in fb])
        for delta in deltas:
            per = {
                c: fit(sc[topic == c], ok[topic == c], delta, MIN_OBS) for c in range(len(TOPICS))
            }
            pooled = fit(sc, ok, delta, MIN_OBS)
            row: dict[str, Any] = {}
            fits = {"category": per, "uniform": dict.fromkeys(per, pooled)}
            for name, fs in fits.items():
                thr = {c: applied(f, default[c]) for c, f in fs.items()}
                r = simulate(s, name, lambda i, c, thr=thr: default[c] if i < half else thr[c], v)
                m = r.metrics(s, half)
                topics = {TOPICS[c]: r.metrics(s, half, topic=c) for c in range(len(TOPICS))}
                row[name] = {
                    "thresholds": {TOPICS[c]: round(t, 4) for c, t in thr.items()},
                    "second_half": m,
                    "per_topic": {
                        t: {"hits": x["hits"], "false": x["false_hit_share"]}
                        for t, x in topics.items()
                    },
                    "within_delta": {
                        t: x["false_hit_share"] <= delta for t, x in topics.items() if x["hits"]
                    },
                    "uniform_curve_correct_at_same_false": _interp_correct(
                        curve, m["false_hit_share"]
                    ),
                }
            row["states"] = {TOPICS[c]: f.state for c, f in per.items()}
            row["bounds"] = {TOPICS[c]: f.bound for c, f in per.items()}
            row["pooled"] = {
                "state": pooled.state,
                "threshold": pooled.threshold,
                "bound": pooled.bound,
            }
            res[f"delta={delta}"] = row
        out[kind] = res
    return out


def _report(out: dict[str, Any]) -> None:
    for kind in ("cosine", "verifier"):
        res = out[kind]
        nf = res["noise_floor"]
        print(f"== {kind}: {res['feedback']} feedback observations (first half)")
        print("  labels' false share at or above:", {
            k: (v["n"], None if v["false"] is None else round(100 * v["false"], 1))
            for k, v in nf.items() if k.startswith(">=")
        })  # fmt: skip
        print(f"  supported delta: pooled {nf['supported_delta']:.3f}, by topic",
              {t: None if b is None else round(b, 3)
               for t, b in nf["supported_delta_by_topic"].items()})  # fmt: skip
        for key, row in res.items():
            if not key.startswith("delta="):
                continue
            print(f"  {key}: states {row['states']}; pooled {row['pooled']}")
            for name in ("category", "uniform"):
                r = row[name]
                m = r["second_half"]
                per = {
                    t: (x["hits"], round(100 * x["false"], 1)) for t, x in r["per_topic"].items()
                }
                print(f"    {name}: thresholds {r['thresholds']}")
                print(f"      2nd half hit {100 * m['hit_rate']:.2f}% correct "
                      f"{100 * m['correct_hit_rate']:.2f}% false {100 * m['false_hit_share']:.1f}%;"
                      f" uniform curve at that false share: correct "
                      f"{100 * r['uniform_curve_correct_at_same_false']:.2f}%")  # fmt: skip
                print(f"      per topic (hits, false%): {per}; within delta {r['within_delta']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="stream length (0: all validation)")
    p.add_argument("--deltas", default="0.02,0.05,0.10,0.15,0.20,0.25")
    p.add_argument("--fake", action="store_true", help="hashed bag-of-words (dry run only)")
    p.add_argument("--head", default="", help="a verifier_weights.py written by train_verifier")
    args = p.parse_args()
    if args.head:
        Verify.head = load_head(args.head)
    t0 = time.perf_counter()
    data = qqp.load(seed=args.seed)
    emb = qqp.embeddings(data, fake=args.fake)
    s = build_stream(data, emb, args.seed, args.limit, 0.0)
    out = evaluate(s, [float(d) for d in args.deltas.split(",")])
    out["seconds"] = time.perf_counter() - t0
    out["loadavg"] = os.getloadavg()
    out["args"] = vars(args)
    _report(out)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"cache_calibration{'-fake' if args.fake else ''}.json"
    path.write_text(json.dumps(out, indent=1, default=float))
    print(f"wrote {path} ({out['seconds']:.0f} s, load {out['loadavg']})")


if __name__ == "__main__":
    main()
