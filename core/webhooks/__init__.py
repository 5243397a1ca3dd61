"""Webhooks: endpoints, signing, the outbox, the dispatcher and the egress guard.

The platform publishes its own domain events with `emit` (or `POST /v1/events`) after
registering their type in the catalog (`register_event_type`, `python -m core events
register`).
"""

from __future__ import annotations

import importlib
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.config import Settings
from core.webhooks.catalog import (
    EventTypeView,
    Published,
    list_event_types,
    publish_event,
    register_event_type,
    subscribable_events,
)

if TYPE_CHECKING:
    from core.webhooks.config import WebhookConfig
    from core.webhooks.dispatcher import Dispatcher, EmbeddedWorker, deliver_due
    from core.webhooks.monitor import (
        AttemptView,
        EndpointStats,
        deliver_test,
        endpoint_stats,
        list_attempts,
        prune,
        queue_test,
        recover,
        replay,
        send_test,
    )
    from core.webhooks.service import (
        EndpointView,
        create_endpoint,
        delete_endpoint,
        get_endpoint,
        list_endpoints,
        rotate_secret,
        update_endpoint,
    )

# Loaded on first use: the delivery side pulls in the HTTP client, which a process that
# only publishes events (`serve`) never needs.
_LAZY = {
    "WebhookConfig": "config",
    **dict.fromkeys(("Dispatcher", "EmbeddedWorker", "deliver_due"), "dispatcher"),
    **dict.fromkeys(
        (
            "AttemptView",
            "EndpointStats",
            "deliver_test",
            "endpoint_stats",
            "list_attempts",
            "prune",
            "queue_test",
            "recover",
            "replay",
            "send_test",
        ),
        "monitor",
    ),
    **dict.fromkeys(
        (
            "EndpointView",
            "create_endpoint",
            "delete_endpoint",
            "get_endpoint",
            "list_endpoints",
            "rotate_secret",
            "update_endpoint",
        ),
        "service",
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'core.webhooks' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"core.webhooks.{module}"), name)
    globals()[name] = value
    return value


def start_embedded_worker(engine: Engine, settings: Settings) -> EmbeddedWorker | None:
    """Start the in-process dispatcher and alert scanner the console runs by default.

    Return the running worker (call `.stop()` at shutdown), or None when
    INTEGRATION_EMBEDDED_WORKER=0 says a separate `python -m core worker` does the job.
    """
    from core.webhooks.config import WebhookConfig
    from core.webhooks.dispatcher import EmbeddedWorker

    config = WebhookConfig.from_env(settings)
    if not config.embedded_worker:
        return None
    return EmbeddedWorker(engine, config).start()


def emit(
    session: Session,
    org_id: str,
    event_type: str,
    data: dict[str, Any],
    *,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> list[str]:
    """Publish a registered platform event in the caller's transaction; return the ids of
    the messages written (those of the first publication for a repeated idempotency key).

    Raise UnknownEventType for an unregistered type, InvalidEventData when the data does
    not match the type's schema, ValidationError for data that is not JSON, too large
    (64 KiB), or that carries a field named like a secret; see `publish_event`.
    """
    return publish_event(
        session, org_id, event_type, data, idempotency_key=idempotency_key, now=now
    ).message_ids


__all__ = [
    "AttemptView",
    "Dispatcher",
    "EmbeddedWorker",
    "EndpointStats",
    "EndpointView",
    "EventTypeView",
    "Published",
    "WebhookConfig",
    "create_endpoint",
    "delete_endpoint",
    "deliver_due",
    "deliver_test",
    "emit",
    "endpoint_stats",
    "get_endpoint",
    "list_attempts",
    "list_endpoints",
    "list_event_types",
    "prune",
    "publish_event",
    "queue_test",
    "recover",
    "register_event_type",
    "replay",
    "rotate_secret",
    "send_test",
    "start_embedded_worker",
    "subscribable_events",
    "update_endpoint",
]
