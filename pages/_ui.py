"""What every console page shares: the engine, who is signed in, errors and formatting."""

from __future__ import annotations

import contextlib
import html
import logging
import re
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core import db
from core.clock import utcnow
from core.config import Settings
from core.errors import CoreError
from core.keys import service as keys
from core.keys.service import KeyView
from core.orgs import service as orgs
from core.orgs.permissions import Actor, Permission, can
from core.sessions import service as sessions
from core.sessions import web
from core.sessions.service import SignedIn
from core.sessions.signin import Client

log = logging.getLogger("console")

CONTEXT_KEY = "_console_context"
FAULTS_KEY = "_console_faults"
GENERIC_ERROR = "Something went wrong and the action was not completed. Please try again."
STATUS_BADGES = {
    "active": "🟢 Active",
    "expiring": "🟠 Expiring",
    "expired": "⚪ Expired",
    "revoked": "🔴 Revoked",
}


def _dispose(engine: Engine) -> None:
    engine.dispose()


@st.cache_resource(show_spinner=False, on_release=_dispose)
def engine_for(database_url: str) -> Engine:
    """Return the one engine of this process for `database_url`, migrated on first use."""
    engine = db.make_engine(database_url)
    db.migrate(engine)
    return engine


@dataclass(frozen=True)
class Context:
    """Who is signed in, in which organization, with which role."""

    settings: Settings
    engine: Engine
    user: SignedIn
    org_id: str
    org_name: str
    role: str

    @property
    def actor(self) -> Actor:
        return self.user.actor

    def can(self, permission: Permission) -> bool:
        return can(self.role, permission)

    def session(self) -> Session:
        """A session for changes (the caller opens `with s.begin():`)."""
        return Session(self.engine, expire_on_commit=False)

    def reader(self) -> Session:
        """A session for reading only: on SQLite it never takes the write lock."""
        return db.read_session(self.engine)


def set_context(ctx: Context) -> None:
    st.session_state[CONTEXT_KEY] = ctx


def context(permission: Permission | None = None) -> Context:
    """Return the signed-in context the router put in place.

    Stop the page with a message when nobody is signed in or the role lacks `permission`
    (the router leaves such pages out of the navigation; core refuses them regardless).
    """
    ctx = st.session_state.get(CONTEXT_KEY)
    if not isinstance(ctx, Context):
        st.warning("Please sign in.")
        st.stop()
    if permission is not None and not ctx.can(permission):
        message = f"Your role ({ctx.role}) cannot open this page."
        _record(Fault("refused", "PermissionDenied", message))
        st.error(message)
        st.stop()
    return ctx


@dataclass(frozen=True)
class Fault:
    """An error the console showed in this run: `refused` (core said no, with a reason a
    person can act on), `database` or `unexpected` (a failure of ours)."""

    kind: str
    error: str
    message: str


def reset_faults() -> None:
    """Forget the faults of the previous run (the router calls this first, every run)."""
    st.session_state[FAULTS_KEY] = []


def faults() -> list[Fault]:
    """Return the errors shown so far in this run, in order."""
    return list(st.session_state.get(FAULTS_KEY, []))


def show_error(exc: BaseException) -> None:
    """Show an error as one clear sentence, never a traceback, and record it as a `Fault`
    so that tests (and anything else reading the session) can see that it happened."""
    if isinstance(exc, CoreError):
        kind, message = "refused", exc.message
    elif isinstance(exc, SQLAlchemyError):
        log.warning("database failure in the console", exc_info=exc)
        kind, message = "database", "The database could not complete the request. Please try again."
    else:
        log.error("unexpected failure in the console", exc_info=exc)
        kind, message = "unexpected", GENERIC_ERROR
    _record(Fault(kind, type(exc).__name__, message))
    st.error(message, icon="⚠️")


def _record(fault: Fault) -> None:
    st.session_state.setdefault(FAULTS_KEY, []).append(fault)


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Run a block; show any error it raises (Streamlit's rerun/stop pass through)."""
    try:
        yield
    except Exception as exc:
        show_error(exc)


def now() -> datetime:
    return utcnow()


def relative(when: datetime | None, reference: datetime | None = None, *, never: str = "—") -> str:
    """Return 'in 12 days', '3 hours ago', 'just now' (or `never` for None)."""
    if when is None:
        return never
    delta = when - (reference or utcnow())
    future = delta > timedelta(0)
    seconds = abs(delta.total_seconds())
    if seconds < 60:
        return "in a moment" if future else "just now"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            text = f"{n} {unit}{'s' if n != 1 else ''}"
            return f"in {text}" if future else f"{text} ago"
    return "just now"


def day(when: datetime | None) -> str:
    return "—" if when is None else when.strftime("%Y-%m-%d %H:%M UTC")


def empty_state(title: str, body: str, icon: str = "📭") -> None:
    """Render a clearly marked empty state."""
    with st.container(border=True):
        st.markdown(f"### {icon} {title}")
        st.caption(body)


def header(title: str, caption: str) -> None:
    st.title(title)
    st.caption(caption)


ORG_KEY = "_org_id"
NOTICE_KEY = "_signin_notice"
SIGNED_OUT_KEY = "_signed_out"  # the session this tab ended: its cookie is dead, not "expired"
_MARKDOWN_SPECIALS = re.compile(r"([" + re.escape(string.punctuation) + r"])")
_AUTOLINK_PARTS = {":": "&#58;", "@": "&#64;", ".": "&#46;"}
# Bare URLs become links after Markdown is parsed (GitHub's autolink extension runs on the
# decoded text), so a word joiner (U+2060, invisible) breaks what it looks for. An email
# may still become a mailto: link, which opens nothing by itself.
_AUTOLINK_STARTS = re.compile(r"(?i)(://|www(?=\.))")


def _escape(match: re.Match[str]) -> str:
    char = match.group(1)
    return _AUTOLINK_PARTS.get(char) or "\\" + char


def text(value: object) -> str:
    """Return text a person typed, escaped for every place Streamlit reads Markdown (body,
    captions, alerts, toasts, dialog titles, labels): ASCII punctuation gets a backslash
    (`:`, `@` and `.` become character references) and bare URLs get an invisible word
    joiner, so links, images, HTML, `:color[…]` directives and `$math$` stay text."""
    joined = _AUTOLINK_STARTS.sub(lambda m: m.group(1) + "\u2060", str(value))
    return _MARKDOWN_SPECIALS.sub(_escape, joined)


@dataclass(frozen=True)
class Browser:
    """What this browser tab sent when it connected: its session cookie (HttpOnly: the
    page's own scripts never see it), its binding cookie, and where it comes from."""

    session_token: str | None
    binding: str | None
    client: Client


def browser() -> Browser:
    """Return the cookies and client of the connection this run serves."""
    cookies = st.context.cookies
    token = cookies.get(web.SESSION_COOKIE)
    binding = cookies.get(web.BINDING_COOKIE)
    agent = st.context.headers.get("User-Agent")
    return Browser(
        token if isinstance(token, str) else None,
        binding if isinstance(binding, str) else None,
        Client.of(st.context.ip_address or "local", agent),
    )


def route(path: str) -> str:
    """Return the URL path of a console route under the configured base path."""
    base = (st.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}{path}" if base else path


def post_form(action: str, fields: dict[str, str], *, mode: str, label: str) -> None:
    """Render a form the console's script posts at once (`mode` "navigate" follows the
    answer; "fetch" stays on the page), with a button in case scripts are off. The values
    travel in the POST body, never in a URL."""
    inputs = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in fields.items()
    )
    st.html(
        f'<form method="post" action="{html.escape(route(action))}" '
        f'data-console-post="{html.escape(mode)}">{inputs}'
        f'<button type="submit">{html.escape(label)}</button></form>'
        f'<script src="{html.escape(route(web.SCRIPT_PATH))}"></script>',
        unsafe_allow_javascript=True,
    )


def hand_off(user_id: str, next_path: str = "/") -> None:
    """Sign the browser in as `user_id`: issue a one-time handoff bound to this browser
    and post it to the session route, which sets a new session cookie and opens
    `next_path`. Raise ValidationError if the browser sent no binding cookie."""
    _settings, engine = settings_and_engine()
    binding = browser().binding
    with Session(engine) as s, s.begin():
        handoff = sessions.issue_handoff(s, user_id, binding or "", next_path=next_path)
    st.info("Signing you in…")
    post_form(web.SESSION_PATH, {"handoff": handoff}, mode="navigate", label="Continue")
    st.stop()


def forget_cookie() -> None:
    """Ask the browser to drop its session cookie (the row is already deleted)."""
    post_form(web.SIGNOUT_PATH, {}, mode="fetch", label="Sign out")


def settings_and_engine() -> tuple[Settings, Engine]:
    """Return the settings from the environment and the engine for their database."""
    settings = Settings.from_env()
    return settings, engine_for(settings.database_url)


def key_views(ctx: Context, status: str | None = None) -> list[KeyView]:
    """Return the organization's keys (core.keys.list_keys), newest first.

    The organization is held for the whole call: list_keys looks it up once per key, and
    with it in the session's identity map that lookup is a dictionary hit, not a query.
    """
    with ctx.reader() as s:
        org = orgs.get_organization(s, ctx.org_id, ctx.actor)
        views = keys.list_keys(s, org.id, ctx.actor, status=status)
    return views


@st.cache_data(show_spinner=False, max_entries=32, ttl=3600)
def _key_labels(database_url: str, org_id: str, actor: Actor) -> dict[str, str]:
    engine = engine_for(database_url)
    with db.read_session(engine) as s:
        org = orgs.get_organization(s, org_id, actor)
        return {v.id: f"{v.name} · {v.masked}" for v in keys.list_keys(s, org.id, actor)}


def key_labels(ctx: Context, needed: Iterable[str] = ()) -> dict[str, str]:
    """Return 'name · masked' for each key id of the organization (cached per user).

    A key's name and display parts never change, so the cache stays right for every key
    it holds; it is rebuilt when a key in `needed` is missing (one created since).
    """
    labels = _key_labels(ctx.settings.database_url, ctx.org_id, ctx.actor)
    if any(k not in labels for k in needed):
        _key_labels.clear()
        labels = _key_labels(ctx.settings.database_url, ctx.org_id, ctx.actor)
    return labels
