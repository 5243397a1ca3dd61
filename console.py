"""Integration Settings console: `streamlit run console.py`.

`streamlit run` finds `app` below and serves the console as a `streamlit.starlette.App`:
Streamlit's own routes, plus the console's session routes (which set and clear the
HttpOnly session cookie) and its security headers. Streamlit then runs this same file as
the page script for every browser tab (`__name__ == "__main__"`): the router resumes
the session from the cookie the tab connected with, shows first-run setup, sign-in or
an invitation/reset page when nobody is signed in, and otherwise builds the navigation
for the user's role in the chosen organization.
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
from core.clock import utcnow  # noqa: E402
from core.config import Settings  # noqa: E402
from core.orgs import service as orgs  # noqa: E402
from core.orgs.permissions import Permission  # noqa: E402
from core.sessions import service as sessions  # noqa: E402
from core.sessions import signin, web  # noqa: E402

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
# Pages reached from a link (an invitation, a reset): open whether signed in or not.
LINK_PAGES = [
    ("pages/accept_invitation.py", "accept-invitation", "Accept invitation"),
    ("pages/reset_password.py", "reset-password", "Reset password"),
]


def _link_pages() -> list[st.Page]:
    return [
        st.Page(path, title=title, icon="🔑", url_path=url, visibility="hidden")
        for path, url, title in LINK_PAGES
    ]


def _sign_out(engine: Engine, token: str | None) -> None:
    """End this tab's session: the row is deleted now, the cookie dropped by the browser."""
    with Session(engine) as s, s.begin():
        sessions.sign_out(s, token)
    for key in (_ui.CONTEXT_KEY, _ui.ORG_KEY):
        st.session_state.pop(key, None)
    st.session_state[_ui.SIGNED_OUT_KEY] = token
    st.session_state[_ui.NOTICE_KEY] = "You have signed out."
    if ORG_PARAM in st.query_params:
        del st.query_params[ORG_PARAM]


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
    nav["Account"] = [
        st.Page(
            "pages/account.py", title="My account", icon=":material/person:", url_path="account"
        ),
        *_link_pages(),
    ]
    return nav


def _signed_out_pages(first_run: bool) -> None:
    page, url, title = (
        ("pages/setup.py", "first-run-setup", "Set up")
        if first_run
        else ("pages/signin.py", "sign-in", "Sign in")
    )
    st.navigation(
        [st.Page(page, title=title, icon="🔑", url_path=url, default=True), *_link_pages()],
        position="hidden",
    ).run()


def main() -> None:
    settings = Settings.from_env()
    engine = _ui.engine_for(settings.database_url)
    with _ui.guarded():
        _alerts.embedded_worker(settings.database_url)
    tab = _ui.browser()
    token = tab.session_token
    policy = sessions.SessionPolicy.from_env()
    with db.read_session(engine) as s:
        user = sessions.resume(s, token, policy=policy)
        memberships = orgs.memberships_of(s, user.user_id) if user else []
        first_run = user is None and sessions.needs_setup(s)
    if user is not None and user.stale and token:
        with Session(engine) as s, s.begin():
            sessions.touch(s, token)
            signin.close_bursts(s, now=utcnow())
    if user is None:
        ended_here = token is not None and st.session_state.get(_ui.SIGNED_OUT_KEY) == token
        if ended_here:
            _ui.forget_cookie()
        elif token:
            st.session_state[_ui.NOTICE_KEY] = "Your session has ended. Please sign in again."
        st.session_state.pop(_ui.CONTEXT_KEY, None)
        _signed_out_pages(first_run)
        return

    if not memberships:
        ctx = _ui.Context(settings, engine, user, "", "", "")
        _ui.set_context(ctx)

        def no_organization() -> None:
            st.title("Integration Settings")
            st.info(
                f"{_ui.text(user.email)} does not belong to any organization yet. "
                "Accept an invitation link, or ask an admin to invite you."
            )
            if st.button("Sign out", key="sign_out"):
                _sign_out(engine, token)
                st.rerun()

        st.navigation(
            [
                st.Page(no_organization, title="Integration Settings", default=True),
                st.Page("pages/account.py", title="My account", url_path="account"),
                *_link_pages(),
            ],
            position="hidden",
        ).run()
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
            st.caption(f"Organization: **{_ui.text(by_id[org_id][0].name)}**")
    st.session_state[_ui.ORG_KEY] = org_id
    if st.query_params.get(ORG_PARAM) != org_id:
        st.query_params[ORG_PARAM] = org_id
    org, role = by_id[org_id]
    ctx = _ui.Context(settings, engine, user, org.id, org.name, role)
    _ui.set_context(ctx)

    navigation = st.navigation(_pages_for(role))
    with st.sidebar:
        st.divider()
        st.caption(f"Signed in as **{_ui.text(user.email)}** · {role.title()}")
        if st.button("Sign out", icon=":material/logout:", key="sign_out"):
            _sign_out(engine, token)
            st.rerun()
    with _ui.guarded():
        _alerts.banner(ctx)
    try:
        navigation.run()
    except Exception as exc:
        _ui.show_error(exc)


if __name__ == "__main__":  # Streamlit runs this file as the page script
    from pages import _alerts, _ui

    st.set_page_config(page_title="Integration Settings", page_icon="🔑", layout="wide")
    _ui.reset_faults()
    try:
        main()
    except Exception as exc:  # nothing below the router may show a traceback
        _ui.show_error(exc)
else:  # `streamlit run console.py` imports this module to serve `app`
    import contextlib
    import functools
    from collections.abc import AsyncIterator
    from typing import Any

    from starlette.middleware import Middleware
    from streamlit import config as streamlit_config
    from streamlit.starlette import App

    @functools.cache
    def _engine() -> Engine:
        return db.connect(Settings.from_env())

    @contextlib.asynccontextmanager
    async def _lifespan(_app: Any) -> AsyncIterator[None]:
        with Session(_engine()) as s, s.begin():
            needed = sessions.needs_setup(s) and not sessions.setup_is_open()
            token = sessions.issue_setup_token(s) if needed else None
        if token:
            sessions.announce_setup_token(token)
        yield
        _engine().dispose()

    _base = "/" + (streamlit_config.get_option("server.baseUrlPath") or "").strip("/")
    _base = _base.rstrip("/")
    _static = Path(st.__file__).parent / "static" / "index.html"
    app = App(
        "console.py",
        routes=web.ConsoleRoutes(_engine, base_path=_base).routes(),
        middleware=[
            Middleware(
                web.SecurityHeaders,
                csp=web.content_security_policy(web.inline_script_hashes(_static)),
                base_path=_base,
            )
        ],
        lifespan=_lifespan,
    )
