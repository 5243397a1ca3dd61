"""The DuckDB side shared by every analytics function: connections, the usage source, time.

Results leave DuckDB as Arrow and become pandas DataFrames through pyarrow, so timestamps
are ``datetime64[us, UTC]`` and strings are pandas strings. Every usage query is scoped by
an ``org_id = $org`` predicate that callers cannot leave out: `usage_cte` writes it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import ValidationError
from core.usage import schema as usage_schema

log = logging.getLogger("core.analytics")

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
    """Run `sql` with the named `params` it uses and return the result as a DataFrame.

    When the usage files fail to read (a file corrupt past its footer), each is read in
    full once, the unreadable ones are skipped, and the query runs again.
    """
    try:
        return con.sql(sql, params=used(sql, params)).to_arrow_table().to_pandas()
    except duckdb.Error:
        files = params.get("files")
        if not files:
            raise
        readable = deep_check(list(files))
        if len(readable) == len(files):
            raise
        if not readable:
            con.register("_empty_usage_files", _empty_usage())
            sql = sql.replace(_SOURCE, "_empty_usage_files")
        params["files"] = readable
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
    """Return whether the usage log under `data_dir` holds at least one readable Parquet file."""
    return bool(usage_files(data_dir))


# path -> (mtime_ns, size, problem or None): each file's footer is checked once per version.
_checked: dict[str, tuple[int, int, str | None]] = {}
_checked_lock = threading.Lock()


def _problem(path: Path, deep: bool = False) -> str | None:
    """Return why a usage file cannot be read, or None when it can."""
    try:
        pf = pq.ParquetFile(path)
        try:
            missing = set(usage_schema.COLUMNS) - set(pf.schema_arrow.names)
            if missing:
                return f"missing columns {', '.join(sorted(missing))}"
            if deep:
                pf.read()
        finally:
            pf.close()
    except (OSError, pa.ArrowException, ValueError) as exc:
        return (
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'unreadable'}"
        )
    return None


def _check(path: Path, deep: bool = False) -> str | None:
    try:
        st = path.stat()
    except OSError as exc:
        return f"{type(exc).__name__}"
    key = str(path)
    with _checked_lock:
        known = _checked.get(key)
    if known is not None and known[:2] == (st.st_mtime_ns, st.st_size) and not deep:
        return known[2]
    problem = _problem(path, deep)
    if problem is not None and (known is None or known[2] is None):
        log.warning("skipping unreadable usage file %s (%s)", path, problem)
    with _checked_lock:
        _checked[key] = (st.st_mtime_ns, st.st_size, problem)
    return problem


# day directory -> (its mtime_ns, [(file, problem or None)]): a day is listed again only
# when a file was added, removed or renamed in it. A file damaged in place is caught when a
# query fails on it (`deep_check`).
_days: dict[str, tuple[int, list[tuple[str, str | None]]]] = {}


def _day_entries(day_dir: Path) -> list[tuple[str, str | None]]:
    try:
        mtime = day_dir.stat().st_mtime_ns
    except OSError:
        return []
    key = str(day_dir)
    with _checked_lock:
        cached = _days.get(key)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    entries = [(str(p), _check(p)) for p in sorted(day_dir.glob("*.parquet"))]
    with _checked_lock:
        _days[key] = (mtime, entries)
    return entries


def _entries(
    data_dir: Path, since_day: date | None = None, until_day: date | None = None
) -> list[tuple[str, str | None]]:
    root = usage_schema.usage_root(Path(data_dir))
    if not root.is_dir():
        return []
    lo = since_day.isoformat() if since_day else None
    hi = until_day.isoformat() if until_day else None
    out: list[tuple[str, str | None]] = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.name.startswith("date=") or not entry.is_dir():
            continue
        day = entry.name.removeprefix("date=")
        if (lo is not None and day < lo) or (hi is not None and day > hi):
            continue
        out.extend(_day_entries(Path(entry.path)))
    return out


def usage_files(
    data_dir: Path, since_day: date | None = None, until_day: date | None = None
) -> list[str]:
    """Return the readable Parquet files of the usage log, optionally within [since, until] days.

    A corrupt or truncated file is skipped (and logged once, naming it); `usage_problems`
    lists them.
    """
    return [path for path, problem in _entries(data_dir, since_day, until_day) if problem is None]


def usage_problems(data_dir: Path) -> list[dict[str, str]]:
    """Return the usage files that cannot be read: path and problem, in path order."""
    return [
        {"path": path, "problem": problem}
        for path, problem in _entries(data_dir)
        if problem is not None
    ]


def usage_problem_notice(data_dir: Path) -> str | None:
    """Return a sentence naming the skipped usage files (relative to the data dir), or None."""
    problems = usage_problems(data_dir)
    if not problems:
        return None
    root = Path(data_dir)
    names = [
        str(Path(p["path"]).relative_to(root))
        if Path(p["path"]).is_relative_to(root)
        else p["path"]
        for p in problems
    ]
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (
        f"Skipped {len(names)} unreadable usage file(s): {shown}. Calls recorded in them are "
        "not counted here; an operator can see why with `python -m core usage stats`."
    )


def deep_check(files: list[str]) -> list[str]:
    """Read `files` fully; return those that still read (the others are marked unreadable)."""
    readable = [f for f in files if _check(Path(f), deep=True) is None]
    with _checked_lock:
        for f in set(files) - set(readable):
            _days.pop(str(Path(f).parent), None)
    return readable


_SOURCE = "read_parquet($files, hive_partitioning = true, hive_types = {'date': DATE})"


def _empty_usage() -> pa.Table:
    return pa.Table.from_batches([], usage_schema.SCHEMA).append_column(
        "date", pa.array([], pa.date32())
    )


def usage_cte(
    con: duckdb.DuckDBPyConnection,
    data_dir: Path,
    org_id: str | None,
    since: datetime | None,
    until: datetime | None,
    params: dict[str, Any],
    key_id: str | None = None,
    *,
    unattributed: bool = False,
) -> str:
    """Return ``u AS (…)``: the organization's usage records in [since, until).

    Fills `params` ($org, $files, $since, $until, $key). With `key_id`, only that key's
    records. With `unattributed`, the records of no organization (refused before one was
    known) instead. Day partitions outside the period are pruned before any file is opened; a
    corrupt or truncated file is skipped (`usage_problems` names it). An empty or missing
    log reads as no rows.
    """
    if unattributed:
        org_id = None
    elif not isinstance(org_id, str) or not org_id:
        raise ValidationError("an organization id is required", field="org_id")
    params["org"] = org_id
    files = usage_files(
        data_dir,
        since.date() if since is not None else None,
        until.date() if until is not None else None,
    )
    if files:
        params["files"] = files
        source = _SOURCE
    else:
        con.register("_empty_usage", _empty_usage())
        source = "_empty_usage"
    # org_id None: the records that belong to no organization (refused before one was known).
    where = ["org_id IS NULL" if org_id is None else "org_id = $org"]
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


def day_window(
    days: int, end: str | date | None = None, *, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """Return [since, until) covering `days` whole UTC days before `end` (not included).

    `end` is a date or YYYY-MM-DD; empty means tomorrow, so today (so far) is included.
    Raise ValidationError for a bad end date or day count.
    """
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3650:
        raise ValidationError("days must be a whole number of days, 1–3650", field="days")
    if isinstance(end, str) and end.strip():
        try:
            end = date.fromisoformat(end.strip())
        except ValueError:
            raise ValidationError(f"{end!r} is not a date (YYYY-MM-DD)", field="end") from None
    if not isinstance(end, date):
        end = (now or datetime.now(UTC)).astimezone(UTC).date() + timedelta(days=1)
    until = datetime.combine(end, time(0), UTC)
    return until - timedelta(days=days), until


def day_start(value: datetime) -> datetime:
    return datetime.combine(value.astimezone(UTC).date(), time(0), UTC)


def days_ago(now: datetime, days: int, field: str = "days") -> datetime:
    """Return now minus `days` days; raise ValidationError for a negative or huge count."""
    if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= 3650:
        raise ValidationError(f"{field} must be a whole number of days, 0–3650", field=field)
    return now - timedelta(days=days)
