"""Accept an invitation: a new person sets their own password; a person with an account
signs in with it. The link's token leaves the address bar at once."""

from __future__ import annotations

import streamlit as st
from sqlalchemy.orm import Session

from core.errors import ValidationError
from core.orgs import invitations
from core.sessions import signin
from core.validation import PASSWORD_RULES
from pages import _ui

TOKEN_KEY = "_invitation_token"  # noqa: S105
if "token" in st.query_params:
    st.session_state[TOKEN_KEY] = st.query_params.get("token")
    del st.query_params["token"]  # out of the address bar and the browser's history
token = st.session_state.get(TOKEN_KEY) or ""

_ui.header("Accept invitation", "Join an organization in Integration Settings.")
settings, engine = _ui.settings_and_engine()
offer = None
with _ui.guarded(), Session(engine) as s:
    offer = invitations.pending(s, token)
if offer is None:
    st.stop()

st.markdown(
    f"You are invited to join **{_ui.text(offer.org_name)}** as **{offer.role}** "
    f"with the account **{_ui.text(offer.email)}**."
)
st.caption(f"The invitation is valid until {_ui.day(offer.expires_at)}.")

if offer.has_account:
    with st.form("accept_existing_form"):
        st.write("This email has an account: sign in with its password to accept.")
        password = st.text_input("Password", type="password", key="accept_password")
        submitted = st.form_submit_button("Sign in and accept", type="primary")
    if submitted:
        st.session_state.pop("accept_password", None)
        with _ui.guarded():
            with Session(engine, expire_on_commit=False) as s, s.begin():
                outcome = signin.sign_in(s, offer.email, password, _ui.browser().client)
                if outcome.signed_in is not None:
                    invitations.accept_signed_in(s, token, outcome.signed_in.user_id)
            user = outcome.result()
            st.session_state.pop(TOKEN_KEY, None)
            _ui.hand_off(user.user_id)
else:
    with st.form("accept_new_form"):
        name = st.text_input("Your name", key="accept_name")
        password = st.text_input("Choose a password", type="password", key="accept_password")
        repeat = st.text_input("Repeat password", type="password", key="accept_repeat")
        st.caption(PASSWORD_RULES)
        submitted = st.form_submit_button("Create account and accept", type="primary")
    if submitted:
        for key in ("accept_password", "accept_repeat"):
            st.session_state.pop(key, None)
        with _ui.guarded():
            if password != repeat:
                raise ValidationError("The two passwords do not match.")
            with Session(engine, expire_on_commit=False) as s, s.begin():
                user_id = invitations.accept_new_account(
                    s, token, password, display_name=name or None
                ).id
            st.session_state.pop(TOKEN_KEY, None)
            _ui.hand_off(user_id)
