"""Render time of every console page (Streamlit AppTest) on a large organization.

    python bench/console.py            # 10,000 keys and 1,000,000 usage records
    python bench/console.py --quick    # 1,000 keys and 100,000 usage records

Builds a temporary SQLite database (keys created through the key service, in one
transaction, audit rows and all) and a usage log of Parquet files over 30 days, then
renders each page as an admin, `--runs` times after one warm-up render. The baseline is
the same page for an empty organization in the same database, measured in the same run;
the target is ≤ 2 s per page.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run as `python bench/console.py`: bench/ must not shadow the standard library (bench/http.py).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

PAGES = {
    "Dashboard": "pages/dashboard.py",
    "API Keys": "pages/api_keys.py",
    "Webhooks": "pages/webhooks.py",
    "Getting Started": "pages/getting_started.py",
    "Usage": "pages/usage.py",
    "Audit Log": "pages/audit_log.py",
    "Members": "pages/members.py",
    "Settings": "pages/settings.py",
}
PASSWORD = "correct-horse-42"
TARGET_S = 2.0


def build(data_dir: Path, n_keys: int, n_records: int) -> tuple[str, list[str]]:
    """Create the organizations, keys and usage log; return (database url, key ids)."""
    from core.db import make_engine, migrate
    from core.keys import service as keys
    from core.orgs import service as orgs
    from core.orgs.permissions import Actor
    from core.usage import schema as usage_schema

    url = f"sqlite:///{data_dir / 'integration.db'}"
    engine = make_engine(url)
    migrate(engine)
    from core.config import Settings

    pepper = Settings(data_dir=data_dir, database_url=url).pepper
    now = datetime.now(UTC)
    started = time.perf_counter()
    with Session(engine) as s, s.begin():
        org, admin = orgs.create_organization(s, "Big Corp", "admin@big.test", PASSWORD)
        actor = Actor.user(admin.id, admin.email)
        orgs.create_organization(s, "Empty Corp", "admin@empty.test", PASSWORD)
        ids = []
        for i in range(n_keys):
            created = now - timedelta(days=int(i % 300))
            new = keys.create_key(
                s,
                org.id,
                actor,
                name=f"Service {i:05d}",
                expires=365,
                pepper=pepper,
                now=created,
            )
            ids.append(new.id)
            if i % 7 == 0 and created < now - timedelta(days=1):
                keys.revoke_key(s, actor, new.id, reason="rotated", now=created + timedelta(1))
        org_id = org.id
    print(f"  {n_keys:,} keys created in {time.perf_counter() - started:.1f} s", flush=True)

    started = time.perf_counter()
    rng = np.random.default_rng(7)
    days = 30
    per_day = n_records // days
    codes = np.array(["valid", "valid", "valid", "valid", "key_revoked", "invalid_key"])
    for d in range(days):
        day = (now - timedelta(days=d)).date()
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        offsets = np.sort(rng.integers(0, 86_400_000_000, per_day))
        ts = pa.array(
            [start + timedelta(microseconds=int(o)) for o in offsets],
            pa.timestamp("us", tz="UTC"),
        )
        code = codes[rng.integers(0, len(codes), per_day)]
        table = pa.table(
            {
                "ts": ts,
                "org_id": pa.array([org_id] * per_day),
                "key_id": pa.array(np.array(ids)[rng.integers(0, len(ids), per_day)]),
                "method": pa.array(["GET"] * per_day),
                "path": pa.array(["/v1/orders"] * per_day),
                "status": pa.array(np.where(code == "valid", 200, 401).astype("int16")),
                "latency_ms": pa.array(rng.gamma(2.0, 3.0, per_day).astype("float32")),
                "code": pa.array(code),
                "client": pa.array(["10.0.0.1"] * per_day),
            },
            schema=usage_schema.SCHEMA,
        )
        usage_schema.write_file(usage_schema.partition_dir(data_dir, f"{day:%Y-%m-%d}"), table)
    print(
        f"  {per_day * days:,} usage records written in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    engine.dispose()
    return url, ids


def render_times(email: str, runs: int) -> dict[str, float]:
    """Return the median render time (s) of each page for the user with `email`."""
    from streamlit.testing.v1 import AppTest

    from core.db import make_engine
    from core.sessions import service as signin

    engine = make_engine(os.environ["DATABASE_URL"])
    with Session(engine) as s, s.begin():
        token = signin.sign_in(s, email, PASSWORD).result().token
    engine.dispose()
    at = AppTest.from_file(str(ROOT / "console.py"), default_timeout=300)
    at.query_params["session"] = token
    at.run()
    out = {}
    for title, path in PAGES.items():
        at.switch_page(path)
        at.run()  # warm-up
        assert not at.exception, (title, [e.value for e in at.exception])
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            at.run()
            samples.append(time.perf_counter() - started)
        assert not at.exception and not at.error, (title, [e.value for e in at.error])
        shown = at.title[0].value if at.title else None
        assert shown == title or (title == "Dashboard" and shown.endswith("Corp")), shown
        out[title] = statistics.median(samples)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 keys, 100,000 records")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    n_keys, n_records = (1_000, 100_000) if args.quick else (10_000, 1_000_000)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        os.environ.update(
            DATABASE_URL=f"sqlite:///{data_dir / 'integration.db'}",
            INTEGRATION_DATA_DIR=str(data_dir),
            INTEGRATION_EMBEDDED_WORKER="0",
        )
        print(f"Building {n_keys:,} keys and {n_records:,} usage records…", flush=True)
        build(data_dir, n_keys, n_records)
        empty = render_times("admin@empty.test", args.runs)
        big = render_times("admin@big.test", args.runs)
    print()
    print(f"{'page':<16} {'empty org':>10} {'big org':>10} {'ratio':>7}  target ≤ {TARGET_S} s")
    worst = 0.0
    for title in PAGES:
        ratio = big[title] / empty[title] if empty[title] else float("inf")
        mark = "ok" if big[title] <= TARGET_S else "SLOW"
        print(f"{title:<16} {empty[title]:>9.3f}s {big[title]:>9.3f}s {ratio:>6.1f}x  {mark}")
        worst = max(worst, big[title])
    print(f"\nslowest page: {worst:.3f} s (median of {args.runs} renders each)")
    return 0 if worst <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
