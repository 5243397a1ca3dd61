"""What usage recording costs per request, in process: no network, no server, no wrk.

    python bench/recorder.py [--quick]

Drives `ApiKeyMiddleware` around a minimal ASGI app with a cached valid key, N requests
per run, with a `UsageRecorder` and without one (the baseline, same run, ABBA order),
and times `flush()` after each recorded run (Arrow conversion, Parquet write, rollup
counts). Two apps: a plain one, whose status the middleware learns by wrapping `send`
(any FastAPI or Starlette app), and one that reports its status in the scope
(`reports_status`, as the service's own routes do). Prints CPU µs per request for each,
the recording's cost per request (extra time on the request path + flush time per
record), and that cost as a share of a server's CPU per request when `--server-us` is
given (bench/http.py prints it).
The figure is steadier than bench/http.py's, whose server-wide CPU swings by ±10 % from
run to run here.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from core.auth.asgi import ApiKeyMiddleware  # noqa: E402
from core.auth.contract import Code, Verdict  # noqa: E402
from core.auth.principal import STATUS_KEY  # noqa: E402
from core.usage.recorder import UsageRecorder  # noqa: E402

VERDICT = Verdict(Code.VALID, "key_0123456789abcdef", "org_0123456789abcdef", "Production")
HEADER = b"x-api-key isk_" + b"a" * 36


class CachedVerifier:
    """Answers every key from the cache, as the verifier does for a key seen before."""

    def verify_cached(self, key: str) -> Verdict:
        return VERDICT


async def app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


class ReportingApp:
    """The same app, reporting its status in the scope."""

    reports_status = True

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        scope[STATUS_KEY] = 200
        await app(scope, receive, send)


async def _send(message: Any) -> None:
    return None


async def _receive() -> Any:
    return {"type": "http.request"}


async def drive(middleware: ApiKeyMiddleware, n: int) -> float:
    """Return CPU µs per request over n requests."""
    started = time.process_time()
    for i in range(n):
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/v1/whoami",
            "headers": [(b"host", b"api"), (b"authorization", HEADER)],
            "client": ("127.0.0.1", 40000 + i % 1000),
        }
        await middleware(scope, _receive, _send)
    return (time.process_time() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--server-us", type=float, help="a server's CPU µs per request")
    args = parser.parse_args()
    n, rounds = (10_000, 4) if args.quick else (20_000, 12)
    data_dir = Path(tempfile.mkdtemp(prefix="bench-recorder-"))
    recorder = UsageRecorder(data_dir)  # flushed by hand below, no thread
    verifier: Any = CachedVerifier()
    cases = {
        "without usage (baseline)": ApiKeyMiddleware(ReportingApp(), verifier),
        "usage, plain app (send wrapped)": ApiKeyMiddleware(app, verifier, recorder=recorder),
        "usage, app reports its status": ApiKeyMiddleware(
            ReportingApp(), verifier, recorder=recorder
        ),
    }
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    flush: list[float] = []
    for i in range(rounds):
        names = list(cases) if i % 2 == 0 else list(cases)[::-1]
        for name in names:
            cpu[name].append(asyncio.run(drive(cases[name], n)))
            if cases[name].recorder is not None:
                started = time.process_time()
                written = recorder.flush()
                flush.append((time.process_time() - started) / written * 1e6)
    med = {name: statistics.median(values) for name, values in cpu.items()}
    m_flush = statistics.median(flush)
    baseline = "without usage (baseline)"
    base = med[baseline]
    print(f"{rounds} rounds of {n:,} requests (ABBA), median CPU µs per request:")
    for name, value in med.items():
        extra = f"  (+{value - base:.2f}; with flush +{value - base + m_flush:.2f})"
        print(f"  middleware {name:33} {value:6.2f}{extra if name != baseline else ''}")
    print(f"  flush, per record {m_flush:.2f}")
    if args.server_us:
        for name, value in med.items():
            if name != baseline:
                cost = value - base + m_flush
                print(
                    f"  {name}: {cost / args.server_us * 100:.1f}% of a server's "
                    f"{args.server_us:.1f} µs per request (target <= 10%)"
                )


if __name__ == "__main__":
    main()
