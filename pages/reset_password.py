"""Choose a new password through a one-time reset link; every session of the person ends.
The link's token leaves the address bar at once."""

from __future__ import annotations

import streamlit as st
from sqlalchemy.orm import Session

from core.errors import ValidationError
from core.orgs import users
from core.validation import PASSWORD_RULES
from pages import _ui

TOKEN_KEY = "_reset_token"  # noqa: S105
if "token" in st.query_params:
    st.session_state[TOKEN_KEY] = st.query_params.get("token")
    del st.query_params["token"]  # out of the address bar and the browser's history
token = st.session_state.get(TOKEN_KEY) or ""

_ui.header("Reset password", "Choose a new password for your account.")
settings, engine = _ui.settings_and_engine()
email = None
with _ui.guarded(), Session(engine) as s:
    email = users.reset_target(s, token)
if email is None:
    st.stop()

with st.form("reset_form"):
    st.write(f"New password for **{_ui.text(email)}**. Every session of yours will end.")
    password = st.text_input("New password", type="password", key="reset_password")
    repeat = st.text_input("Repeat password", type="password", key="reset_repeat")
    st.caption(PASSWORD_RULES)
    submitted = st.form_submit_button("Set password", type="primary")
if submitted:
    for key in ("reset_password", "reset_repeat"):
        st.session_state.pop(key, None)
    with _ui.guarded():
        if password != repeat:
            raise ValidationError("The two passwords do not match.")
        with Session(engine, expire_on_commit=False) as s, s.begin():
            users.reset_password(s, token, password)
        st.session_state.pop(TOKEN_KEY, None)
        st.success("Your password is set and every session of yours has ended. Sign in with it.")
        st.link_button("Go to sign-in", _ui.route("/"))
        st.stop()
