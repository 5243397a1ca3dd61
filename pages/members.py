"""Members (admins): invite a person, manage pending invitations, change a role, remove,
issue a password-reset link. Nobody here ever types or sees another person's password."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.orgs import invitations, mail, users
from core.orgs import service as orgs
from core.orgs.models import Role
from core.orgs.permissions import Permission
from pages import _ui

ctx = _ui.context(Permission.MEMBERS_MANAGE)
ROLES = [r.value for r in Role]
ROLE_HELP = (
    "**Admin**: everything. **Member**: create keys and manage their own. "
    "**Auditor**: read-only, plus the audit log and its exports."
)
LINK_KEY = "_members_last_link"

_ui.header("Members", "People in this organization and what their role lets them do.")
st.caption(ROLE_HELP)


def console_url() -> str:
    here = st.context.url or ""
    origin = "/".join(here.split("/")[:3]) if here.startswith("http") else None
    return mail.console_url(fallback=origin) + _ui.route("")


def show_link(kind: str, email: str, url: str, expires: str, emailed: bool) -> None:
    """Keep a just-issued link for this admin's next run (shown once, then forgotten)."""
    st.session_state[LINK_KEY] = (kind, email, url, expires, emailed)


def send(what: str, fn) -> bool:  # type: ignore[no-untyped-def]
    smtp = mail.smtp_from_env()
    if smtp is None:
        return False
    try:
        fn(smtp)
    except Exception as exc:  # the link is shown either way
        _ui.log.warning("the %s e-mail could not be sent: %s", what, type(exc).__name__)
        return False
    return True


with ctx.reader() as s:
    members = orgs.list_members(s, ctx.org_id, ctx.actor)
    invites = invitations.list_invitations(s, ctx.org_id, ctx.actor)
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

shown = st.session_state.pop(LINK_KEY, None)
if shown:
    kind, email, url, expires, emailed = shown
    with st.container(border=True):
        st.markdown(
            f"**{kind} link for {_ui.text(email)}** — it works once, until {expires}. "
            "Copy it now and send it to them only: it will not be shown again."
        )
        st.code(url, language=None)
        if emailed:
            st.caption(f"It was also e-mailed to {_ui.text(email)}.")

invite_tab, pending_tab, role_tab, remove_tab, reset_tab = st.tabs(
    ["Invite", "Invitations", "Change role", "Remove member", "Password reset"]
)
with invite_tab, st.form("invite_form"):
    email = st.text_input("Email", key="invite_email")
    role = st.selectbox("Role", ROLES, index=1, format_func=str.title, key="invite_role")
    st.caption(
        "They get a one-time link (valid 7 days) to set their own password, or to sign in "
        "with the account they already have. The invitation grants nothing until accepted."
    )
    if st.form_submit_button("Invite", type="primary"):
        with _ui.guarded():
            with ctx.session() as s, s.begin():
                issued = invitations.invite(s, ctx.org_id, ctx.actor, email, role)
            url = issued.url(console_url())
            emailed = send(
                "invitation",
                lambda smtp: mail.send_invitation(
                    smtp, issued.email, issued.org_name, issued.role, url, issued.expires_at
                ),
            )
            show_link("Invitation", issued.email, url, _ui.day(issued.expires_at), emailed)
            st.session_state.pop("invite_email", None)
            st.rerun()

with pending_tab:
    open_ones = [i for i in invites if i.status in ("pending", "expired")]
    st.dataframe(
        pd.DataFrame(
            {
                "Email": [i.email for i in invites],
                "Role": [i.role.title() for i in invites],
                "Status": [i.status.title() for i in invites],
                "Invited by": [i.invited_by for i in invites],
                "Expires": [_ui.day(i.expires_at) for i in invites],
            }
        ),
        hide_index=True,
        width="stretch",
    )
    if open_ones:
        by_invite = {i.id: i for i in open_ones}
        chosen = st.selectbox(
            "Invitation",
            list(by_invite),
            format_func=lambda i: f"{by_invite[i].email} ({by_invite[i].status})",
            key="invite_pick",
        )
        left, right = st.columns(2)
        if left.button("Resend (new link)", key="invite_resend"):
            with _ui.guarded():
                with ctx.session() as s, s.begin():
                    issued = invitations.resend(s, ctx.org_id, ctx.actor, chosen)
                url = issued.url(console_url())
                emailed = send(
                    "invitation",
                    lambda smtp: mail.send_invitation(
                        smtp, issued.email, issued.org_name, issued.role, url, issued.expires_at
                    ),
                )
                show_link("Invitation", issued.email, url, _ui.day(issued.expires_at), emailed)
                st.rerun()
        if right.button("Revoke", key="invite_revoke"):
            with _ui.guarded():
                with ctx.session() as s, s.begin():
                    invitations.revoke(s, ctx.org_id, ctx.actor, chosen)
                st.toast(f"Invitation for {_ui.text(by_invite[chosen].email)} revoked", icon="🗑️")
                st.rerun()

by_id = {m.user_id: m for m in members}
label = lambda uid: f"{by_id[uid].email} ({by_id[uid].role})"  # noqa: E731
with role_tab:
    who = st.selectbox("Member", list(by_id), format_func=label, key="role_member")
    new_role = st.selectbox("New role", ROLES, format_func=str.title, key="role_new")
    st.caption("Their sessions end: they sign in again with the new role.")
    if st.button("Change role", key="role_change"):
        with _ui.guarded():
            with ctx.session() as s, s.begin():
                orgs.change_role(s, ctx.org_id, ctx.actor, who, new_role)
            st.toast(f"{_ui.text(by_id[who].email)} is now {new_role}", icon="✅")
            st.rerun()
with remove_tab:
    gone = st.selectbox("Member", list(by_id), format_func=label, key="remove_member")
    sure = st.checkbox("Yes, remove this person from the organization", key="remove_sure")
    if st.button("Remove member", type="primary", disabled=not sure, key="remove_confirm"):
        with _ui.guarded():
            with ctx.session() as s, s.begin():
                orgs.remove_member(s, ctx.org_id, ctx.actor, gone)
            st.toast(f"{_ui.text(by_id[gone].email)} removed", icon="🗑️")
            st.rerun()
with reset_tab:
    st.caption(
        "A one-time link (valid 24 hours) with which the person chooses a new password; "
        "every session of theirs ends. You never see the password. Only for people whose "
        "every organization you administer; otherwise the operator issues it."
    )
    target = st.selectbox("Member", list(by_id), format_func=label, key="reset_member")
    if st.button("Issue reset link", key="reset_issue"):
        with _ui.guarded():
            with ctx.session() as s, s.begin():
                issued_reset = users.issue_reset(
                    s, ctx.actor, by_id[target].email, org_id=ctx.org_id
                )
            url = issued_reset.url(console_url())
            emailed = send(
                "reset",
                lambda smtp: mail.send_reset(
                    smtp, issued_reset.email, url, issued_reset.expires_at
                ),
            )
            show_link(
                "Password reset", issued_reset.email, url, _ui.day(issued_reset.expires_at), emailed
            )
            st.rerun()
