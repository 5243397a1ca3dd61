"""Members (admins): add a user, change a role, remove; the last admin stays."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.orgs import service as orgs
from core.orgs.models import Role
from core.orgs.permissions import Permission
from core.validation import PASSWORD_RULES
from pages import _ui

ctx = _ui.context(Permission.MEMBERS_MANAGE)
ROLES = [r.value for r in Role]
ROLE_HELP = (
    "**Admin**: everything. **Member**: create keys and manage their own. "
    "**Auditor**: read-only, plus the audit log and its exports."
)

_ui.header("Members", "People in this organization and what their role lets them do.")
st.caption(ROLE_HELP)

with ctx.reader() as s:
    members = orgs.list_members(s, ctx.org_id, ctx.actor)
st.dataframe(
    pd.DataFrame(
        {
            "Name": [m.display_name for m in members],
            "Email": [m.email for m in members],
            "Role": [m.role.title() for m in members],
            "Joined": [_ui.relative(m.joined_at) for m in members],
        }
    ),
    hide_index=True,
    width="stretch",
)

add_tab, role_tab, remove_tab = st.tabs(["Add member", "Change role", "Remove member"])
ADD_FIELDS = ("add_email", "add_name", "add_password")
with add_tab, st.form("add_member_form"):
    email = st.text_input("Email", key="add_email")
    role = st.selectbox("Role", ROLES, index=1, format_func=str.title, key="add_role")
    name = st.text_input("Name (for a new account)", key="add_name")
    password = st.text_input(
        "Initial password (for a new account)", type="password", key="add_password"
    )
    st.caption(f"People who already have an account keep their password. {PASSWORD_RULES}")
    if st.form_submit_button("Add member", type="primary"):
        st.session_state.pop("add_password", None)  # never kept past the submit
        with _ui.guarded():
            with ctx.session() as s, s.begin():
                m = orgs.add_member(
                    s,
                    ctx.org_id,
                    ctx.actor,
                    email,
                    role,
                    password=password or None,
                    display_name=name or None,
                )
                added = m.user.email
            st.toast(f"{added} added as {role}", icon="✅")
            for key in ADD_FIELDS:
                st.session_state.pop(key, None)
            st.rerun()

by_id = {m.user_id: m for m in members}
label = lambda uid: f"{by_id[uid].email} ({by_id[uid].role})"  # noqa: E731
with role_tab:
    who = st.selectbox("Member", list(by_id), format_func=label, key="role_member")
    new_role = st.selectbox("New role", ROLES, format_func=str.title, key="role_new")
    if st.button("Change role", key="role_change"):
        with _ui.guarded():
            with ctx.session() as s, s.begin():
                orgs.change_role(s, ctx.org_id, ctx.actor, who, new_role)
            st.toast(f"{by_id[who].email} is now {new_role}", icon="✅")
            st.rerun()
with remove_tab:
    gone = st.selectbox("Member", list(by_id), format_func=label, key="remove_member")
    sure = st.checkbox("Yes, remove this person from the organization", key="remove_sure")
    if st.button("Remove member", type="primary", disabled=not sure, key="remove_confirm"):
        with _ui.guarded():
            with ctx.session() as s, s.begin():
                orgs.remove_member(s, ctx.org_id, ctx.actor, gone)
            st.toast(f"{by_id[gone].email} removed", icon="🗑️")
            st.rerun()
