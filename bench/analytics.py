"""Benchmark: each analytics function over a generated usage log, beside pandas.

    python bench/analytics.py            # 10,000,000 records (about 2 minutes to generate)
    python bench/analytics.py --quick    # 1,000,000 records

The log is built by the demo generator (`core.demo`) into a temporary directory with a
temporary SQLite database, then every function in `core.analytics` runs `--repeat` times
for the largest organization, alternating run by run with the same computation in pandas
(reading the same Parquet files, since DuckDB reads them on every call too) in the same
process, so both sides see the same load on a shared machine. Prints the median of each
and the ratio; targets: DuckDB ≤ 1 s per query and ≥ 3× faster than pandas.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parents[1]
# Run from the repository root's view: bench/ holds scripts (http.py) that would shadow
# standard library modules if it stayed first on the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

from core import analytics  # noqa: E402
from core.config import Settings  # noqa: E402
from core.db import make_engine, migrate  # noqa: E402
from core.demo import DemoOptions, build_demo  # noqa: E402
from core.keys.models import ApiKey  # noqa: E402
from core.orgs.models import Organization  # noqa: E402
from core.orgs.permissions import Actor  # noqa: E402
from core.usage.schema import usage_root  # noqa: E402

END = datetime(2026, 11, 1, tzinfo=UTC)
SYSTEM = Actor.system("bench")


def paired_times(
    duck: Callable[[], object], base: Callable[[], object], repeat: int
) -> tuple[float, object, float, object]:
    """Run the two alternately `repeat` times each; return (median, result) of each."""
    td: list[float] = []
    tp: list[float] = []
    rd = rp = None
    for _ in range(repeat):
        t = time.perf_counter()
        rd = duck()
        td.append(time.perf_counter() - t)
        t = time.perf_counter()
        rp = base()
        tp.append(time.perf_counter() - t)
    return statistics.median(td), rd, statistics.median(tp), rp


def median_time(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


class PandasBaseline:
    """The same questions answered with pandas over the same Parquet files."""

    def __init__(self, data_dir: Path, org_id: str, session: Session) -> None:
        self.root = usage_root(data_dir)
        self.org = org_id
        self.session = session

    def load(self, columns: list[str]) -> pd.DataFrame:
        return pd.read_parquet(self.root, columns=columns, filters=[("org_id", "==", self.org)])

    def calls_over_time(self, freq: str) -> pd.DataFrame:
        df = self.load(["ts", "code", "status"])
        ok = (df["code"] == "valid") & (df["status"] < 400)
        g = pd.DataFrame({"calls": 1, "ok": ok.astype(int)}).groupby(df["ts"].dt.floor(freq))
        out = g.sum()
        full = pd.date_range(out.index.min(), out.index.max(), freq=freq)
        out = out.reindex(full, fill_value=0)
        out["errors"] = out["calls"] - out["ok"]
        out["error_rate"] = (out["errors"] / out["calls"].where(out["calls"] > 0)).fillna(0.0)
        return out

    def top_keys(self) -> pd.DataFrame:
        df = self.load(["ts", "key_id", "code", "status", "latency_ms"])
        df = df[df["key_id"].notna()]
        df["err"] = ~((df["code"] == "valid") & (df["status"] < 400))
        g = df.groupby("key_id")
        out = pd.DataFrame(
            {
                "calls": g.size(),
                "errors": g["err"].sum(),
                "p95_ms": g["latency_ms"].quantile(0.95),
                "last_seen": g["ts"].max(),
            }
        )
        out["error_rate"] = out["errors"] / out["calls"]
        return out.sort_values("calls", ascending=False).head(10)

    def error_rates(self) -> pd.Series:
        return self.load(["code"])["code"].value_counts(normalize=True)

    def latency(self) -> pd.Series:
        s = self.load(["latency_ms"])["latency_ms"].astype("float64")
        return pd.concat([s.quantile([0.5, 0.9, 0.95, 0.99]), pd.Series({"max": s.max()})])

    def latency_by_key(self) -> pd.DataFrame:
        df = self.load(["key_id", "latency_ms"])
        return df.groupby("key_id")["latency_ms"].quantile([0.5, 0.9, 0.95, 0.99]).unstack()

    def anomalies(self) -> pd.DataFrame:
        df = self.load(["ts", "key_id"])
        df = df[df["key_id"].notna()]
        daily = df.groupby([df["key_id"], df["ts"].dt.floor("D")]).size().unstack(0)
        daily = daily.reindex(pd.date_range(daily.index.min(), daily.index.max(), freq="D"))
        daily = daily.fillna(0).where(daily.notna().cummax())  # zero days from first call on
        base = daily.shift(1).rolling(14, min_periods=7).mean()
        flag = (daily >= 100) & (daily >= 3.0 * base)
        return daily[flag].stack()

    def key_usage(self) -> pd.DataFrame:
        df = self.load(["ts", "key_id", "code"])
        df = df[(df["code"] == "valid") & df["key_id"].notna()]
        g = df.groupby("key_id")["ts"]
        return pd.DataFrame({"usage_count": g.size(), "last_used_at": g.max()})

    def keys_frame(self) -> pd.DataFrame:
        rows = self.session.execute(
            select(ApiKey.id, ApiKey.expires_at, ApiKey.revoked_at).where(ApiKey.org_id == self.org)
        ).all()
        return pd.DataFrame(rows, columns=["key_id", "expires_at", "revoked_at"])

    def idle_keys(self, now: datetime) -> pd.DataFrame:
        used = self.key_usage()
        k = self.keys_frame().merge(used, left_on="key_id", right_index=True, how="left")
        live = (k["expires_at"] > now) & (k["revoked_at"].isna() | (k["revoked_at"] > now))
        return k[live & (k["last_used_at"] < now - timedelta(days=14))]

    def unused_keys(self, now: datetime) -> pd.DataFrame:
        used = self.key_usage()
        k = self.keys_frame().merge(used, left_on="key_id", right_index=True, how="left")
        live = (k["expires_at"] > now) & (k["revoked_at"].isna() | (k["revoked_at"] > now))
        return k[live & k["last_used_at"].isna()]

    def expiring_keys(self, now: datetime) -> pd.DataFrame:
        df = self.load(["ts", "key_id", "code"])
        recent = df[(df["ts"] >= now - timedelta(days=7)) & (df["code"] == "valid")]
        calls = recent.groupby("key_id").size().rename("calls_7d")
        k = self.keys_frame().merge(calls, left_on="key_id", right_index=True, how="left")
        return k[(k["expires_at"] > now) & (k["expires_at"] <= now + timedelta(days=30))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000,000 records")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    events = args.events or (1_000_000 if args.quick else 10_000_000)
    with tempfile.TemporaryDirectory(prefix="bench-analytics-") as tmp:
        data_dir = Path(tmp)
        settings = Settings(data_dir=data_dir, database_url=f"sqlite:///{data_dir}/bench.db")
        engine = make_engine(settings.database_url)
        migrate(engine)
        t = time.perf_counter()

        def progress(done: int, total: int) -> None:
            print(f"\r  generating: {done:,}/{total:,}", end="", file=sys.stderr, flush=True)

        opts = DemoOptions(orgs=3, keys=12, events=events, days=90, seed=1, end=END)
        build_demo(engine, settings, opts, progress=progress)
        print(file=sys.stderr)
        print(f"generated {events:,} records in {time.perf_counter() - t:.1f} s")
        with Session(engine) as s:
            org_ids = [o.id for o in s.execute(select(Organization)).scalars()]
            counts = {
                o: int(analytics.calls_over_time(data_dir, o)["calls"].sum()) for o in org_ids
            }
            org = max(counts, key=lambda o: counts[o])
            print(
                f"largest organization: {counts[org]:,} of {events:,} records "
                f"({100 * counts[org] / events:.0f} %); every query scans the whole log's "
                "org_id column; median of "
                f"{args.repeat} runs each, DuckDB and pandas alternating; 2 shared cores "
                f"(load average {os.getloadavg()[0]:.1f}), so figures are noisy\n"
            )
            pd_ = PandasBaseline(data_dir, org, s)
            now = END
            a = analytics
            cases: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
                ("calls_over_time(day)", lambda: a.calls_over_time(data_dir, org),
                 lambda: pd_.calls_over_time("D")),
                ("calls_over_time(hour)",
                 lambda: a.calls_over_time(data_dir, org, grain="hour"),
                 lambda: pd_.calls_over_time("h")),
                ("top_keys", lambda: a.top_keys(data_dir, org), pd_.top_keys),
                ("error_rates", lambda: a.error_rates(data_dir, org), pd_.error_rates),
                ("latency_percentiles", lambda: a.latency_percentiles(data_dir, org),
                 pd_.latency),
                ("latency_percentiles(key)",
                 lambda: a.latency_percentiles(data_dir, org, by="key_id"), pd_.latency_by_key),
                ("anomalies", lambda: a.anomalies(data_dir, org), pd_.anomalies),
                ("key_usage", lambda: a.key_usage(data_dir, org), pd_.key_usage),
                ("idle_keys", lambda: a.idle_keys(s, SYSTEM, org, data_dir, days=14, now=now),
                 lambda: pd_.idle_keys(now)),
                ("unused_keys", lambda: a.unused_keys(s, SYSTEM, org, data_dir, now=now),
                 lambda: pd_.unused_keys(now)),
                ("expiring_keys", lambda: a.expiring_keys(s, SYSTEM, org, data_dir, now=now),
                 lambda: pd_.expiring_keys(now)),
            ]  # fmt: skip
            print(f"{'function':<28}{'duckdb s':>10}{'pandas s':>10}{'ratio':>8}  targets")
            worst_ratio, worst_time = np.inf, 0.0
            for name, duck, base in cases:
                td, rd, tp, rp = paired_times(duck, base, args.repeat)
                ratio = tp / td
                worst_ratio, worst_time = min(worst_ratio, ratio), max(worst_time, td)
                ok = "ok" if td <= 1.0 and ratio >= 3 else "MISSED"
                print(f"{name:<28}{td:>10.3f}{tp:>10.3f}{ratio:>7.1f}x  {ok}")
                if name == "key_usage":  # the two answers agree
                    assert int(rd["usage_count"].sum()) == int(rp["usage_count"].sum())
                if name == "latency_percentiles":  # exact, not approximate, percentiles
                    got = rd.iloc[0][["p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms"]]
                    assert np.allclose(got.to_numpy(float), rp.to_numpy(float), rtol=1e-12)
            for name, fn in [
                ("audit_activity", lambda: a.audit_activity(s, SYSTEM, org)),
                ("signin_failures", lambda: a.signin_failures(s, SYSTEM, org)),
            ]:
                td, _ = median_time(fn, args.repeat)
                print(f"{name:<28}{td:>10.3f}{'':>10}{'':>8}  (SQL audit trail, not the log)")
            print(f"\nslowest query {worst_time:.3f} s; smallest ratio {worst_ratio:.1f}x")
            print(f"load average at the end: {os.getloadavg()[0]:.1f}")
        engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
