"""Compaction of the usage log: merge a day's small files into one, atomically.

Readers glob ``usage/date=*/*.parquet``, so a day's files must change in one step: the
merged file is written into a hidden staging directory, then the staging directory and
the day's directory swap places in one atomic `renameat2(RENAME_EXCHANGE)` call (Linux).
A reader sees either every small file or the one merged file — never both, never
neither. Files a process flushed into the day after it was listed (stragglers) are moved
back from the old directory, one atomic rename each, and the old directory is removed.

Crash safety: the merged file records the names it replaces in its Parquet metadata. A
crash before the swap leaves only a hidden staging directory (deleted by `recover`);
after the swap, `recover` finishes the job (moves stragglers, removes the replaced
files). Only closed days (before today, UTC) are compacted by default.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import StorageError, ValidationError
from core.usage.schema import SCHEMA, WRITE_OPTIONS, partition_dir, usage_root

STAGING_PREFIX = ".compact-"
LOCK_FILE = ".compact.lock"
SOURCES_META = b"integration.compacted_from"
STALE_TMP_SECONDS = 3600
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@dataclass(frozen=True)
class CompactResult:
    day: str
    files_before: int
    files_after: int
    records: int

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _exchange(a: Path, b: Path) -> None:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        raise StorageError("compaction needs renameat2 (Linux, glibc 2.28 or newer)")
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise StorageError(
            f"cannot swap usage directories atomically ({errno.errorcode.get(err, err)}); "
            "the usage log must be on a local Linux filesystem to compact it"
        )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sources_of(path: Path) -> set[str] | None:
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(SOURCES_META)
    return None if raw is None else set(json.loads(raw))


def recover(data_dir: Path) -> int:
    """Finish or undo compactions a crash interrupted; return how many were found."""
    root = usage_root(data_dir)
    if not root.is_dir():
        return 0
    found = 0
    for staging in sorted(p for p in root.glob(f"{STAGING_PREFIX}*") if p.is_dir()):
        found += 1
        day_name, _, token = staging.name[len(STAGING_PREFIX) :].rpartition("-")
        live = root / day_name
        merged = live / f"compact-{token}.parquet"
        if merged.exists():  # the swap happened: staging holds the old files
            _finish(staging, live, _sources_of(merged) or set())
        else:  # the swap never happened: the live directory is untouched
            shutil.rmtree(staging, ignore_errors=True)
    return found


def _finish(old: Path, live: Path, sources: set[str]) -> None:
    for path in sorted(old.glob("*.parquet")):
        if path.name not in sources:  # flushed after the listing: put it back
            os.rename(path, live / path.name)
    _fsync_dir(live)
    shutil.rmtree(old, ignore_errors=True)


def _clean_stale_tmp(live: Path) -> None:
    cutoff = time.time() - STALE_TMP_SECONDS
    for tmp in live.glob(".*.tmp"):
        try:
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
        except FileNotFoundError:
            pass


@contextlib.contextmanager
def _exclusive(data_dir: Path) -> Iterator[None]:
    """Hold the usage log's compaction lock (one compaction at a time, across processes)."""
    root = usage_root(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def compact_day(data_dir: Path, day: str) -> CompactResult:
    """Merge the day's files into one; return the counts. Raise StorageError if unsafe."""
    try:
        date.fromisoformat(day)
    except ValueError:
        raise ValidationError("day must be YYYY-MM-DD", field="day") from None
    with _exclusive(data_dir):
        return _compact_day(data_dir, day)


def _compact_day(data_dir: Path, day: str) -> CompactResult:
    recover(data_dir)
    live = partition_dir(data_dir, day)
    if not live.is_dir():
        return CompactResult(day, 0, 0, 0)
    _clean_stale_tmp(live)
    files = sorted(live.glob("*.parquet"))
    if len(files) <= 1:
        rows = pq.ParquetFile(files[0]).metadata.num_rows if files else 0
        return CompactResult(day, len(files), len(files), rows)
    tables = [pq.read_table(f, schema=SCHEMA, partitioning=None) for f in files]
    merged = pa.concat_tables(tables).sort_by("ts")
    token = secrets.token_hex(6)
    staging = usage_root(data_dir) / f"{STAGING_PREFIX}{live.name}-{token}"
    staging.mkdir()
    sources = json.dumps(sorted(f.name for f in files)).encode()
    out = staging / f"compact-{token}.parquet"
    merged = merged.replace_schema_metadata({SOURCES_META: sources})
    # Written once a day, sorted by time: statistics on every column are worth keeping.
    pq.write_table(merged, out, **{**WRITE_OPTIONS, "write_statistics": True})
    with open(out, "rb") as fh:
        os.fsync(fh.fileno())
    _fsync_dir(staging)
    if pq.ParquetFile(out).metadata.num_rows != merged.num_rows:  # pragma: no cover
        shutil.rmtree(staging)
        raise StorageError("the merged usage file does not hold every record; nothing changed")
    _exchange(staging, live)
    _fsync_dir(usage_root(data_dir))
    _finish(staging, live, {f.name for f in files})
    after = len(list(live.glob("*.parquet")))
    return CompactResult(day, len(files), after, merged.num_rows)


def closed_days(data_dir: Path, *, today: date | None = None) -> list[str]:
    """Return the days before `today` (UTC) that have more than one file."""
    root = usage_root(data_dir)
    today = today or datetime.now(UTC).date()
    days = []
    for path in sorted(root.glob("date=*")):
        day = path.name.removeprefix("date=")
        try:
            if date.fromisoformat(day) >= today:
                continue
        except ValueError:
            continue
        if len(list(path.glob("*.parquet"))) > 1:
            days.append(day)
    return days


def day_stats(data_dir: Path) -> list[dict[str, object]]:
    """Return, per day, the number of files, records and bytes of the usage log."""
    out: list[dict[str, object]] = []
    root = usage_root(data_dir)
    for path in sorted(root.glob("date=*")):
        files = sorted(path.glob("*.parquet"))
        records = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        size = sum(f.stat().st_size for f in files)
        out.append(
            {
                "day": path.name.removeprefix("date="),
                "files": len(files),
                "records": records,
                "bytes": size,
            }
        )
    return out
