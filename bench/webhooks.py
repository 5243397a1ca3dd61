"""Webhook delivery and event intake, PostgreSQL: deliveries/s and commit-to-receipt latency
with 1 and 4 workers; events accepted per second over HTTP beside /v1/whoami.

    python bench/webhooks.py [--quick] [--rounds N] [--pg postgresql+psycopg://…/postgres]
    python bench/webhooks.py --events-only [--quick]   # only the HTTP intake part

A receiver (a separate process, answering 200 at once) gets:
  1. bare POSTs of the same body from aiohttp (the baseline, 64 in flight) and, once,
     from httpx.AsyncClient (the measurement that chose aiohttp for the dispatcher);
  2. webhooks through the outbox with 1 and then 4 `python -m core worker` processes:
     rounds of a burst of N events made due by one commit (throughput: that commit → last
     receipt), each with bare aiohttp POSTs just before and after it, so every ratio
     compares figures taken seconds apart; then a paced stream (commit → receipt p50/p99
     when the receiver answers at once);
  3. one `python -m core serve` process taking `POST /v1/events` (a registered type with a
     JSON Schema, one subscribed endpoint, so every event writes one outbox message) in
     rounds alternating with `GET /v1/whoami` (an API key, cached after the first call)
     from the same aiohttp client, the same number of connections: events accepted per
     second and their ratio to whoami requests per second, round by round; then the same
     with an idempotency key on every event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, bench/ comes first on the path, and bench/http.py would shadow http.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from sqlalchemy import create_engine, func, select, text, update  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from core import webhooks  # noqa: E402
from core.config import Settings  # noqa: E402
from core.db import make_engine, migrate  # noqa: E402
from core.keys import service as keys  # noqa: E402
from core.orgs import service as orgs  # noqa: E402
from core.orgs.permissions import Actor  # noqa: E402
from core.webhooks import catalog, emit  # noqa: E402
from core.webhooks.config import WebhookConfig  # noqa: E402
from core.webhooks.models import MessageStatus, WebhookMessage  # noqa: E402

EVENT = "bench.tick"
EVENT_SCHEMA = {
    "type": "object",
    "required": ["n"],
    "properties": {"n": {"type": "integer", "minimum": 0}, "pad": {"type": "string"}},
}
SERVICE_TOKEN = "bench-service-token-" + secrets.token_hex(8)
BODY = json.dumps({"id": "evt_x", "type": EVENT, "data": {"n": 1, "pad": "x" * 200}}).encode()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bare_posts(client_name: str, url: str, n: int, concurrency: int = 64) -> float:
    sem = asyncio.Semaphore(concurrency)
    if client_name == "aiohttp":
        import aiohttp

        async with aiohttp.ClientSession() as session:

            async def one() -> None:
                async with sem, session.post(url, data=BODY) as resp:
                    await resp.read()

            start = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(n)))
            return n / (time.perf_counter() - start)
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as client:

        async def one_httpx() -> None:
            async with sem:
                resp = await client.post(url, content=BODY)
                resp.read()

        start = time.perf_counter()
        await asyncio.gather(*(one_httpx() for _ in range(n)))
        return n / (time.perf_counter() - start)


def wait_delivered(engine, ids: set[str], timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Session(engine) as s:
            # Pending rows only (the claim index): a count over the whole, growing table
            # every 50 ms cost PostgreSQL more CPU than the deliveries being measured.
            left = s.execute(
                select(func.count()).where(WebhookMessage.status == MessageStatus.PENDING)
            ).scalar_one()
        if left == 0:
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out with {left} messages undelivered")


def produce(
    engine, org_id: str, n: int, batch: int, rate: float | None, hold: bool = False
) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Commit n events in transactions of `batch`; return message id -> commit time.

    With `hold`, the messages are written due in an hour; `release` makes them due at once.
    """
    later = datetime.now(UTC) + timedelta(hours=1) if hold else None
    commits: dict[str, float] = {}
    start = time.perf_counter()
    sent = 0
    while sent < n:
        if rate:
            due = start + sent / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        with Session(engine) as s, s.begin():
            ids = [
                mid
                for i in range(min(batch, n - sent))
                for mid in emit(s, org_id, EVENT, {"n": sent + i, "pad": "x" * 200}, now=later)
            ]
        at = time.time()
        commits.update(dict.fromkeys(ids, at))
        sent += batch
    return commits


def cpu_seconds(pids: list[int]) -> float:
    """Return the user+system CPU seconds used so far by these processes (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def release(engine) -> float:  # type: ignore[no-untyped-def]
    """Make every held message due now; return the commit time."""
    with Session(engine) as s, s.begin():
        s.execute(
            update(WebhookMessage)
            .where(WebhookMessage.status == MessageStatus.PENDING)
            .values(next_attempt_at=datetime.now(UTC))
        )
    return time.time()


def start_workers(n: int, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen([sys.executable, "-m", "core", "worker"], cwd=ROOT, env=env)
        for _ in range(n)
    ]


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for w in workers:
        w.send_signal(signal.SIGTERM)
    for w in workers:
        w.wait(30)


def burst_round(engine, org_id: str, n: int, pids: list[int], receiver_pid: int):  # type: ignore[no-untyped-def]
    """Hold n messages, make them due in one commit; return (ids, commit time, CPU ms each)."""
    ids = produce(engine, org_id, n, 500, None, hold=True)
    groups = {"workers": pids, "receiver": [receiver_pid], "postgres": postgres_pids()}
    cpu0 = {k: cpu_seconds(v) for k, v in groups.items()}
    t0 = release(engine)
    wait_delivered(engine, set(ids), 120)
    cpu_ms = {k: (cpu_seconds(v) - cpu0[k]) * 1000 / n for k, v in groups.items()}
    return ids, t0, cpu_ms


async def _hammer(
    url: str, make: Any, seconds: float, connections: int
) -> tuple[float, int, Counter[int]]:
    """Send requests made by `make(i)` -> (method, path, headers, body) on `connections`
    keep-alive connections for `seconds`; return (requests/s, requests, statuses)."""
    import aiohttp

    statuses: Counter[int] = Counter()
    sent = 0
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(url, connector=connector) as session:
        stop = time.perf_counter() + seconds

        async def one_connection() -> None:
            nonlocal sent
            while time.perf_counter() < stop:
                method, path, headers, body = make(sent)
                sent += 1
                async with session.request(method, path, headers=headers, data=body) as resp:
                    await resp.read()
                    statuses[resp.status] += 1

        start = time.perf_counter()
        await asyncio.gather(*(one_connection() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    done = sum(statuses.values())
    return done / elapsed, done, statuses


def start_serve(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "core", "serve", "--port", str(port)],
        cwd=ROOT,
        env={**env, "INTEGRATION_SERVICE_TOKEN": SERVICE_TOKEN},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("serve did not start")


def intake_bench(
    engine, env: dict[str, str], org_id: str, key: str, rounds: int, seconds: float
) -> None:  # type: ignore[no-untyped-def]
    """Events accepted per second over HTTP beside whoami requests per second (one serve)."""
    connections = 64
    pad = "x" * 200
    whoami_headers = {"Authorization": f"x-api-key {key}"}
    event_headers = {
        "Authorization": f"Bearer {SERVICE_TOKEN}",
        "Content-Type": "application/json",
    }
    run_id = secrets.token_hex(4)
    keys_used = iter(range(10**9))  # every keyed event gets a new key, across rounds

    def whoami(_i: int) -> tuple[str, str, dict[str, str], bytes | None]:
        return "GET", "/v1/whoami", whoami_headers, None

    def event(i: int) -> tuple[str, str, dict[str, str], bytes | None]:
        body = {"org": org_id, "type": EVENT, "data": {"n": i, "pad": pad}}
        return "POST", "/v1/events", event_headers, json.dumps(body).encode()

    def keyed(i: int) -> tuple[str, str, dict[str, str], bytes | None]:
        body = {
            "org": org_id,
            "type": EVENT,
            "data": {"n": i, "pad": pad},
            "idempotency_key": f"{run_id}-{next(keys_used)}",
        }
        return "POST", "/v1/events", event_headers, json.dumps(body).encode()

    with Session(engine) as s:
        before = s.execute(select(func.count()).select_from(WebhookMessage)).scalar_one()
    serve, url = start_serve(env)
    try:
        asyncio.run(_hammer(url, whoami, 1, connections))  # warm-up: key cached, imports
        asyncio.run(_hammer(url, event, 1, connections))
        results: dict[str, list[float]] = {"whoami": [], "events": [], "keyed": []}
        accepted = 0
        bad: Counter[int] = Counter()
        # Alternate so each ratio compares figures taken seconds apart (the machine drifts).
        for _ in range(rounds):
            for name, make in (("whoami", whoami), ("events", event), ("keyed", keyed)):
                rate, _n, statuses = asyncio.run(_hammer(url, make, seconds, connections))
                results[name].append(rate)
                ok = 200 if name == "whoami" else 202
                bad.update({k: v for k, v in statuses.items() if k != ok})
                accepted += statuses[ok] if name != "whoami" else 0
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)
    with Session(engine) as s:
        written = s.execute(select(func.count()).select_from(WebhookMessage)).scalar_one()
    warmup_and_rounds = written - before
    print(
        f"\nevent intake, one serve process, {connections} connections, {rounds} rounds of "
        f"{seconds:g} s each, alternating"
    )
    print(f"{'':26} {'req/s (median)':>14} {'× whoami':>9}  per round")
    w = results["whoami"]
    print(
        f"{'GET /v1/whoami (baseline)':26} {statistics.median(w):14.0f} {1:9.2f}  "
        + ", ".join(f"{x:.0f}" for x in w)
    )
    for name, label in (("events", "POST /v1/events"), ("keyed", "  with idempotency_key")):
        r = results[name]
        ratios = [a / b for a, b in zip(r, w, strict=True)]
        print(
            f"{label:26} {statistics.median(r):14.0f} {statistics.median(ratios):9.2f}  "
            + ", ".join(f"{x:.0f} ({q:.2f})" for x, q in zip(r, ratios, strict=True))
        )
    print(
        f"accepted in the rounds: {accepted:,}; outbox messages written in the whole part "
        f"(warm-up included): {warmup_and_rounds:,}; other statuses: {dict(bad) or 'none'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 2)")
    parser.add_argument("--events-only", action="store_true", help="only the HTTP intake part")
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    burst = 1000 if args.quick else 4000
    rounds = args.rounds or (2 if args.quick else 5)
    paced_seconds = 3 if args.quick else 8
    bare_n = 2000 if args.quick else 6000

    name = f"bench_webhooks_{secrets.token_hex(3)}"
    admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = args.pg.rsplit("/", 1)[0] + "/" + name
    tmp = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    receipts_path = tmp / "receipts.jsonl"
    receiver = subprocess.Popen(
        [sys.executable, "-m", "tests._webhook_receiver", str(receipts_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    workers: list[subprocess.Popen[bytes]] = []
    try:
        assert receiver.stdout is not None
        port = int(receiver.stdout.readline().split()[1])
        hook = f"http://127.0.0.1:{port}/hook"
        engine = make_engine(url)
        migrate(engine)
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "INTEGRATION_DATA_DIR": str(tmp),
            "INTEGRATION_WEBHOOK_ALLOW_HTTP": "1",
            "INTEGRATION_WEBHOOK_ALLOW_PRIVATE": "1",
            "INTEGRATION_WEBHOOK_ENDPOINT_CONCURRENCY": os.environ.get(
                "INTEGRATION_WEBHOOK_ENDPOINT_CONCURRENCY", "16"
            ),
        }
        config = WebhookConfig.from_env(Settings(data_dir=tmp, database_url=url), env)
        with Session(engine, expire_on_commit=False) as s, s.begin():
            org, user = orgs.create_organization(s, "Bench", "bench@bench.test", "bench-passw0rd")
            admin_actor = Actor.user(user.id, user.email)
            catalog.register_event_type(s, EVENT, "benchmark event", schema=EVENT_SCHEMA)
            webhooks.create_endpoint(s, org.id, admin_actor, url=hook, events=EVENT, config=config)
            api_key = keys.create_key(
                s,
                org.id,
                admin_actor,
                name="bench",
                expires="30",
                pepper=Settings(data_dir=tmp, database_url=url).pepper,
            ).key
            org_id = org.id

        print(f"PostgreSQL, {os.cpu_count()} cores shared with the receiver and producer")
        if args.events_only:
            intake_bench(engine, env, org_id, api_key, rounds, 2.0 if args.quick else 4.0)
            return
        httpx_rate = asyncio.run(bare_posts("httpx", hook, bare_n // 6))
        # The machine's speed drifts by tens of percent from minute to minute, so each
        # round measures the baseline right before and after each burst: the ratio of a
        # round compares figures taken seconds apart, and the report gives their median.
        bare: list[float] = []
        rates: dict[int, list[float]] = {1: [], 4: []}
        ratios: dict[int, list[float]] = {1: [], 4: []}
        baselines: dict[int, list[float]] = {1: [], 4: []}  # bare rate around each burst
        cpus: dict[int, list[dict[str, float]]] = {1: [], 4: []}
        bursts: dict[int, list[tuple[list[str], float]]] = {1: [], 4: []}
        paced: dict[int, dict[str, float]] = {}
        for n_workers in (1, 4):
            workers = start_workers(n_workers, env)
            time.sleep(2.5)  # workers start, migrate-check and begin polling
            pids = [w.pid for w in workers]
            burst_round(engine, org_id, burst // 4, pids, receiver.pid)  # warm-up
            before = asyncio.run(bare_posts("aiohttp", hook, bare_n))
            for _ in range(rounds):
                ids, t0, cpu_ms = burst_round(engine, org_id, burst, pids, receiver.pid)
                after = asyncio.run(bare_posts("aiohttp", hook, bare_n))
                bursts[n_workers].append((list(ids), t0))
                cpus[n_workers].append(cpu_ms)
                bare += [before, after]
                baselines[n_workers].append(2 / (1 / before + 1 / after))
                before = after
            paced_rate = 200 if n_workers == 1 else 400
            paced[n_workers] = produce(
                engine, org_id, int(paced_rate * paced_seconds), 10, paced_rate
            )
            wait_delivered(engine, set(paced[n_workers]), 60)
            stop_workers(workers)
            workers = []

        receiver.send_signal(signal.SIGTERM)
        receiver.wait(30)
        receipts: dict[str, float] = {}
        duplicates = 0
        for line in receipts_path.read_text().splitlines():
            row = json.loads(line)
            if row["id"] is None:
                continue  # a bare POST
            if row["id"] in receipts:
                duplicates += 1
            receipts.setdefault(row["id"], row["at"])
        print(
            f"bare POSTs: aiohttp {statistics.median(bare):.0f} req/s (median; "
            f"{min(bare):.0f}-{max(bare):.0f}), httpx.AsyncClient {httpx_rate:.0f} req/s"
        )
        print(
            f"\n{'workers':>7} {'deliveries/s':>12} {'× bare':>7} {'burst p50 s':>11} "
            f"{'paced p50 ms':>12} {'paced p99 ms':>12}  CPU ms per delivery (median)"
        )
        for n_workers in (1, 4):
            burst_lat: list[float] = []
            for (ids, t0), base in zip(bursts[n_workers], baselines[n_workers], strict=True):
                rate = len(ids) / (max(receipts[m] for m in ids) - t0)
                rates[n_workers].append(rate)
                ratios[n_workers].append(rate / base)
                burst_lat.append(statistics.median(receipts[m] - t0 for m in ids))
            cpu = {k: statistics.median(c[k] for c in cpus[n_workers]) for k in cpus[n_workers][0]}
            lat = [(receipts[m] - c) * 1000 for m, c in paced[n_workers].items()]
            print(
                f"{n_workers:7d} {statistics.median(rates[n_workers]):12.0f} "
                f"{statistics.median(ratios[n_workers]):7.2f} "
                f"{statistics.median(burst_lat):11.2f} {statistics.median(lat):12.1f} "
                f"{pct(lat, 0.99):12.1f}  " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
            )
            print(
                "        per round: deliveries/s "
                + ", ".join(f"{r:.0f}" for r in rates[n_workers])
                + "; × bare "
                + ", ".join(f"{r:.2f}" for r in ratios[n_workers])
            )
        print(
            f"duplicates: {duplicates}; {rounds} rounds of a burst of {burst} events, each "
            f"beside bare POSTs just before and after it; paced stream {paced_seconds}s at "
            "200/s (1 worker) and 400/s (4 workers)"
        )
        intake_bench(engine, env, org_id, api_key, rounds, 2.0 if args.quick else 4.0)
    finally:
        for w in workers:
            w.kill()
        if receiver.poll() is None:
            receiver.kill()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
