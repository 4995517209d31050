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
        0.897237,
        0.52064,
        0.194332,
        6.155947,
        0.038687,
        0.137082,
        0.037969,
        0.001677,
        0.002635,
    ],
    "scale": [
        0.055627,
        0.213416,
        0.194002,
        4.080179,
        0.168129,
        0.301682,
        0.19112,
        0.040915,
        0.051265,
    ],
    "coef": [
        0.886742,
        -0.239492,
        0.041155,
        0.422523,
        -0.283471,
        -0.303761,
        -0.126963,
        -0.104954,
        -0.024562,
    ],
    "intercept": 0.834859,
    "cos_coef": 11.011997,
    "cos_intercept": -9.103525,
    "trained_on": "qqp-dev train split (seed 0), 8349 pairs with MiniLM cosine >= 0.8",
}
