"""The verifier: header → Verdict, with an in-process cache and the key-change feed.

Hot path, in order: extract the key from the headers; HMAC it with the pepper; a cache
hit is answered from a tuple and the clock (expiry is checked on every call, so a key is
refused at the exact second it expires). On a miss the checksum is checked (a look-alike
never reaches the database), then one indexed SELECT by hash.

Revocation: a revoke or roll committed in this process drops the key from every verifier
here at commit (`after_commit`); other processes see it through the `key_changes` feed,
which `poll_changes` follows (the HTTP service polls it in the background).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session

from core.auth.contract import (
    INVALID,
    Code,
    HeaderValues,
    Verdict,
    extract_key,
)
from core.keys import format as keyformat
from core.keys.models import ApiKey, KeyChange

# (key_id, org_id, key_name, expires_ts, dead_ts); key_id None marks an unknown key.
_Entry = tuple[str | None, str | None, str | None, float, float]
_UNKNOWN: _Entry = (None, None, None, math.inf, math.inf)

_verifiers: weakref.WeakSet[Verifier] = weakref.WeakSet()
_LOOKUP = select(
    ApiKey.id, ApiKey.org_id, ApiKey.name, ApiKey.key_hash, ApiKey.expires_at, ApiKey.revoked_at
)


class Verifier:
    """Verify keys for one process. Thread-safe; share one per process and engine."""

    def __init__(
        self,
        engine: Engine,
        pepper: bytes,
        *,
        clock: Callable[[], float] = time.time,
        max_entries: int = 100_000,
    ) -> None:
        self._engine = engine
        self._pepper = pepper
        self._clock = clock
        self._max_entries = max_entries
        self._cache: dict[bytes, _Entry] = {}
        self._generation = 0
        self._feed_position: int | None = None
        self._feed_lock = threading.Lock()
        _verifiers.add(self)

    # -- the hot path ---------------------------------------------------------------

    def verify_headers(
        self, authorization: HeaderValues, x_api_key: HeaderValues = None
    ) -> Verdict:
        """Return the Verdict for a request's Authorization and X-API-Key header values."""
        found = extract_key(authorization, x_api_key)
        if isinstance(found, Verdict):
            return found
        return self.verify_key(found)

    def verify_key(self, key: str) -> Verdict:
        """Return the Verdict for a bare key. Never raises for any string input."""
        digest = hmac.digest(self._pepper, key.encode(), hashlib.sha256)
        entry = self._cache.get(digest)
        if entry is None:
            if not keyformat.has_valid_shape(key):
                return INVALID
            entry = self._lookup(digest)
        key_id, org_id, name, expires_ts, dead_ts = entry
        if key_id is None:
            return INVALID
        now = self._clock()
        if now >= dead_ts:
            return Verdict(Code.KEY_REVOKED, key_id, org_id, name)
        if now >= expires_ts:
            return Verdict(Code.KEY_EXPIRED, key_id, org_id, name)
        return Verdict(Code.VALID, key_id, org_id, name)

    # -- cold lookups and invalidation -------------------------------------------------

    def _lookup(self, digest: bytes) -> _Entry:
        generation = self._generation
        hex_digest = digest.hex()
        with self._engine.connect() as conn:
            row = conn.execute(_LOOKUP.where(ApiKey.key_hash == hex_digest)).first()
        if row is None or not hmac.compare_digest(row.key_hash, hex_digest):
            entry = _UNKNOWN
        else:
            expires_ts = row.expires_at.timestamp()
            dead_ts = row.revoked_at.timestamp() if row.revoked_at is not None else math.inf
            entry = (row.id, row.org_id, row.name, expires_ts, dead_ts)
        if generation == self._generation:
            if len(self._cache) >= self._max_entries:
                self._cache.pop(next(iter(self._cache)), None)
            self._cache[digest] = entry
        return entry

    def invalidate(self, key_hashes: Iterable[str]) -> None:
        """Drop these keys (hex hashes) from the cache; in-flight lookups will not re-add them."""
        self._generation += 1
        for key_hash in key_hashes:
            self._cache.pop(bytes.fromhex(key_hash), None)

    def clear(self) -> None:
        """Drop every cached entry (the next verification of each key is a cold lookup)."""
        self._generation += 1
        self._cache.clear()

    def poll_changes(self) -> int:
        """Apply key changes other processes committed since the last poll; return how many."""
        with self._feed_lock:
            with self._engine.connect() as conn:
                if self._feed_position is None:
                    last = conn.execute(select(func.max(KeyChange.id))).scalar()
                    self._feed_position = last or 0
                    self.clear()
                    return 0
                rows = conn.execute(
                    select(KeyChange.id, KeyChange.key_hash)
                    .where(KeyChange.id > self._feed_position)
                    .order_by(KeyChange.id)
                ).all()
            if rows:
                self.invalidate(r.key_hash for r in rows)
                self._feed_position = rows[-1].id
            return len(rows)

    @property
    def cache_size(self) -> int:
        return len(self._cache)


def _after_commit(session: Session) -> None:
    hashes = session.info.pop("key_changes", None)
    if hashes:
        for verifier in list(_verifiers):
            verifier.invalidate(hashes)


def _after_rollback(session: Session) -> None:
    session.info.pop("key_changes", None)


event.listen(Session, "after_commit", _after_commit)
event.listen(Session, "after_rollback", _after_rollback)


def describe(verdict: Verdict) -> dict[str, Any]:
    """Return the verdict as the JSON the CLI and the verify endpoint answer."""
    return verdict.to_dict()
