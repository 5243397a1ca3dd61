"""`worker [--once]`: the webhook dispatcher and the alert scanner."""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from typing import Any

from core.cli._common import add_json_flag, engine, print_json
from core.cli.webhooks import config


def register(sub: Any) -> None:
    p = sub.add_parser("worker", help="deliver webhooks and scan for alerts")
    p.add_argument("--once", action="store_true", help="deliver what is due, scan once, exit")
    add_json_flag(p, "with --once, print what was done as JSON; errors as JSON on stderr")
    p.set_defaults(handler=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    from core.webhooks import worker

    if args.once:
        attempts, report = worker.run_once(engine(), config())
        if args.json:
            print_json(
                {
                    "attempts": attempts,
                    "expiring": report.expiring,
                    "expired": report.expired,
                    "endpoints_checked": report.endpoints_checked,
                    "emails": report.emails,
                    "pruned": report.pruned,
                }
            )
            return 0
        print(
            f"{attempts} delivery attempts; {report.expiring} expiring and {report.expired} "
            f"expired key alerts; {report.emails} e-mails"
        )
        return 0
    stop = threading.Event()

    def _stop(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    asyncio.run(worker.run_worker(engine(), config(), stop))
    return 0
