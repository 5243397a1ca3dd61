"""First run: create the organization and its first Org Admin (with the setup token from
the console's log, unless INTEGRATION_SETUP_OPEN=1)."""

from __future__ import annotations

import streamlit as st
from sqlalchemy.orm import Session

from core.errors import ValidationError
from core.sessions import service as sessions
from core.validation import PASSWORD_RULES
from pages import _ui

_ui.header(
    "Welcome to Integration Settings",
    "First run: create your organization and its first Org Admin account.",
)
open_setup = sessions.setup_is_open()
if not open_setup:
    settings, engine = _ui.settings_and_engine()
    with _ui.guarded(), Session(engine) as s, s.begin():
        if sessions.needs_setup(s) and not sessions.has_setup_token(s):
            sessions.announce_setup_token(sessions.issue_setup_token(s))

with st.form("setup_form"):
    if not open_setup:
        setup_token = st.text_input(
            "Setup token",
            type="password",
            key="setup_token",
            help="Printed in the console's log when it starts (like a notebook server's token).",
        )
    org_name = st.text_input("Organization name", placeholder="Acme Inc.", key="setup_org")
    display_name = st.text_input("Your name", placeholder="Ann Admin", key="setup_name")
    email = st.text_input("Email", placeholder="ann@acme.example", key="setup_email")
    password = st.text_input("Password", type="password", key="setup_password")
    repeat = st.text_input("Repeat password", type="password", key="setup_repeat")
    st.caption(PASSWORD_RULES)
    submitted = st.form_submit_button("Create organization", type="primary")

if submitted:
    for key in ("setup_password", "setup_repeat", "setup_token"):  # never kept past the submit
        st.session_state.pop(key, None)
    with _ui.guarded():
        if password != repeat:
            raise ValidationError("The two passwords do not match.")
        settings, engine = _ui.settings_and_engine()
        with Session(engine, expire_on_commit=False) as s, s.begin():
            _org, user = sessions.first_run_setup(
                s,
                org_name,
                email,
                password,
                setup_token=None if open_setup else setup_token,
                display_name=display_name,
                open_setup=open_setup,
            )
            user_id = user.id
        _ui.hand_off(user_id)
