"""What usage recording costs per request, in process: no network, no server, no wrk.

    python bench/recorder.py [--quick]

Drives `ApiKeyMiddleware` around a minimal ASGI app with a cached valid key, N requests
per run, with a `UsageRecorder` and without one (the baseline, same run, ABBA order),
and times `flush()` after each recorded run (Arrow conversion, Parquet write, rollup
counts). Prints CPU µs per request for each, the recording's cost per request (extra
time on the request path + flush time per record), and that cost as a share of a
server's CPU per request when `--server-us` is given (bench/http.py prints it).
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
    with_usage = ApiKeyMiddleware(app, CachedVerifier(), recorder=recorder)  # type: ignore[arg-type]
    without = ApiKeyMiddleware(app, CachedVerifier())  # type: ignore[arg-type]
    on: list[float] = []
    off: list[float] = []
    flush: list[float] = []
    for i in range(rounds):
        order = [(with_usage, on), (without, off)]
        for middleware, out in order if i % 2 == 0 else order[::-1]:
            out.append(asyncio.run(drive(middleware, n)))
            if middleware is with_usage:
                started = time.process_time()
                written = recorder.flush()
                flush.append((time.process_time() - started) / written * 1e6)
    m_on, m_off, m_flush = (statistics.median(x) for x in (on, off, flush))
    cost = m_on - m_off + m_flush
    print(f"{rounds} rounds of {n:,} requests (ABBA), median CPU µs per request:")
    print(f"  middleware without usage (baseline) {m_off:6.2f}")
    print(f"  middleware with usage               {m_on:6.2f}  ({m_on / m_off:.2f}×)")
    print(f"  flush, per record                   {m_flush:6.2f}")
    print(f"  usage recording cost per request    {cost:6.2f}")
    if args.server_us:
        print(
            f"  = {cost / args.server_us * 100:.1f}% of a server's {args.server_us:.1f} µs "
            "per request (target <= 10%)"
        )


if __name__ == "__main__":
    main()
