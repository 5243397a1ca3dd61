"""Benchmark the HTTP service on loopback: protected /v1/whoami vs the same app unprotected.

    python bench/http.py [--quick] [--rounds N] [--usage-only] [--pairs N]

Starts, on one fresh SQLite database with one key: `python -m core serve` with usage
recording on, the same with `--no-usage`, and the same routes without the middleware
(the baseline: a fixed principal is injected instead of verifying). Load comes from
`wrk` (closed loop, 1 thread, 32 connections; `apt-get install -y wrk`) for throughput and
from a paced multi-process Python client for latency at a steady 1,000 req/s. Each
throughput figure is the median of interleaved rounds. Prints req/s, p50/p99, server CPU
per request (and the part of it spent off the event loop thread: usage flusher, feed
follower) and ratios.

The usage-recording cost is measured apart, in many short rounds (default 30 of 2 s):
each round runs the server with usage on, the one with usage off and a second server with
usage off (the control) back to back, in ABBA order, and the cost is the median of the
per-round CPU ratios. This machine's speed jumps between two levels that last tens of
seconds (server CPU per request 26 or 37 µs, bench/README.md): a 2 s pair mostly falls
within one level, a pair of 8 s rounds often straddles a jump. The control server, which
is identical to the usage-off one, shows how far two equal servers differ by chance.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the standard library's `http`: keep bench/ off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
ROOT = _HERE.parent
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from multiprocessing import Pool  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_unprotected(port: int) -> None:
    """Run the service's routes without the middleware; whoami gets a fixed principal."""
    import uvicorn

    from core.api.app import ServiceApp
    from core.api.config import ServiceConfig
    from core.auth.feed import FeedFollower
    from core.auth.principal import PRINCIPAL_KEY, Principal
    from core.auth.verifier import Verifier
    from core.config import Settings
    from core.db import make_engine

    settings = Settings.from_env()
    verifier = Verifier(make_engine(settings.database_url, immediate=False), settings.pepper)
    # The same routes and background feed follower as `serve`, without the middleware.
    routes = ServiceApp(verifier, ServiceConfig(), feed=FeedFollower(verifier))
    fixed = Principal("org_bench", "key_bench", "Production Server")

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "http":
            scope[PRINCIPAL_KEY] = fixed
        await routes(scope, receive, send)

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_level="warning",
        lifespan="on",
    )


def setup(data_dir: Path) -> tuple[dict[str, str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env.update(INTEGRATION_DATA_DIR=str(data_dir), DATABASE_URL=f"sqlite:///{data_dir}/bench.db")
    os.environ.update(env)
    from sqlalchemy.orm import Session

    from core import db
    from core.config import Settings
    from core.keys import service as keys
    from core.orgs import service as orgs
    from core.orgs.permissions import Actor

    settings = Settings.from_env()
    engine = db.connect(settings)
    with Session(engine) as s, s.begin():
        org, admin = orgs.create_organization(s, "Bench", "bench@bench.test", "bench-passw0rd!")
        new = keys.create_key(
            s,
            org.id,
            Actor.user(admin.id, admin.email),
            name="Production Server",
            expires="30",
            pepper=settings.pepper,
        )
    engine.dispose()
    return env, new.key


def start(cmd: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server did not start: {cmd}")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """Return the CPU time (user + system) a process has used so far: (all threads, main)."""

    def stat(path: str) -> float:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    return stat(f"/proc/{pid}/stat"), stat(f"/proc/{pid}/task/{pid}/stat")


Result = tuple[float, float, float, float, float]


def wrk(port: int, header: str | None, seconds: int, pid: int) -> Result:
    """Return (req/s, p50 ms, p99 ms, server CPU µs/request, of it off the event loop)."""
    cpu0, main0 = cpu_seconds(pid)
    cmd = ["wrk", "-t1", "-c32", f"-d{seconds}s", "--latency"]
    if header:
        cmd += ["-H", header]
    out = subprocess.run(
        [*cmd, f"http://127.0.0.1:{port}/v1/whoami"], capture_output=True, text=True, check=True
    ).stdout
    cpu1, main1 = cpu_seconds(pid)
    cpu, background = cpu1 - cpu0, (cpu1 - main1) - (cpu0 - main0)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return rps, pct("50"), pct("99"), cpu / total * 1e6, background / total * 1e6


def _paced(args: tuple[int, str, float, float]) -> list[float]:
    """Send `rate` req/s for `seconds` on one keep-alive connection; return latencies (ms)."""
    port, key, rate, seconds = args
    req = (f"GET /v1/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: x-api-key {key}\r\n\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out: list[float] = []
    step = 1.0 / rate
    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        due = start + i * step
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t0 = time.perf_counter()
        sock.sendall(req)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(65536)
        head, _, body = buf.partition(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", head.lower()).group(1))  # type: ignore[union-attr]
        while len(body) < length:
            body += sock.recv(65536)
        # latency from the scheduled time, so a stall is not hidden (coordinated omission)
        out.append((time.perf_counter() - min(t0, due)) * 1000)
    sock.close()
    return out


def steady(port: int, key: str, rate: float, seconds: float, procs: int = 4) -> tuple[float, float]:
    with Pool(procs) as pool:
        parts = pool.map(_paced, [(port, key, rate / procs, seconds)] * procs)
    lat = sorted(x for part in parts for x in part)
    return lat[len(lat) // 2], lat[int(len(lat) * 0.99)]


Pair = tuple[float, float, float]


def usage_pairs(
    ports: dict[str, int], pids: dict[str, int], header: str, rounds: int, seconds: int
) -> list[Pair]:
    """Return, per round, server CPU µs/request with usage on, off, and off again (control)."""
    names = ["usage_on", "usage_off", "control"]
    out: list[Pair] = []
    for i in range(rounds):
        cpu: dict[str, float] = {}
        for name in names if i % 2 == 0 else names[::-1]:
            cpu[name] = wrk(ports[name], header, seconds, pids[name])[3]
        out.append((cpu["usage_on"], cpu["usage_off"], cpu["control"]))
    return out


def usage_report(pairs: list[Pair], seconds: int) -> str:
    on = [a / b for a, b, _ in pairs]
    control = [c / b for _, b, c in pairs]
    spread = statistics.quantiles(on, n=4) if len(on) >= 2 else [on[0], on[0], on[0]]
    return (
        f"usage recording cost, {len(pairs)} paired rounds of {seconds}s "
        f"(median of per-round CPU ratios):\n"
        f"  usage on / usage off:   {(statistics.median(on) - 1) * 100:+.1f}% CPU per request "
        f"(quartiles {(spread[0] - 1) * 100:+.1f}%, {(spread[2] - 1) * 100:+.1f}%)  "
        f"(target <= 10%)\n"
        f"  control / usage off:    {(statistics.median(control) - 1) * 100:+.1f}% "
        f"(two identical servers: the noise floor)\n"
        f"  usage on: {statistics.median(p[0] for p in pairs):.1f} us/req, "
        f"usage off: {statistics.median(p[1] for p in pairs):.1f} us/req"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="short runs (noisier)")
    parser.add_argument("--rounds", type=int, help="interleaved wrk rounds (default 4)")
    parser.add_argument(
        "--pairs", type=int, help="paired 2 s rounds for the usage cost (default 30)"
    )
    parser.add_argument(
        "--usage-only", action="store_true", help="only the usage cost (usage on, off, control)"
    )
    parser.add_argument("--serve-unprotected", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_unprotected:
        serve_unprotected(args.serve_unprotected)
        return
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed for throughput: apt-get install -y wrk")
    seconds, rounds, steady_s = (3, 1, 3.0) if args.quick else (8, 4, 10.0)
    rounds = args.rounds or rounds
    pair_s, pairs = 2, args.pairs or (8 if args.quick else 30)
    if pairs < 1 or rounds < 1:
        raise SystemExit("--rounds and --pairs must be at least 1")
    data_dir = Path(tempfile.mkdtemp(prefix="bench-http-"))
    env, key = setup(data_dir)
    py = sys.executable
    ports = {name: free_port() for name in ("baseline", "usage_on", "usage_off", "control")}
    serve = [py, "-m", "core", "serve", "--port"]
    commands = {
        "baseline": [py, str(Path(__file__)), "--serve-unprotected", str(ports["baseline"])],
        "usage_on": [*serve, str(ports["usage_on"])],
        "usage_off": [*serve, str(ports["usage_off"]), "--no-usage"],
        "control": [*serve, str(ports["control"]), "--no-usage"],
    }
    if args.usage_only:
        del commands["baseline"]
    procs = {name: start(cmd, env, ports[name]) for name, cmd in commands.items()}
    pids = {name: p.pid for name, p in procs.items()}
    good = f"Authorization: x-api-key {key}"
    bad_checksum = "Authorization: x-api-key isk_" + "A" * 36
    cases = [
        ("unprotected (baseline)", "baseline", good),
        ("valid key, usage on", "usage_on", good),
        ("valid key, usage off", "usage_off", good),
        ("invalid key, usage on", "usage_on", bad_checksum),
        ("missing key, usage on", "usage_on", None),
    ]
    results: dict[str, list[Result]] = {c[0]: [] for c in cases}
    try:
        for name in procs:  # warm up
            wrk(ports[name], good, 1, pids[name])
        if args.usage_only:
            print(usage_report(usage_pairs(ports, pids, good, pairs, pair_s), pair_s))
            return
        for i in range(rounds):
            # Every other round runs the cases in reverse order (ABBA), so a drift in the
            # machine's speed does not always favour the case that runs first.
            for name, server, header in cases if i % 2 == 0 else cases[::-1]:
                results[name].append(wrk(ports[server], header, seconds, pids[server]))
        med = {
            n: tuple(statistics.median(r[i] for r in rs) for i in range(5))
            for n, rs in results.items()
        }
        print(f"wrk -t1 -c32, {seconds}s x {rounds} round(s), median; one server process each")
        print(
            f"{'case':28} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>11}"
            f" {'of it bg':>9}"
        )
        for name, (rps, p50, p99, cpu, bg) in med.items():
            print(f"{name:28} {rps:9.0f} {p50:8.2f} {p99:8.2f} {cpu:11.1f} {bg:9.2f}")
        on, off = med["valid key, usage on"], med["valid key, usage off"]
        base = med["unprotected (baseline)"]
        print("ratios (req/s; and capacity = baseline CPU per request / this CPU per request):")
        print(
            f"  protected, usage off / baseline: {off[0] / base[0]:.2f} req/s, "
            f"{base[3] / off[3]:.2f} capacity  (target >= 0.85)"
        )
        print(
            f"  protected, usage on  / baseline: {on[0] / base[0]:.2f} req/s, "
            f"{base[3] / on[3]:.2f} capacity"
        )
        p50, p99 = steady(ports["usage_on"], key, 1000, steady_s)
        print(
            f"steady 1000 req/s, valid key, usage on, {steady_s:.0f}s: "
            f"p50 {p50:.2f} ms, p99 {p99:.2f} ms  (target p99 <= 10 ms)"
        )
        print(usage_report(usage_pairs(ports, pids, good, pairs, pair_s), pair_s))
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(20)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
