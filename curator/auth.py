"""API keys: issued per tenant (or admin), stored only as SHA-256 digests.

A key is `cdb_<random>`; the store keeps sha256(key) -> {key_id, tenant, description, created}
and an in-memory copy answers every request. Keys are 256-bit random, so a fast digest is
enough: there is nothing to brute-force. An admin key given by configuration may be any
string; it is stored the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import threading
import time
from typing import Any

from curator.errors import FailedPrecondition, NotFound, Unauthenticated
from curator.results import KeyInfo
from curator.storage.store import Store

__all__ = ["ADMIN", "KeyInfo", "KeyRing", "Principal"]


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who a request acts for: the admin (tenant None) or one tenant; key_id: the key the
    request was made with ("" when none)."""

    tenant: str | None
    key_id: str = dataclasses.field(default="", compare=False)

    @property
    def is_admin(self) -> bool:
        return self.tenant is None

    def __str__(self) -> str:
        return "admin" if self.tenant is None else f"tenant:{self.tenant}"


ADMIN = Principal(None)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        with store.read() as txn:
            self._keys = {h: KeyInfo(**d) for h, d in store.all_json(txn, "api_keys").items()}

    def authenticate(self, key: str | None) -> Principal:
        if not key:
            raise Unauthenticated("expected an API key in the request metadata, got none")
        info = self._keys.get(_digest(key))
        if info is None:
            raise Unauthenticated("expected a valid API key, got an unknown or revoked one")
        return Principal(info.tenant, info.key_id)

    def issue(
        self, tenant: str | None, description: str = "", key: str | None = None
    ) -> tuple[KeyInfo, str]:
        """Create a key for `tenant` (None: admin); returns its info and the secret."""
        key = key or "cdb_" + secrets.token_urlsafe(32)
        digest = _digest(key)
        info = KeyInfo(digest[:12], tenant, description, time.time())
        with self._lock:
            self.store.write(
                lambda txn: self.store.put_json(txn, "api_keys", digest, dataclasses.asdict(info))
            )
            self._keys[digest] = info
        return info, key

    def ensure(self, key: str, tenant: str | None, description: str) -> None:
        """Register `key` (idempotent), e.g. the admin key from the configuration."""
        if _digest(key) not in self._keys:
            self.issue(tenant, description, key)

    def list_keys(self, tenant: str | None = None) -> list[KeyInfo]:
        with self._lock:  # a copy: other threads issue and revoke meanwhile
            keys = [k for k in self._keys.values() if tenant is None or k.tenant == tenant]
        return sorted(keys, key=lambda k: (k.created, k.key_id))

    def has_admin(self) -> bool:
        with self._lock:
            return any(k.tenant is None for k in self._keys.values())

    def revoke(self, key_id: str) -> KeyInfo:
        """FailedPrecondition for the last admin key (nobody could manage keys after it)."""
        with self._lock:
            digest = self._find(key_id)
            info = self._keys[digest]
            if info.tenant is None and sum(k.tenant is None for k in self._keys.values()) == 1:
                raise FailedPrecondition(
                    f"expected another admin key to remain, got the last one {key_id!r} "
                    "(rotate it instead)"
                )
            self._delete([digest])
            return self._keys.pop(digest)

    def rotate(self, key_id: str) -> tuple[KeyInfo, str]:
        """Replace a key (admin keys included) by a new one for the same tenant and
        description, in one transaction; returns the new key's info and secret."""
        with self._lock:
            old = self._find(key_id)
            info, key = self._keys[old], "cdb_" + secrets.token_urlsafe(32)
            digest = _digest(key)
            new = KeyInfo(digest[:12], info.tenant, info.description, time.time())

            def txn_fn(txn: Any) -> None:
                self.store.delete_key(txn, "api_keys", old)
                self.store.put_json(txn, "api_keys", digest, dataclasses.asdict(new))

            self.store.write(txn_fn)
            del self._keys[old]
            self._keys[digest] = new
        return new, key

    def tenant_digests(self, tenant: str) -> dict[str, KeyInfo]:
        """Digest -> info of every key of `tenant` (what a tenant bundle carries)."""
        with self._lock:
            return {h: k for h, k in self._keys.items() if k.tenant == tenant}

    def replace_tenant(self, tenant: str, keys: dict[str, KeyInfo]) -> int:
        """Make `tenant`'s keys exactly `keys` (digest -> info; a bundle import), in one
        transaction; returns how many keys were added or removed."""
        with self._lock:
            old = {h for h, k in self._keys.items() if k.tenant == tenant}
            drop, add = old - set(keys), {h: k for h, k in keys.items() if h not in old}
            taken = [h for h in add if h in self._keys]
            if taken:
                raise FailedPrecondition(f"expected unused key digests, got {taken[0][:12]}...")
            if not drop and not add:
                return 0

            def txn_fn(txn: Any) -> None:
                for h in drop:
                    self.store.delete_key(txn, "api_keys", h)
                for h, k in add.items():
                    self.store.put_json(txn, "api_keys", h, dataclasses.asdict(k))

            self.store.write(txn_fn)
            for h in drop:
                del self._keys[h]
            self._keys.update(add)
        return len(drop) + len(add)

    def _find(self, key_id: str) -> str:
        hits = [h for h, k in self._keys.items() if k.key_id == key_id]
        if not hits:
            raise NotFound(f"expected a known key id, got {key_id!r}")
        return hits[0]

    def revoke_tenant(self, tenant: str, txn: Any) -> list[str]:
        """Delete every key of `tenant` inside the caller's write transaction; returns their
        digests, to be forgotten with `forget` once the transaction committed."""
        with self._lock:
            hits = [h for h, k in self._keys.items() if k.tenant == tenant]
        for h in hits:
            self.store.delete_key(txn, "api_keys", h)
        return hits

    def forget(self, digests: list[str]) -> None:
        with self._lock:
            for h in digests:
                self._keys.pop(h, None)

    def _delete(self, digests: list[str]) -> None:
        def txn_fn(txn: Any) -> None:
            for h in digests:
                self.store.delete_key(txn, "api_keys", h)

        self.store.write(txn_fn)
