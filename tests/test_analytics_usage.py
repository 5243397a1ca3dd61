"""Usage analytics over a small hand-built usage log: every answer is worked out by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from core import analytics
from core.errors import ValidationError
from core.usage.schema import from_rows, write_records

ORG, OTHER = "org_A", "org_B"
DAY1 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday


def rec(ts, key="key_1", *, org=ORG, code="valid", status=200, latency=10.0, path="/v1/a"):
    return {
        "ts": ts,
        "org_id": org,
        "key_id": key,
        "method": "GET",
        "path": path,
        "status": status,
        "latency_ms": latency,
        "code": code,
        "client": "203.0.113.7",
    }


@pytest.fixture
def log(tmp_path: Path) -> Path:
    """Org A: day 1 has 4 calls (key_1 ×3, key_2 ×1), day 2 none, day 3 has 2 calls."""
    rows = [
        rec(DAY1 + timedelta(hours=1), latency=10.0),
        rec(DAY1 + timedelta(hours=1, minutes=30), latency=20.0, status=500),
        rec(DAY1 + timedelta(hours=5), latency=30.0, code="key_revoked", status=401),
        rec(DAY1 + timedelta(hours=5), key="key_2", latency=40.0, path="/v1/b"),
        rec(DAY1 + timedelta(days=2, hours=3), key="key_2", latency=5.0, path="/v1/b"),
        rec(DAY1 + timedelta(days=2, hours=4), key="key_2", latency=7.0, path="/v1/b"),
        # another organization, same key names: never counted for org A
        *[rec(DAY1 + timedelta(hours=2), org=OTHER, latency=999.0) for _ in range(50)],
        # an unrecognised key: no organization at all
        {**rec(DAY1, key=None, org=None, code="invalid_key", status=401)},
    ]
    write_records(tmp_path, from_rows(rows))
    return tmp_path


def test_calls_over_time_by_day_fills_empty_days(log: Path) -> None:
    df = analytics.calls_over_time(log, ORG, grain="day")
    assert list(df["bucket"]) == [pd.Timestamp(DAY1 + timedelta(days=d)) for d in range(3)]
    assert list(df["calls"]) == [4, 0, 2]
    assert list(df["errors"]) == [2, 0, 0]  # the 500 and the revoked key
    rates = list(df["error_rate"])
    assert rates[0] == 0.5 and pd.isna(rates[1]) and rates[2] == 0.0  # an empty day: no rate


def test_calls_over_time_by_hour_within_period(log: Path) -> None:
    df = analytics.calls_over_time(
        log, ORG, grain="hour", since=DAY1, until=DAY1 + timedelta(hours=6)
    )
    assert len(df) == 6  # every hour of the period, even empty ones
    assert dict(zip(df["bucket"].dt.hour, df["calls"], strict=True)) == {
        0: 0,
        1: 2,
        2: 0,
        3: 0,
        4: 0,
        5: 2,
    }


def test_calls_over_time_week_and_month(log: Path) -> None:
    week = analytics.calls_over_time(log, ORG, grain="week")
    assert list(week["calls"]) == [6]
    assert week["bucket"][0] == pd.Timestamp(DAY1)  # ISO weeks start on Monday
    month = analytics.calls_over_time(log, ORG, grain="month")
    assert month["bucket"][0] == pd.Timestamp(datetime(2026, 3, 1, tzinfo=UTC))


def test_top_keys_orders_by_calls_and_counts_errors(log: Path) -> None:
    df = analytics.top_keys(log, ORG)
    assert list(df["key_id"]) == ["key_1", "key_2"]
    assert list(df["calls"]) == [3, 3]  # tie broken by key id
    assert list(df["errors"]) == [2, 0]
    assert df["error_rate"][0] == pytest.approx(2 / 3)
    assert df["last_seen"][1] == pd.Timestamp(DAY1 + timedelta(days=2, hours=4))
    assert len(analytics.top_keys(log, ORG, limit=1)) == 1


def test_error_rates_by_code_and_status(log: Path) -> None:
    by_code = analytics.error_rates(log, ORG)
    assert dict(zip(by_code["code"], by_code["calls"], strict=True)) == {
        "valid": 5,
        "key_revoked": 1,
    }
    assert by_code["share"].sum() == pytest.approx(1.0)
    assert by_code.set_index("code")["share"]["key_revoked"] == pytest.approx(1 / 6)
    by_status = analytics.error_rates(log, ORG, by="status")
    assert dict(zip(by_status["status"], by_status["calls"], strict=True)) == {
        200: 4,
        500: 1,
        401: 1,
    }


def test_latency_percentiles_interpolate(log: Path) -> None:
    day1 = analytics.latency_percentiles(log, ORG, since=DAY1, until=DAY1 + timedelta(days=1))
    # 10, 20, 30, 40: p50 = 25, p90 = 37, p95 = 38.5, p99 = 39.7
    row = day1.iloc[0]
    assert row["calls"] == 4
    assert (row["p50_ms"], row["p90_ms"], row["p95_ms"], row["p99_ms"]) == pytest.approx(
        (25.0, 37.0, 38.5, 39.7)
    )
    assert row["max_ms"] == 40.0
    by_path = analytics.latency_percentiles(log, ORG, by="path").set_index("path")
    assert by_path.loc["/v1/b", "calls"] == 3
    assert by_path.loc["/v1/b", "p50_ms"] == pytest.approx(7.0)  # 5, 7, 40
    by_day = analytics.latency_percentiles(log, ORG, by="day")
    assert set(by_day["day"]) == {date(2026, 3, 2), date(2026, 3, 4)}


def test_anomalies_flag_a_jump_above_the_keys_own_baseline(tmp_path: Path) -> None:
    rows = []
    for d in range(10):  # key_steady: 20 calls every day; key_spike: 10 a day, then 100
        day = DAY1 + timedelta(days=d)
        rows += [rec(day + timedelta(minutes=i), key="key_steady") for i in range(20)]
        n = 100 if d == 9 else 10
        rows += [rec(day + timedelta(minutes=i), key="key_spike") for i in range(n)]
    write_records(tmp_path, from_rows(rows))
    df = analytics.anomalies(tmp_path, ORG, baseline_days=7, min_history=7, min_calls=50)
    assert list(df["key_id"]) == ["key_spike"]
    assert df["day"][0] == date(2026, 3, 11)
    assert df["calls"][0] == 100
    assert df["baseline"][0] == pytest.approx(10.0)
    assert df["ratio"][0] == pytest.approx(10.0)
    # the same data seen from `since` on keeps the baseline read before it
    later = analytics.anomalies(
        tmp_path, ORG, since=DAY1 + timedelta(days=9), baseline_days=7, min_calls=50
    )
    assert list(later["calls"]) == [100]
    # a higher bar flags nothing
    assert analytics.anomalies(tmp_path, ORG, factor=11.0, min_calls=50).empty


def test_anomalies_count_quiet_days_as_zero(tmp_path: Path) -> None:
    # 70 calls on the first day, nothing for 7 days, then 70: baseline (70+0*6)/7 = 10
    rows = [rec(DAY1 + timedelta(minutes=i)) for i in range(70)]
    rows += [rec(DAY1 + timedelta(days=7, minutes=i)) for i in range(70)]
    write_records(tmp_path, from_rows(rows))
    df = analytics.anomalies(tmp_path, ORG, baseline_days=7, min_history=7, min_calls=1)
    assert list(df["calls"]) == [70]
    assert df["baseline"][0] == pytest.approx(10.0)


def test_key_usage_counts_only_accepted_requests(log: Path) -> None:
    df = analytics.key_usage(log, ORG).set_index("key_id")
    assert df.loc["key_1", "usage_count"] == 2  # the revoked-key call is not a use
    assert df.loc["key_2", "usage_count"] == 3
    assert df.loc["key_1", "last_used_at"] == pd.Timestamp(DAY1 + timedelta(hours=1, minutes=30))


def test_other_organizations_rows_are_never_read(log: Path) -> None:
    other = analytics.top_keys(log, OTHER)
    assert list(other["calls"]) == [50]
    assert analytics.latency_percentiles(log, OTHER)["p50_ms"][0] == 999.0
    assert analytics.calls_over_time(log, "org_nobody").empty
    assert analytics.latency_percentiles(log, "org_nobody")["calls"][0] == 0


def test_an_empty_log_gives_empty_frames(tmp_path: Path) -> None:
    assert analytics.calls_over_time(tmp_path, ORG).empty
    assert analytics.top_keys(tmp_path, ORG).empty
    assert analytics.error_rates(tmp_path, ORG).empty
    assert analytics.anomalies(tmp_path, ORG).empty
    assert analytics.key_usage(tmp_path, ORG).empty


@pytest.mark.parametrize(
    "call",
    [
        lambda d: analytics.calls_over_time(d, ORG, grain="fortnight"),
        lambda d: analytics.calls_over_time(d, ""),
        lambda d: analytics.top_keys(d, ORG, limit=0),
        lambda d: analytics.error_rates(d, ORG, by="path; DROP TABLE x"),
        lambda d: analytics.latency_percentiles(d, ORG, by="latency_ms"),
        lambda d: analytics.anomalies(d, ORG, factor=0.5),
        lambda d: analytics.anomalies(d, ORG, baseline_days=3, min_history=7),
        lambda d: analytics.top_keys(d, ORG, since=DAY1, until=DAY1 - timedelta(days=1)),
        lambda d: analytics.top_keys(d, ORG, since=datetime(2026, 1, 1)),  # naive
    ],
)
def test_bad_arguments_are_refused_clearly(log: Path, call) -> None:
    with pytest.raises(ValidationError):
        call(log)


def test_whole_period_percentiles_equal_numpy_on_random_latencies(tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(7)
    latencies = rng.lognormal(mean=2.0, sigma=1.0, size=5_001).astype("float32")
    rows = [rec(DAY1 + timedelta(seconds=i), latency=float(v)) for i, v in enumerate(latencies)]
    rows += [rec(DAY1, org=OTHER, latency=1e6) for _ in range(100)]
    write_records(tmp_path, from_rows(rows))
    (row,) = analytics.latency_percentiles(tmp_path, ORG).to_dict("records")
    values = latencies.astype("float64")
    assert row["calls"] == 5_001
    for q, column in [(0.5, "p50_ms"), (0.9, "p90_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")]:
        assert row[column] == pytest.approx(np.quantile(values, q), rel=1e-12)
    assert row["max_ms"] == pytest.approx(values.max())


def test_one_keys_calls_latency_and_codes(log: Path) -> None:
    days = analytics.calls_over_time(log, ORG, grain="day", key_id="key_1")
    assert days["calls"].tolist() == [3]  # key_1 was only used on day 1
    assert days["errors"].tolist() == [2]  # the 500 and the revoked call
    (row,) = analytics.latency_percentiles(log, ORG, key_id="key_1").to_dict("records")
    assert row["calls"] == 3 and row["p50_ms"] == pytest.approx(20.0)
    codes = analytics.error_rates(log, ORG, key_id="key_2").set_index("code")["calls"]
    assert codes.to_dict() == {"valid": 3}
    # A key of another organization is never read through this one.
    assert analytics.latency_percentiles(log, OTHER, key_id="key_2")["calls"].iloc[0] == 0
    with pytest.raises(ValidationError, match="key_id"):
        analytics.calls_over_time(log, ORG, key_id="")


def test_error_rates_by_path_count_errors_and_server_errors(log: Path) -> None:
    df = analytics.error_rates(log, ORG, by="path").set_index("path")
    assert df.loc["/v1/a", "calls"] == 3 and df.loc["/v1/b", "calls"] == 3
    assert df.loc["/v1/a", "errors"] == 2 and df.loc["/v1/a", "server_errors"] == 1
    assert df.loc["/v1/b", "errors"] == 0 and df.loc["/v1/b", "error_rate"] == 0.0


def test_refusals_of_no_organization_have_their_own_view(log: Path) -> None:
    df = analytics.unattributed_refusals(log, by="code")
    assert list(df["code"]) == ["invalid_key"] and list(df["calls"]) == [1]
    assert analytics.unattributed_refusals(log, by="client")["client"].tolist() == ["203.0.113.7"]
    with pytest.raises(ValidationError, match="by must be one of"):
        analytics.unattributed_refusals(log, by="org_id")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_corrupt_file_is_skipped_and_named(
    log: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    good = analytics.calls_over_time(log, ORG, grain="day")["calls"].sum()
    day = log / "usage" / "date=2026-03-09"
    day.mkdir(parents=True)
    bad = day / f"{damage}.parquet"
    source = next((log / "usage").glob("date=2026-03-02/*.parquet")).read_bytes()
    bad.write_bytes(
        {"truncated": source[: len(source) // 2], "garbage": b"PAR1" + b"x" * 200 + b"PAR1",
         "empty": b""}[damage]
    )  # fmt: skip
    with caplog.at_level("WARNING", logger="core.analytics"):
        df = analytics.calls_over_time(log, ORG, grain="day")
        assert df["calls"].sum() == good
        assert analytics.top_keys(log, ORG)["calls"].sum() == good
    assert [p["path"] for p in analytics.usage_problems(log)] == [str(bad)]
    assert str(bad) in caplog.text


def test_a_file_corrupt_past_its_footer_is_found_when_read(log: Path) -> None:
    """A footer that reads but data pages that do not: the query retries without the file."""
    import pyarrow.parquet as pq

    source = next((log / "usage").glob("date=2026-03-04/*.parquet"))
    data = bytearray(source.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little") + 8
    for i in range(4, len(data) - footer):  # every data page, the footer intact
        data[i] ^= 0x5A
    source.write_bytes(bytes(data))
    assert pq.read_metadata(source).num_rows == 2
    df = analytics.calls_over_time(log, ORG, grain="day")
    assert df["calls"].sum() == 4  # day 3's two calls were in the damaged file
    assert [p["path"] for p in analytics.usage_problems(log)] == [str(source)]


def test_day_window_covers_whole_days() -> None:
    since, until = analytics.day_window(3, "2026-03-05")
    assert (since, until) == (datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 5, tzinfo=UTC))
    since, until = analytics.day_window(2, "", now=datetime(2026, 3, 5, 17, 30, tzinfo=UTC))
    assert (since, until) == (datetime(2026, 3, 4, tzinfo=UTC), datetime(2026, 3, 6, tzinfo=UTC))
    with pytest.raises(ValidationError, match="not a date"):
        analytics.day_window(3, "2026-02-30")


@pytest.mark.slow
def test_usage_stats_names_a_corrupt_file(log: Path) -> None:
    import os
    import subprocess
    import sys

    bad = log / "usage" / "date=2026-03-02" / "torn.parquet"
    bad.write_bytes(b"PAR1 half a file")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env.update(INTEGRATION_DATA_DIR=str(log), DATABASE_URL=f"sqlite:///{log / 'cli.db'}")
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "core", "usage", "stats"], env=env, cwd=root,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"unreadable, skipped by every report: {bad}" in r.stdout
    assert "2026-03-02" in r.stdout and "4" in r.stdout
