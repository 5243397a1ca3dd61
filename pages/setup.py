"""First run: create the organization and its first Org Admin."""

from __future__ import annotations

import streamlit as st
from sqlalchemy.orm import Session

from core.errors import ValidationError
from core.sessions import service as signin
from core.validation import PASSWORD_RULES
from pages import _ui

_ui.header(
    "Welcome to Integration Settings",
    "First run: create your organization and its first Org Admin account.",
)

with st.form("setup_form"):
    org_name = st.text_input("Organization name", placeholder="Acme Inc.", key="setup_org")
    display_name = st.text_input("Your name", placeholder="Ann Admin", key="setup_name")
    email = st.text_input("Email", placeholder="ann@acme.example", key="setup_email")
    password = st.text_input("Password", type="password", key="setup_password")
    repeat = st.text_input("Repeat password", type="password", key="setup_repeat")
    st.caption(PASSWORD_RULES)
    submitted = st.form_submit_button("Create organization", type="primary")

if submitted:
    for key in ("setup_password", "setup_repeat"):  # never kept past the submit
        st.session_state.pop(key, None)
    with _ui.guarded():
        if password != repeat:
            raise ValidationError("The two passwords do not match.")
        settings, engine = _ui.settings_and_engine()
        with Session(engine, expire_on_commit=False) as s, s.begin():
            signin.first_run_setup(s, org_name, email, password, display_name=display_name)
        with Session(engine, expire_on_commit=False) as s, s.begin():
            outcome = signin.sign_in(s, email, password)
        user = outcome.result()
        st.session_state[_ui.TOKEN_KEY] = user.token
        st.rerun()
