"""SemanticCache: category-aware semantic caching of LLM answers, per tenant and partition.

>>> cache = SemanticCache(store, CacheConfig())                          # doctest: +SKIP
>>> r = cache.lookup("acme", "how do I sort a list?", emb, model="gpt-x")
>>> if not r.hit:
...     answer = call_model(...)
...     cache.store_entry("acme", "how do I sort a list?", emb, answer, model="gpt-x")

Lookup: category (the caller's, else the tenant's classifier, else "general") -> its policy
and threshold (learned from feedback, calibration.py; else adjusted to the model's load) ->
exact tier (digest of the normalised prompt) -> semantic tier (the `candidates` nearest
entries of the partition, verified if the policy says so: candidates.py, verifier.py) ->
near-identical prompts of the other categories of the same tenant, model and fingerprint
(routing.py) -> otherwise a miss with its reason. Other tenants', models' and fingerprints'
entries are never searched. Feedback on a lookup (`feedback`) calibrates the category's
threshold and the entry's own (entry_thresholds.py).

Writes: writes.py. In-memory bookkeeping: ledger.py (hit counts written back by the sweeper,
sweeper.py); start-up rebuild and saved graphs: recovery.py.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fasteners
import numpy as np

from curator.cache import entry as entry_codec
from curator.cache.calibration import Calibration
from curator.cache.candidates import Choice, choose
from curator.cache.categories import Categories
from curator.cache.config import CacheConfig
from curator.cache.entry import CacheEntry, EntryMeta
from curator.cache.entry_thresholds import EntryThresholds
from curator.cache.ledger import Ledger
from curator.cache.load import LoadController
from curator.cache.lookup_log import LookupLog, LookupRecord, check_feedback
from curator.cache.partition import Partition, PartitionKey, prompt_digest
from curator.cache.policy import DEFAULT_CATEGORY, CategoryPolicy
from curator.cache.policy_state import policy_states
from curator.cache.recovery import ID as _ID
from curator.cache.recovery import rebuild, save_graphs
from curator.cache.routing import route
from curator.cache.single_flight import SingleFlight
from curator.cache.sweeper import Sweeper, write_back_hits
from curator.cache.validation import (
    check_model,
    check_prompt,
    partition_key,
    unit_vector,
)
from curator.cache.verifier import LexicalVerifier, Verifier
from curator.cache.writes import CacheWrites
from curator.errors import InvalidArgument, NotFound
from curator.results import CacheLookup, CacheStats, ModelLoad, PolicyState
from curator.storage.store import Store

__all__ = ["CacheConfig", "SemanticCache"]

log = logging.getLogger(__name__)


class SemanticCache(CacheWrites):
    """Thread-safe: lookups run in parallel, stores and invalidations are serialised.
    `clock` (unix seconds) is injectable for tests; `known_tenants` at start-up drops the
    entries of tenants that no longer exist; `graph_dir`: where HNSW graphs are saved at
    close and read back at the next start (None: always rebuilt)."""

    def __init__(
        self,
        store: Store,
        config: CacheConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        known_tenants: set[str] | None = None,
        background: bool = True,
        graph_dir: Path | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        self.store = store
        self.graph_dir = graph_dir
        self.config = config or CacheConfig()
        if verifier is None and self.config.pair_model:
            from curator.cache.pair_model import verifier_from_dir

            verifier = verifier_from_dir(self.config.pair_model, self.config.pair_pre_threshold)
        self._verifier = verifier
        self.clock = clock
        self.load = LoadController(self.config.load_config(), clock)
        self.categories = Categories(store, self.config.classifier_min_similarity)
        self.calibration = Calibration(store, min_obs=self.config.calibration_min_obs)
        n = self.config.calibration_min_obs
        self.entry_thresholds = EntryThresholds(store, max_obs=max(64, n), min_obs=n)
        self.lookups = LookupLog(self.config.feedback_window)
        self._params = self.config.partition_params()
        self.embedder: Any = None
        if self.config.embedder:
            from curator.cache.embedder import TextEmbedder

            if self.config.embedder != TextEmbedder.name:
                raise InvalidArgument(
                    f"expected embedder '' or {TextEmbedder.name!r}, got {self.config.embedder!r}"
                )
            self.embedder = TextEmbedder()
        self._lock = fasteners.ReaderWriterLock()
        self._write = threading.Lock()  # writers (stores, invalidations, sweeps)
        self._partitions: dict[PartitionKey, Partition] = {}
        # (tenant, model, fingerprint) -> categories with a partition (routing.py)
        self.siblings: dict[tuple[str, str, str], set[str]] = {}
        self.ledger = Ledger()
        self._flights = SingleFlight(self.config.pending_ttl_s)
        self._counters: dict[tuple[str, str, str], int] = {}
        self._counter_lock = threading.Lock()
        rebuild(self, known_tenants)
        self.entry_thresholds.keep_only(self.ledger.metas)
        self._sweeper: Sweeper | None = None
        if background and self.config.sweep_every_s > 0 and not store.readonly:
            self._sweeper = Sweeper(self.sweep, self.config.sweep_every_s)

    @property
    def _metas(self) -> dict[int, EntryMeta]:  # the ledger's, for tests and inspection
        return self.ledger.metas

    def close(self) -> None:
        """Stop the sweeper and write back hit counts."""
        if self._sweeper is not None:
            self._sweeper.stop()
            self._sweeper = None
        if not self.store.readonly:
            self._flush_hits()
            self.calibration.flush()
            self.entry_thresholds.flush()
            self.save_graphs()

    # -- lookups --------------------------------------------------------------------------
    def lookup(
        self,
        tenant: str,
        prompt: str,
        embedding: Any,
        *,
        model: str,
        fingerprint: str = "",
        category: str | None = None,
        wait_s: float = 0.0,
        active: Callable[[], bool] | None = None,
    ) -> CacheLookup:
        """Is there a cached answer to `prompt` (its embedding (dim,)) for this tenant, model
        and fingerprint? With `wait_s` > 0 (capped at config.max_wait_s), a lookup that finds
        the prompt pending (another caller generating it) waits up to that long for the
        answer, and stops waiting as soon as `active()` turns False (the caller went away)."""
        check_prompt(prompt, self.config.max_prompt_bytes)
        x, fingerprint = self._vectors(
            [prompt], None if embedding is None else [embedding], fingerprint
        )
        q = x[0]
        if not isinstance(wait_s, int | float) or not 0 <= wait_s <= 600:
            raise InvalidArgument(f"expected wait_s in [0, 600], got {wait_s!r}")
        wait_s = min(float(wait_s), self.config.max_wait_s)
        cat, source = self.categories.resolve(tenant, category, q)
        key = partition_key(tenant, model, fingerprint, cat)
        policy = self.policy(tenant, cat)
        pressure = self.load.pressure(model)
        threshold = self.threshold(tenant, cat, policy, pressure)

        def miss(reason: str, sim: float = math.nan, leader: bool = False) -> CacheLookup:
            self._count(tenant, cat, "miss_" + reason)
            return CacheLookup(False, reason, None, sim, 0, cat, source, threshold, leader)

        if not policy.cacheable:
            return miss("not_cacheable")
        digest = prompt_digest(prompt)
        now = self.clock()
        with self._lock.read_lock():
            part = self._partitions.get(key)
            if part is not None and part.dim != len(q):
                raise InvalidArgument(
                    f"expected an embedding of dimension {part.dim} for this model and "
                    f"fingerprint, got {len(q)}"
                )
            choice = Choice(reason="empty")
            tier, routed = "exact", ""
            if part is not None and len(part):
                choice.reason = "below_threshold"
                eid = part.exact.get(digest)
                if eid is not None and self._alive(eid, now, pressure):
                    choice.found = (eid, 1.0, 1.0)
                elif eid is not None:
                    choice.best, choice.reason = 1.0, "expired"
                if choice.found is None and not policy.exact_only:
                    tier = "semantic"
                    ids, sims = part.search(q, self.config.candidates)
                    choice = self._choose(ids, sims, prompt, policy, threshold, now, pressure)
            if choice.found is None and not policy.exact_only:
                routed_choice = route(self, key, q, prompt, policy, threshold, now, pressure)
                if routed_choice is not None:
                    choice, tier, routed = routed_choice[0], "semantic", routed_choice[1]
            if choice.found is not None:
                eid, sim, score = choice.found
                with self.store.read() as txn:
                    raw = self.store.get_raw(txn, "cache", _ID.pack(eid))
                meta = self.ledger.record_hit(eid, now) if raw is not None else None
                if raw is not None and meta is not None:
                    self._count(tenant, cat, "hit_" + tier + ("_routed" if routed else ""))
                    lookup_id = 0
                    if tier == "semantic":
                        lookup_id = self.lookups.add(LookupRecord(tenant, cat, eid, score, True))
                    return CacheLookup(
                        True,
                        tier,
                        entry_codec.decode(eid, raw).response,
                        sim,
                        eid,
                        cat,
                        source,
                        threshold,
                        age_s=now - meta.created,
                        lookup_id=lookup_id,
                        score=score,
                        routed_from=routed,
                    )
        self.load.record_miss(model)
        pending = self._flights.claim((key, digest), now)
        if pending is not None:
            if wait_s > 0 and self._wait(pending.done, wait_s, active):
                return self.lookup(
                    tenant, prompt, q, model=model, fingerprint=fingerprint, category=category
                )
            return miss("pending", choice.best)
        out = miss(choice.reason, choice.best, leader=True)
        if choice.scored is not None:  # a candidate feedback may judge (exploration)
            eid, _, score = choice.scored
            lookup_id = self.lookups.add(LookupRecord(tenant, cat, eid, score, False))
            out = dataclasses.replace(out, lookup_id=lookup_id, score=score, entry_id=eid)
        return out

    @staticmethod
    def _wait(done: threading.Event, wait_s: float, active: Callable[[], bool] | None) -> bool:
        """Wait for `done` up to wait_s, in short slices while `active()` holds."""
        if active is None:
            return done.wait(wait_s)
        deadline = time.monotonic() + wait_s
        while active():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if done.wait(min(left, 0.05)):
                return True
        return False

    def threshold(
        self, tenant: str, category: str, policy: CategoryPolicy, pressure: float
    ) -> float:
        """The threshold a lookup applies: learned from feedback (calibration.py) once there
        is enough of it, else the policy's at this model pressure."""
        return self.calibration.applied(
            tenant, category, policy.max_false_hit_rate, policy.effective_threshold(pressure)
        )

    def _choose(
        self,
        ids: np.ndarray,
        sims: np.ndarray,
        prompt: str,
        policy: CategoryPolicy,
        threshold: float,
        now: float,
        pressure: float,
    ) -> Choice:
        return choose(
            ids,
            sims,
            threshold=threshold,
            verify=self.verifier if policy.verify else None,
            floor=policy.verify_floor,
            alive=lambda e: self._alive(e, now, pressure),
            prompt=prompt,
            prompt_of=self._prompt_of,
            threshold_of=self.entry_threshold_of(threshold, policy),
        )

    def entry_threshold_of(
        self, threshold: float, policy: CategoryPolicy
    ) -> Callable[[int], float] | None:
        """Each entry's own threshold given the category's (entry_thresholds.py), or None
        when no entry has feedback or calibration is off (every entry: `threshold`)."""
        delta = policy.max_false_hit_rate
        if delta <= 0 or not self.entry_thresholds.has_feedback():
            return None
        return lambda e: self.entry_thresholds.threshold(e, threshold, delta)

    def _prompt_of(self, entry_id: int) -> str | None:
        with self.store.read() as txn:
            raw = self.store.get_raw(txn, "cache", _ID.pack(entry_id))
        return None if raw is None else entry_codec.prompt_of(raw)

    @property
    def verifier(self) -> Verifier:
        if self._verifier is None:
            self._verifier = LexicalVerifier()
        return self._verifier

    def _vectors(
        self, prompts: list[str], embeddings: Any, fingerprint: str
    ) -> tuple[np.ndarray, str]:
        """Unit embeddings (n, dim) of the prompts: the caller's, or (embeddings None) the
        server embedder's, whose name then joins the fingerprint so that its vectors never
        share a partition with another model's."""
        if embeddings is None:
            if self.embedder is None:
                raise InvalidArgument(
                    "expected an embedding: this server embeds no text (CacheConfig.embedder)"
                )
            return self.embedder.embed(prompts), f"{fingerprint}|embedder={self.embedder.name}"
        rows = [unit_vector(e) for e in embeddings]
        if len({len(r) for r in rows}) != 1:
            raise InvalidArgument(
                f"expected embeddings of one dimension, got {sorted({len(r) for r in rows})}"
            )
        return np.stack(rows), fingerprint

    def _alive(self, eid: int, now: float, pressure: float) -> bool:
        m = self.ledger.metas[eid]
        if now < m.expires:
            return True
        if pressure <= 0:
            return False
        policy = self.policy(m.key.tenant, m.category)
        return now < m.created + policy.effective_ttl(m.expires - m.created, pressure)

    def drop_tenant(self, tenant: str) -> None:
        """Forget everything of a tenant: entries, policies, classifier examples."""
        self.invalidate(tenant)
        self.categories.drop_tenant(tenant)
        self.calibration.forget(tenant)
        self.lookups.forget(tenant)

    # -- feedback ---------------------------------------------------------------------------
    def feedback(
        self, tenant: str, *, lookup_id: int = 0, entry_id: int = 0, correct: bool
    ) -> dict[str, Any]:
        """Report whether the answer of a lookup (`lookup_id`; or of the latest lookup that
        served `entry_id`) was right. A served hit or a scored candidate below the threshold
        (exploration) both count; each lookup once. The category's threshold is then
        re-learned to hold its max_false_hit_rate (calibration.py), and so is the entry's
        own (entry_thresholds.py). Returns both calibration states. Raises NotFound for a
        lookup this tenant did not make recently."""
        check_feedback(lookup_id, entry_id, correct)
        rec = self.lookups.take(tenant, lookup_id, entry_id)
        try:
            policy = self.policy(tenant, rec.category)
        except NotFound:  # the category's policy was dropped since
            policy = self.policy(tenant, DEFAULT_CATEGORY)
        delta = policy.max_false_hit_rate
        self.calibration.record(tenant, rec.category, rec.score, correct, delta)
        if rec.entry_id in self.ledger:
            self.entry_thresholds.record(rec.entry_id, rec.score, correct)
        self._count(tenant, rec.category, "feedback_" + ("correct" if correct else "wrong"))
        base = self.threshold(tenant, rec.category, policy, 0.0)
        return {
            "category": rec.category,
            **self.calibration.view(tenant, rec.category, delta),
            **self.entry_thresholds.view(rec.entry_id, base, delta),
        }

    # -- policies -------------------------------------------------------------------------
    def policy(self, tenant: str, category: str) -> CategoryPolicy:
        return self.categories.policy(tenant, category)

    def policies(self, tenant: str, model: str = "") -> dict[str, PolicyState]:
        """Every category of the tenant ("": the database-wide defaults): its policy, its
        current threshold (learned from feedback, else load-adjusted for `model`) and TTL,
        and its learned state (policy_state.py)."""
        return policy_states(self, tenant, model)

    # -- load -------------------------------------------------------------------------------
    def report_load(self, model: str, load: float) -> ModelLoad:
        return self.load.report(check_model(model), load).view()

    def set_capacity(self, model: str, rps: float) -> None:
        self.load.set_capacity(check_model(model), rps)

    # -- stats, sweeping ---------------------------------------------------------------------
    def stats(self, tenant: str | None = None) -> CacheStats:
        """Counters by category and outcome, entries and bytes by category, model loads.
        A tenant sees only its own numbers; None: the whole database."""
        with self._counter_lock:
            counters = dict(self._counters)
        by_cat: dict[str, dict[str, int]] = {}
        for (t, c, what), n in counters.items():
            if tenant is None or t == tenant:
                d = by_cat.setdefault(c, {})
                d[what] = d.get(what, 0) + n
        with self._lock.read_lock():
            for c, n, b in self.ledger.usage(tenant):
                d = by_cat.setdefault(c, {})
                d["entries"] = d.get("entries", 0) + n
                d["bytes"] = d.get("bytes", 0) + b
            partitions = sum(1 for k in self._partitions if tenant is None or k.tenant == tenant)
        return CacheStats(
            categories=by_cat,
            partitions=partitions,
            entries=sum(d.get("entries", 0) for d in by_cat.values()),
            models={m: s.view() for m, s in self.load.state().items()},
        )

    def sweep(self) -> int:
        """Remove entries past their (load-adjusted) expiry, give up stale single-flight slots
        and write back hit counts. Returns the entries removed."""
        now = self.clock()
        with self._write:
            dead = self.ledger.expired(
                now, lambda i, t: self._alive(i, t, self.load.pressure(self._metas[i].key.model))
            )
            self._delete(dead)
        self._flights.expire(now)
        self._flush_hits()
        self.calibration.flush()
        self.entry_thresholds.flush()
        if dead:
            log.info("cache sweep removed %d expired entries", len(dead))
        return len(dead)

    def _flush_hits(self) -> None:
        with self._write:
            write_back_hits(self.store, self.ledger)

    # -- internals ---------------------------------------------------------------------------
    def _count(self, tenant: str, category: str, what: str, n: int = 1) -> None:
        k = (tenant, category, what)
        with self._counter_lock:
            self._counters[k] = self._counters.get(k, 0) + n

    def _forget(self, ids: list[int]) -> None:
        self.entry_thresholds.forget(ids)
        for i, m in self.ledger.forget(ids):
            part = self._partitions.get(m.key)
            if part is not None:
                part.remove(i, m.digest)
                if not len(part):
                    self._detach(m.key)

    def partition(self, key: PartitionKey) -> Partition | None:
        return self._partitions.get(key)

    def _attach(self, key: PartitionKey, part: Partition) -> None:
        self._partitions[key] = part
        self.siblings.setdefault((key.tenant, key.model, key.fingerprint), set()).add(key.category)

    def _detach(self, key: PartitionKey) -> None:
        del self._partitions[key]
        group = (key.tenant, key.model, key.fingerprint)
        cats = self.siblings.get(group)
        if cats is not None:
            cats.discard(key.category)
            if not cats:
                del self.siblings[group]

    def _add_many(
        self, key: PartitionKey, ids: list[int], metas: list[EntryMeta], x: np.ndarray
    ) -> None:
        if not ids:
            return
        part = self._partitions.get(key)
        if part is None:
            part = Partition(x.shape[1], self._params)
            self._attach(key, part)
        part.add(np.array(ids, np.int64), x, [m.digest for m in metas])
        self.ledger.register(key, ids, metas)

    def save_graphs(self) -> int:
        """Save every partition's HNSW graph next to the store (read back at the next start
        instead of rebuilding it) and drop saved graphs of partitions gone since. Returns the
        number saved."""
        with self._write:
            return save_graphs(self)

    def entries(self, tenant: str) -> Iterator[CacheEntry]:
        """Every stored entry of a tenant (for inspection and tests), in id order."""
        with self.store.read() as txn:
            for k, v in self.store.scan_raw(txn, "cache"):
                e = entry_codec.decode(_ID.unpack(k)[0], v)
                if e.tenant == tenant:
                    yield e
