"""The command line: `python -m core COMMAND …`, installed as `integration COMMAND …`.

Each command group lives in its own module with a `register(subparsers)` function.
Every command takes `--json`. Errors print one line to stderr and exit non-zero — with
`--json`, that line is ``{"error": {"code", "message"}}`` — and a traceback never
reaches the user.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

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


class UsageError(Exception):
    """The command line does not parse; `parser` is the (sub)command's parser."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    """Raises UsageError instead of exiting, so `main` can answer it as JSON too."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self, message)


def commands(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Yield the parser of every runnable command (the leaves: `keys list`, `serve`, …)."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield parser
    for group in groups:
        for child in dict.fromkeys(group.choices.values()):  # aliases share a parser
            yield from commands(child)


def build_parser(prog: str = "python -m core") -> argparse.ArgumentParser:
    parser = _Parser(
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


def _fail(json_errors: bool, code: str, message: str, **extra: Any) -> None:
    if json_errors:
        body = {"error": {"code": code, "message": message, **extra}}
        print(json.dumps(body, ensure_ascii=False), file=sys.stderr)
    else:
        print(f"error: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m core") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(prog)
    json_errors = "--json" in argv[: argv.index("--")] if "--" in argv else "--json" in argv
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        if json_errors:
            _fail(True, "usage_error", f"{exc.parser.prog}: {exc.message}")
        else:
            exc.parser.print_usage(sys.stderr)
            print(f"{exc.parser.prog}: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    json_errors = bool(getattr(args, "json", False))
    try:
        return int(args.handler(args) or 0)
    except CoreError as exc:
        extra = {k: v for k, v in exc.to_dict().items() if k not in ("code", "message")}
        _fail(json_errors, exc.code, exc.message, **extra)
        return EXIT_ERROR
    except CommandError as exc:
        _fail(json_errors, exc.code, exc.message)
        return EXIT_ERROR
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
        _fail(json_errors, "storage_error", f"database failure: {reason}")
        return EXIT_ERROR
    except BrokenPipeError:
        return EXIT_ERROR
    except KeyboardInterrupt:
        _fail(json_errors, "interrupted", "interrupted")
        return 130
    except Exception as exc:  # the user gets one line; the details go to the log
        log.debug("unexpected failure", exc_info=True)
        _fail(json_errors, "internal_error", f"unexpected failure ({type(exc).__name__})")
        return EXIT_ERROR
