"""Settings → Integration → Webhooks: endpoints, test sends, deliveries, secret rotation."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pandas as pd
import streamlit as st

from core.events import WEBHOOK_EVENTS
from core.orgs.permissions import Permission
from pages import _alerts, _ui

ctx = _ui.context(Permission.WEBHOOKS_READ)
DIALOG = "_webhooks_dialog"  # ("add",) | ("edit", id) | ("rotate", id) | ("delete", id)
_ui.header(
    "Webhooks",
    "Send signed events (Standard Webhooks) to your own services when keys and members change.",
)

webhooks = _alerts.webhooks()
if webhooks is None:
    _ui.empty_state(
        "Webhooks are not available yet",
        "This installation does not include webhook delivery yet. When it does, you will add "
        "endpoints here, send test events and follow every delivery.",
        icon="🪝",
    )
    st.markdown("**Events you will be able to subscribe to**")
    st.markdown("\n".join(f"- `{e}`" for e in WEBHOOK_EVENTS))
    st.stop()

config = _alerts.webhook_config(ctx)
manage = ctx.can(Permission.WEBHOOKS_MANAGE)
with ctx.reader() as s:
    EVENTS = webhooks.subscribable_events(s)  # built-ins, then the platform's catalog


def _close() -> None:
    st.session_state.pop(DIALOG, None)


def _secret_once(secret: str, what: str) -> None:
    st.code(secret, language=None, wrap_lines=True)
    st.warning(
        f"Copy the {what} now and store it with the receiving service: it will not be shown again.",
        icon="🔒",
    )


def _done_button() -> None:
    """The dialog's closing button, rendered on every run so its click is never lost."""
    if st.button("Done", key="dialog_done"):
        _close()
        st.rerun()


def _health(e: Any) -> str:
    if not e.enabled:
        return f"⚪ Disabled: {e.disabled_reason or 'by an admin'}"
    if e.failing_since is not None:
        return f"🟠 Failing since {_ui.relative(e.failing_since)}"
    return "🟢 Healthy"


@st.dialog("Add webhook endpoint", on_dismiss=_close, width="large")
def add_dialog() -> None:
    with st.form("add_endpoint_form"):
        url = st.text_input(
            "Endpoint URL", placeholder="https://example.com/webhooks", key="wh_url"
        )
        description = st.text_input("Description (optional)", key="wh_description")
        events = st.multiselect("Events", EVENTS, default=EVENTS[:3], key="wh_events")
        submitted = st.form_submit_button("Add endpoint", type="primary")
    if submitted:
        with _ui.guarded():
            with ctx.session() as s, s.begin():
                view, secret = webhooks.create_endpoint(
                    s,
                    ctx.org_id,
                    ctx.actor,
                    url=url,
                    events=events,
                    description=description,
                    config=config,
                )
            st.success(f"Endpoint {_ui.text(view.url)} added.")
            st.toast("Webhook endpoint added", icon="✅")
            _secret_once(secret, "signing secret")
    _done_button()


@st.dialog("Edit webhook endpoint", on_dismiss=_close, width="large")
def edit_dialog(e: Any) -> None:
    with st.form("edit_endpoint_form"):
        url = st.text_input("Endpoint URL", value=e.url, key="we_url")
        description = st.text_input("Description", value=e.description, key="we_description")
        events = st.multiselect(
            "Events", EVENTS, default=[x for x in e.events if x in EVENTS], key="we_events"
        )
        submitted = st.form_submit_button("Save changes", type="primary")
    if submitted:
        with _ui.guarded():
            with ctx.session() as s, s.begin():
                webhooks.update_endpoint(
                    s,
                    ctx.actor,
                    e.id,
                    config=config,
                    url=url,
                    events=events,
                    description=description,
                )
            st.toast("Endpoint saved", icon="✅")
            _close()
            st.rerun()


@st.dialog("Rotate signing secret", on_dismiss=_close)
def rotate_dialog(e: Any) -> None:
    st.markdown(f"Issue a new signing secret for {_ui.text(e.url)}.")
    hours = int(config.rotation_overlap.total_seconds() // 3600)
    st.caption(f"Messages are signed with both secrets for {hours} hours, so receivers can switch.")
    if st.button("Rotate secret", type="primary", key="rotate_confirm"):
        with _ui.guarded():
            with ctx.session() as s, s.begin():
                secret = webhooks.rotate_secret(s, ctx.actor, e.id, config=config)
            st.toast("Signing secret rotated", icon="🔄")
            _secret_once(secret, "new signing secret")
    _done_button()


@st.dialog("Delete webhook endpoint", on_dismiss=_close)
def delete_dialog(e: Any) -> None:
    st.warning(f"Delete {_ui.text(e.url)} with its delivery log? This cannot be undone.", icon="⚠️")
    if st.button("Delete endpoint", type="primary", key="delete_confirm"):
        with _ui.guarded():
            with ctx.session() as s, s.begin():
                webhooks.delete_endpoint(s, ctx.actor, e.id)
            st.toast("Endpoint deleted", icon="🗑️")
            _close()
            st.rerun()


with ctx.reader() as s:
    endpoints = webhooks.list_endpoints(s, ctx.org_id, ctx.actor)
by_id = {e.id: e for e in endpoints}

if manage and st.button("Add endpoint", type="primary", icon=":material/add:"):
    st.session_state[DIALOG] = ("add",)

if not endpoints:
    _ui.empty_state(
        "No webhook endpoints yet",
        "Add an endpoint to receive events such as api_key.revoked at your own service."
        if manage
        else "An admin can add endpoints here.",
        icon="🪝",
    )
else:
    st.dataframe(
        pd.DataFrame(
            {
                "URL": [e.url for e in endpoints],
                "Description": [e.description or "—" for e in endpoints],
                "Events": [", ".join(e.events) for e in endpoints],
                "Health": [_health(e) for e in endpoints],
                "Last success": [_ui.relative(e.last_success_at, never="Never") for e in endpoints],
                "Last failure": [_ui.relative(e.last_failure_at, never="Never") for e in endpoints],
            }
        ),
        hide_index=True,
        width="stretch",
    )
    st.subheader("Endpoint details")
    chosen = st.selectbox(
        "Endpoint", list(by_id), format_func=lambda i: by_id[i].url, key="wh_endpoint"
    )
    endpoint = by_id[chosen]
    with ctx.reader() as s:
        stats = webhooks.endpoint_stats(s, ctx.actor, chosen)
    m1, m2, m3, m4 = st.columns(4)
    rate = "—" if stats.success_rate is None else f"{stats.success_rate:.0%}"
    m1.metric("Success rate, 24 h", rate, border=True)
    m2.metric("Attempts, 24 h", stats.attempts, border=True)
    m3.metric("Pending messages", stats.pending, border=True)
    m4.metric("Failed messages", stats.failed, border=True)

    if manage:
        b = st.columns(5)
        if b[0].button("Send test event", icon=":material/send:", key="wh_test"):
            with _ui.guarded(), st.spinner("Sending a signed webhook.test event…"):
                attempt = webhooks.send_test(ctx.engine, ctx.actor, chosen, config=config)
                if attempt.success:
                    st.success(
                        f"Delivered: HTTP {attempt.status_code} in {attempt.latency_ms:.0f} ms."
                    )
                    st.toast("Test event delivered", icon="✅")
                else:
                    detail = attempt.error or f"HTTP {attempt.status_code}"
                    st.error(f"Test event failed: {_ui.text(detail)}")
        if b[1].button("Edit", icon=":material/edit:", key="wh_edit"):
            st.session_state[DIALOG] = ("edit", chosen)
        toggle = "Disable" if endpoint.enabled else "Enable"
        flip = b[2].button(toggle, key="wh_toggle")
        if b[3].button("Rotate secret", icon=":material/key:", key="wh_rotate"):
            st.session_state[DIALOG] = ("rotate", chosen)
        if b[4].button("Delete", icon=":material/delete:", key="wh_delete"):
            st.session_state[DIALOG] = ("delete", chosen)
        if flip:
            with _ui.guarded():
                with ctx.session() as s, s.begin():
                    webhooks.update_endpoint(
                        s, ctx.actor, chosen, config=config, enabled=not endpoint.enabled
                    )
                st.toast(f"Endpoint {toggle.lower()}d", icon="✅")
                st.rerun()

    st.subheader("Deliveries")
    with ctx.reader() as s:
        attempts = webhooks.list_attempts(s, ctx.actor, chosen, limit=500)
    d1, d2 = st.columns(2)
    result = d1.selectbox("Result", ["All", "Succeeded", "Failed"], key="wh_result")
    triggers = sorted({a.trigger for a in attempts})
    trigger = d2.selectbox("Trigger", ["All", *triggers], key="wh_trigger")
    shown = [
        a
        for a in attempts
        if (result == "All" or a.success == (result == "Succeeded"))
        and (trigger == "All" or a.trigger == trigger)
    ]
    if not shown:
        st.info("No deliveries yet." if not attempts else "No deliveries match these filters.")
    else:
        st.dataframe(
            pd.DataFrame(
                {
                    "Time": [_ui.day(a.attempted_at) for a in shown],
                    "Message": [a.message_id for a in shown],
                    "Result": ["✅ Delivered" if a.success else "❌ Failed" for a in shown],
                    "HTTP": [a.status_code for a in shown],
                    "Latency (ms)": [round(a.latency_ms) for a in shown],
                    "Trigger": [a.trigger for a in shown],
                    "Error": [a.error or "" for a in shown],
                }
            ),
            hide_index=True,
            width="stretch",
        )
        picked = st.selectbox(
            "Attempt details",
            range(len(shown)),
            format_func=lambda i: f"{_ui.day(shown[i].attempted_at)} · {shown[i].message_id}",
            key="wh_attempt",
        )
        attempt = shown[picked]
        st.json(attempt.to_dict(), expanded=False)
        if manage and st.button("Replay this message", key="wh_replay"):
            with _ui.guarded():
                with ctx.session() as s, s.begin():
                    webhooks.replay(s, ctx.actor, attempt.message_id)
                st.toast("Message queued for delivery again", icon="🔁")
    if manage:
        with st.expander("Recover failed messages"):
            since_day = st.date_input(
                "Failed since", value=date.today() - timedelta(days=1), key="wh_recover_since"
            )
            if st.button("Queue them again", key="wh_recover"):
                with _ui.guarded():
                    since = datetime.combine(since_day, time.min, UTC)
                    with ctx.session() as s, s.begin():
                        n = webhooks.recover(s, ctx.actor, chosen, since=since)
                    st.toast(f"{n} failed messages queued again", icon="🔁")

opened = st.session_state.get(DIALOG)
if opened and manage:
    if opened[0] == "add":
        add_dialog()
    elif opened[1] in by_id:
        {"edit": edit_dialog, "rotate": rotate_dialog, "delete": delete_dialog}[opened[0]](
            by_id[opened[1]]
        )
    else:
        _close()
