"""The usage recorder, the per-key rollup and compaction of the Parquet usage log."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from core.keys import service as keys
from core.usage import compact
from core.usage.recorder import UsageRecorder
from core.usage.schema import glob_pattern, partition_dir
from tests._serve_util import ROOT, org_with_key

DAY1 = datetime(2026, 5, 1, 12, tzinfo=UTC).timestamp()
DAY2 = datetime(2026, 5, 2, 23, 59, 59, tzinfo=UTC).timestamp()


def count(data_dir: Path, where: str = "true") -> int:
    sql = (
        f"SELECT count(*) FROM read_parquet('{glob_pattern(data_dir)}', hive_partitioning=true)"
        f" WHERE {where}"
    )
    return int(duckdb.sql(sql).fetchall()[0][0])


Ids = tuple[str | None, str | None]


def visible_entries(data_dir: Path) -> list[str]:
    """The usage root's entries other than the compaction lock file."""
    return sorted(p.name for p in (data_dir / "usage").iterdir() if p.name != compact.LOCK_FILE)


def fill(
    recorder: UsageRecorder, n: int, ts: float, key: Ids = (None, None), code: str = "invalid_key"
) -> None:
    for i in range(n):
        recorder.record(
            ts + i / 1000, key[0], key[1], "GET", f"/v1/x/{i}", 401, 0.5, code, "127.0.0.1"
        )


def test_each_flush_writes_one_file_per_day_touched(data_dir: Path) -> None:
    recorder = UsageRecorder(data_dir)
    fill(recorder, 3, DAY1)
    fill(recorder, 2, DAY2)
    assert recorder.flush() == 5
    fill(recorder, 4, DAY1)
    assert recorder.flush() == 4
    assert len(list(partition_dir(data_dir, "2026-05-01").glob("*.parquet"))) == 2
    assert len(list(partition_dir(data_dir, "2026-05-02").glob("*.parquet"))) == 1
    assert count(data_dir, "date = '2026-05-01'") == 7
    assert recorder.snapshot()["written"] == 9 and recorder.snapshot()["files"] == 3


def test_times_and_latencies_are_kept_to_the_microsecond(data_dir: Path) -> None:
    recorder = UsageRecorder(data_dir)
    given = [DAY1 + 0.123456, DAY1 + 3599.999999, DAY2 + 0.5]
    for i, ts in enumerate(given):
        recorder.record(ts, None, None, "GET", "/v1/x", 401, 0.25 * (i + 1), "invalid_key", None)
    # the request path hands in two perf_counter readings instead: end and start
    end = time.perf_counter()
    wall = time.time()
    recorder.add(end, end - 0.0125, "org_1", "key_1", "GET", "/v1/y", 200, "valid", "10.0.0.1")
    assert recorder.flush() == 4
    table = pq.read_table(data_dir / "usage").sort_by("ts")
    times = [t.timestamp() for t in table["ts"].to_pylist()]
    assert [round(t * 1e6) for t in times[:3]] == [round(t * 1e6) for t in given]
    assert abs(times[3] - wall) < 0.01
    assert table["latency_ms"].to_pylist() == pytest.approx([0.25, 0.5, 0.75, 12.5], abs=1e-4)


def test_records_get_the_wall_time_the_clock_tells_after_it_was_set(data_dir: Path) -> None:
    recorder = UsageRecorder(data_dir)
    recorder._offset -= 3600.0  # as if the wall clock was set an hour ahead since start
    end = time.perf_counter()
    recorder.add(end, end, None, None, "GET", "/", 401, "missing_credentials", None)
    assert recorder.flush() == 1
    (ts,) = pq.read_table(data_dir / "usage")["ts"].to_pylist()
    assert abs(ts.timestamp() - time.time()) < 1.0


def test_background_flush_happens_on_batch_size_and_on_close(data_dir: Path) -> None:
    recorder = UsageRecorder(data_dir, interval=60, batch_size=50).start()
    fill(recorder, 50, DAY1)
    deadline = time.monotonic() + 5
    while recorder.snapshot()["written"] < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert recorder.snapshot()["written"] == 50  # long before the 60 s interval
    fill(recorder, 7, DAY1)
    recorder.close()
    assert count(data_dir) == 57


def test_records_sealed_in_chunks_are_written_once_each_in_order(data_dir: Path) -> None:
    recorder = UsageRecorder(data_dir, chunk=10, max_buffer=40)
    fill(recorder, 35, DAY1)  # three chunks of 10 converted on the way, 5 still raw
    assert len(recorder._sealed) == 3
    assert recorder.snapshot()["buffered"] == 35
    fill(recorder, 10, DAY1 + 1)  # 5 fit below max_buffer, 5 overflow
    assert recorder.snapshot()["overflow"] == 5
    assert recorder.flush() == 40
    table = pq.read_table(partition_dir(data_dir, "2026-05-01"))
    paths = table["path"].to_pylist()
    assert paths == [f"/v1/x/{i}" for i in range(35)] + [f"/v1/x/{i}" for i in range(5)]
    assert recorder.snapshot()["buffered"] == 0 and recorder.flush() == 0


def test_a_full_buffer_drops_to_a_counted_overflow(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = UsageRecorder(data_dir, max_buffer=10)
    fill(recorder, 25, DAY1)
    assert recorder.snapshot()["overflow"] == 15
    assert "usage buffer full" in caplog.text
    assert recorder.flush() == 10


def test_a_failing_disk_never_raises_into_the_request(data_dir: Path) -> None:
    blocker = data_dir / "not-a-dir"
    blocker.write_text("a file where the usage directory should be")
    recorder = UsageRecorder(blocker)
    fill(recorder, 5, DAY1)
    assert recorder.flush() == 0
    stats = recorder.snapshot()
    assert stats["write_failed"] == 5 and stats["written"] == 0


def test_text_that_is_not_valid_unicode_is_kept_not_lost(data_dir: Path) -> None:
    recorder = UsageRecorder(data_dir)
    recorder.record(
        DAY1, None, None, "GET", "/v1/\udcff\x00" + "x" * 5000, 401, 1.0, "invalid_key", None
    )
    assert recorder.flush() == 1
    (path,) = duckdb.sql(f"SELECT path FROM read_parquet('{glob_pattern(data_dir)}')").fetchall()[0]
    assert path.startswith("/v1/") and len(path) <= 512


def test_rollup_updates_every_key_in_one_batched_statement(
    session: Session, engine: Engine, pepper: bytes, data_dir: Path
) -> None:
    org, a = org_with_key(session, pepper)
    with session.begin():
        b = keys.create_key(session, org.id, org.admin, name="Second", expires="30", pepper=pepper)
    updates: list[Any] = []

    def on_exec(conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("UPDATE"):
            updates.append((statement, many))

    recorder = UsageRecorder(data_dir, engine)
    fill(recorder, 3, DAY1, (org.id, a.id), "valid")
    fill(recorder, 2, DAY2, (org.id, b.id), "valid")
    fill(recorder, 4, DAY2, (org.id, a.id), "key_revoked")  # refused uses are not counted
    event.listen(engine, "before_cursor_execute", on_exec)
    try:
        recorder.flush()
    finally:
        event.remove(engine, "before_cursor_execute", on_exec)
    assert len(updates) == 1 and "api_keys" in updates[0][0]
    with session.begin():
        views = {v.id: v for v in keys.list_keys(session, org.id, org.admin)}
    assert views[a.id].usage_count == 3 and views[b.id].usage_count == 2
    assert views[a.id].last_used_at == datetime.fromtimestamp(DAY1 + 0.002, UTC)
    fill(recorder, 1, DAY1 - 100, (org.id, a.id), "valid")  # an older record never lowers it
    recorder.flush()
    session.expire_all()
    with session.begin():
        views = {v.id: v for v in keys.list_keys(session, org.id, org.admin)}
    assert views[a.id].usage_count == 4
    assert views[a.id].last_used_at == datetime.fromtimestamp(DAY1 + 0.002, UTC)


def _small_files(data_dir: Path, flushes: int = 6, per: int = 7) -> UsageRecorder:
    recorder = UsageRecorder(data_dir)
    for i in range(flushes):
        fill(recorder, per, DAY1 + i)
        recorder.flush()
    return recorder


def test_compaction_keeps_the_exact_record_count(data_dir: Path) -> None:
    _small_files(data_dir)
    before = duckdb.sql(
        f"SELECT epoch_us(ts), * EXCLUDE (ts) FROM read_parquet('{glob_pattern(data_dir)}', "
        "hive_partitioning=true) ORDER BY ALL"
    ).fetchall()
    result = compact.compact_day(data_dir, "2026-05-01")
    assert (result.files_before, result.files_after, result.records) == (6, 1, 42)
    after = duckdb.sql(
        f"SELECT epoch_us(ts), * EXCLUDE (ts) FROM read_parquet('{glob_pattern(data_dir)}', "
        "hive_partitioning=true) ORDER BY ALL"
    ).fetchall()
    assert after == before
    assert visible_entries(data_dir) == ["date=2026-05-01"]
    assert compact.compact_day(data_dir, "2026-05-01").files_after == 1  # idempotent


def test_files_flushed_during_compaction_are_kept(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = _small_files(data_dir, flushes=3)
    live = partition_dir(data_dir, "2026-05-01")
    real_exchange = compact._exchange

    def exchange_after_a_late_flush(a: Path, b: Path) -> None:
        fill(recorder, 5, DAY1)  # another process flushes between listing and swap
        recorder.flush()
        real_exchange(a, b)

    monkeypatch.setattr(compact, "_exchange", exchange_after_a_late_flush)
    compact.compact_day(data_dir, "2026-05-01")
    assert len(list(live.glob("*.parquet"))) == 2
    assert count(data_dir) == 3 * 7 + 5


@pytest.mark.parametrize("crash_after_swap", [False, True])
def test_a_crashed_compaction_is_recovered_without_doubles_or_losses(
    data_dir: Path, crash_after_swap: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    _small_files(data_dir, flushes=4)

    def crash(*args: Any) -> None:
        raise KeyboardInterrupt("power cut")

    # before the swap, or after it but before the replaced files are removed
    target = "_finish" if crash_after_swap else "_exchange"
    with monkeypatch.context() as m:
        m.setattr(compact, target, crash)
        with pytest.raises(KeyboardInterrupt):
            compact.compact_day(data_dir, "2026-05-01")
    assert count(data_dir) == 28  # readers see every record exactly once, even now
    assert compact.recover(data_dir) == 1
    assert count(data_dir) == 28
    assert visible_entries(data_dir) == ["date=2026-05-01"]
    files = list(partition_dir(data_dir, "2026-05-01").glob("*.parquet"))
    assert len(files) == (1 if crash_after_swap else 4)
    for f in files:
        pq.read_table(f)


def test_compact_and_stats_commands(data_dir: Path) -> None:
    _small_files(data_dir, flushes=3)
    env = {
        **os.environ,
        "INTEGRATION_DATA_DIR": str(data_dir),
        "DATABASE_URL": f"sqlite:///{data_dir / 'cli.db'}",
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "core", "usage", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    r = run("compact")  # every closed day
    assert r.returncode == 0, r.stderr
    assert "2026-05-01" in r.stdout and "21" in r.stdout
    r = run("stats", "--json")
    assert r.returncode == 0
    assert '"records": 21' in r.stdout and '"files": 1' in r.stdout
    r = run("compact", "--day", "May 1st")
    assert r.returncode == 1 and "YYYY-MM-DD" in r.stderr


def test_concurrent_compactions_of_one_day_never_double_records(data_dir: Path) -> None:
    _small_files(data_dir, flushes=8)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: compact.compact_day(data_dir, "2026-05-01"), range(4)))
    assert count(data_dir) == 8 * 7
    assert len(list(partition_dir(data_dir, "2026-05-01").glob("*.parquet"))) == 1
