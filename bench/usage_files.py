"""Cost of skipping corrupt usage files: listing and checking the files before each query.

    python bench/usage_files.py [--days 90] [--files-per-day 24]

Builds a usage log of small Parquet files (one per flush), then times, as medians of
several runs in the same process: `usage_files` on first sight (every footer read),
`usage_files` once checked (a stat per day directory), and a daily-count scan over the
checked file list beside the same scan on DuckDB's own glob (no check: the cost before
corrupt files were skipped), alternated run by run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]  # bench/http.py
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402

from core import analytics  # noqa: E402
from core.analytics import _duck  # noqa: E402
from core.usage.schema import from_rows, glob_pattern, write_records  # noqa: E402


def timed(fn, runs: int = 7) -> float:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--files-per-day", type=int, default=24)
    args = parser.parse_args()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        for d in range(args.days):
            for f in range(args.files_per_day):
                ts = start + timedelta(days=d, hours=f % 24, minutes=f)
                rows = [
                    {"ts": ts + timedelta(seconds=i), "org_id": "org_a", "key_id": "key_1",
                     "method": "GET", "path": "/v1/x", "status": 200, "latency_ms": 5.0,
                     "code": "valid", "client": "203.0.113.1"}
                    for i in range(50)
                ]  # fmt: skip
                write_records(data_dir, from_rows(rows))
        n = len(list((data_dir / "usage").glob("date=*/*.parquet")))

        def first_sight() -> None:
            _duck._checked.clear()
            _duck._days.clear()
            analytics.usage_files(data_dir)

        cold = timed(first_sight, 3)
        warm = timed(lambda: analytics.usage_files(data_dir))
        sql = (
            "SELECT date, count(*) FROM read_parquet($g, hive_partitioning = true) "
            "WHERE org_id = 'org_a' GROUP BY 1"
        )
        glob = glob_pattern(data_dir)
        checked, bare = [], []
        for _ in range(7):  # alternate, so both see the same load
            checked.append(timed(lambda: duckdb.sql(
                sql, params={"g": analytics.usage_files(data_dir)}).fetchall(), 1))  # fmt: skip
            bare.append(timed(lambda: duckdb.sql(sql, params={"g": glob}).fetchall(), 1))
        c, b = statistics.median(checked), statistics.median(bare)
        print(f"{n} files over {args.days} days (medians)")
        print(f"  usage_files, first sight (footers read): {cold:8.1f} ms")
        print(f"  usage_files, checked before:             {warm:8.1f} ms")
        print(f"  daily counts, checked file list:         {c:8.1f} ms")
        print(f"  daily counts, DuckDB's glob (no check):  {b:8.1f} ms   ratio {c / b:.2f}")


if __name__ == "__main__":
    main()
