"""Append to and verify the per-organization audit chain; list and export events.

Each event's hash is HMAC-SHA256, under the audit key's chain key, of the canonical JSON
(RFC 8785) of its fields and the previous event's hash. The audit key lives outside the
database, so a database writer can edit rows but cannot make an edited chain verify: the
first event they touch is named. The organization row holds the head (last seq and
hash), and signed checkpoints (`core.audit.checkpoints`) seal the head periodically, so
a removed tail is found too.

Events written before chains were keyed carry an unkeyed SHA-256 hash and no key id; the
first keyed event after them (`audit.chain_upgraded`) seals their head as it was.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.audit import checkpoints
from core.audit.canonical import jcs, jcs_text, timestamp
from core.audit.keyring import AuditKeyring, keyring_for
from core.audit.models import AuditCheckpoint, AuditEvent
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
_AUDIT_ACTOR = Actor.system("audit")


def event_body(event: AuditEvent) -> dict[str, Any]:
    """Return the fields an event's hash covers (with its prev_hash and key id)."""
    body = {
        "org_id": event.org_id,
        "seq": event.seq,
        "ts": timestamp(event.ts),
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "actor_email": event.actor_email,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "details": event.details,
        "prev_hash": event.prev_hash,
    }
    if event.key_id is not None:
        body["key_id"] = event.key_id
    return body


def legacy_hash(event: AuditEvent) -> str:
    """Return the unkeyed SHA-256 hash events carried before chains were keyed.

    Anyone can compute it: it catches a careless edit, not a forger.
    """
    body = event_body(event)
    body.pop("key_id", None)
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()


def event_hash(event: AuditEvent, keyring: AuditKeyring | None = None) -> str:
    """Return the chain hash of `event`: keyed by its audit key, or legacy when it has none.

    Raise LookupError if the event names an audit key the keyring does not hold.
    """
    if event.key_id is None:
        return legacy_hash(event)
    if keyring is None:
        raise LookupError("a keyed event needs the audit keyring")
    key = keyring.get(event.key_id)
    if key is None:
        raise LookupError(f"audit key {event.key_id} is not configured")
    return key.mac(jcs(event_body(event)))


def _append(
    session: Session,
    org: Organization,
    actor: Actor,
    action: str,
    target: tuple[str, str] | None,
    details: dict[str, Any],
    ts: datetime,
    keyring: AuditKeyring,
) -> AuditEvent:
    event = AuditEvent(
        org_id=org.id,
        seq=org.audit_seq + 1,
        ts=ts,
        actor_type=actor.type,
        actor_id=actor.user_id,
        actor_email=actor.email,
        action=action,
        target_type=target[0] if target else None,
        target_id=target[1] if target else None,
        details=details,
        prev_hash=org.audit_head,
        key_id=keyring.current.id,
    )
    event.hash = event_hash(event, keyring)
    org.audit_seq = event.seq
    org.audit_head = event.hash
    session.add(event)
    return event


def _lock_org(session: Session, org_id: str) -> Organization:
    return session.execute(
        select(Organization)
        .where(Organization.id == org_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()


def _head_key_id(session: Session, org: Organization) -> str | None:
    if org.audit_seq == 0:
        return None
    return session.execute(
        select(AuditEvent.key_id).where(
            AuditEvent.org_id == org.id, AuditEvent.seq == org.audit_seq
        )
    ).scalar_one_or_none()


def _adopt_current_key(
    session: Session, org: Organization, keyring: AuditKeyring, ts: datetime
) -> None:
    """Before the first event under a new audit key, record the change in the chain itself."""
    if org.audit_seq == 0:
        return
    head_key = _head_key_id(session, org)
    if head_key == keyring.current.id:
        return
    if head_key is None:
        details: dict[str, Any] = {
            "legacy_events": org.audit_seq,
            "legacy_head": org.audit_head,
            "to_key": keyring.current.id,
        }
        action = EventType.AUDIT_CHAIN_UPGRADED
    else:
        details = {
            "from_key": head_key,
            "to_key": keyring.current.id,
            "from_key_held": keyring.get(head_key) is not None,
        }
        action = EventType.AUDIT_KEY_CHANGED
    _append(session, org, _AUDIT_ACTOR, str(action), None, details, ts, keyring)


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

    Locks the organization row so concurrent writers extend the chain one at a time, and
    seals the head in a signed checkpoint when the last one is old (`checkpoints.due`).
    Raise ValueError if `details` carries a field named like a secret.
    """
    details = dict(details or {})
    leaked = _FORBIDDEN_DETAIL_KEYS & {k.lower() for k in details}
    if leaked:
        raise ValueError(f"audit details must not carry secrets: {sorted(leaked)}")
    keyring = keyring_for(session)
    org = _lock_org(session, org_id)
    ts = resolve(now)
    _adopt_current_key(session, org, keyring, ts)
    event = _append(session, org, actor, str(action), target, details, ts, keyring)
    session.flush()
    last = checkpoints.latest(session, org_id)
    if checkpoints.due(last, event.seq, ts):
        checkpoints.seal(session, org_id, event.seq, event.hash, keyring, ts, last=last)
    return event


def seal(session: Session, org_id: str, *, now: datetime | None = None) -> AuditCheckpoint | None:
    """Seal the organization's head in a signed checkpoint now, unless one already seals it.

    Upgrades an unkeyed chain (or one under a retired key) to the current key first.
    Return the new checkpoint, or None when the head was already sealed.
    """
    keyring = keyring_for(session)
    org = _lock_org(session, org_id)
    ts = resolve(now)
    _adopt_current_key(session, org, keyring, ts)
    session.flush()
    last = checkpoints.latest(session, org_id)
    if org.audit_seq == 0 or (last is not None and last.seq == org.audit_seq):
        return None
    return checkpoints.seal(session, org_id, org.audit_seq, org.audit_head, keyring, ts, last=last)


def organization_ids(session: Session) -> list[str]:
    """Return every organization's id (the operator's `audit seal` walks them all)."""
    return list(session.execute(select(Organization.id).order_by(Organization.id)).scalars())


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str | None = None
    head_seq: int = 0
    head: str = GENESIS
    checkpoints: int = 0
    sealed_seq: int = 0  # the newest event a signed checkpoint seals
    key_id: str | None = None  # the audit key of the newest event

    def describe(self) -> str:
        if self.ok:
            sealed = (
                f"; signed checkpoints seal events up to #{self.sealed_seq}"
                if self.checkpoints
                else ""
            )
            return f"audit chain intact: {self.checked} events verified{sealed}"
        return f"audit chain broken at event #{self.first_bad_seq}: {self.problem}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "first_bad_seq": self.first_bad_seq,
            "problem": self.problem,
            "head_seq": self.head_seq,
            "head": self.head,
            "checkpoints": self.checkpoints,
            "sealed_seq": self.sealed_seq,
            "key_id": self.key_id,
        }


def verify_chain(
    session: Session, org_id: str, actor: Actor, *, keyring: AuditKeyring | None = None
) -> ChainReport:
    """Walk the organization's events and checkpoints; return where the chain first breaks.

    Raise PermissionDenied without audit.read, NotFound for an unknown organization.
    """
    check(session, org_id, actor, Permission.AUDIT_READ)
    keyring = keyring or keyring_for(session)
    org = session.get(Organization, org_id)
    assert org is not None
    rows = session.execute(
        select(AuditEvent).where(AuditEvent.org_id == org_id).order_by(AuditEvent.seq)
    ).scalars()
    walk = _walk(rows, keyring)
    if walk.problem is not None:
        return walk.problem
    checked, head = walk.checked, walk.head
    if checked == 0:
        return ChainReport(
            False, 0, 1, "the organization has no audit events (its log was emptied)"
        )
    cps = list(
        session.execute(
            select(AuditCheckpoint)
            .where(AuditCheckpoint.org_id == org_id)
            .order_by(AuditCheckpoint.n)
        ).scalars()
    )
    outside = checkpoints.read_digest_file(keyring.digest_dir, org_id)
    trouble = checkpoints.check(cps, walk.hashes or {}, checked, keyring, outside)
    if trouble is not None:
        return ChainReport(False, checked, trouble.seq, trouble.message)
    if org.audit_seq != checked or org.audit_head != head:
        return ChainReport(
            False,
            checked,
            checked + 1,
            f"the chain head is event #{org.audit_seq} but only {checked} events remain "
            "(events at the end were removed)",
        )
    return ChainReport(
        True,
        checked,
        head_seq=checked,
        head=head,
        checkpoints=len(cps),
        sealed_seq=cps[-1].seq if cps else 0,
        key_id=walk.key_id,
    )


@dataclass
class _Walk:
    checked: int = 0
    head: str = GENESIS
    key_id: str | None = None
    hashes: dict[int, str] | None = None
    problem: ChainReport | None = None


def _walk(rows: Iterable[AuditEvent], keyring: AuditKeyring) -> _Walk:
    """Check links, hashes and key changes in chain order."""
    w = _Walk(hashes={})
    assert w.hashes is not None
    keyed = False

    def bad(seq: int, message: str) -> _Walk:
        w.problem = ChainReport(False, w.checked, seq, message)
        return w

    for event in rows:
        seq = w.checked + 1
        if event.seq != seq:
            return bad(seq, f"event #{seq} was removed")
        if event.prev_hash != w.head:
            return bad(
                seq,
                f"event #{seq} does not follow #{seq - 1} "
                "(an event was removed, inserted or reordered)",
            )
        if event.key_id is None:
            if keyed:
                return bad(seq, f"event #{seq} was altered (it carries no keyed hash)")
            if event.hash != legacy_hash(event):
                return bad(seq, f"event #{seq} was altered")
        else:
            key = keyring.get(event.key_id)
            if key is None:
                return bad(
                    seq,
                    f"event #{seq} was sealed with audit key {event.key_id}, which is not "
                    "configured here (restore INTEGRATION_AUDIT_KEY or data/audit_key, or list "
                    "the key as retired)",
                )
            if event.hash != key.mac(jcs(event_body(event))):
                return bad(
                    seq,
                    f"event #{seq} was altered (its keyed hash does not match: edited, or "
                    "re-chained by someone without the audit key)",
                )
            problem = _key_change_problem(event, w.key_id, keyed, seq, keyring)
            if problem:
                return bad(seq, problem)
            keyed, w.key_id = True, event.key_id
        w.hashes[seq] = event.hash
        w.checked, w.head = seq, event.hash
    if w.checked and not keyed:
        return bad(
            1,
            f"none of the {w.checked} events carries a keyed hash, and no keyed seal follows "
            "them (the chain was rewritten without the audit key, or never upgraded: run "
            "`python -m core audit seal`)",
        )
    return w


def _key_change_problem(
    event: AuditEvent, prev_key: str | None, keyed: bool, seq: int, keyring: AuditKeyring
) -> str | None:
    details = event.details or {}
    # The first keyed event after unkeyed ones must seal them exactly as they were.
    if (
        not keyed
        and seq > 1
        and (
            event.action != EventType.AUDIT_CHAIN_UPGRADED
            or details.get("legacy_events") != seq - 1
            or details.get("legacy_head") != event.prev_hash
        )
    ):
        return f"event #{seq} was altered (unkeyed events precede it without a keyed seal)"
    if (
        keyed
        and event.key_id != prev_key
        and (event.action != EventType.AUDIT_KEY_CHANGED or details.get("from_key") != prev_key)
    ):
        return f"event #{seq} changes audit key without recording the change"
    if keyed and event.key_id != prev_key:
        # Keys only move forward (retired oldest first, then the current one): whoever holds
        # a retired key cannot switch a chain back to it.
        order = [k.id for k in (*keyring.retired, keyring.current)]
        if prev_key in order and order.index(str(event.key_id)) < order.index(str(prev_key)):
            return f"event #{seq} switches the chain back to retired audit key {event.key_id}"
    return None


@dataclass(frozen=True)
class AuditFilter:
    since: datetime | None = None
    until: datetime | None = None
    actor_email: str | None = None
    action: str | None = None


MAX_LISTED_ACTORS = 20


def known_actions() -> list[str]:
    """Return every action an audit event can have, sorted."""
    return sorted(str(e) for e in EventType)


def actors_in_log(session: Session, org_id: str) -> list[str]:
    """Return the distinct actor emails (and system actor names) in the organization's log."""
    q = (
        select(AuditEvent.actor_email)
        .where(AuditEvent.org_id == org_id, AuditEvent.actor_email.is_not(None))
        .distinct()
    )
    return sorted(str(a) for a in session.execute(q).scalars())


def validate_filters(
    session: Session, org_id: str, actor: Actor, filters: AuditFilter
) -> AuditFilter:
    """Return `filters` normalized (actor email lower-cased, action stripped).

    Raise ValidationError, so a typo never reads as "no such events": for an action that
    is not in the catalog (listing the valid ones), an actor who appears nowhere in the
    organization's log (listing who does), naive or reversed dates. Raise PermissionDenied
    without audit.read.
    """
    check(session, org_id, actor, Permission.AUDIT_READ)
    for name, value in (("since", filters.since), ("until", filters.until)):
        if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
            raise ValidationError(f"{name} must be a time with a time zone (UTC)", field=name)
    if filters.since and filters.until and filters.until <= filters.since:
        raise ValidationError("the end of the period is not after its start", field="until")
    action = (filters.action or "").strip() or None
    if action is not None and action not in known_actions():
        raise ValidationError(
            f"unknown action {action!r}; valid actions: {', '.join(known_actions())}",
            field="action",
        )
    email = (filters.actor_email or "").strip().lower() or None
    if email is not None:
        actors = actors_in_log(session, org_id)
        if email not in actors:
            shown = ", ".join(actors[:MAX_LISTED_ACTORS]) + (
                f" and {len(actors) - MAX_LISTED_ACTORS} more"
                if len(actors) > MAX_LISTED_ACTORS
                else ""
            )
            raise ValidationError(
                f"no event of this organization has actor {email!r}; actors in the log: "
                f"{shown or 'none'}",
                field="actor",
            )
    return AuditFilter(filters.since, filters.until, email, action)


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
    """Return an event as a flat dict of export columns (details as RFC 8785 JSON text)."""
    return {
        "seq": event.seq,
        "ts": timestamp(event.ts),
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "actor_email": event.actor_email,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "details": jcs_text(event.details or {}),
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }
