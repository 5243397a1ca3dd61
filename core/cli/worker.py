"""`worker [--once]`: the webhook dispatcher and the alert scanner."""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from typing import Any

from core.cli._common import engine
from core.cli.webhooks import config


def register(sub: Any) -> None:
    p = sub.add_parser("worker", help="deliver webhooks and scan for alerts")
    p.add_argument("--once", action="store_true", help="deliver what is due, scan once, exit")
    p.set_defaults(handler=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    from core.webhooks import worker

    if args.once:
        attempts, report = worker.run_once(engine(), config())
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
