"""Audit Log (admins, auditors): filters, chain status and signed exports."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pandas as pd
import streamlit as st

from core.audit import reports
from core.audit import service as audit
from core.audit.service import AuditFilter
from core.orgs.permissions import Permission
from pages import _ui

ctx = _ui.context(Permission.AUDIT_READ)
SHOW_MAX = 1000
EXPORT = "_audit_export"  # (format, filename, content, manifest) of the last prepared export

_ui.header("Audit Log", "Every change to keys, webhooks, members, settings and sign-ins.")

with ctx.reader() as s:
    report = audit.verify_chain(s, ctx.org_id, ctx.actor)
if report.ok:
    st.success(
        f"Chain intact: {report.describe().removeprefix('audit chain intact: ')}.", icon="🔗"
    )
else:
    st.error(f"Chain broken: {report.describe()}", icon="🚨")

c1, c2, c3 = st.columns([1, 1, 1])
actor = c1.text_input("Actor email", placeholder="anyone", key="audit_actor")
actions = ["All actions", *audit.known_actions()]
action = c2.selectbox("Action", actions, key="audit_action")
today = date.today()
period = c3.date_input("Date range", value=(today - timedelta(days=30), today), key="audit_dates")
since = until = None
if isinstance(period, tuple) and len(period) == 2:
    since = datetime.combine(period[0], time.min, UTC)
    until = datetime.combine(period[1] + timedelta(days=1), time.min, UTC)
requested = AuditFilter(
    since=since,
    until=until,
    actor_email=actor.strip() or None,
    action=None if action == "All actions" else action,
)

filters: AuditFilter | None = None
with _ui.guarded(), ctx.reader() as s:
    filters = audit.validate_filters(s, ctx.org_id, ctx.actor, requested)
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

if ctx.can(Permission.AUDIT_EXPORT) and filters is not None:
    st.subheader("Export")
    st.caption(
        "Each export carries its provenance and comes with a signed manifest; an auditor "
        "checks both offline with `python -m core audit verify --file`."
    )
    e1, e2, e3 = st.columns([1, 1, 2], vertical_alignment="bottom")
    fmt = e1.selectbox("Format", reports.FORMATS, format_func=str.upper, key="audit_format")
    allow_broken = False
    if not report.ok:
        allow_broken = e2.checkbox(
            "Export the broken chain", key="audit_allow_broken",
            help="Every page of the export then says the chain is broken.",
        )  # fmt: skip
    if e3.button("Prepare export", icon=":material/download:", key="audit_prepare"):
        with _ui.guarded(), st.spinner("Preparing the export…"):
            stamp = _ui.now().strftime("%Y%m%d-%H%M%S")
            name = f"audit-{ctx.org_id}-{stamp}.{fmt}"
            with ctx.session() as s, s.begin():
                out = reports.export_bytes(
                    s, ctx.org_id, ctx.actor, fmt, filters,
                    allow_broken=allow_broken, filename=name,
                )  # fmt: skip
            st.session_state[EXPORT] = (fmt, name, out.content, out.manifest)
            st.toast(f"Export ready: {out.events} events", icon="📦")
    prepared = st.session_state.get(EXPORT)
    if prepared and prepared[0] == fmt:
        st.caption(f"{prepared[1]} is ready, with its signed manifest.")
        d1, d2 = st.columns(2)
        d1.download_button(
            f"Download {prepared[1]}",
            data=prepared[2],
            file_name=prepared[1],
            mime=reports.MIME.get(fmt, "application/octet-stream"),
            type="primary",
            key="audit_download",
        )
        d2.download_button(
            "Download the signed manifest",
            data=prepared[3],
            file_name=prepared[1] + ".manifest.json",
            mime="application/json",
            key="audit_download_manifest",
        )
