"""Append to and verify the per-organization audit hash chain; list and export events.

Each event's hash is SHA-256 over a canonical JSON of its fields and the previous
event's hash; the organization row holds the head (last seq and hash), so an edited,
removed (even the last) or reordered event is found by `verify_chain`.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.audit.models import AuditEvent
from core.clock import resolve
from core.errors import ValidationError
from core.events import EventType
from core.orgs.models import Organization
from core.orgs.permissions import Actor, Permission, check

GENESIS = "0" * 64
EXPORT_COLUMNS = (
    "seq",
    "ts",
    "actor_type",
    "actor_id",
    "actor_email",
    "action",
    "target_type",
    "target_id",
    "details",
    "prev_hash",
    "hash",
)
_FORBIDDEN_DETAIL_KEYS = {"key", "secret", "password", "token", "pepper"}


def _canonical_ts(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(event: AuditEvent) -> str:
    """Return the chain hash of `event` from its fields and its prev_hash."""
    body = {
        "org_id": event.org_id,
        "seq": event.seq,
        "ts": _canonical_ts(event.ts),
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "actor_email": event.actor_email,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "details": event.details,
        "prev_hash": event.prev_hash,
    }
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()


def record(
    session: Session,
    org_id: str,
    actor: Actor,
    action: EventType | str,
    *,
    target: tuple[str, str] | None = None,
    details: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> AuditEvent:
    """Append an event to the organization's chain in the caller's transaction; return it.

    Locks the organization row so concurrent writers extend the chain one at a time.
    Raise ValueError if `details` carries a field named like a secret.
    """
    details = dict(details or {})
    leaked = _FORBIDDEN_DETAIL_KEYS & {k.lower() for k in details}
    if leaked:
        raise ValueError(f"audit details must not carry secrets: {sorted(leaked)}")
    org = session.execute(
        select(Organization)
        .where(Organization.id == org_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()
    ts = resolve(now)
    event = AuditEvent(
        org_id=org_id,
        seq=org.audit_seq + 1,
        ts=ts,
        actor_type=actor.type,
        actor_id=actor.user_id,
        actor_email=actor.email,
        action=str(action),
        target_type=target[0] if target else None,
        target_id=target[1] if target else None,
        details=details,
        prev_hash=org.audit_head,
    )
    event.hash = event_hash(event)
    org.audit_seq = event.seq
    org.audit_head = event.hash
    session.add(event)
    session.flush()
    return event


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str | None = None

    def describe(self) -> str:
        if self.ok:
            return f"audit chain intact: {self.checked} events verified"
        return f"audit chain broken at event #{self.first_bad_seq}: {self.problem}"


def verify_chain(session: Session, org_id: str, actor: Actor) -> ChainReport:
    """Walk the organization's events in order and return where the chain first breaks."""
    check(session, org_id, actor, Permission.AUDIT_READ)
    org = session.get(Organization, org_id)
    assert org is not None
    expected_prev, expected_seq, checked = GENESIS, 1, 0
    rows = session.execute(
        select(AuditEvent).where(AuditEvent.org_id == org_id).order_by(AuditEvent.seq)
    ).scalars()
    for event in rows:
        if event.seq != expected_seq:
            return ChainReport(False, checked, expected_seq, f"event #{expected_seq} was removed")
        if event.prev_hash != expected_prev:
            return ChainReport(
                False,
                checked,
                event.seq,
                f"event #{event.seq} does not follow #{event.seq - 1} "
                "(an event was removed, inserted or reordered)",
            )
        if event_hash(event) != event.hash:
            return ChainReport(False, checked, event.seq, f"event #{event.seq} was altered")
        expected_prev, expected_seq, checked = event.hash, expected_seq + 1, checked + 1
    if org.audit_seq != checked or org.audit_head != expected_prev:
        return ChainReport(
            False,
            checked,
            checked + 1,
            f"the chain head is event #{org.audit_seq} but only {checked} events remain "
            "(events at the end were removed)",
        )
    return ChainReport(True, checked)


@dataclass(frozen=True)
class AuditFilter:
    since: datetime | None = None
    until: datetime | None = None
    actor_email: str | None = None
    action: str | None = None


def list_events(
    session: Session,
    org_id: str,
    actor: Actor,
    filters: AuditFilter | None = None,
    *,
    limit: int | None = None,
    newest_first: bool = False,
) -> list[AuditEvent]:
    """Return the organization's events matching `filters` in chain order (or newest first)."""
    check(session, org_id, actor, Permission.AUDIT_READ)
    return list(_query(session, org_id, filters or AuditFilter(), limit, newest_first))


def _query(
    session: Session, org_id: str, f: AuditFilter, limit: int | None, newest_first: bool
) -> Iterator[AuditEvent]:
    q = select(AuditEvent).where(AuditEvent.org_id == org_id)
    if f.since is not None:
        q = q.where(AuditEvent.ts >= f.since)
    if f.until is not None:
        q = q.where(AuditEvent.ts < f.until)
    if f.actor_email:
        q = q.where(AuditEvent.actor_email == f.actor_email.strip().lower())
    if f.action:
        q = q.where(AuditEvent.action == f.action)
    q = q.order_by(AuditEvent.seq.desc() if newest_first else AuditEvent.seq)
    if limit is not None:
        q = q.limit(limit)
    return iter(session.execute(q).scalars())


def event_row(event: AuditEvent) -> dict[str, Any]:
    """Return an event as a flat dict of export columns (details as JSON text)."""
    return {
        "seq": event.seq,
        "ts": event.ts.astimezone(UTC).isoformat(),
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "actor_email": event.actor_email,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "details": json.dumps(event.details, sort_keys=True, ensure_ascii=False),
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


EXPORT_FORMATS = ("csv", "jsonl")


def write_export(rows: Iterable[dict[str, Any]], fmt: str, out: TextIO) -> int:
    """Write event rows to `out` as csv or jsonl; return how many were written."""
    n = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            n += 1
    elif fmt == "jsonl":
        for row in rows:
            out.write(json.dumps({**row, "details": json.loads(row["details"])}) + "\n")
            n += 1
    else:
        raise ValidationError(f"format must be one of {', '.join(EXPORT_FORMATS)}")
    return n


def export_events(
    session: Session,
    org_id: str,
    actor: Actor,
    fmt: str,
    path: Path,
    filters: AuditFilter | None = None,
) -> int:
    """Write the organization's filtered log to `path`; return the number of events.

    The file is written aside and renamed, so a failure leaves no partial export.
    Raise PermissionDenied without audit.export, ValidationError for an unknown format.
    """
    check(session, org_id, actor, Permission.AUDIT_EXPORT)
    if fmt not in EXPORT_FORMATS:
        raise ValidationError(f"format must be one of {', '.join(EXPORT_FORMATS)}")
    path = Path(path)
    if not path.parent.is_dir():
        raise ValidationError(f"directory {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.partial")
    rows = (event_row(e) for e in _query(session, org_id, filters or AuditFilter(), None, False))
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            n = write_export(rows, fmt, fh)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return n
