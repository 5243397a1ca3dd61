"""Follow the key-change feed in the background so revocations reach this process fast.

Every `interval` seconds (default 0.25) the follower asks the database for `key_changes`
rows past its position — one indexed range query — and drops those keys from the
verifier's cache. A revocation committed by any process is therefore refused here within
`interval` plus one query, on SQLite and PostgreSQL alike. If the database cannot be
read, the follower clears the cache (fail closed: no stale "valid" answer outlives the
feed) and keeps retrying.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from core.auth.verifier import Verifier

log = logging.getLogger("core.auth.feed")
DEFAULT_INTERVAL = 0.25


class FeedFollower:
    """A daemon thread polling the key-change feed for one verifier."""

    def __init__(self, verifier: Verifier, *, interval: float = DEFAULT_INTERVAL) -> None:
        self.verifier = verifier
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.applied = 0
        self.failures = 0
        self.last_ok: float | None = None
        self._failing = False

    def poll_once(self) -> int:
        """Apply pending changes now; return how many. On failure clear the cache and re-raise."""
        try:
            n = self.verifier.poll_changes()
        except Exception:
            self.failures += 1
            self.verifier.clear()
            raise
        self.applied += n
        self.last_ok = time.time()
        return n

    def start(self) -> FeedFollower:
        """Take the feed's current position (trying once now) and start following; return self."""
        try:
            self.poll_once()
        except Exception as exc:
            log.warning("key-change feed unavailable at start (%s); retrying", type(exc).__name__)
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="key-feed", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll_once()
            except Exception as exc:
                if not self._failing:
                    log.warning(
                        "key-change feed unavailable (%s); cache cleared", type(exc).__name__
                    )
                self._failing = True
            else:
                if self._failing:
                    log.warning("key-change feed available again")
                self._failing = False

    def stop(self, timeout: float = 5.0) -> None:
        """Stop following the feed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def snapshot(self) -> dict[str, Any]:
        """Return the follower's state: interval, changes applied, failures, last success."""
        return {
            "interval": self.interval,
            "applied": self.applied,
            "failures": self.failures,
            "ok": not self._failing and self.last_ok is not None,
            "last_ok_age": None if self.last_ok is None else round(time.time() - self.last_ok, 3),
        }
