"""The command line: `python -m core COMMAND …`, installed as `integration COMMAND …`.

Each command group lives in its own module with a `register(subparsers)` function.
Errors print one line to stderr and exit non-zero; a traceback never reaches the user.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from core.cli import audit as audit_cli
from core.cli import demo as demo_cli
from core.cli import events as events_cli
from core.cli import keys as keys_cli
from core.cli import orgs as orgs_cli
from core.cli import serve as serve_cli
from core.cli import usage as usage_cli
from core.cli import webhooks as webhooks_cli
from core.cli import worker as worker_cli
from core.cli._common import CommandError
from core.errors import CoreError

COMMAND_MODULES = [
    orgs_cli,
    keys_cli,
    audit_cli,
    serve_cli,
    usage_cli,
    webhooks_cli,
    events_cli,
    worker_cli,
    demo_cli,
]

EXIT_ERROR = 1
EXIT_USAGE = 2

log = logging.getLogger("core.cli")


def build_parser(prog: str = "python -m core") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Integration Settings: API keys, webhooks and request authentication.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def entry_point() -> int:
    """The `integration` console script: the same commands as `python -m core`."""
    return main(prog="integration")


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m core") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (CoreError, CommandError) as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
        print(f"error: database failure: {reason}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the user gets one line; the details go to the log
        log.debug("unexpected failure", exc_info=True)
        print(f"error: unexpected failure ({type(exc).__name__})", file=sys.stderr)
        return EXIT_ERROR
