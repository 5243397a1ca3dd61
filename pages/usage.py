"""Usage: calls over time, by key, by result code, latency p50/p95 (core/analytics)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import altair as alt
import pandas as pd
import streamlit as st

from core.orgs.permissions import Permission, check
from pages import _alerts, _ui

ctx = _ui.context(Permission.USAGE_READ)
_ui.header("Usage", "How your keys are used: calls, results and latency.")

analytics = _alerts.analytics()
with ctx.reader() as s:
    check(s, ctx.org_id, ctx.actor, Permission.USAGE_READ)
names = _ui.key_labels(ctx)


def _per_key_counters() -> None:
    used = [v for v in _ui.key_views(ctx) if v.usage_count]
    if not used:
        _ui.empty_state(
            "No API calls yet",
            "Calls appear here once a service sends requests with one of your keys.",
            icon="📈",
        )
        return
    top = sorted(used, key=lambda v: v.usage_count, reverse=True)[:20]
    frame = pd.DataFrame({"key": [names[v.id] for v in top], "calls": [v.usage_count for v in top]})
    st.altair_chart(
        alt.Chart(frame)
        .mark_bar()
        .encode(x=alt.X("calls:Q", title="Calls"), y=alt.Y("key:N", sort="-x", title=None)),
        width="stretch",
    )


if analytics is None:
    st.info("Usage analytics are not available yet; these are the per-key counters.", icon="📊")
    _per_key_counters()
    st.stop()

today = date.today()
f1, f2, f3 = st.columns([2, 1, 2])
period = f1.date_input(
    "Date range", value=(today - timedelta(days=29), today), max_value=today, key="usage_dates"
)
grain = f2.selectbox("Granularity", ["hour", "day", "week"], index=1, key="usage_grain")
key_choice = f3.selectbox(
    "Key",
    ["all", *names],
    format_func=lambda k: "All keys" if k == "all" else names[k],
    key="usage_key",
)
if not (isinstance(period, tuple) and len(period) == 2):
    st.info("Choose the last day of the range.")
    st.stop()
since = datetime.combine(period[0], time.min, UTC)
until = datetime.combine(period[1] + timedelta(days=1), time.min, UTC)
data_dir = ctx.settings.data_dir
if notice := analytics.usage_problem_notice(data_dir):
    st.warning(notice, icon="⚠️")

one_key = None if key_choice == "all" else key_choice
with st.spinner("Reading the usage log…"):
    totals = analytics.latency_percentiles(data_dir, ctx.org_id, since=since, until=until)
    if int(totals["calls"].iloc[0]) == 0:
        _ui.empty_state(
            "No API calls in this period",
            "Calls appear here once a service sends requests with one of your keys. "
            "Widen the date range to look further back.",
            icon="📈",
        )
        st.stop()
    per_key = analytics.top_keys(data_dir, ctx.org_id, limit=10_000, since=since, until=until)
    names = _ui.key_labels(ctx, needed=per_key["key_id"])
    scope = {"since": since, "until": until, "key_id": one_key}
    over_time = analytics.calls_over_time(data_dir, ctx.org_id, grain=grain, **scope)
    by_code = analytics.error_rates(data_dir, ctx.org_id, by="code", **scope)
    by_day = analytics.latency_percentiles(data_dir, ctx.org_id, by="day", **scope)
    if one_key is not None:
        totals = analytics.latency_percentiles(data_dir, ctx.org_id, **scope)

row = totals.iloc[0]
calls = int(row["calls"])
m1, m2, m3, m4 = st.columns(4)
m1.metric("Calls with this key" if one_key else "Calls", f"{calls:,}", border=True)
errors = int(over_time["errors"].sum())
m2.metric("Error rate", f"{errors / max(1, calls):.1%}", border=True)
m3.metric("Latency p50", f"{row['p50_ms']:.1f} ms" if calls else "—", border=True)
m4.metric("Latency p95", f"{row['p95_ms']:.1f} ms" if calls else "—", border=True)
if one_key:
    st.caption("Charts show this key's calls; “By key” compares all of the organization's keys.")

st.subheader("Calls over time")
long = over_time.melt(id_vars=["bucket"], value_vars=["ok", "errors"], var_name="result")
st.altair_chart(
    alt.Chart(long)
    .mark_area()
    .encode(
        x=alt.X("bucket:T", title=None),
        y=alt.Y("value:Q", title="Calls", stack=True),
        color=alt.Color(
            "result:N", scale=alt.Scale(domain=["ok", "errors"], range=["#2563eb", "#dc2626"])
        ),
        tooltip=["bucket:T", "result:N", "value:Q"],
    ),
    width="stretch",
)

left, right = st.columns(2)
with left:
    st.subheader("By key")
    top = per_key.head(15).assign(key=lambda f: f["key_id"].map(lambda k: names.get(k, k)))
    st.altair_chart(
        alt.Chart(top)
        .mark_bar()
        .encode(
            x=alt.X("calls:Q", title="Calls"),
            y=alt.Y("key:N", sort="-x", title=None),
            tooltip=["key:N", "calls:Q", alt.Tooltip("error_rate:Q", format=".1%")],
        ),
        width="stretch",
    )
with right:
    st.subheader("By result code")
    st.altair_chart(
        alt.Chart(by_code)
        .mark_bar()
        .encode(
            x=alt.X("calls:Q", title="Calls"),
            y=alt.Y("code:N", sort="-x", title=None),
            color=alt.condition(
                alt.datum.code == "valid", alt.value("#2563eb"), alt.value("#dc2626")
            ),
            tooltip=["code:N", "calls:Q", alt.Tooltip("share:Q", format=".1%")],
        ),
        width="stretch",
    )

st.subheader("Latency p50 / p95 by day")
lat = by_day.melt(id_vars=["day"], value_vars=["p50_ms", "p95_ms"], var_name="percentile")
st.altair_chart(
    alt.Chart(lat)
    .mark_line(point=True)
    .encode(
        x=alt.X("day:T", title=None),
        y=alt.Y("value:Q", title="ms"),
        color=alt.Color("percentile:N", title=None),
        tooltip=["day:T", "percentile:N", alt.Tooltip("value:Q", format=".1f")],
    ),
    width="stretch",
)
