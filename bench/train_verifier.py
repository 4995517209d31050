"""Train the verifier's head on qqp-dev's TRAIN split (writes verifier_weights.py and the
stem document frequencies vocabulary_table.py).

    python -m bench.train_verifier [--model trees|logistic]   # embed extra or cached embeddings

Pairs (train split only, qqp.load's group split; validation is never read), at MiniLM cosine
>= --floor (the verifier only ever sees such candidates): by default the candidates a cache
meets on a seeded stream of the train questions, labelled by answer id as the evaluation
does (--pairs labelled: QQP's labelled pairs, whose negatives are sampled related questions,
not what a cache meets).
--cv: the trees' depth and count and the weight of hard negatives (wrong pairs at cosine >=
0.90) chosen by grouped 3-fold cross-validation on the train pairs (AUC on hard pairs).
Features: the cosine and the lexical features (curator/cache/lexical.py; IDF weights from the
train questions). --model logistic: standardised, an L2-regularised logistic regression fitted
by Newton's method; --model trees: a small gradient-boosted tree ensemble (scikit-learn at
training time only; the package evaluates the exported trees in pure Python). A cosine-only
logistic fit on the same pairs maps the head's logit back to the cosine scale. Before the
final fit, 25% of the train groups are held out once to report AUC on hard pairs (cosine >=
0.85).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import qqp
from curator.cache import lexical

__all__ = ["auc", "fit_head", "fit_logistic", "head_logit", "load_head", "pair_features"]

OUT = Path(__file__).resolve().parents[1] / "curator" / "cache" / "verifier_weights.py"
VOCAB = OUT.with_name("vocabulary_table.py")
TREES = {"n_estimators": 150, "max_depth": 3, "learning_rate": 0.1, "subsample": 0.8}
HARD = 0.90  # cosine from which a wrong pair is a hard negative (templated near-duplicates)
#: --cv: the head's capacity and the hard negatives' weight, chosen on TRAIN folds only
GRID = [
    ({**TREES, "n_estimators": n, "max_depth": d}, w)
    for d, n, w in ((3, 150, 1.0), (3, 150, 3.0), (3, 300, 2.0), (4, 300, 1.0), (4, 300, 3.0))
]


def cross_validate(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    seed: int,
    folds: int = 3,
    grid: list[tuple[dict[str, Any], float]] | None = None,
) -> list[dict[str, Any]]:
    """Each GRID setting's mean AUC on hard pairs (cosine >= 0.85) of held-out folds of the
    train groups (a group's pairs stay in one fold), best first."""
    rng = np.random.default_rng(seed + 3)
    u = rng.permutation(np.unique(groups))
    pos = {g: k % folds for k, g in enumerate(u)}
    fold = np.array([pos[g] for g in groups.tolist()])
    rows = []
    for config, w in grid or GRID:
        aucs = []
        for f in range(folds):
            tr, te = fold != f, (fold == f) & (x[:, 0] >= 0.85)
            head = fit_head(x[tr], y[tr], "trees", seed, config, w)
            aucs.append(auc(head_logit(head, x[te]), y[te]))
        rows.append({"trees": config, "hard_weight": w, "auc_hard": float(np.mean(aucs))})
        print(f"cv {config['max_depth']=} {config['n_estimators']=} {w=}: "
              f"AUC hard {rows[-1]['auc_hard']:.4f} ({', '.join(f'{a:.3f}' for a in aucs)})",
              flush=True)  # fmt: skip
    return sorted(rows, key=lambda r: -r["auc_hard"])


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve (ties averaged)."""
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score))
    s = score[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos = label.astype(bool)
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 50) -> np.ndarray:
    """Weights (d + 1,) (intercept last) of an L2-regularised logistic regression."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    reg = np.full(xb.shape[1], l2)
    reg[-1] = 0.0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(xb @ w)))
        grad = xb.T @ (p - y) + reg * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def pair_features(texts: list[str], a: np.ndarray, b: np.ndarray, cos: np.ndarray) -> np.ndarray:
    """(n, 1 + len(lexical.FEATURES)): cosine then the lexical features of each pair."""
    rows = [
        [c, *lexical.compare(texts[i], texts[j]).vector()]
        for i, j, c in zip(a.tolist(), b.tolist(), cos.tolist(), strict=True)
    ]
    return np.array(rows, np.float64)


def stream_pairs(
    data: qqp.QQP, emb: np.ndarray, floor: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) question ids of the candidates a cache meets on a seeded stream of the TRAIN
    questions: each question's 4 nearest earlier ones at cosine >= floor. Labelled like the
    evaluation: a duplicate iff the answer ids agree (a pair no label links is not)."""
    from bench.qqp import neighbours

    ids = np.random.default_rng(seed + 2).permutation(np.flatnonzero(data.train))
    pos, sim = neighbours(emb[ids], 4)
    rows, cols = np.nonzero((pos >= 0) & (sim >= floor))
    return ids[rows], ids[pos[rows, cols]]


def fit_head(
    x: np.ndarray,
    y: np.ndarray,
    model: str,
    seed: int = 0,
    trees: dict[str, Any] | None = None,
    hard_weight: float = 1.0,
) -> dict[str, Any]:
    """The weights LexicalVerifier reads: features (cosine + lexical.FEATURES), the head
    (logistic or trees: `trees` the ensemble's settings, default TREES; negatives at cosine
    >= HARD weigh `hard_weight`), and the cosine-only fit."""
    wc = fit_logistic(x[:, :1], y, l2=0.0)
    out: dict[str, Any] = {"kind": model, "features": ["cosine", *lexical.FEATURES]}
    if model == "logistic":
        mean, scale = x.mean(0), x.std(0)
        scale[scale == 0] = 1.0
        w = fit_logistic((x - mean) / scale, y)
        out.update(
            mean=[round(float(v), 6) for v in mean],
            scale=[round(float(v), 6) for v in scale],
            coef=[round(float(v), 6) for v in w[:-1]],
            intercept=round(float(w[-1]), 6),
        )
    else:
        w = np.where((y == 0) & (x[:, 0] >= HARD), hard_weight, 1.0)
        out.update(_trees(x, y, seed, trees or TREES, w))
    out.update(cos_coef=round(float(wc[0]), 6), cos_intercept=round(float(wc[1]), 6))
    return out


def _trees(
    x: np.ndarray, y: np.ndarray, seed: int, config: dict[str, Any], weight: np.ndarray
) -> dict[str, Any]:
    """A gradient-boosted ensemble exported as parallel lists (learning rate folded into
    the leaf values)."""
    from sklearn.ensemble import GradientBoostingClassifier

    gb = GradientBoostingClassifier(random_state=seed, **config).fit(x, y, sample_weight=weight)
    lr = gb.learning_rate
    trees: list[list[Any]] = []
    for est in gb.estimators_[:, 0]:
        t = est.tree_
        trees.append([
            [int(f) if f >= 0 else -1 for f in t.feature],
            [round(float(v), 6) for v in t.threshold],
            [int(v) for v in t.children_left],
            [int(v) for v in t.children_right],
            [round(float(v) * lr, 6) for v in t.value[:, 0, 0]],
        ])  # fmt: skip
    p = float(np.clip(np.average(y, weights=weight), 1e-6, 1 - 1e-6))
    init = float(gb.decision_function(x[:1])[0]) - sum(
        tr[4][_leaf(tr, x[0])] for tr in trees
    )  # the prior's logit, as sklearn computes it
    assert abs(init - np.log(p / (1 - p))) < 1e-3, (init, p)
    return {"init": round(init, 6), "trees": trees, "trees_config": config}


def _leaf(tree: list[list[Any]], row: np.ndarray) -> int:
    node = 0
    while tree[0][node] >= 0:
        f = tree[0][node]
        node = tree[2][node] if row[f] <= tree[1][node] else tree[3][node]
    return node


def head_logit(weights: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """(n,) the head's logits of feature rows x (n, 1 + len(lexical.FEATURES))."""
    if weights["kind"] == "trees":
        return np.array(
            [weights["init"] + sum(t[4][_leaf(t, row)] for t in weights["trees"]) for row in x]
        )
    mean, scale, coef = (np.array(weights[k]) for k in ("mean", "scale", "coef"))
    return ((x - mean) / scale) @ coef + float(weights["intercept"])


def weights_source(weights: dict[str, Any]) -> str:
    """verifier_weights.py for these weights: one line per list (trees are long)."""
    import json

    body = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in weights.items())
    return (
        '"""The verifier\'s head, written by `python -m bench.train_verifier` (do not edit).\n\n'
        "Features: the MiniLM cosine and curator/cache/lexical.py's features; kind 'logistic'\n"
        "(standardised: mean, scale, coef, intercept) or 'trees' (init logit and gradient-\n"
        "boosted trees as parallel lists); cos_coef / cos_intercept: the cosine-only fit\n"
        'mapping logits back to cosines (verifier.py)."""\n\n'
        "# ruff: noqa: E501\nfrom typing import Any\n\n# fmt: off\n"
        f"WEIGHTS: dict[str, Any] = {{\n{body},\n}}\n# fmt: on\n"
    )


def write_vocabulary(data: qqp.QQP, path: Path = VOCAB) -> None:
    """Stem document frequencies of the TRAIN questions (vocabulary.py)."""
    import collections

    from curator.cache import vocabulary

    df: collections.Counter[str] = collections.Counter()
    texts = [t for t, k in zip(data.texts, data.train, strict=True) if k]
    for t in texts:
        df.update(set(lexical.tokens(t).stems))
    path.write_text(vocabulary.table_text(dict(df), len(texts)))


def load_head(path: str) -> dict[str, Any]:
    """WEIGHTS of a verifier_weights.py file (bench.train_verifier --out)."""
    scope: dict[str, Any] = {}
    exec(compile(Path(path).read_text(), path, "exec"), scope)  # our own generated file
    return dict(scope["WEIGHTS"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--floor", type=float, default=0.80, help="cosine of the pairs trained on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--model", choices=("trees", "logistic"), default="trees")
    p.add_argument(
        "--pairs",
        choices=("labelled", "stream", "both"),
        default="stream",
        help="labelled pairs, or the candidate pairs a stream of train questions meets",
    )
    p.add_argument("--cv", action="store_true", help="choose the trees' capacity and the hard "
                   "negatives' weight by grouped cross-validation on the train split")  # fmt: skip
    p.add_argument("--hard-weights", default="1,2,3", help="--cv: hard-negative weights tried")
    args = p.parse_args()
    t0 = time.perf_counter()
    data = qqp.load(seed=args.seed)
    emb = qqp.embeddings(data)
    if args.out == OUT:  # the shipped head: its IDF table from the same train split
        write_vocabulary(data)
    train = data.pair_split()
    a, b, y = data.a[train], data.b[train], data.dup[train].astype(np.float64)
    if args.pairs in ("stream", "both"):
        sa, sb = stream_pairs(data, emb, args.floor, args.seed)
        sy = (data.answer[sa] == data.answer[sb]).astype(np.float64)
        if args.pairs == "stream":
            a, b, y = sa, sb, sy
        else:
            a, b, y = np.concatenate([a, sa]), np.concatenate([b, sb]), np.concatenate([y, sy])
    cos = np.einsum("ij,ij->i", emb[a], emb[b])
    keep = cos >= args.floor
    a, b, y, cos = a[keep], b[keep], y[keep], cos[keep]
    x = pair_features(data.texts, a, b, cos)
    print(f"{len(y)} train pairs with cosine >= {args.floor} ({y.mean():.3f} duplicates)")
    # one inner hold-out by group (of the train split only) to report what the head adds
    groups = np.unique(data.group[a])
    rng = np.random.default_rng(args.seed + 1)
    inner = np.isin(data.group[a], rng.permutation(groups)[: len(groups) // 4])
    w = fit_head(x[~inner], y[~inner], args.model, args.seed)  # shipped settings before --cv
    hard = inner & (cos >= 0.85)
    z = head_logit(w, x[hard])
    guard = np.array([lexical.veto(lexical.compare(data.texts[i], data.texts[j])) is None
                      for i, j in zip(a[hard], b[hard], strict=True)])  # fmt: skip
    print(
        f"inner hold-out, {hard.sum()} hard pairs (cos >= 0.85, {y[hard].mean():.3f} dup): "
        f"AUC cosine {auc(cos[hard], y[hard]):.3f}, head {auc(z, y[hard]):.3f}, "
        f"head with guard {auc(np.where(guard, z, -1e9), y[hard]):.3f}"
    )
    config, hard_weight = TREES, 1.0
    if args.cv and args.model == "trees":
        weights_tried = [float(v) for v in args.hard_weights.split(",")]
        grid = [(c, w) for c, w in GRID if w in weights_tried]
        best = cross_validate(x, y, data.group[a], args.seed, grid=grid)[0]
        config, hard_weight = best["trees"], best["hard_weight"]
        print(f"chosen: {best}")
    weights = fit_head(x, y, args.model, args.seed, config, hard_weight)
    weights["hard_weight"] = hard_weight
    weights["floor"] = args.floor
    weights["trained_on"] = (
        f"qqp-dev train split (seed {args.seed}), {len(y)} pairs with MiniLM cosine >= {args.floor}"
    )
    args.out.write_text(weights_source(weights))
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s")
    if weights["kind"] == "logistic":
        print(weights)


if __name__ == "__main__":
    main()
