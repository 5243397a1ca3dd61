"""Settings → Integration → API Keys: create (shown once), list masked, filter, revoke, roll."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import streamlit as st

from core.keys import service as keys
from core.keys.policy import GRACE_PERIODS, LIVE_STATUSES, PRESET_DAYS, may_manage
from core.keys.service import KeyView
from core.orgs import service as orgs
from core.orgs.permissions import Permission
from pages import _ui

ctx = _ui.context(Permission.KEYS_READ)
DIALOG = "_keys_dialog"  # which dialog is open: ("create",) | ("revoke", id) | ("roll", id)
NAME_EXAMPLES = ("Production Server", "Mobile App", "Development Testing")
GRACE_LABELS = {"0": "End now", "1h": "1 hour", "24h": "24 hours", "7d": "7 days"}
MAX_CHOICES = 500


def _close() -> None:
    for key in (DIALOG, "reason"):
        st.session_state.pop(key, None)


def _done_button() -> None:
    """The dialog's closing button, rendered on every run so its click is never lost."""
    if st.button("Done", key="dialog_done"):
        _close()
        st.rerun()


@st.dialog("Create API key", on_dismiss=_close)
def create_dialog(max_days: int) -> None:
    today = date.today()
    latest = today + timedelta(days=max(max_days - 1, 1))  # the last whole day allowed
    with st.form("create_key_form"):
        name = st.text_input(
            "Key name",
            placeholder="e.g. " + ", ".join(NAME_EXAMPLES),
            help="A name that says where the key is used.",
            key="create_name",
        )
        choice = st.radio(
            "Expiration",
            [*(f"{d} days" for d in PRESET_DAYS), "Custom"],
            horizontal=True,
            key="create_expiry",
        )
        custom = st.date_input(
            "Custom expiry date (used with Custom)",
            value=min(today + timedelta(days=45), latest),
            min_value=today + timedelta(days=1),
            max_value=latest,
            key="create_custom",
        )
        st.caption(f"Your organization allows keys of at most {max_days} days.")
        submitted = st.form_submit_button("Generate key", type="primary")
    if submitted:
        _create(name, custom if choice == "Custom" else int(choice.split()[0]))
    _done_button()


def _create(name: str, expires: int | date) -> None:
    """Create the key and show it once; it lives only in this run's local variables."""
    with _ui.guarded():
        with ctx.session() as s, s.begin():
            new = keys.create_key(
                s,
                ctx.org_id,
                ctx.actor,
                name=name,
                expires=expires,
                pepper=ctx.settings.pepper,
            )
        st.success(
            f"API key **{_ui.text(new.name)}** created; it expires {_ui.day(new.expires_at)}."
        )
        st.code(new.key, language=None, wrap_lines=True)
        st.warning(
            "Copy this key now (the copy button is at the right of the box), then "
            "press Done. It will not be shown again.",
            icon="🔒",
        )
        st.toast(f"API key '{_ui.text(new.name)}' created", icon="✅")


@st.dialog("Revoke API key", on_dismiss=_close)
def revoke_dialog(view: KeyView) -> None:
    st.markdown(f"Revoke **{_ui.text(view.name)}** (`{view.masked}`)?")
    st.warning("Requests with this key are refused at once. This cannot be undone.", icon="⚠️")
    reason = st.text_input("Reason (optional)", placeholder="e.g. leaked in a log", key="reason")
    left, right = st.columns(2)
    if right.button("Cancel", key="revoke_cancel"):
        _close()
        st.rerun()
    if left.button("Revoke key", type="primary", key="revoke_confirm"):
        with _ui.guarded():
            with ctx.session() as s, s.begin():
                keys.revoke_key(s, ctx.actor, view.id, reason=reason)
            st.toast(f"API key '{_ui.text(view.name)}' revoked", icon="🛑")
            _close()
            st.rerun()


@st.dialog("Roll API key", on_dismiss=_close)
def roll_dialog(view: KeyView) -> None:
    st.markdown(
        f"Issue a new key named **{view.name}** with the same lifetime. "
        f"The current key `{view.masked}` keeps working for the grace period, then stops."
    )
    with st.form("roll_form"):
        grace = st.radio(
            "Grace period for the current key",
            list(GRACE_PERIODS),
            index=2,
            format_func=GRACE_LABELS.__getitem__,
            horizontal=True,
            key="roll_grace",
        )
        submitted = st.form_submit_button("Roll key", type="primary")
    if submitted:
        _roll(view, grace)
    _done_button()


def _roll(view: KeyView, grace: str) -> None:
    """Roll the key and show the new one once."""
    with _ui.guarded():
        with ctx.session() as s, s.begin():
            new, old = keys.roll_key(s, ctx.actor, view.id, grace=grace, pepper=ctx.settings.pepper)
        until = "now" if old.revoked_at is None else _ui.relative(old.revoked_at)
        st.success(f"Rolled. The old key `{old.masked}` stops working {until}.")
        st.code(new.key, language=None, wrap_lines=True)
        st.warning("Copy the new key now. It will not be shown again.", icon="🔒")
        st.toast(f"API key '{_ui.text(new.name)}' rolled", icon="🔄")


def _filtered(views: list[KeyView], status: str, within: str, idle: bool) -> list[KeyView]:
    now = _ui.now()
    out = views
    if status != "All":
        out = [v for v in out if v.status == status.lower()]
    if within != "Any time":
        days = int(within.split()[0])
        out = [
            v
            for v in out
            if v.status in ("active", "expiring") and v.expires_at <= now + timedelta(days=days)
        ]
    if idle:
        cutoff = now - timedelta(days=30)
        out = [
            v
            for v in out
            if v.status in ("active", "expiring") and (v.last_used_at or v.created_at) <= cutoff
        ]
    return out


def _table(views: list[KeyView]) -> pd.DataFrame:
    now = _ui.now()
    return pd.DataFrame(
        {
            "Name": [v.name for v in views],
            "Key": [v.masked for v in views],
            "Status": [_ui.STATUS_BADGES.get(v.status, v.status) for v in views],
            "Created by": [v.created_by or "—" for v in views],
            "Created": [_ui.relative(v.created_at, now) for v in views],
            "Expires": [_ui.relative(v.expires_at, now) for v in views],
            "Last used": [_ui.relative(v.last_used_at, now, never="Never") for v in views],
            "Usage": [v.usage_count for v in views],
        }
    )


def _manageable(view: KeyView) -> bool:
    return (
        view.status in LIVE_STATUSES
        and view.revoked_at is None
        and may_manage(ctx.role, ctx.actor, view.created_by_id)
    )


_ui.header(
    "API Keys",
    "Keys authenticate your services' requests to the platform API. "
    "A key is shown once, when it is created; after that only its first and last characters.",
)
views = _ui.key_views(ctx)
with ctx.reader() as s:
    org_max_days = orgs.get_organization(s, ctx.org_id, ctx.actor).max_key_lifetime_days

can_create = ctx.can(Permission.KEYS_CREATE)
if can_create and st.button("Create API key", type="primary", icon=":material/add:"):
    st.session_state[DIALOG] = ("create",)

if not views:
    _ui.empty_state(
        "No API keys generated",
        "Create your first key to connect a server, an app or a test environment."
        if can_create
        else "Nobody in this organization has created a key yet.",
        icon="🔑",
    )
else:
    f1, f2, f3 = st.columns([1, 1, 1])
    status = f1.selectbox("Status", ["All", "Active", "Expiring", "Expired", "Revoked"])
    within = f2.selectbox("Expiring within", ["Any time", "7 days", "30 days", "90 days"])
    idle = f3.toggle("Idle for 30+ days", help="Active keys not used in the last 30 days")
    shown = _filtered(views, status, within, idle)
    st.caption(f"{len(shown)} of {len(views)} keys")
    if shown:
        st.dataframe(_table(shown), hide_index=True, width="stretch")
    else:
        st.info("No keys match these filters.")
    actionable = [v for v in shown if _manageable(v)][:MAX_CHOICES]
    if actionable:
        st.subheader("Manage a key")
        by_id = {v.id: v for v in actionable}
        c1, c2, c3, _ = st.columns([4, 1, 1, 2], vertical_alignment="bottom")
        chosen = c1.selectbox(
            "Key",
            list(by_id),
            format_func=lambda i: f"{by_id[i].name} · {by_id[i].masked}",
            key="manage_key",
        )
        if c2.button("Roll", icon=":material/autorenew:", key="roll_open"):
            st.session_state[DIALOG] = ("roll", chosen)
        if c3.button("Revoke", icon=":material/block:", key="revoke_open"):
            st.session_state[DIALOG] = ("revoke", chosen)
        if len(actionable) == MAX_CHOICES:
            st.caption(f"Showing the first {MAX_CHOICES} keys; narrow the filters to find others.")
    elif not ctx.can(Permission.KEYS_MANAGE_OWN):
        st.caption("Your role can view keys but not change them.")

opened = st.session_state.get(DIALOG)
if opened:
    by_all = {v.id: v for v in views}
    if opened[0] == "create" and can_create:
        create_dialog(org_max_days)
    elif opened[0] in ("revoke", "roll") and opened[1] in by_all:
        (revoke_dialog if opened[0] == "revoke" else roll_dialog)(by_all[opened[1]])
    else:
        _close()
