"""`demo`: build a realistic demo data set through the product's own services."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from core.cli._common import add_json_flag, engine, print_json, settings
from core.demo import DemoOptions, build_demo


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo", help="build a realistic demo data set (organizations, keys, usage, audit)"
    )
    defaults = DemoOptions()
    p.add_argument("--orgs", type=int, default=defaults.orgs, help="organizations (default 3)")
    p.add_argument(
        "--keys", type=int, default=defaults.keys, help="key lineages per organization (12)"
    )
    p.add_argument(
        "--events", type=int, default=defaults.events, help="usage records (default 300000)"
    )
    p.add_argument("--days", type=int, default=defaults.days, help="days of history (90)")
    p.add_argument("--seed", type=int, default=defaults.seed, help="same seed, same data (42)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_json_flag(p)
    p.set_defaults(handler=cmd_demo)


class ProgressBar:
    """A one-line progress bar on stderr: records written, percentage, rate."""

    def __init__(self, width: int = 30) -> None:
        self.width = width
        self.started = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.last_pct = -1

    def __call__(self, done: int, total: int) -> None:
        pct = 100 if total == 0 else min(100, done * 100 // total)
        if not self.tty and pct // 10 == self.last_pct // 10 and pct < 100:
            return
        self.last_pct = pct
        filled = self.width * pct // 100
        rate = done / max(time.monotonic() - self.started, 1e-6)
        line = (
            f"usage records [{'#' * filled}{'.' * (self.width - filled)}] {pct:3d}% "
            f"{done:,}/{total:,} ({rate:,.0f}/s)"
        )
        sys.stderr.write(("\r" if self.tty else "") + line + ("" if self.tty else "\n"))
        if self.tty and done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def cmd_demo(args: argparse.Namespace) -> int:
    options = DemoOptions(
        orgs=args.orgs, keys=args.keys, events=args.events, days=args.days, seed=args.seed
    ).validated()
    bar = None if args.quiet or args.json else ProgressBar()
    if bar is not None:
        sys.stderr.write(f"Creating {options.orgs} organizations, their people and keys…\n")
    summary = build_demo(engine(), settings(), options, progress=bar)
    if args.json:
        print_json(summary.to_dict())
        return 0
    print(
        f"Built the demo in {summary.seconds:.1f} s: {len(summary.orgs)} organizations, "
        f"{summary.keys} keys, {summary.audit_events} audit events, "
        f"{summary.records:,} usage records ({summary.start:%Y-%m-%d} to {summary.end:%Y-%m-%d})."
    )
    print(f"Organizations: {', '.join(summary.orgs)}")
    print(f"Sign in as {summary.admins[0]} (any organization's alice@…) with the demo password:")
    print(f"    {summary.password}")
    return 0
