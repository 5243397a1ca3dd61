"""Key verification speed: cached, cold and bad-checksum paths against the SHA-256 floor.

    python bench/verify.py [--quick] [--postgres [ADMIN_URL]]

Prints verifications per second (one core, one thread) and p50/p99 latency per call for
each path, beside a bare hashlib.sha256 of the key measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from core.auth.verifier import Verifier
from core.config import Settings
from core.db import connect, make_engine
from core.keys import service as keys
from core.orgs import service as orgs
from core.orgs.permissions import Actor


def throughput(fn: Callable[[], object], n: int, rounds: int = 5) -> float:
    """Median calls per second over `rounds` runs of `n` calls."""
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def latencies(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """(p50, p99) in microseconds of single calls."""
    samples = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        fn()
        samples.append(clock() - t0)
    samples.sort()
    return samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument(
        "--postgres",
        metavar="ADMIN_URL",
        nargs="?",
        const="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        help="run on a temporary PostgreSQL database created through ADMIN_URL",
    )
    args = parser.parse_args()
    n = 20_000 if args.quick else 200_000
    n_cold = 500 if args.quick else 5_000

    tmp = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    if args.postgres:
        with temporary_pg_database(args.postgres) as url:
            run(url, tmp, n, n_cold)
    else:
        run(f"sqlite:///{tmp / 'bench.db'}", tmp, n, n_cold)


@contextlib.contextmanager
def temporary_pg_database(admin_url: str) -> Iterator[str]:
    """Create a scratch database for the run and drop it afterwards."""
    name = f"bench_verify_{os.getpid()}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run(url: str, tmp: Path, n: int, n_cold: int) -> None:
    settings = Settings(data_dir=tmp, database_url=url, pepper_override="bench-pepper-0123456789")
    engine = connect(settings)
    with Session(engine) as s, s.begin():
        org, admin = orgs.create_organization(
            s, f"Bench {time.time_ns()}", "bench@example.com", "bench-passw0rd!"
        )
        actor = Actor.user(admin.id, admin.email)
        for i in range(999):  # a realistic table, not a single row
            keys.create_key(s, org.id, actor, name=f"k{i}", expires=90, pepper=settings.pepper)
        new = keys.create_key(s, org.id, actor, name="bench", expires=90, pepper=settings.pepper)
    key = new.key
    header = f"x-api-key {key}"
    bad = key[:-1] + ("A" if key[-1] != "A" else "B")
    read_engine = make_engine(url, immediate=False)
    verifier = Verifier(read_engine, settings.pepper)
    assert verifier.verify_headers(header).valid

    def floor() -> object:
        return hashlib.sha256(key.encode()).digest()

    def cached() -> object:
        return verifier.verify_headers(header)

    def cold() -> object:
        verifier.clear()
        return verifier.verify_headers(header)

    def bad_checksum() -> object:
        return verifier.verify_headers(f"x-api-key {bad}")

    base_rate = throughput(floor, n)
    base_p50, base_p99 = latencies(floor, n)
    print(f"backend: {engine.dialect.name}; {n:,} calls per round, median of 5 rounds")
    print(f"{'path':<28}{'verifs/s':>12}{'p50 µs':>10}{'p99 µs':>10}{'floor ×':>10}")
    print(
        f"{'sha256 floor (baseline)':<28}{base_rate:>12,.0f}{base_p50:>10.2f}{base_p99:>10.2f}"
        f"{1.0:>10.1f}"
    )
    for name, fn, count in [
        ("cached valid key", cached, n),
        ("bad checksum", bad_checksum, n),
        ("cold lookup (cache cleared)", cold, n_cold),
    ]:
        rate = throughput(fn, count)
        p50, p99 = latencies(fn, count)
        print(f"{name:<28}{rate:>12,.0f}{p50:>10.2f}{p99:>10.2f}{base_rate / rate:>10.1f}")


if __name__ == "__main__":
    main()
