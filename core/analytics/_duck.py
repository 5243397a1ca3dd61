"""The DuckDB side shared by every analytics function: connections, the usage source, time.

Results leave DuckDB as Arrow and become pandas DataFrames through pyarrow, so timestamps
are ``datetime64[us, UTC]`` and strings are pandas strings. Every usage query is scoped by
an ``org_id = $org`` predicate that callers cannot leave out: `usage_cte` writes it.
"""

from __future__ import annotations

import os
import re
import threading
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from core.errors import ValidationError
from core.usage import schema as usage_schema

# The result codes that count as a use of a key (per-key usage_count and last_used_at).
COUNTED_CODES: tuple[str, ...] = ("valid",)

GRAINS: dict[str, str] = {"hour": "1 hour", "day": "1 day", "week": "7 days", "month": "1 month"}


def connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """Return a fresh in-memory DuckDB connection that works in UTC."""
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    if threads is not None:
        con.execute(f"SET threads = {int(threads)}")
    return con


_shared: tuple[int, duckdb.DuckDBPyConnection] | None = None
_shared_lock = threading.Lock()


def cursor() -> duckdb.DuckDBPyConnection:
    """Return a new connection to this process's shared in-memory DuckDB, working in UTC.

    Opening a database costs about 20 ms (more than some whole queries); a cursor of a
    shared one costs microseconds. Each cursor has its own registered tables and session
    settings, and may be used from its own thread. A forked child opens its own database.
    """
    global _shared
    with _shared_lock:
        if _shared is None or _shared[0] != os.getpid():
            db = duckdb.connect(":memory:")
            db.execute("SET GLOBAL TimeZone = 'UTC'")
            _shared = (os.getpid(), db)
        con = _shared[1].cursor()
    con.execute("SET TimeZone = 'UTC'")
    return con


def frame(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> pd.DataFrame:
    """Run `sql` with the named `params` it uses and return the result as a DataFrame."""
    return con.sql(sql, params=used(sql, params)).to_arrow_table().to_pandas()


def used(sql: str, params: dict[str, Any]) -> dict[str, Any]:
    """Return the entries of `params` that `sql` refers to (``$name``)."""
    return {k: v for k, v in params.items() if re.search(rf"\${k}\b", sql)}


def as_utc(value: datetime | date | None, field: str) -> datetime | None:
    """Return a bound as an aware UTC datetime (a date means its midnight, UTC)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValidationError(f"{field} must carry a time zone (UTC)", field=field)
        return value.astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(0), UTC)
    raise ValidationError(f"{field} must be a date or a datetime", field=field)


def check_range(
    since: datetime | date | None, until: datetime | date | None
) -> tuple[datetime | None, datetime | None]:
    """Return (since, until) as UTC datetimes; raise ValidationError if until precedes since."""
    lo, hi = as_utc(since, "since"), as_utc(until, "until")
    if lo is not None and hi is not None and hi < lo:
        raise ValidationError("the end of the period is before its start", field="until")
    return lo, hi


def has_usage(data_dir: Path) -> bool:
    """Return whether the usage log under `data_dir` holds at least one Parquet file."""
    root = usage_schema.usage_root(Path(data_dir))
    return root.is_dir() and next(root.glob("date=*/*.parquet"), None) is not None


def usage_cte(
    con: duckdb.DuckDBPyConnection,
    data_dir: Path,
    org_id: str,
    since: datetime | None,
    until: datetime | None,
    params: dict[str, Any],
    key_id: str | None = None,
) -> str:
    """Return ``u AS (…)``: the organization's usage records in [since, until).

    Fills `params` ($org, $glob, $since, $until, $key). With `key_id`, only that key's
    records. Day partitions outside the period are pruned before any file is opened. An
    empty or missing log reads as no rows.
    """
    if not isinstance(org_id, str) or not org_id:
        raise ValidationError("an organization id is required", field="org_id")
    params["org"] = org_id
    if has_usage(data_dir):
        params["glob"] = usage_schema.glob_pattern(Path(data_dir))
        source = "read_parquet($glob, hive_partitioning = true, hive_types = {'date': DATE})"
    else:
        empty = pa.Table.from_batches([], usage_schema.SCHEMA).append_column(
            "date", pa.array([], pa.date32())
        )
        con.register("_empty_usage", empty)
        source = "_empty_usage"
    where = ["org_id = $org"]
    if key_id is not None:
        if not isinstance(key_id, str) or not key_id:
            raise ValidationError("key_id must be a key's id", field="key_id")
        params["key"] = key_id
        where.append("key_id = $key")
    if since is not None:
        params["since"] = since
        params["since_day"] = since.date()
        where += ["ts >= $since", "date >= $since_day"]
    if until is not None:
        params["until"] = until
        params["until_day"] = until.date()
        where += ["ts < $until", "date <= $until_day"]
    cols = ", ".join((*usage_schema.COLUMNS, "date"))
    return f"u AS (SELECT {cols} FROM {source} WHERE {' AND '.join(where)})"  # noqa: S608


def grain_interval(grain: str) -> str:
    """Return DuckDB's interval for a grain name; raise ValidationError listing the grains."""
    if grain not in GRAINS:
        raise ValidationError(f"grain must be one of {', '.join(GRAINS)}", field="grain")
    return GRAINS[grain]


def day_start(value: datetime) -> datetime:
    return datetime.combine(value.astimezone(UTC).date(), time(0), UTC)


def days_ago(now: datetime, days: int, field: str = "days") -> datetime:
    """Return now minus `days` days; raise ValidationError for a negative or huge count."""
    if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= 3650:
        raise ValidationError(f"{field} must be a whole number of days, 0–3650", field=field)
    return now - timedelta(days=days)
