"""Key health: idle, never-used and soon-expiring keys, from SQL key rows and the usage log.

The key rows come from SQL (through the keys service, which checks the actor's role);
their use comes from the Parquet log, joined in DuckDB. A key is *live* while it is
neither revoked nor expired (a rolled key in its grace period is live).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
from sqlalchemy.orm import Session

from core.analytics._duck import (
    COUNTED_CODES,
    check_range,
    cursor,
    days_ago,
    frame,
    usage_cte,
)
from core.clock import resolve
from core.keys import service as keys_service
from core.keys.policy import KeyStatus
from core.orgs.permissions import Actor, Permission, check

LIVE = (KeyStatus.ACTIVE, KeyStatus.EXPIRING)

_KEY_SCHEMA = pa.schema(
    [
        ("key_id", pa.string()),
        ("name", pa.string()),
        ("masked", pa.string()),
        ("status", pa.string()),
        ("created_by", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("expires_at", pa.timestamp("us", tz="UTC")),
        ("revoked_at", pa.timestamp("us", tz="UTC")),
        ("rolled_from", pa.string()),
        ("sql_last_used_at", pa.timestamp("us", tz="UTC")),
        ("sql_usage_count", pa.int64()),
    ]
)


def _key_table(session: Session, org_id: str, actor: Actor, now: datetime) -> pa.Table:
    check(session, org_id, actor, Permission.USAGE_READ)
    # As of `now`: keys created later do not exist yet, a later revocation has not happened.
    views = [
        v for v in keys_service.list_keys(session, org_id, actor, now=now) if v.created_at <= now
    ]
    rows = [
        {
            "key_id": v.id,
            "name": v.name,
            "masked": v.masked,
            "status": v.status,
            "created_by": v.created_by,
            "created_at": v.created_at,
            "expires_at": v.expires_at,
            "revoked_at": v.revoked_at if v.revoked_at and v.revoked_at <= now else None,
            "rolled_from": v.rolled_from,
            "sql_last_used_at": v.last_used_at,
            "sql_usage_count": v.usage_count,
        }
        for v in views
    ]
    return pa.Table.from_pylist(rows, schema=_KEY_SCHEMA)


def _query(
    session: Session,
    actor: Actor,
    org_id: str,
    data_dir: Path,
    now: datetime,
    body: str,
    params: dict[str, Any],
) -> pd.DataFrame:
    con = cursor()
    con.register("keys", _key_table(session, org_id, actor, now))
    params.update({"counted": list(COUNTED_CODES), "now": now, "live": list(LIVE)})
    cte = usage_cte(con, data_dir, org_id, None, now, params)
    sql = f"""
        WITH {cte},
        used AS (
            SELECT key_id, count(*) AS calls_total, max(ts) AS last_used_at,
                   count(*) FILTER (WHERE ts >= $now - INTERVAL 7 DAY) AS calls_7d
            FROM u WHERE key_id IS NOT NULL AND list_contains($counted, code)
            GROUP BY key_id
        ),
        k AS (
            SELECT keys.*, coalesce(used.calls_total, 0) AS calls_total,
                   coalesce(used.calls_7d, 0) AS calls_7d, used.last_used_at
            FROM keys LEFT JOIN used USING (key_id)
        )
        {body}
    """  # noqa: S608 (identifiers come from fixed lists; values are bound)
    return frame(con, sql, params)


def key_inventory(
    session: Session,
    actor: Actor,
    org_id: str,
    data_dir: Path,
    *,
    now: datetime | None = None,
) -> pd.DataFrame:
    """Return every key of the organization with its use in the log, newest first.

    Columns: key_id, name, masked, status, created_by, created_at, expires_at, revoked_at,
    rolled_from, sql_last_used_at, sql_usage_count (the SQL counters), calls_total,
    calls_7d, last_used_at (from the log). Raise PermissionDenied without usage.read.
    """
    now = resolve(now)
    return _query(
        session, actor, org_id, data_dir, now, "SELECT * FROM k ORDER BY created_at DESC", {}
    )


def idle_keys(
    session: Session,
    actor: Actor,
    org_id: str,
    data_dir: Path,
    *,
    days: int = 30,
    now: datetime | None = None,
) -> pd.DataFrame:
    """Return live keys used before but not in the last `days` days, longest idle first.

    Columns: key_id, name, masked, status, created_by, expires_at, last_used_at, idle_days,
    calls_total. Keys never used are in `unused_keys`. Raise PermissionDenied without
    usage.read, ValidationError for a bad `days`.
    """
    now = resolve(now)
    cutoff = days_ago(now, days)
    body = """
        SELECT key_id, name, masked, status, created_by, expires_at, last_used_at,
               date_diff('day', last_used_at, $now::TIMESTAMPTZ) AS idle_days, calls_total
        FROM k
        WHERE list_contains($live, status) AND last_used_at IS NOT NULL
          AND last_used_at < $cutoff
        ORDER BY last_used_at, key_id
    """
    return _query(session, actor, org_id, data_dir, now, body, {"cutoff": cutoff})


def unused_keys(
    session: Session,
    actor: Actor,
    org_id: str,
    data_dir: Path,
    *,
    include_inactive: bool = False,
    now: datetime | None = None,
) -> pd.DataFrame:
    """Return keys with no accepted request in the log, oldest first.

    Only live keys unless `include_inactive`. Columns: key_id, name, masked, status,
    created_by, created_at, expires_at, age_days. Raise PermissionDenied without usage.read.
    """
    now = resolve(now)
    body = """
        SELECT key_id, name, masked, status, created_by, created_at, expires_at,
               date_diff('day', created_at, $now::TIMESTAMPTZ) AS age_days
        FROM k
        WHERE last_used_at IS NULL AND ($all OR list_contains($live, status))
        ORDER BY created_at, key_id
    """
    return _query(session, actor, org_id, data_dir, now, body, {"all": bool(include_inactive)})


def expiring_keys(
    session: Session,
    actor: Actor,
    org_id: str,
    data_dir: Path,
    *,
    days: int = 30,
    now: datetime | None = None,
) -> pd.DataFrame:
    """Return live keys that expire within `days` days, soonest first, with their recent use.

    Columns: key_id, name, masked, status, created_by, expires_at, days_left (fractional),
    calls_7d, last_used_at. A busy key here needs rolling before it breaks a client.
    Raise PermissionDenied without usage.read, ValidationError for a bad `days`.
    """
    now = resolve(now)
    days_ago(now, days)  # validates `days`
    horizon = now + timedelta(days=days)
    body = """
        SELECT key_id, name, masked, status, created_by, expires_at,
               epoch(expires_at - $now::TIMESTAMPTZ) / 86400.0 AS days_left,
               calls_7d, last_used_at
        FROM k
        WHERE list_contains($live, status) AND expires_at > $now AND expires_at <= $horizon
        ORDER BY expires_at, key_id
    """
    return _query(session, actor, org_id, data_dir, now, body, {"horizon": horizon})


def usage_mismatches(
    session: Session,
    actor: Actor,
    org_id: str,
    data_dir: Path,
    *,
    now: datetime | None = None,
) -> pd.DataFrame:
    """Return keys whose SQL counters disagree with the log (empty when they agree).

    Columns: key_id, sql_usage_count, calls_total, sql_last_used_at, last_used_at.
    """
    now = resolve(now)
    body = """
        SELECT key_id, sql_usage_count, calls_total, sql_last_used_at, last_used_at
        FROM k
        WHERE sql_usage_count <> calls_total
           OR sql_last_used_at IS DISTINCT FROM last_used_at
        ORDER BY key_id
    """
    return _query(session, actor, org_id, data_dir, now, body, {})


STALE_CODES = ("key_revoked", "key_expired")


def stale_key_calls(
    session: Session,
    actor: Actor,
    org_id: str,
    data_dir: Path,
    *,
    since: datetime | date | None = None,
    until: datetime | date | None = None,
) -> pd.DataFrame:
    """Return the keys still called after they were revoked or expired, with their owners.

    Columns: key_id, name, masked, status, owner (the creator's email), revoked_at,
    expires_at, calls, revoked_calls, expired_calls, clients, first_call, last_call; most
    calls first. Tell each owner to update the client that still sends the key. Raise
    PermissionDenied without usage.read.
    """
    lo, hi = check_range(since, until)
    now = resolve(hi)
    con = cursor()
    con.register("keys", _key_table(session, org_id, actor, now))
    params: dict[str, Any] = {"stale": list(STALE_CODES)}
    cte = usage_cte(con, data_dir, org_id, lo, hi, params)
    sql = f"""
        WITH {cte},
        s AS (
            SELECT key_id, count(*) AS calls,
                   count(*) FILTER (WHERE code = 'key_revoked') AS revoked_calls,
                   count(*) FILTER (WHERE code = 'key_expired') AS expired_calls,
                   count(DISTINCT client) AS clients, min(ts) AS first_call, max(ts) AS last_call
            FROM u WHERE key_id IS NOT NULL AND list_contains($stale, code)
            GROUP BY key_id
        )
        SELECT s.key_id, k.name, k.masked, k.status, k.created_by AS owner, k.revoked_at,
               k.expires_at, s.calls, s.revoked_calls, s.expired_calls, s.clients,
               s.first_call, s.last_call
        FROM s LEFT JOIN keys k USING (key_id)
        ORDER BY s.calls DESC, s.key_id
    """  # noqa: S608 (identifiers come from fixed lists; values are bound)
    return frame(con, sql, params)
