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

import hmac
import math
import re
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from hashlib import sha256
from typing import Any, cast

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


class _Entry:
    """A cached key: its verdicts prebuilt, and the moments they change."""

    __slots__ = (
        "dead",
        "expired",
        "expires_ts",
        "key_hash",
        "revoked",
        "revoked_ts",
        "usable_until",
        "valid",
    )

    def __init__(
        self,
        key_id: str,
        org_id: str,
        name: str,
        key_hash: str,
        expires_ts: float,
        revoked_ts: float,
    ) -> None:
        self.key_hash = key_hash
        self.expires_ts = expires_ts
        self.revoked_ts = revoked_ts
        self.usable_until = min(expires_ts, revoked_ts)
        self.valid = Verdict(Code.VALID, key_id, org_id, name)
        self.expired = Verdict(Code.KEY_EXPIRED, key_id, org_id, name)
        self.revoked = Verdict(Code.KEY_REVOKED, key_id, org_id, name)

    def at(self, now: float) -> Verdict:
        if now < self.usable_until:
            return self.valid
        return self.revoked if now >= self.revoked_ts else self.expired


_UNKNOWN = None  # cached marker for a well-formed key that is not in the database
_MISSING = object()
# The common header, matched in one step; anything else takes the full parser.
_FAST_HEADER = re.compile(
    r"[ \t]{0,8}(?i:x-api-key) {1,7}([A-Za-z0-9_]{1,256})[ \t]{0,8}", re.ASCII
)

_verifiers: weakref.WeakSet[Verifier] = weakref.WeakSet()
_LOOKUP = select(
    ApiKey.id, ApiKey.org_id, ApiKey.name, ApiKey.key_hash, ApiKey.expires_at, ApiKey.revoked_at
)


class Verifier:
    """Verify keys for one process. Thread-safe; share one per process and engine.

    The cache is keyed by SHA-256 of a per-process random salt and the key, so it holds
    no key in clear; the database is looked up by HMAC-SHA256(pepper, key).
    """

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
        self._salt = secrets.token_bytes(32)
        self._cache: dict[bytes, _Entry | None] = {}
        self._by_hash: dict[str, bytes] = {}
        self._generation = 0
        self._feed_position: int | None = None
        self._feed_lock = threading.Lock()
        _verifiers.add(self)

    # -- the hot path ---------------------------------------------------------------

    def verify_headers(
        self, authorization: HeaderValues, x_api_key: HeaderValues = None
    ) -> Verdict:
        """Return the Verdict for a request's Authorization and X-API-Key header values."""
        if x_api_key is None and type(authorization) is str:
            match = _FAST_HEADER.fullmatch(authorization)
            if match is not None:
                return self.verify_key(match.group(1))
        found = extract_key(authorization, x_api_key)
        if isinstance(found, Verdict):
            return found
        return self.verify_key(found)

    def verify_key(self, key: str) -> Verdict:
        """Return the Verdict for a bare key. Never raises for any string input."""
        cache_key = sha256(self._salt + key.encode()).digest()
        entry = self._cache.get(cache_key, _MISSING)
        if entry is _MISSING:
            if not keyformat.has_valid_shape(key):
                return INVALID
            entry = self._lookup(cache_key, key)
        if entry is None:
            return INVALID
        return cast(_Entry, entry).at(self._clock())

    def verify_cached(self, key: str) -> Verdict | None:
        """Return the Verdict for `key` if it needs no database lookup, else None.

        Async callers answer from here and run `verify_key` in a thread only on None.
        """
        entry = self._cache.get(sha256(self._salt + key.encode()).digest(), _MISSING)
        if entry is _MISSING:
            return None if keyformat.has_valid_shape(key) else INVALID
        if entry is None:
            return INVALID
        return cast(_Entry, entry).at(self._clock())

    # -- cold lookups and invalidation -------------------------------------------------

    def _lookup(self, cache_key: bytes, key: str) -> _Entry | None:
        generation = self._generation
        key_hash = keyformat.hash_key(key, self._pepper)
        with self._engine.connect() as conn:
            row = conn.execute(_LOOKUP.where(ApiKey.key_hash == key_hash)).first()
        entry: _Entry | None
        if row is None or not hmac.compare_digest(row.key_hash, key_hash):
            entry = _UNKNOWN
        else:
            revoked_ts = row.revoked_at.timestamp() if row.revoked_at is not None else math.inf
            entry = _Entry(
                row.id, row.org_id, row.name, key_hash, row.expires_at.timestamp(), revoked_ts
            )
        if generation == self._generation:
            if len(self._cache) >= self._max_entries:
                self._evict_one()
            self._cache[cache_key] = entry
            if entry is not None:
                self._by_hash[key_hash] = cache_key
        return entry

    def _evict_one(self) -> None:
        try:
            oldest = next(iter(self._cache))
            entry = self._cache.pop(oldest)
        except (StopIteration, KeyError, RuntimeError):
            return
        if entry is not None:
            self._by_hash.pop(entry.key_hash, None)

    def invalidate(self, key_hashes: Iterable[str]) -> None:
        """Drop these keys (hex HMACs) from the cache; in-flight lookups will not re-add them."""
        self._generation += 1
        for key_hash in key_hashes:
            cache_key = self._by_hash.pop(key_hash, None)
            if cache_key is not None:
                self._cache.pop(cache_key, None)

    def clear(self) -> None:
        """Drop every cached entry (the next verification of each key is a cold lookup)."""
        self._generation += 1
        self._cache.clear()
        self._by_hash.clear()

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
