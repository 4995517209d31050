"""Vector reads on the Database (a mixin): search (filtered by tenants or label predicates,
explained on request), get, count and id pages. Responses are bounded before any work."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from curator.config import Metric, SearchParams
from curator.errors import (
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
)
from curator.facade.base import _NO_IDS, FacadeBase
from curator.predicate import Predicate, labels, relabel
from curator.results import (
    NO_ID,
    IdPage,
    Records,
    SearchPlan,
    SearchResult,
)
from curator.storage import documents as docs_codec
from curator.storage.catalog import TenantRecord
from curator.validation import as_ids, check_k, check_name, prepare_vectors

__all__ = ["VectorReads"]

# Response bytes per hit on the wire: id (varint, <= 10) + distance (4) + owner index (varint,
# <= 5), rounded up; with documents, a document message's framing besides its payload.
_HIT_BYTES = 24
_DOC_BYTES = 8
_DOC_CHUNK = 16  # documents fetched per step of the response budget


class VectorReads(FacadeBase):
    def search(
        self,
        collection: str,
        queries: Any,
        k: int = 10,
        *,
        tenant: str | Sequence[str] | None = None,
        params: SearchParams | None = None,
        with_documents: bool = False,
        with_vectors: bool = False,
        require_all: bool = False,
        where: Predicate | None = None,
        explain: bool = False,
    ) -> SearchResult:
        """Nearest `k` vectors readable by `tenant` (or by any of several tenants; with
        `require_all`, by both of two tenants: the filter track's AND of two labels) for each
        of `queries` (nq, d). Hits carry their owner (ids are scoped per owner).

        `where`: only vectors whose labels satisfy an AND / OR / NOT of labels
        (`curator.predicate`); a label is a tenant that vectors were granted to, and a
        search may name only the searched tenants themselves and the tenants they may share
        with (`allow_sharing`): a label says which vectors were granted to it, which is no
        business of other tenants. `explain`: `result.plan` says which path ran and how
        many vectors it touched."""
        c = self._collection(collection)
        if tenant is None:
            raise InvalidArgument("expected tenants to search for (the admin key acts for none)")
        names = [tenant] if isinstance(tenant, str) else list(tenant)
        if not names:
            raise InvalidArgument("expected at least one tenant, got none")
        self._handoff.check_read(*names)
        recs = [self.catalog.tenant(check_name(n, "tenant")) for n in names]
        if require_all and len(recs) != 2:
            raise InvalidArgument(f"expected 2 tenants with require_all, got {len(recs)}")
        if where is not None and require_all:
            raise InvalidArgument("expected where or require_all, got both (AND the labels)")
        keyed = self._label_keys(where, recs) if where is not None else None
        k = check_k(k)
        q = prepare_vectors(queries, c.info.dim, c.info.metric is Metric.COSINE, "queries")
        if len(q) > self.config.max_queries:
            raise ResourceExhausted(
                f"expected at most {self.config.max_queries} queries per request, got {len(q)}"
            )
        # Bound the response from the request before any work: nq x k x what is asked for.
        limit = self.config.max_response_bytes
        per_hit = _HIT_BYTES + (_DOC_BYTES if with_documents else 0)
        per_hit += 4 * c.info.dim if with_vectors else 0
        fixed = len(q) * k * per_hit
        if fixed > limit:
            raise ResourceExhausted(
                f"expected a response of at most {limit} bytes (max_response_bytes), got "
                f"{len(q)} queries x k={k} x {per_hit} bytes per hit = {fixed} bytes"
            )
        with c.lock.read_lock():
            present = [r.id for r in recs if c.index.has_tenant(r.id)]
            plan = None
            if require_all and len(present) == 2:
                ids, dist, own, plan = c.index.search_and_prepared(present, q, k, params)
            elif present and not require_all:
                ids, dist, own, plan = c.index.search_prepared(present, q, k, params, keyed)
            else:  # a tenant with nothing in this collection
                ids, dist, own = _empty(len(q), k)
            keys, which = c.index.hit_owners(own)  # per distinct owner, not per hit
            seq = c.applied_seq
            vectors = c.index.hit_vectors(own) if with_vectors else None
        # Per distinct owner, then one list lookup per hit; index -1 (padding) picks the last.
        tids = [-1 if key is None else int(key) for key in keys] + [-1]
        names = [self.catalog.name_of(t) for t in tids[:-1]] + [""]
        hit_owner = which.ravel().tolist()
        owners = [names[i] for i in hit_owner]
        docs = None
        if with_documents:
            owner_ids = np.array([tids[i] for i in hit_owner], np.int64)
            # A running budget: stop as soon as the documents pass what the response may hold,
            # so memory stays bounded by the limit plus one chunk.
            flat: list[bytes | None] = []
            budget = limit - fixed
            want = ids.ravel()
            with self.store.read() as txn:
                for at in range(0, len(want), _DOC_CHUNK):
                    part = slice(at, at + _DOC_CHUNK)
                    chunk = self.store.get_documents(txn, c.info.id, owner_ids[part], want[part])
                    budget -= sum(len(d) for d in chunk if d is not None)
                    if budget < 0:
                        raise ResourceExhausted(
                            f"expected a response of at most {limit} bytes "
                            "(max_response_bytes), got more with the documents of "
                            f"{len(q)} queries x k={k}; ask for fewer hits or no documents"
                        )
                    flat.extend(chunk)
            docs = [
                [docs_codec.decode(d) for d in flat[r * k : (r + 1) * k]] for r in range(len(ids))
            ]
        nq = len(ids)
        return SearchResult(
            ids.view(np.uint64),
            dist,
            docs,
            vectors,
            seq,
            [owners[r * k : (r + 1) * k] for r in range(nq)],
            _search_plan(plan, len(q)) if explain else None,
        )

    def _label_keys(self, where: Predicate, recs: list[TenantRecord]) -> Predicate:
        """`where` with its label names replaced by tenant ids, after checking that every
        searched tenant may filter by every label (itself, or a tenant it may share with).
        A label that is no tenant is refused exactly as one that may not be used."""
        names = labels(where)  # shape, depth and size checks first
        ids: dict[str | int, int] = {}
        for name in names:
            rec = self.catalog.get(name) if isinstance(name, str) else None
            if rec is None or any(rec.id != r.id and rec.id not in r.share_with for r in recs):
                raise PermissionDenied(
                    "expected labels the searched tenants may filter by (themselves or "
                    f"tenants they may share with), got {name!r}"
                )
            ids[name] = rec.id
        return relabel(where, ids)

    def get(
        self,
        collection: str,
        ids: Any,
        *,
        tenant: str | None = None,
        owner: str | None = None,
    ) -> Records:
        """`owner`'s vectors among `ids` (default owner: the acting tenant) that exist and
        `tenant` may read, in request order (O(log n) per id)."""
        c = self._collection(collection)
        ids = as_ids(ids, unique=False)
        self._check_batch(len(ids))
        self._handoff.check_read(tenant, owner)
        reader = self.catalog.tenant(check_name(tenant, "tenant")) if tenant is not None else None
        if owner is None and reader is None:
            raise InvalidArgument("expected the owner of the ids (the admin acts for none)")
        own = self.catalog.get(check_name(owner, "tenant")) if owner is not None else reader
        with c.lock.read_lock():
            if own is None or not c.index.has_tenant(own.id):
                ids = ids[:0]
            elif reader is not None:
                ids = ids[c.index.can_read(ids, own.id, reader.id)]
            else:
                ids = ids[c.index.contains(ids, owner=own.id)]
            vectors = (
                c.index.get_vectors(ids, owner=own.id)
                if len(ids) and own is not None
                else np.zeros((0, c.info.dim), np.float32)
            )
        name = own.name if own is not None else ""
        with self.store.read() as txn:
            raw = self.store.get_documents(
                txn, c.info.id, np.full(len(ids), own.id if own else -1), ids
            )
        return Records(ids, vectors, [name] * len(ids), [docs_codec.decode(d) for d in raw])

    def count(self, collection: str, *, tenant: str | None = None) -> int:
        c = self._collection(collection)
        with c.lock.read_lock():
            if tenant is None:
                return len(c.index)
            self._handoff.check_read(tenant)
            rec = self.catalog.tenant(tenant)
            return c.index.tenant_size(rec.id) if c.index.has_tenant(rec.id) else 0

    def list_ids(
        self,
        collection: str,
        *,
        tenant: str | None = None,
        owner: str | None = None,
        after: int | None = None,
        limit: int = 1000,
    ) -> IdPage:
        """A page of the ids `owner` (default: the acting tenant; a tenant lists only its
        own) holds in `collection`, ascending from above `after`; at most `limit`, at most
        `max_batch`. O(log n + limit): pages never materialise the tenant's ids."""
        c = self._collection(collection)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidArgument(f"expected a limit of at least 1, got {limit!r}")
        self._check_batch(limit)
        if after is not None and (
            isinstance(after, bool) or not isinstance(after, int) or not 0 <= after < NO_ID
        ):
            raise InvalidArgument(f"expected after to be an id in [0, 2**64-2], got {after!r}")
        self._handoff.check_read(tenant, owner)
        _, own = self._owner_for(tenant, owner, "list", foreign_ok=False)
        if own is None:
            return IdPage(_NO_IDS, None)
        with self.store.read() as txn:
            ids = self.store.ids_after(
                txn, c.info.id, own.id, -1 if after is None else after, limit + 1
            )
        more = len(ids) > limit
        ids = ids[:limit]
        return IdPage(ids, int(ids[-1]) if more else None)


def _search_plan(plan: Any, nq: int) -> SearchPlan:
    if plan is None:
        return SearchPlan("none", 0, 0, 0, nq)
    return SearchPlan(plan.path, plan.filter_size, plan.ef, plan.touched, plan.queries)


def _empty(nq: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.full((nq, k), -1, np.int64),
        np.full((nq, k), np.inf, np.float32),
        np.full((nq, k), -1, np.int32),
    )
