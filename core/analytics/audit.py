"""Audit analytics: the organization's audit events read from SQL into Arrow, queried in DuckDB.

DuckDB cannot attach the SQL database here, so the events of one organization (and only
them: the select is filtered by org_id before any row leaves the database) are loaded
through SQLAlchemy, then grouped in DuckDB.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.analytics._duck import check_range, cursor, frame
from core.audit.exports import PARQUET_SCHEMA
from core.audit.models import AuditEvent
from core.errors import ValidationError
from core.events import EventType
from core.orgs.permissions import Actor, Permission, check

Bound = datetime | date | None

# The audit export's columns without the chain hashes ("details", JSON text, stays last).
EVENT_SCHEMA = pa.schema([f for f in PARQUET_SCHEMA if f.name not in ("prev_hash", "hash")])
ACTIVITY_GROUPS = ("actor", "action", "day", "actor_type", "target_type")


def audit_table(
    session: Session,
    actor: Actor,
    org_id: str,
    *,
    since: Bound = None,
    until: Bound = None,
    action: str | None = None,
) -> pa.Table:
    """Return the organization's events in [since, until) as an Arrow table, in chain order.

    Raise PermissionDenied without audit.read, NotFound for an organization the actor is
    not in, ValidationError for a reversed period.
    """
    check(session, org_id, actor, Permission.AUDIT_READ)
    lo, hi = check_range(since, until)
    q = select(
        AuditEvent.seq,
        AuditEvent.ts,
        AuditEvent.actor_type,
        AuditEvent.actor_id,
        AuditEvent.actor_email,
        AuditEvent.action,
        AuditEvent.target_type,
        AuditEvent.target_id,
        AuditEvent.details,
    ).where(AuditEvent.org_id == org_id)
    if lo is not None:
        q = q.where(AuditEvent.ts >= lo)
    if hi is not None:
        q = q.where(AuditEvent.ts < hi)
    if action:
        q = q.where(AuditEvent.action == action)
    cols: dict[str, list[Any]] = {name: [] for name in EVENT_SCHEMA.names}
    for row in session.execute(q.order_by(AuditEvent.seq)):
        for name, value in zip(EVENT_SCHEMA.names[:-1], row[:-1], strict=True):
            cols[name].append(value)
        cols["details"].append(json.dumps(row[-1] or {}, sort_keys=True, ensure_ascii=False))
    return pa.Table.from_pydict(cols, schema=EVENT_SCHEMA)


def audit_events(
    session: Session,
    actor: Actor,
    org_id: str,
    *,
    since: Bound = None,
    until: Bound = None,
    action: str | None = None,
) -> pd.DataFrame:
    """Return the organization's events in [since, until) as a DataFrame (details as JSON text).

    Raise PermissionDenied without audit.read.
    """
    return audit_table(session, actor, org_id, since=since, until=until, action=action).to_pandas()


def audit_activity(
    session: Session,
    actor: Actor,
    org_id: str,
    *,
    by: Sequence[str] = ("actor", "action"),
    since: Bound = None,
    until: Bound = None,
) -> pd.DataFrame:
    """Return event counts per group: the `by` columns, events, first_at, last_at.

    `by` names any of actor (the email, or the system actor's name), action, day,
    actor_type, target_type; rows are ordered by events, most first. Raise
    PermissionDenied without audit.read, ValidationError for an unknown group.
    """
    groups = [by] if isinstance(by, str) else list(by)
    if (
        not groups
        or any(g not in ACTIVITY_GROUPS for g in groups)
        or len(set(groups)) < len(groups)
    ):
        allowed = ", ".join(ACTIVITY_GROUPS)
        raise ValidationError(f"by must be distinct names among {allowed}", field="by")
    table = audit_table(session, actor, org_id, since=since, until=until)
    exprs = {
        "actor": "coalesce(actor_email, actor_type) AS actor",
        "action": "action",
        "day": "CAST(ts AS DATE) AS day",
        "actor_type": "actor_type",
        "target_type": "target_type",
    }
    con = cursor()
    con.register("events", table)
    keys = ", ".join(exprs[g] for g in groups)
    order = ", ".join(groups)
    sql = f"""
        SELECT {keys}, count(*) AS events, min(ts) AS first_at, max(ts) AS last_at
        FROM events GROUP BY ALL ORDER BY events DESC, {order}
    """  # noqa: S608 (identifiers come from fixed lists; values are bound)
    return frame(con, sql, {})


def signin_failures(
    session: Session,
    actor: Actor,
    org_id: str,
    *,
    by: str = "email",
    since: Bound = None,
    until: Bound = None,
) -> pd.DataFrame:
    """Return failed sign-ins (audit action auth.signin_failed) per email or per day.

    by="email": email, failures, while_locked (attempts refused because the account was
    locked), first_at, last_at, peak_hour (most failures in one clock hour: a burst suggests
    password guessing), most failures first. by="day": day,
    failures, emails. The email is the event details' `email`, else the actor's; an event
    of a burst counts its details' `count` failures (older events count one).
    Raise PermissionDenied without audit.read, ValidationError for another `by`.
    """
    if by not in ("email", "day"):
        raise ValidationError("by must be email or day", field="by")
    table = audit_table(
        session, actor, org_id, since=since, until=until, action=EventType.SIGNIN_FAILED
    )
    con = cursor()
    con.register("events", table)
    base = """
        f AS (
            SELECT ts, lower(coalesce(json_extract_string(details, '$.email'), actor_email,
                                      '(unknown)')) AS email,
                   json_extract_string(details, '$.reason') = 'locked' AS locked,
                   coalesce(TRY_CAST(json_extract_string(details, '$.count') AS BIGINT), 1) AS n
            FROM events
        )
    """
    if by == "email":
        sql = f"""
            WITH {base},
            hourly AS (SELECT email, date_trunc('hour', ts) AS hour, CAST(sum(n) AS BIGINT) AS n
                       FROM f GROUP BY ALL)
            SELECT f.email, CAST(sum(f.n) AS BIGINT) AS failures,
                   CAST(coalesce(sum(f.n) FILTER (WHERE locked), 0) AS BIGINT) AS while_locked,
                   min(ts) AS first_at, max(ts) AS last_at,
                   (SELECT max(n) FROM hourly h WHERE h.email = f.email) AS peak_hour
            FROM f GROUP BY f.email ORDER BY failures DESC, f.email
        """  # noqa: S608 (identifiers come from fixed lists; values are bound)
    else:
        sql = f"""
            WITH {base}
            SELECT CAST(ts AS DATE) AS day, CAST(sum(n) AS BIGINT) AS failures,
                   count(DISTINCT email) AS emails
            FROM f GROUP BY ALL ORDER BY day
        """  # noqa: S608 (identifiers come from fixed lists; values are bound)
    return frame(con, sql, {})
