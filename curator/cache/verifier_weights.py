"""The verifier's logistic head, written by `python -m bench.train_verifier` (do not edit).

Features: the MiniLM cosine and curator/cache/lexical.py's features, standardised
(mean, scale); cos_coef / cos_intercept: the cosine-only fit mapping logits back to cosines."""

from typing import Any

WEIGHTS: dict[str, Any] = {
    "features": [
        "cosine",
        "jaccard",
        "len_diff",
        "n_diff",
        "numbers",
        "names",
        "negation",
        "opposite",
        "swap",
    ],
    "mean": [
        0.886411,
        0.484978,
        0.205021,
        6.824568,
        0.043582,
        0.179355,
        0.037452,
        0.00141,
        0.001962,
    ],
    "scale": [
        0.054588,
        0.216128,
        0.203222,
        4.233803,
        0.175943,
        0.34348,
        0.189868,
        0.037521,
        0.044245,
    ],
    "coef": [
        0.938905,
        0.00819,
        0.09001,
        0.362355,
        -0.198056,
        -0.382616,
        -0.043665,
        -0.091352,
        -0.014452,
    ],
    "intercept": -0.037276,
    "cos_coef": 14.130361,
    "cos_intercept": -12.542582,
    "trained_on": "qqp-dev train split (seed 0), 16314 pairs with MiniLM cosine >= 0.8",
}
