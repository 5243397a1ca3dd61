"""The demo data set: built through the services, consistent, realistic and reproducible."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from core import analytics
from core.audit import service as audit
from core.config import Settings
from core.db import make_engine, migrate
from core.demo import DemoOptions, build_demo
from core.errors import Conflict, ValidationError
from core.keys.models import ApiKey
from core.orgs.models import Membership, Organization
from core.orgs.permissions import Actor
from core.usage.schema import usage_root

ROOT = Path(__file__).resolve().parents[1]
END = datetime(2026, 6, 1, tzinfo=UTC)
SMALL = DemoOptions(orgs=2, keys=8, events=40_000, days=120, seed=7, end=END)


def read_log(data_dir: Path):
    return ds.dataset(usage_root(data_dir), format="parquet", partitioning="hive").to_table()


@pytest.fixture
def demo(engine: Engine, settings: Settings):
    return build_demo(engine, settings, SMALL)


def test_demo_builds_people_keys_and_their_lives(demo, session: Session) -> None:
    assert demo.orgs == ["Northwind Traders", "Globex Logistics"]
    assert demo.records == 40_000
    orgs = session.execute(select(Organization)).scalars().all()
    roles = sorted(m.role for m in session.execute(select(Membership)).scalars())
    assert roles.count("auditor") == 2 and roles.count("admin") >= 2
    rows = session.execute(select(ApiKey)).scalars().all()
    assert len(rows) == demo.keys
    assert any(r.rolled_from for r in rows)  # rotated keys
    assert any(r.revoke_reason and not r.revoke_reason.startswith("rolled") for r in rows)
    assert any(r.expires_at < END and r.revoked_at is None for r in rows)  # expired
    for org in orgs:  # every change went through the audited services
        assert audit.verify_chain(session, org.id, Actor.system()).ok


def test_per_key_counts_in_sql_agree_with_the_log(demo, session: Session, settings) -> None:
    log = read_log(settings.data_dir)
    valid = log.filter(pc.equal(log["code"], "valid"))
    total_sql = sum(r.usage_count for r in session.execute(select(ApiKey)).scalars())
    assert total_sql == valid.num_rows > 0
    for org in session.execute(select(Organization)).scalars():
        mismatches = analytics.usage_mismatches(
            session, Actor.system(), org.id, settings.data_dir, now=END
        )
        assert mismatches.empty, mismatches


def test_traffic_has_rhythm_heavy_keys_incidents_and_a_spike(demo, session, settings) -> None:
    log = read_log(settings.data_dir).to_pandas()
    known = log[log["org_id"].notna()]
    weekday = known["ts"].dt.day_of_week
    per_weekday = known.groupby(weekday).size() / known.groupby(weekday)["ts"].apply(
        lambda s: s.dt.date.nunique()
    )
    assert per_weekday[[0, 1, 2, 3, 4]].mean() > 1.6 * per_weekday[[5, 6]].mean()
    per_hour = known.groupby(known["ts"].dt.hour).size()
    assert per_hour[14] > 3 * per_hour[3]
    per_key = known.groupby("key_id").size().sort_values()
    assert per_key.iloc[-1] > 3 * per_key.median()  # heavy keys
    assert (log["org_id"].isna() & (log["code"] == "invalid_key")).any()
    assert {"key_revoked", "key_expired"} & set(known["code"])  # stale clients
    assert known["latency_ms"].quantile(0.99) > 4 * known["latency_ms"].median()
    # incidents: 503s come in bursts of a few hours per organization, not spread out
    outages = known[known["status"] == 503]
    hours = outages["ts"].dt.floor("h")
    assert len(outages) >= 10
    assert hours.nunique() <= 2 * 4 * 5  # ≤ 4 incidents of ≤ 5 hours per organization
    in_incident = known[known["ts"].dt.floor("h").isin(set(hours))]
    assert (in_incident["status"] == 503).mean() > 0.2
    org_ids = [o.id for o in session.execute(select(Organization)).scalars()]
    assert any(not analytics.anomalies(settings.data_dir, o).empty for o in org_ids)


def _fingerprint(engine: Engine, data_dir: Path) -> tuple[list, list]:
    """The data with random identifiers replaced by names and times."""
    with Session(engine) as s:
        orgs = {o.id: o.name for o in s.execute(select(Organization)).scalars()}
        keys = {
            k.id: (orgs[k.org_id], k.name, k.created_at.isoformat())
            for k in s.execute(select(ApiKey)).scalars()
        }
        key_rows = sorted(
            (*keys[k.id], k.expires_at.isoformat(), str(k.revoked_at), k.usage_count)
            for k in s.execute(select(ApiKey)).scalars()
        )
    log = read_log(data_dir).sort_by([("ts", "ascending"), ("latency_ms", "ascending")])
    records = [
        (r["ts"], keys.get(r["key_id"]), r["path"], r["status"], r["latency_ms"], r["code"])
        for r in log.to_pylist()
    ]
    return key_rows, records


def test_the_same_seed_gives_the_same_data(demo, engine, settings, sqlite_template, tmp_path):
    import shutil

    other_db = tmp_path / "second" / "integration.db"
    other_db.parent.mkdir()
    shutil.copyfile(sqlite_template, other_db)
    second = Settings(data_dir=tmp_path / "second", database_url=f"sqlite:///{other_db}")
    engine2 = make_engine(second.database_url)
    migrate(engine2)
    try:
        build_demo(engine2, second, SMALL)
        assert _fingerprint(engine, settings.data_dir) == _fingerprint(engine2, second.data_dir)
    finally:
        engine2.dispose()


def test_a_different_seed_gives_different_traffic(tmp_path, sqlite_template) -> None:
    import shutil

    prints = []
    for seed in (1, 2):
        db = tmp_path / f"s{seed}" / "integration.db"
        db.parent.mkdir()
        shutil.copyfile(sqlite_template, db)
        st = Settings(data_dir=db.parent, database_url=f"sqlite:///{db}")
        eng = make_engine(st.database_url)
        try:
            opts = DemoOptions(orgs=1, keys=4, events=2_000, days=30, seed=seed, end=END)
            build_demo(eng, st, opts)
            prints.append(_fingerprint(eng, st.data_dir)[1])
        finally:
            eng.dispose()
    assert prints[0] != prints[1]


def test_building_twice_into_one_database_is_refused(demo, engine, settings) -> None:
    with pytest.raises(Conflict, match="fresh database"):
        build_demo(engine, settings, SMALL)


@pytest.mark.parametrize(
    "bad",
    [
        DemoOptions(orgs=0),
        DemoOptions(events=-1),
        DemoOptions(days=1000),
        DemoOptions(keys=True),
        DemoOptions(end=datetime(2026, 1, 1)),  # naive
    ],
)
def test_bad_options_are_refused(bad: DemoOptions) -> None:
    with pytest.raises(ValidationError):
        bad.validated()


@pytest.mark.slow
def test_cli_demo_shows_progress_and_a_summary(database_url: str, data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env.update(DATABASE_URL=database_url, INTEGRATION_DATA_DIR=str(data_dir))
    r = subprocess.run(
        [sys.executable, "-m", "core", "demo", "--orgs", "1", "--keys", "4",
         "--events", "30000", "--days", "30", "--seed", "3"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=180,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "100% 30,000/30,000" in r.stderr
    assert "30,000 usage records" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "core", "demo", "--orgs", "0"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert r.returncode == 1
    assert "--orgs must be a whole number" in r.stderr
