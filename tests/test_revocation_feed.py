"""Revocation reaches every process within one second, through the key-change feed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.auth.feed import FeedFollower
from core.auth.verifier import Verifier
from core.config import Settings
from core.db import make_engine
from core.keys import service as keys
from tests._serve_util import ROOT, auth, org_with_key, sqlite_database, start_serve


def test_follower_drops_a_key_revoked_elsewhere(
    session: Session, engine: Engine, pepper: bytes, settings: Settings
) -> None:
    _org, new = org_with_key(session, pepper)
    other_engine_verifier = Verifier(engine, pepper)
    follower = FeedFollower(other_engine_verifier, interval=60)  # polled by hand below
    follower.poll_once()
    assert other_engine_verifier.verify_key(new.key).valid
    # Revoke from another process: the CLI.
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env.update(
        DATABASE_URL=str(engine.url.render_as_string(hide_password=False)),
        INTEGRATION_DATA_DIR=str(settings.data_dir),
    )
    r = subprocess.run(
        [sys.executable, "-m", "core", "keys", "revoke", new.id, "--by", "admin@acme.test"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert other_engine_verifier.verify_key(new.key).valid  # still cached: no poll yet
    assert follower.poll_once() == 1
    assert other_engine_verifier.verify_key(new.key).code == "key_revoked"


def test_follower_fails_closed_when_the_feed_cannot_be_read(
    sqlite_template: Path, tmp_path: Path
) -> None:
    # The outage is simulated by moving the SQLite file away.
    with sqlite_database(sqlite_template, tmp_path) as (database_url, _dir, session, pepper):
        _org, new = org_with_key(session, pepper)
    verifier = Verifier(make_engine(database_url, pool=False), pepper)
    follower = FeedFollower(verifier)
    follower.poll_once()
    assert verifier.verify_key(new.key).valid and verifier.cache_size == 1
    path = Path(database_url.split("///", 1)[1])
    path.rename(path.with_suffix(".moved"))
    with pytest.raises(SQLAlchemyError):
        follower.poll_once()
    assert verifier.cache_size == 0  # no stale "valid" answer outlives the feed
    assert follower.snapshot()["failures"] == 1


@pytest.mark.slow
def test_two_serve_processes_see_a_revocation_within_one_second(
    database_url: str, data_dir: Path, session: Session, pepper: bytes
) -> None:
    org, new = org_with_key(session, pepper)
    a = start_serve(database_url, data_dir, args=("--no-usage",))
    b = start_serve(database_url, data_dir, args=("--no-usage",))
    try:
        with httpx.Client(timeout=5) as c:
            for server in (a, b):  # both have the key cached as valid
                assert c.get(server.url + "/v1/whoami", headers=auth(new.key)).status_code == 200
            with session.begin():
                keys.revoke_key(session, org.admin, new.id, reason="leaked")
            revoked_at = time.monotonic()
            seen: dict[str, float] = {}
            while len(seen) < 2 and time.monotonic() - revoked_at < 3:
                for server in (a, b):
                    if server.url in seen:
                        continue
                    r = c.get(server.url + "/v1/whoami", headers=auth(new.key))
                    if r.status_code == 401:
                        assert r.json()["error"]["code"] == "key_revoked"
                        seen[server.url] = time.monotonic() - revoked_at
                time.sleep(0.01)
        assert set(seen) == {a.url, b.url}, f"not refused within 3 s: {seen}"
        print(f"revocation refused after: {sorted(seen.values())}")
        assert max(seen.values()) < 1.0, seen
    finally:
        a.stop()
        b.stop()
