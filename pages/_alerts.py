"""The alert banner above every page, and the figures other domains add when installed.

Webhooks, alerts and usage analytics are separate parts of the product; each helper here
returns None when its part is not installed, and the pages show a marked empty state.
"""

from __future__ import annotations

import importlib
from datetime import timedelta
from types import ModuleType
from typing import Any

import streamlit as st

from core.keys.policy import KeyStatus
from core.orgs.permissions import Permission, check
from pages import _ui


def optional(module: str, *names: str) -> ModuleType | None:
    """Return the module if that part of the product is installed (with `names`), else None."""
    try:
        found = importlib.import_module(module)
    except ImportError:
        return None
    return found if all(hasattr(found, n) for n in names) else None


def webhooks() -> ModuleType | None:
    return optional("core.webhooks", "list_endpoints", "create_endpoint", "send_test")


def webhook_config(ctx: _ui.Context) -> Any:
    """Return the webhook configuration from the environment (secrets stay in the object)."""
    from core.webhooks.config import WebhookConfig

    return WebhookConfig.from_env(ctx.settings)


def alerts() -> ModuleType | None:
    return optional("core.alerts.service", "open_alerts")


def analytics() -> ModuleType | None:
    return optional("core.analytics", "calls_over_time", "top_keys", "latency_percentiles")


def open_alerts(ctx: _ui.Context) -> list[Any] | None:
    """Return the organization's open alerts for this user, or None without alerts."""
    module = alerts()
    if module is None:
        return None
    with ctx.reader() as s:
        return list(module.open_alerts(s, ctx.org_id, ctx.actor))


def failing_endpoints(ctx: _ui.Context) -> list[Any] | None:
    """Return the endpoints that are failing or disabled, or None without webhooks."""
    module = webhooks()
    if module is None or not ctx.can(Permission.WEBHOOKS_READ):
        return None
    with ctx.reader() as s:
        endpoints = module.list_endpoints(s, ctx.org_id, ctx.actor)
    return [e for e in endpoints if not e.enabled or e.failing_since is not None]


def call_counts(ctx: _ui.Context) -> tuple[int, int] | None:
    """Return (calls in the last 24 h, calls in the last 30 days), or None without analytics."""
    module = analytics()
    if module is None:
        return None
    with ctx.reader() as s:
        check(s, ctx.org_id, ctx.actor, Permission.USAGE_READ)
    now = _ui.now()
    day = module.latency_percentiles(
        ctx.settings.data_dir, ctx.org_id, since=now - timedelta(days=1)
    )
    month = module.latency_percentiles(
        ctx.settings.data_dir, ctx.org_id, since=now - timedelta(days=30)
    )
    return int(day["calls"].iloc[0]), int(month["calls"].iloc[0])


def expiring_count(ctx: _ui.Context) -> int:
    """Return how many of the organization's keys are within their first alert lead time."""
    return len(_ui.key_views(ctx, status=KeyStatus.EXPIRING))


def banner(ctx: _ui.Context) -> None:
    """Warn about keys about to expire and failing endpoints (open alerts when installed)."""
    found = open_alerts(ctx)
    if found is None:
        n = expiring_count(ctx)
        if n:
            noun = "API key expires" if n == 1 else "API keys expire"
            st.warning(
                f"**{n} {noun} soon.** Roll {'it' if n == 1 else 'them'} on the API Keys page "
                "before integrations start failing.",
                icon="⏰",
            )
        return
    for alert in found[:3]:
        show = st.error if alert.severity == "error" else st.warning
        show(_ui.text(alert.message), icon="🚨" if alert.severity == "error" else "⏰")
    if len(found) > 3:
        st.caption(f"…and {len(found) - 3} more alerts. See the Dashboard.")


def _stop_worker(worker: Any) -> None:
    if worker is not None:
        worker.stop(timeout=5)


@st.cache_resource(show_spinner=False, on_release=_stop_worker)
def embedded_worker(database_url: str) -> Any:
    """Start (once per process) the webhook dispatcher and alert scans the console runs itself.

    Return the worker, or None when webhooks are not installed or
    INTEGRATION_EMBEDDED_WORKER=0 (production runs `python -m core worker` instead).
    """
    if webhooks() is None:
        return None
    from core.config import Settings
    from core.webhooks import EmbeddedWorker
    from core.webhooks.config import WebhookConfig

    settings = Settings.from_env()
    config = WebhookConfig.from_env(settings)
    if not config.embedded_worker:
        return None
    return EmbeddedWorker(_ui.engine_for(database_url), config).start()
