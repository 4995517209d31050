"""The verifier's logistic head (placeholder until `python -m bench.train_verifier` writes it)."""

from typing import Any

WEIGHTS: dict[str, Any] = {
    "features": ["cosine"],
    "mean": [0.0],
    "scale": [1.0],
    "coef": [1.0],
    "intercept": 0.0,
    "cos_coef": 1.0,
    "cos_intercept": 0.0,
}
