"""The worker: the dispatcher plus the periodic alert scan, e-mail and history pruning.

`python -m core worker` runs `run_worker` until SIGTERM/SIGINT; the console runs the same
loop on a background thread (`EmbeddedWorker`) unless INTEGRATION_EMBEDDED_WORKER=0.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.alerts import mailer
from core.alerts import service as alerts
from core.clock import utcnow
from core.webhooks import monitor
from core.webhooks.config import WebhookConfig
from core.webhooks.dispatcher import Dispatcher

log = logging.getLogger("core.webhooks.worker")
PRUNE_EVERY = 3600.0


@dataclass
class ScanReport:
    expiring: int = 0
    expired: int = 0
    endpoints_checked: int = 0
    emails: int = 0
    pruned: int = 0


def scan(engine: Engine, config: WebhookConfig, *, prune: bool = False) -> ScanReport:
    """Run the alert scans once (each in its own transaction); return what they did."""
    report = ScanReport()
    now = utcnow()
    with Session(engine) as s, s.begin():
        result = alerts.scan_expiry(s, now=now)
        report.expiring, report.expired = result.expiring, result.expired
    with Session(engine) as s, s.begin():
        report.endpoints_checked = alerts.scan_endpoints(
            s, failing_after=config.failing_after, disable_after=config.disable_after, now=now
        )
    if config.smtp is not None:
        try:
            report.emails = mailer.send_pending(engine, config.smtp)
        except OSError as exc:
            log.warning("alert e-mail failed: %s", exc)
    if prune:
        with Session(engine) as s, s.begin():
            report.pruned = monitor.prune(s, retention_days=config.retention_days, now=now)
    return report


async def _scanner(
    engine: Engine, config: WebhookConfig, stop: asyncio.Event | threading.Event, every: float
) -> None:
    last_prune = 0.0
    while not stop.is_set():
        prune = time.monotonic() - last_prune >= PRUNE_EVERY
        try:
            await asyncio.to_thread(scan, engine, config, prune=prune)
            if prune:
                last_prune = time.monotonic()
        except Exception:
            log.exception("alert scan failed")
        deadline = time.monotonic() + every
        while not stop.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)


async def run_worker(
    engine: Engine,
    config: WebhookConfig,
    stop: asyncio.Event | threading.Event,
    *,
    scan_every: float = 60.0,
) -> None:
    """Deliver webhooks and scan for alerts until `stop` is set."""
    dispatcher = Dispatcher(engine, config)
    scanner = asyncio.create_task(_scanner(engine, config, stop, scan_every))
    try:
        await dispatcher.run(stop)
    finally:
        await scanner


def run_once(engine: Engine, config: WebhookConfig) -> tuple[int, ScanReport]:
    """Scan once, then deliver everything due now; return (attempts, scan report)."""
    report = scan(engine, config, prune=True)
    dispatcher = Dispatcher(engine, config)
    try:
        attempts = asyncio.run(dispatcher.run_once())
    finally:
        dispatcher.close()
    return attempts, report
