"""Categories of a tenant: their policies (stored overrides over the catalogue) and the
tenant's category classifier, both durable in LMDB.

A policy is looked up per (tenant, category): the tenant's own if it set one, else the
database-wide default the admin set, else the built-in catalogue (policy.py). Setting a
policy for an unknown name creates that category.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np

from curator.cache.calibration import PREFIX
from curator.cache.classifier import CentroidClassifier
from curator.cache.policy import CATALOGUE, DEFAULT_CATEGORY, CategoryPolicy, check_category
from curator.cache.validation import unit_vector
from curator.errors import InvalidArgument, NotFound
from curator.storage.store import Store

__all__ = ["Categories"]

_SEP = "\x1f"
_GLOBAL = ""  # the tenant of the database-wide defaults


class Categories:
    """Thread-safe: changes and iterations of the policy table hold `_lock`; single-key
    reads do not need it (a dict read is atomic)."""

    def __init__(self, store: Store, min_similarity: float) -> None:
        self.store = store
        self.classifier = CentroidClassifier(min_similarity)
        self._policies: dict[tuple[str, str], CategoryPolicy] = {}
        self._lock = threading.Lock()
        with store.read() as txn:
            for k, v in store.scan_raw(txn, "cache_policies"):
                if k.startswith(PREFIX.encode()):  # a calibration record (calibration.py)
                    continue
                tenant, category = k.decode().split(_SEP, 1)
                self._policies[(tenant, category)] = CategoryPolicy.from_json(json.loads(v))
            for k, v in store.scan_raw(txn, "cache_examples"):
                tenant, category = k.decode().split(_SEP, 1)
                self.classifier.load(tenant, category, *CentroidClassifier.decode(v))

    def names(self, tenant: str) -> list[str]:
        """Categories the tenant can use: the catalogue, database-wide and its own."""
        names = set(CATALOGUE)
        with self._lock:  # set_policy may add a key meanwhile
            names.update(c for t, c in self._policies if t in (tenant, _GLOBAL))
        return sorted(names)

    def policy(self, tenant: str, category: str) -> CategoryPolicy:
        p = self._policies.get((tenant, category)) or self._policies.get((_GLOBAL, category))
        if p is None:
            p = CATALOGUE.get(category)
        if p is None:
            raise NotFound(f"expected a known cache category, got {category!r}")
        return p

    def resolve(self, tenant: str, category: str | None, q: np.ndarray) -> tuple[str, str]:
        """(category, source) of a request: the caller's ("caller"), else the tenant's
        classifier's ("classifier"), else the default ("default")."""
        if category is not None and category != "":
            self.policy(tenant, check_category(category))
            return category, "caller"
        guess = self.classifier.classify(tenant, q)
        if guess is not None:
            return guess[0], "classifier"
        return DEFAULT_CATEGORY, "default"

    def set_policy(self, tenant: str | None, category: str, **fields: Any) -> CategoryPolicy:
        """Set fields of the category's policy for a tenant (None: the database-wide default);
        unset fields keep their current value."""
        check_category(category)
        owner = _GLOBAL if tenant is None else tenant
        try:
            base = self.policy(owner, category)
        except NotFound:
            base = CATALOGUE[DEFAULT_CATEGORY]
        policy = base.replace(**fields)
        with self._lock:
            self.store.write(
                lambda txn: self.store.put_json(
                    txn, "cache_policies", owner + _SEP + category, policy.to_json()
                )
            )
            self._policies[(owner, category)] = policy
        return policy

    def reset_policy(self, tenant: str | None, category: str) -> bool:
        """Drop a stored policy (the category falls back to the wider default)."""
        owner = _GLOBAL if tenant is None else tenant
        with self._lock:
            self.store.write(
                lambda txn: self.store.delete_key(txn, "cache_policies", owner + _SEP + category)
            )
            return self._policies.pop((owner, category), None) is not None

    def add_examples(self, tenant: str, category: str, embeddings: Any) -> int:
        """Teach the tenant's classifier: embeddings (n, dim) labelled with `category`.
        Returns the category's example count."""
        self.policy(tenant, check_category(category))  # must be a known category
        x = np.asarray(embeddings, np.float32)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if x.ndim != 2 or not len(x):
            raise InvalidArgument(f"expected embeddings of shape (n, dim), got {x.shape}")
        x = np.stack([unit_vector(r) for r in x])
        with self._lock:
            s, n = self.classifier.add(tenant, category, x)
            self.store.write(
                lambda txn: self.store.put_raw(
                    txn,
                    "cache_examples",
                    (tenant + _SEP + category).encode(),
                    CentroidClassifier.encode(s, n),
                )
            )
        return n

    def replace_tenant(
        self,
        tenant: str,
        policies: dict[str, CategoryPolicy],
        examples: dict[str, tuple[np.ndarray, int]],
    ) -> None:
        """Make the tenant's own policies and classifier examples exactly these (a tenant
        bundle's import), in one transaction."""

        def txn_fn(txn: Any) -> None:
            self._delete_rows(txn, tenant)
            for cat, p in policies.items():
                self.store.put_json(txn, "cache_policies", tenant + _SEP + cat, p.to_json())
            for cat, (s, n) in examples.items():
                key = (tenant + _SEP + cat).encode()
                self.store.put_raw(txn, "cache_examples", key, CentroidClassifier.encode(s, n))

        with self._lock:
            self.store.write(txn_fn)
            for key in [k for k in self._policies if k[0] == tenant]:
                del self._policies[key]
            self._policies.update({(tenant, c): p for c, p in policies.items()})
            self.classifier.forget(tenant)
            for cat, (s, n) in examples.items():
                self.classifier.load(tenant, cat, s, n)

    def _delete_rows(self, txn: Any, tenant: str) -> None:
        prefix = (tenant + _SEP).encode()
        for db in ("cache_policies", "cache_examples"):
            for k, _ in list(self.store.scan_raw(txn, db)):
                if k.startswith(prefix):
                    self.store.delete_raw(txn, db, k)

    def drop_tenant(self, tenant: str) -> None:
        """Forget the tenant's policies and classifier examples."""
        with self._lock:
            self.store.write(lambda txn: self._delete_rows(txn, tenant), frees=True)
            for k in [k for k in self._policies if k[0] == tenant]:
                del self._policies[k]
            self.classifier.forget(tenant)
