"""Dashboard: the organization at a glance."""

from __future__ import annotations

from datetime import timedelta

import streamlit as st

from core.keys.policy import KeyStatus
from core.orgs.permissions import Permission
from pages import _alerts, _ui

ctx = _ui.context(Permission.KEYS_READ)
_ui.header(_ui.text(ctx.org_name), "Your organization's integration at a glance.")

views = _ui.key_views(ctx)
counts = {status: 0 for status in KeyStatus}
for v in views:
    counts[v.status] += 1

st.subheader("API keys")
c1, c2, c3, c4 = st.columns(4)
c1.metric("Active keys", counts["active"] + counts["expiring"], border=True)
c2.metric("Expiring soon", counts["expiring"], border=True)
c3.metric("Revoked", counts["revoked"], border=True)
c4.metric("Expired", counts["expired"], border=True)

st.subheader("API calls")
calls = _alerts.call_counts(ctx)
analytics = _alerts.analytics()
if analytics is not None and (notice := analytics.usage_problem_notice(ctx.settings.data_dir)):
    st.warning(notice, icon="⚠️")
u1, u2, u3 = st.columns(3)
if calls is None:
    total = sum(v.usage_count for v in views)
    u1.metric("Calls, last 24 h", "—", border=True)
    u2.metric("Calls, last 30 days", "—", border=True)
    u3.metric("Calls, all time (per-key counters)", f"{total:,}", border=True)
    st.caption("Time-windowed call counts appear once usage analytics are available.")
else:
    u1.metric("Calls, last 24 h", f"{calls[0]:,}", border=True)
    u2.metric("Calls, last 30 days", f"{calls[1]:,}", border=True)
    u3.metric(
        "Calls, all time (per-key counters)", f"{sum(v.usage_count for v in views):,}", border=True
    )

st.subheader("Webhooks and alerts")
see_webhooks = ctx.can(Permission.WEBHOOKS_READ)
failing = _alerts.failing_endpoints(ctx) if see_webhooks else None
open_alerts = _alerts.open_alerts(ctx)
w1, w2 = st.columns(2) if see_webhooks else (None, st.columns(1)[0])
if w1 is not None:
    w1.metric("Failing webhook endpoints", "—" if failing is None else len(failing), border=True)
w2.metric("Open alerts", "—" if open_alerts is None else len(open_alerts), border=True)
if open_alerts is None:
    st.caption("Alerts appear here once the alerting part of the product is installed.")
elif open_alerts:
    for alert in open_alerts[:10]:
        icon = "🚨" if alert.severity == "error" else "⏰"
        st.markdown(f"{icon} {_ui.text(alert.message)} · *{_ui.relative(alert.created_at)}*")
for endpoint in failing or []:
    state = "disabled" if not endpoint.enabled else "failing"
    st.markdown(f"🪝 Webhook endpoint {_ui.text(endpoint.url)} is {state}.")

soon = sorted(
    (
        v
        for v in views
        if v.status in ("active", "expiring") and v.expires_at <= _ui.now() + timedelta(days=30)
    ),
    key=lambda v: v.expires_at,
)[:5]
if soon:
    st.subheader("Next to expire")
    for v in soon:
        st.markdown(f"- **{_ui.text(v.name)}** `{v.masked}` expires {_ui.relative(v.expires_at)}")

st.divider()
l1, l2 = st.columns(2)
l1.page_link("pages/api_keys.py", label="Manage API keys", icon=":material/key:")
l2.page_link("pages/getting_started.py", label="Integration guide", icon=":material/menu_book:")
