"""`serve`: run the HTTP service (uvicorn) — the verify endpoint and the reference API."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from core.cli._common import CommandError, add_json_flag, settings


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the HTTP service (verify endpoint, /v1/whoami, /healthz)",
        description=(
            "Run one service process. Run several (on PostgreSQL) behind a load balancer "
            "to scale out; each follows the key-change feed, so a revocation anywhere is "
            "refused everywhere within a second."
        ),
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--ssl-certfile", metavar="PEM", help="TLS certificate (serve HTTPS)")
    p.add_argument("--ssl-keyfile", metavar="PEM", help="TLS private key")
    p.add_argument(
        "--require-https",
        action="store_true",
        help="refuse requests that did not arrive over HTTPS (code https_required)",
    )
    p.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="ADDR",
        help="address or network whose X-Forwarded-Proto is believed (repeatable)",
    )
    p.add_argument("--no-usage", action="store_true", help="do not record the usage log")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning"])
    add_json_flag(p, "a refusal to start is printed as a JSON error; logs stay as they are")
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    import dataclasses

    import uvicorn

    from core.api.app import build_app
    from core.api.config import ServiceConfig
    from core.auth.https import HttpsPolicy

    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise CommandError("--ssl-certfile and --ssl-keyfile go together")
    if not 0 <= args.port <= 65535:
        raise CommandError("--port must be between 0 and 65535")
    config = ServiceConfig.from_env()
    if args.require_https or args.trusted_proxy:
        proxies = [str(n) for n in config.https.trusted_proxies] + list(args.trusted_proxy)
        required = config.https.required or args.require_https
        config = dataclasses.replace(config, https=HttpsPolicy.parse(required, proxies))
    if args.no_usage:
        config = dataclasses.replace(config, usage_enabled=False)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s %(message)s")
    app = build_app(settings(), config)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        proxy_headers=False,  # the middleware decides whom to believe (--trusted-proxy)
        server_header=False,
        access_log=False,
        log_level=args.log_level,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    return 0
