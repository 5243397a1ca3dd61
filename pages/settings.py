"""Settings (admins): maximum key lifetime, alert lead times, API base URL."""

from __future__ import annotations

import streamlit as st

from core.errors import ValidationError
from core.orgs import service as orgs
from core.orgs.permissions import Permission
from pages import _ui

ctx = _ui.context(Permission.SETTINGS_MANAGE)
_ui.header("Settings", "Organization-wide rules for keys and alerts.")

with ctx.reader() as s:
    org = orgs.get_organization(s, ctx.org_id, ctx.actor)
    current = (org.max_key_lifetime_days, org.lead_days, org.api_base_url)

with st.form("settings_form"):
    max_days = st.number_input(
        "Maximum key lifetime (days)",
        min_value=1,
        max_value=3650,
        value=current[0],
        step=1,
        help="No key, created or rolled, may live longer than this.",
        key="set_max_days",
    )
    leads = st.text_input(
        "Alert lead times (days before expiry, comma-separated)",
        value=", ".join(str(d) for d in current[1]),
        help="Up to five values; the first is when a key starts to show as expiring.",
        key="set_leads",
    )
    base = st.text_input(
        "API base URL",
        value=current[2],
        help="Shown in the Getting Started examples.",
        key="set_base",
    )
    submitted = st.form_submit_button("Save settings", type="primary")

if submitted:
    with _ui.guarded():
        try:
            days = [int(x) for x in leads.replace(";", ",").split(",") if x.strip()]
        except ValueError:
            raise ValidationError("alert lead times must be whole numbers of days") from None
        with ctx.session() as s, s.begin():
            orgs.update_settings(
                s,
                ctx.org_id,
                ctx.actor,
                max_key_lifetime_days=int(max_days),
                alert_lead_days=days,
                api_base_url=base,
            )
        st.toast("Settings saved", icon="✅")
        st.success("Settings saved.")
