"""Integration Settings console: `streamlit run console.py`.

The router: it resumes the browser's session (a token in the `session` query parameter,
so a refresh stays signed in), shows first-run setup or sign-in when nobody is signed in,
and otherwise builds the navigation for the user's role in the chosen organization.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402
from sqlalchemy import Engine  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from core import db  # noqa: E402
from core.config import Settings  # noqa: E402
from core.orgs import service as orgs  # noqa: E402
from core.orgs.permissions import Permission  # noqa: E402
from core.sessions import service as signin  # noqa: E402
from pages import _alerts, _ui  # noqa: E402

st.set_page_config(page_title="Integration Settings", page_icon="🔑", layout="wide")

TOKEN_PARAM = "session"  # noqa: S105
ORG_PARAM = "org"
P = Permission

# (file, url path, title, icon, permission needed to see it), grouped as the product's map.
# URL paths differ from the file names so no page is ever mistaken for a pages/ script.
PAGE_MAP: dict[str, list[tuple[str, str, str, str, Permission]]] = {
    "": [("pages/dashboard.py", "home", "Dashboard", ":material/dashboard:", P.KEYS_READ)],
    "Settings → Integration": [
        ("pages/api_keys.py", "api-keys", "API Keys", ":material/key:", P.KEYS_READ),
        (
            "pages/webhooks.py",
            "webhook-endpoints",
            "Webhooks",
            ":material/webhook:",
            P.WEBHOOKS_READ,
        ),
    ],
    "Resources": [
        (
            "pages/getting_started.py",
            "getting-started",
            "Getting Started",
            ":material/menu_book:",
            P.KEYS_READ,
        ),
        ("pages/usage.py", "api-usage", "Usage", ":material/monitoring:", P.USAGE_READ),
    ],
    "Administration": [
        ("pages/audit_log.py", "audit-log", "Audit Log", ":material/history:", P.AUDIT_READ),
        ("pages/members.py", "team-members", "Members", ":material/group:", P.MEMBERS_MANAGE),
        (
            "pages/settings.py",
            "organization-settings",
            "Settings",
            ":material/settings:",
            P.SETTINGS_MANAGE,
        ),
    ],
}


def _forget_session() -> None:
    for key in (_ui.TOKEN_KEY, _ui.CONTEXT_KEY, _ui.ORG_KEY):
        st.session_state.pop(key, None)
    for param in (TOKEN_PARAM, ORG_PARAM):
        if param in st.query_params:
            del st.query_params[param]


def _sign_out(engine: Engine) -> None:
    token = st.session_state.get(_ui.TOKEN_KEY)
    try:
        with Session(engine) as s, s.begin():
            signin.sign_out(s, token)
    except Exception as exc:  # the browser forgets the session either way
        _ui.log.warning("sign-out could not delete the session row: %s", type(exc).__name__)
    _forget_session()
    st.session_state[_ui.NOTICE_KEY] = "You have signed out."


def _pages_for(role: str) -> dict[str, list[st.Page]]:
    from core.orgs.permissions import can

    nav: dict[str, list[st.Page]] = {}
    for section, entries in PAGE_MAP.items():
        pages = [
            st.Page(path, title=title, icon=icon, url_path=url, default=(url == "home"))
            for path, url, title, icon, permission in entries
            if can(role, permission)
        ]
        if pages:
            nav[section] = pages
    return nav


def main() -> None:
    settings = Settings.from_env()
    engine = _ui.engine_for(settings.database_url)
    with _ui.guarded():
        _alerts.embedded_worker(settings.database_url)
    token = st.session_state.get(_ui.TOKEN_KEY) or st.query_params.get(TOKEN_PARAM)
    with db.read_session(engine) as s:
        user = signin.resume(s, token)
        memberships = orgs.memberships_of(s, user.user_id) if user else []
        first_run = user is None and signin.needs_setup(s)
    if user is None:
        if token:
            _forget_session()
            st.session_state[_ui.NOTICE_KEY] = "Your session has ended. Please sign in again."
        page, url, title = (
            ("pages/setup.py", "first-run-setup", "Set up")
            if first_run
            else ("pages/signin.py", "sign-in", "Sign in")
        )
        st.navigation(
            [st.Page(page, title=title, icon="🔑", url_path=url, default=True)],
            position="hidden",
        ).run()
        return

    st.session_state[_ui.TOKEN_KEY] = token
    if st.query_params.get(TOKEN_PARAM) != token:
        st.query_params[TOKEN_PARAM] = token
    if not memberships:
        st.title("Integration Settings")
        st.info(f"{user.email} does not belong to any organization yet. Ask an admin to add you.")
        if st.button("Sign out"):
            _sign_out(engine)
            st.rerun()
        return

    by_id = {org.id: (org, role) for org, role in memberships}
    wanted = st.session_state.get(_ui.ORG_KEY) or st.query_params.get(ORG_PARAM)
    org_id = wanted if wanted in by_id else memberships[0][0].id
    with st.sidebar:
        st.markdown("### 🔑 Integration Settings")
        if len(by_id) > 1:
            ids = list(by_id)
            org_id = st.selectbox(
                "Organization",
                ids,
                index=ids.index(org_id),
                format_func=lambda i: by_id[i][0].name,
                key="org_switcher",
            )
        else:
            st.caption(f"Organization: **{by_id[org_id][0].name}**")
    st.session_state[_ui.ORG_KEY] = org_id
    if st.query_params.get(ORG_PARAM) != org_id:
        st.query_params[ORG_PARAM] = org_id
    org, role = by_id[org_id]
    ctx = _ui.Context(settings, engine, user, org.id, org.name, role)
    _ui.set_context(ctx)

    navigation = st.navigation(_pages_for(role))
    with st.sidebar:
        st.divider()
        st.caption(f"Signed in as **{user.email}** · {role.title()}")
        if st.button("Sign out", icon=":material/logout:", key="sign_out"):
            _sign_out(engine)
            st.rerun()
    with _ui.guarded():
        _alerts.banner(ctx)
    try:
        navigation.run()
    except Exception as exc:
        _ui.show_error(exc)


_ui.reset_faults()
try:
    main()
except Exception as exc:  # nothing below the router may show a traceback
    _ui.show_error(exc)
