"""Sign in with email and password."""

from __future__ import annotations

import streamlit as st
from sqlalchemy.orm import Session

from core.sessions import signin
from pages import _ui

_ui.header("Integration Settings", "Sign in to manage your organization's API keys and webhooks.")
notice = st.session_state.pop(_ui.NOTICE_KEY, None)
if notice:
    st.info(notice)

with st.form("signin_form"):
    email = st.text_input("Email", placeholder="you@company.com", key="signin_email")
    password = st.text_input("Password", type="password", key="signin_password")
    submitted = st.form_submit_button("Sign in", type="primary")
st.caption(
    "Forgot your password? Ask an admin of your organization, or the operator, for a "
    "password-reset link."
)

if submitted:
    st.session_state.pop("signin_password", None)  # never kept past the submit
    with _ui.guarded():
        settings, engine = _ui.settings_and_engine()
        with Session(engine, expire_on_commit=False) as s, s.begin():
            outcome = signin.sign_in(s, email, password, _ui.browser().client)
        user = outcome.result()
        _ui.hand_off(user.user_id)
