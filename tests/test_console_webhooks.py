"""The Webhooks page against a real receiver on 127.0.0.1: add, test, deliveries, rotate."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session
from streamlit.testing.v1 import AppTest

from core import webhooks
from tests import test_console_app as app
from tests._webhook_receiver import Receiver, Reply
from tests.factories import OrgFixture
from tests.test_console_app import (
    Console,
    assert_clean,
    assert_refused,
    button,
    everything,
    texts,
)

console = app.console  # fixtures shared with the console's entry tests
org = app.org


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def _add(at: AppTest, url: str) -> AppTest:
    button(at, "Add endpoint").click().run()
    at.text_input(key="wh_url").input(url)
    at.text_input(key="wh_description").input("Billing service")
    return _submit(at)


def _submit(at: AppTest) -> AppTest:
    submit = [b for b in at.button if b.label == "Add endpoint" and b.form_id]
    return submit[0].click().run()


def _endpoints(console: Console, org: OrgFixture) -> list[webhooks.EndpointView]:
    with Session(console.engine) as s:
        return webhooks.list_endpoints(s, org.id, org.admin)


def test_empty_state_then_add_shows_the_secret_once(
    console: Console, org: OrgFixture, receiver: Receiver
) -> None:
    at = console.signed_in("admin@acme.test", "Webhooks")
    assert "No webhook endpoints yet" in everything(at)
    _add(at, receiver.url)
    assert_clean(at)
    secret = at.code[0].value
    assert secret.startswith("whsec_")
    assert any("will not be shown again" in w for w in texts(at, "warning"))
    assert secret not in str(at.session_state.to_dict())
    button(at, "Done").click().run()
    assert secret not in everything(at)
    table = at.dataframe[0].value
    assert list(table["URL"]) == [receiver.url]
    assert list(table["Health"]) == ["🟢 Healthy"]


def test_a_bad_url_is_refused_with_a_clear_message(console: Console, org: OrgFixture) -> None:
    at = console.signed_in("admin@acme.test", "Webhooks")
    _add(at, "ftp://example.com/hook")
    assert_refused(at, "URL must use https or http")
    assert not at.code
    assert _endpoints(console, org) == []


def test_send_test_shows_the_delivery_at_once_and_it_can_be_replayed(
    console: Console, org: OrgFixture, receiver: Receiver
) -> None:
    at = console.signed_in("admin@acme.test", "Webhooks")
    _add(at, receiver.url)
    button(at, "Done").click().run()
    button(at, "Send test event").click().run()
    assert_clean(at)
    assert any(s.startswith("Delivered: HTTP 200") for s in texts(at, "success"))
    assert len(receiver.requests) == 1
    assert receiver.requests[0].headers.get("webhook-signature", "").startswith("v1,")
    at.run()
    log = at.dataframe[1].value
    assert list(log["Result"]) == ["✅ Delivered"]
    button(at, "Replay this message").click().run()
    assert_clean(at)
    assert "Message queued for delivery again" in texts(at, "toast")


def test_disable_and_rotate(console: Console, org: OrgFixture, receiver: Receiver) -> None:
    at = console.signed_in("admin@acme.test", "Webhooks")
    _add(at, receiver.url)
    first = at.code[0].value
    button(at, "Done").click().run()
    button(at, "Disable").click().run()
    assert_clean(at)
    assert at.dataframe[0].value["Health"][0].startswith("⚪ Disabled")
    button(at, "Rotate secret").click().run()
    next(b for b in at.button if b.key == "rotate_confirm").click().run()
    assert_clean(at)
    second = at.code[0].value
    assert second.startswith("whsec_") and second != first
    assert "Signing secret rotated" in texts(at, "toast")


def test_an_auditor_sees_endpoints_but_cannot_change_them(
    console: Console, org: OrgFixture, receiver: Receiver
) -> None:
    from core.config import Settings
    from core.webhooks.config import WebhookConfig

    with Session(console.engine) as s, s.begin():
        webhooks.create_endpoint(
            s,
            org.id,
            org.admin,
            url=receiver.url,
            events=["api_key.revoked"],
            config=WebhookConfig.from_env(Settings.from_env()),
        )
    at = console.signed_in("auditor@acme.test", "Webhooks")
    assert_clean(at)
    assert list(at.dataframe[0].value["URL"]) == [receiver.url]
    labels = {b.label for b in at.button}
    assert not labels & {"Add endpoint", "Send test event", "Rotate secret", "Delete"}


def test_a_failing_test_send_is_shown_at_once(console: Console, org: OrgFixture) -> None:
    with Receiver(lambda _r, _i: Reply(status=500, body=b"boom")) as failing:
        at = console.signed_in("admin@acme.test", "Webhooks")
        _add(at, failing.url)
        button(at, "Done").click().run()
        button(at, "Send test event").click().run()
    assert_clean(at)
    assert any(e.startswith("Test event failed") for e in texts(at, "error"))
    at.run()
    assert list(at.dataframe[1].value["Result"]) == ["❌ Failed"]


def test_edit_then_delete_an_endpoint(
    console: Console, org: OrgFixture, receiver: Receiver
) -> None:
    at = console.signed_in("admin@acme.test", "Webhooks")
    _add(at, receiver.url)
    button(at, "Done").click().run()
    button(at, "Edit").click().run()
    at.text_input(key="we_description").input("Orders service")
    at.multiselect(key="we_events").set_value(["api_key.revoked"])
    button(at, "Save changes").click().run()
    assert_clean(at)
    view = _endpoints(console, org)[0]
    assert (view.description, view.events) == ("Orders service", ["api_key.revoked"])
    button(at, "Delete").click().run()
    button(at, "Delete endpoint").click().run()
    assert_clean(at)
    assert "Endpoint deleted" in texts(at, "toast")
    assert _endpoints(console, org) == []
    assert "No webhook endpoints yet" in everything(at)


def test_the_platforms_registered_event_types_are_offered_for_subscription(
    console: Console, org: OrgFixture, receiver: Receiver
) -> None:
    with Session(console.engine) as s, s.begin():
        webhooks.register_event_type(s, "invoice.paid", "an invoice was paid")
    at = console.signed_in("admin@acme.test", "Webhooks")
    button(at, "Add endpoint").click().run()
    events = at.multiselect(key="wh_events")
    assert "invoice.paid" in events.options and "api_key.revoked" in events.options
    at.text_input(key="wh_url").input(receiver.url)
    events.set_value(["invoice.paid"])
    _submit(at)
    assert_clean(at)
    (endpoint,) = _endpoints(console, org)
    assert endpoint.events == ["invoice.paid"]
