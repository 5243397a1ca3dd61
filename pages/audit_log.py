"""Audit Log (admins, auditors): filters, chain status and exports."""

from __future__ import annotations

import tempfile
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pandas as pd
import streamlit as st

from core.audit import service as audit
from core.audit.service import AuditFilter
from core.events import EventType
from core.orgs.permissions import Permission
from pages import _alerts, _ui

ctx = _ui.context(Permission.AUDIT_READ)
SHOW_MAX = 1000
EXPORT = "_audit_export"  # (format, filename, bytes) of the last prepared export

_ui.header("Audit Log", "Every change to keys, webhooks, members, settings and sign-ins.")

with ctx.reader() as s:
    report = audit.verify_chain(s, ctx.org_id, ctx.actor)
if report.ok:
    st.success(f"Chain intact: {report.checked} events verified.", icon="🔗")
else:
    st.error(f"Chain broken: {report.describe()}", icon="🚨")

c1, c2, c3 = st.columns([1, 1, 1])
actor = c1.text_input("Actor email", placeholder="anyone", key="audit_actor")
actions = ["All actions", *sorted(str(e) for e in EventType)]
action = c2.selectbox("Action", actions, key="audit_action")
today = date.today()
period = c3.date_input("Date range", value=(today - timedelta(days=30), today), key="audit_dates")
since = until = None
if isinstance(period, tuple) and len(period) == 2:
    since = datetime.combine(period[0], time.min, UTC)
    until = datetime.combine(period[1] + timedelta(days=1), time.min, UTC)
filters = AuditFilter(
    since=since,
    until=until,
    actor_email=actor.strip() or None,
    action=None if action == "All actions" else action,
)

with _ui.guarded(), ctx.reader() as s:
    events = audit.list_events(s, ctx.org_id, ctx.actor, filters, limit=SHOW_MAX, newest_first=True)
    if not events:
        _ui.empty_state("No events match", "Widen the date range or clear the filters.", "🗂️")
    else:
        rows = [audit.event_row(e) for e in events]
        frame = pd.DataFrame(rows)[
            ["seq", "ts", "actor_email", "action", "target_type", "target_id", "details"]
        ]
        frame.columns = ["#", "Time (UTC)", "Actor", "Action", "Target", "Target id", "Details"]
        frame["Time (UTC)"] = [e.ts.strftime("%Y-%m-%d %H:%M:%S") for e in events]
        frame["Actor"] = frame["Actor"].fillna("system")
        st.caption(
            f"Showing the newest {len(rows)} events"
            + (
                f" (at most {SHOW_MAX}; exports contain every match)"
                if len(rows) >= SHOW_MAX
                else ""
            )
        )
        st.dataframe(frame, hide_index=True, width="stretch")

if ctx.can(Permission.AUDIT_EXPORT):
    st.subheader("Export")
    reports = _alerts.optional("core.audit.reports", "export", "FORMATS")
    formats = list(reports.FORMATS) if reports else list(audit.EXPORT_FORMATS)
    e1, e2 = st.columns([1, 3], vertical_alignment="bottom")
    fmt = e1.selectbox("Format", formats, format_func=str.upper, key="audit_format")
    if e2.button("Prepare export", icon=":material/download:", key="audit_prepare"):
        with _ui.guarded(), st.spinner("Preparing the export…"):
            stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
            name = f"audit-{ctx.org_id}-{stamp}.{fmt}"
            with tempfile.TemporaryDirectory() as tmp, ctx.reader() as s:
                path = Path(tmp) / name
                if reports is not None:
                    n = reports.export(s, ctx.org_id, ctx.actor, fmt, path, filters)
                else:
                    n = audit.export_events(s, ctx.org_id, ctx.actor, fmt, path, filters)
                st.session_state[EXPORT] = (fmt, name, path.read_bytes())
            st.toast(f"Export ready: {n} events", icon="📦")
    prepared = st.session_state.get(EXPORT)
    if prepared and prepared[0] == fmt:
        mime = {"csv": "text/csv", "jsonl": "application/x-ndjson", "pdf": "application/pdf"}
        st.caption(f"{prepared[1]} is ready.")
        st.download_button(
            f"Download {prepared[1]}",
            data=prepared[2],
            file_name=prepared[1],
            mime=mime.get(fmt, "application/octet-stream"),
            type="primary",
            key="audit_download",
        )
    if reports is None:
        st.caption("Parquet and PDF reports appear here once the report exporter is available.")
