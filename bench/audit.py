"""Audit chain cost: the keyed chain with signed checkpoints against the unkeyed chain it replaced.

    python bench/audit.py [--quick]

On a SQLite file, prints (medians of several rounds, measured in the same run):
- appends per second, one event per committed transaction: `audit.record` (HMAC-SHA256
  over RFC 8785 JSON, the head's key lookup, a checkpoint when due) against the unkeyed
  append (SHA-256 over sorted JSON, no checkpoint) it replaced;
- per-event hashing alone, in microseconds: HMAC(JCS) against SHA-256(json.dumps);
- verification, events per second: `verify_chain` over a keyed chain.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]  # bench/http.py
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from core.audit import keyring as audit_keyring  # noqa: E402
from core.audit import service as audit  # noqa: E402
from core.audit.canonical import jcs  # noqa: E402
from core.audit.models import AuditEvent  # noqa: E402
from core.config import Settings  # noqa: E402
from core.db import make_engine, migrate  # noqa: E402
from core.orgs import service as orgs  # noqa: E402
from core.orgs.models import Organization  # noqa: E402
from core.orgs.permissions import Actor  # noqa: E402

ACTOR = Actor.system("bench")
DETAILS = {"name": "Billing export", "masked": "isk_…abcd", "reason": "rotation"}


def unkeyed_append(session: Session, org_id: str, now: datetime) -> None:
    """The append as it was before chains were keyed: lock, SHA-256 over sorted JSON, insert."""
    org = session.execute(
        select(Organization).where(Organization.id == org_id).with_for_update()
    ).scalar_one()
    event = AuditEvent(
        org_id=org_id, seq=org.audit_seq + 1, ts=now, actor_type=ACTOR.type, actor_id=None,
        actor_email=ACTOR.email, action="settings.changed", target_type=None, target_id=None,
        details=DETAILS, prev_hash=org.audit_head, key_id=None,
    )  # fmt: skip
    event.hash = audit.legacy_hash(event)
    org.audit_seq, org.audit_head = event.seq, event.hash
    session.add(event)
    session.flush()


def rate(fn, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    n, rounds = (200, 3) if args.quick else (1000, 5)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), database_url=f"sqlite:///{tmp}/bench.db")
        engine = make_engine(settings.database_url)
        migrate(engine)
        audit_keyring.bind(engine, audit_keyring.AuditKeyring.from_settings(settings))
        with Session(engine, expire_on_commit=False) as s, s.begin():
            keyed_org, _ = orgs.create_organization(s, "Keyed", "a@keyed.example", "pw-123456789")
            plain_org, _ = orgs.create_organization(s, "Plain", "a@plain.example", "pw-123456789")
        t0 = datetime(2026, 1, 1, tzinfo=UTC)

        def keyed(i: int) -> None:
            with Session(engine) as s, s.begin():
                # a minute apart: a checkpoint every 60 events (the hourly seal)
                audit.record(s, keyed_org.id, ACTOR, "settings.changed", details=DETAILS,
                             now=t0 + timedelta(minutes=i))  # fmt: skip

        def plain(i: int) -> None:
            with Session(engine) as s, s.begin():
                unkeyed_append(s, plain_org.id, t0 + timedelta(minutes=i))

        keyed_rates, plain_rates = [], []
        for r in range(rounds):
            plain_rates.append(rate(lambda i, r=r: plain(r * n + i), n))
            keyed_rates.append(rate(lambda i, r=r: keyed(r * n + i), n))
        k, p = statistics.median(keyed_rates), statistics.median(plain_rates)
        print(f"append, one event per transaction (SQLite, {n} x {rounds} rounds)")
        print(f"  unkeyed (before): {p:8.0f} events/s")
        print(f"  keyed + checkpoints: {k:8.0f} events/s   ratio {k / p:.2f}")

        with Session(engine) as s:
            event = s.execute(select(AuditEvent).limit(1)).scalar_one()
        key = audit_keyring.AuditKeyring.from_settings(settings).current
        body = audit.event_body(event)
        reps = 20_000
        t = time.perf_counter()
        for _ in range(reps):
            key.mac(jcs(body))
        hmac_us = (time.perf_counter() - t) / reps * 1e6
        t = time.perf_counter()
        for _ in range(reps):
            hashlib.sha256(
                json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
            ).hexdigest()
        sha_us = (time.perf_counter() - t) / reps * 1e6
        print("hashing one event")
        print(f"  SHA-256(json.dumps): {sha_us:6.1f} us   HMAC(RFC 8785): {hmac_us:6.1f} us"
              f"   ratio {hmac_us / sha_us:.2f}")  # fmt: skip

        times = []
        for _ in range(rounds):
            with Session(engine) as s:
                t = time.perf_counter()
                report = audit.verify_chain(s, keyed_org.id, ACTOR)
                times.append(time.perf_counter() - t)
        assert report.ok, report
        print(f"verify_chain: {report.checked / statistics.median(times):8.0f} events/s "
              f"({report.checked} events, {report.checkpoints} checkpoints)")  # fmt: skip
        engine.dispose()


if __name__ == "__main__":
    main()
