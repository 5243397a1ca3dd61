"""The SSRF guard: each refused address class, at URL validation and at connect time."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from core import webhooks
from core.errors import ValidationError
from core.webhooks import deliver_due, emit
from core.webhooks.config import WebhookConfig
from core.webhooks.egress import refusal_reason, validate_url
from core.webhooks.models import WebhookAttempt
from tests._webhook_receiver import Receiver, webhook_config
from tests.factories import PLATFORM_EVENT, make_org, register_platform_event

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.9.9.9", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.5.4", "private"),
    ("192.168.0.10", "private"),
    ("169.254.169.254", "link-local"),
    ("0.0.0.0", "unspecified"),  # noqa: S104
    ("224.0.0.251", "multicast"),
    ("240.0.0.1", "reserved"),
    ("100.64.0.1", "not globally routable"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link-local"),
    ("fc00::1", "private"),
    ("ff02::1", "multicast"),
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
    ("::ffff:169.254.169.254", "IPv4-mapped link-local"),
    ("::ffff:10.0.0.1", "IPv4-mapped private"),
]


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_refusal_reason_names_each_address_class(address: str, reason: str) -> None:
    assert reason in (refusal_reason(address) or "")


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal_reason(address) is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://hooks.example.com/x", "must use https"),
        ("http://hooks.example.com/x", "INTEGRATION_WEBHOOK_ALLOW_HTTP"),
        ("https://user:pw@hooks.example.com/", "user name or password"),
        ("https://hooks.example.com/" + "a" * 2100, "1–2048"),
        ("https://hooks example.com/", "without spaces"),
        ("https:///path", "name a host"),
        ("https://hooks.example.com/#frag", "fragment"),
        ("https://localhost/hook", "loopback"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://[::ffff:10.0.0.1]/", "IPv4-mapped private"),
        ("https://hooks.example.com:99999/", "malformed"),
        ("", "1–2048"),
    ],
)
def test_bad_urls_are_refused_with_a_clear_reason(url: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        validate_url(url, allow_http=False, allow_private=False)


def test_a_public_https_url_is_accepted_and_private_ones_when_allowed() -> None:
    assert validate_url(
        " https://hooks.example.com/in ", allow_http=False, allow_private=False
    ) == ("https://hooks.example.com/in")
    assert validate_url("http://127.0.0.1:8080/", allow_http=True, allow_private=True)


@pytest.fixture
def strict_and_loose() -> tuple[WebhookConfig, WebhookConfig]:
    loose = webhook_config()
    assert isinstance(loose, WebhookConfig)
    return dataclasses.replace(loose, allow_private=False), loose


def _deliver_to(
    session: Session,
    engine: Engine,
    url: str,
    cfgs: tuple[WebhookConfig, WebhookConfig],
    now: datetime,
) -> WebhookAttempt:
    strict, loose = cfgs
    register_platform_event(session)
    org = make_org(session, now=now - timedelta(days=1))
    with session.begin():
        webhooks.create_endpoint(
            session, org.id, org.admin, url=url, events=PLATFORM_EVENT, config=loose
        )
        emit(session, org.id, PLATFORM_EVENT, {"n": 1})
    assert deliver_due(engine, strict) == 1
    with session.begin():
        return session.execute(select(WebhookAttempt)).scalar_one()


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "loopback address"),
        ("[::1]", "loopback address"),
        ("[::ffff:127.0.0.1]", "IPv4-mapped loopback address"),
        ("169.254.169.254", "link-local address"),
        ("10.0.0.7", "private address"),
        ("localhost", "resolves to 127.0.0.1 (loopback address)"),
    ],
)
def test_dispatcher_refuses_private_destinations_at_connect_time(
    session: Session,
    engine: Engine,
    strict_and_loose: tuple[WebhookConfig, WebhookConfig],
    now: datetime,
    host: str,
    reason: str,
) -> None:
    with Receiver() as receiver:
        url = f"http://{host}:{receiver.port}/hook"
        attempt = _deliver_to(session, engine, url, strict_and_loose, now)
        assert receiver.requests == []
    assert not attempt.success and attempt.status_code is None
    assert attempt.error is not None and "refused to connect" in attempt.error
    assert reason in attempt.error


def test_a_hostname_resolving_to_loopback_is_delivered_when_private_is_allowed(
    session: Session,
    engine: Engine,
    strict_and_loose: tuple[WebhookConfig, WebhookConfig],
    now: datetime,
) -> None:
    _, loose = strict_and_loose
    with Receiver() as receiver:
        url = f"http://localhost:{receiver.port}/hook"
        attempt = _deliver_to(session, engine, url, (loose, loose), now)
        assert len(receiver.requests) == 1
    assert attempt.success and attempt.status_code == 200
