"""Webhook endpoints, the outbox of messages to deliver, the log of delivery attempts, and the
catalog of the platform's own event types with the record of idempotent publications."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base


class MessageStatus:
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    org_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(300), default="")
    # {"types": [...]}: the event types this endpoint receives.
    event_types: Mapped[dict[str, Any]]
    # {"secrets": [{"id", "ciphertext", "created_at", "expires_at"}]}, newest first; each
    # ciphertext is AES-GCM under the configured key. Only unexpired ones sign.
    secrets: Mapped[dict[str, Any]]
    enabled: Mapped[bool] = mapped_column(default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(300))
    disabled_at: Mapped[datetime | None]
    created_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]
    # Start of the current run of failures (None while the last attempt succeeded).
    failing_since: Mapped[datetime | None]
    failing_warned_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    last_failure_at: Mapped[datetime | None]


class WebhookMessage(Base):
    """One event for one endpoint: the outbox row, written with the change that caused it."""

    __tablename__ = "webhook_messages"
    __table_args__ = (
        Index("ix_webhook_messages_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_webhook_messages_endpoint_id_created_at", "endpoint_id", "created_at"),
    )

    # Sent as `webhook-id`: the same on every redelivery, so receivers can de-duplicate.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(32))
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(64))
    # The exact JSON body, so every attempt signs and sends the same bytes.
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16), default=MessageStatus.PENDING)
    next_attempt_at: Mapped[datetime | None]
    attempt_count: Mapped[int] = mapped_column(default=0)
    # Position in the retry schedule; a replay or recovery starts it over.
    schedule_step: Mapped[int] = mapped_column(default=0)
    last_attempt_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(500))


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"
    __table_args__ = (
        Index("ix_webhook_attempts_endpoint_id_attempted_at", "endpoint_id", "attempted_at"),
        Index("ix_webhook_attempts_message_id", "message_id"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    message_id: Mapped[str] = mapped_column(ForeignKey("webhook_messages.id", ondelete="CASCADE"))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    attempted_at: Mapped[datetime]
    success: Mapped[bool]
    status_code: Mapped[int | None]
    latency_ms: Mapped[float]
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(String(500))
    trigger: Mapped[str] = mapped_column(String(16), default="scheduled")


class EventTypeDef(Base):
    """A platform event type endpoints may subscribe to and the platform may publish."""

    __tablename__ = "event_types"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(String(300), default="")
    # The JSON Schema every event's `data` must match; None accepts any JSON object.
    data_schema: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class EventPublication(Base):
    """An event published with an idempotency key: the unique (org, key) pair makes a
    concurrent or repeated request with the same key publish once."""

    __tablename__ = "event_publications"
    __table_args__ = (
        UniqueConstraint("org_id", "idempotency_key"),
        Index("ix_event_publications_created_at", "created_at"),
    )

    event_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str] = mapped_column(String(64))
    # SHA-256 of the type and data: the same key sent with another event is refused.
    request_hash: Mapped[str] = mapped_column(String(64))
    # {"ids": [...]}: the messages the publication wrote, answered again to a repeat.
    message_ids: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
