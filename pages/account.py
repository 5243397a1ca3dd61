"""My account: who I am, my organizations, change my password, sign out everywhere."""

from __future__ import annotations

import streamlit as st

from core.errors import ValidationError
from core.orgs import users
from core.sessions import service as sessions
from core.sessions import signin
from core.validation import PASSWORD_RULES
from pages import _ui

ctx = _ui.context()
_ui.header("My account", "Your password and your sessions.")
with ctx.reader() as s:
    orgs_of = [(o.name, o.id) for o in users.organizations_of(s, ctx.user.user_id)]
    active = users.active_sessions(s, ctx.user.user_id)
st.markdown(f"**{_ui.text(ctx.user.display_name)}** · {_ui.text(ctx.user.email)}")
if orgs_of:
    st.caption("Member of " + ", ".join(_ui.text(name) for name, _ in orgs_of))

st.subheader("Change password")
with st.form("change_password_form"):
    current = st.text_input("Current password", type="password", key="pw_current")
    new = st.text_input("New password", type="password", key="pw_new")
    repeat = st.text_input("Repeat new password", type="password", key="pw_repeat")
    st.caption(PASSWORD_RULES + " Every session of yours ends; this browser signs in again.")
    submitted = st.form_submit_button("Change password", type="primary")
if submitted:
    for key in ("pw_current", "pw_new", "pw_repeat"):
        st.session_state.pop(key, None)
    with _ui.guarded():
        if new != repeat:
            raise ValidationError("The two passwords do not match.")
        with ctx.session() as s, s.begin():
            checked = signin.check_password(s, ctx.user.user_id, current, _ui.browser().client)
        checked.result()  # throttled and audited like a sign-in
        with ctx.session() as s, s.begin():
            users.change_password(s, ctx.user.user_id, current, new)
        _ui.hand_off(ctx.user.user_id, "/account")

st.subheader("Sessions")
st.caption(
    f"{active} open session{'s' if active != 1 else ''} (each browser you signed in with). "
    "Signing out everywhere ends them all, this one included."
)
if st.button("Sign out everywhere", key="sign_out_everywhere"):
    with _ui.guarded():
        with ctx.session() as s, s.begin():
            sessions.sign_out_everywhere(s, ctx.user.user_id)
        st.session_state[_ui.SIGNED_OUT_KEY] = _ui.browser().session_token
        st.info("You have signed out everywhere.")
        _ui.forget_cookie()
        st.link_button("Sign in again", _ui.route("/"))
        st.stop()
