"""Getting Started: the integration guide, with the organization's API base URL."""

from __future__ import annotations

import streamlit as st

from core.orgs import service as orgs
from core.orgs.permissions import Permission
from pages import _ui

ctx = _ui.context(Permission.KEYS_READ)
with ctx.reader() as s:
    org = orgs.get_organization(s, ctx.org_id, ctx.actor)
    base = org.api_base_url
    max_days = org.max_key_lifetime_days

_ui.header("Getting Started", "Connect a service to the platform API in three steps.")

st.markdown(
    f"""
### 1. Find the settings
API keys live under **Settings → Integration → API Keys** in the sidebar. Webhooks, for
events sent to your own services, are on the **Webhooks** page next to it.

### 2. Generate a key
Click **Create API key**, give it a name that says where it runs (for example
*Production Server*, *Mobile App* or *Development Testing*) and choose an expiration:
**30, 60 or 90 days**, or a custom date (at most {max_days} days ahead for this
organization). The key is shown **once**: copy it into your secret store straight away.
If it is lost, roll or revoke it and create another.

### 3. Send it with every request
Every request to the API must carry the key in the `Authorization` header:
"""
)
st.code("Authorization: x-api-key YOUR_KEY", language="http")
st.markdown(
    """
- Always call the API over **HTTPS**; a key sent over plain HTTP must be treated as leaked.
- The key must not be **expired** or **revoked**: requests with such a key are refused
  with `401` and a JSON error (`key_expired`, `key_revoked`).
- Keep keys out of source code, logs and browsers; use one key per service so you can
  revoke one without touching the others.
"""
)
st.markdown("#### curl")
st.code(
    f'curl -sS "{base}/v1/whoami" \\\n  -H "Authorization: x-api-key $API_KEY"',
    language="bash",
)
st.markdown("#### Python")
st.code(
    f"""import os

import httpx

API_BASE = "{base}"
headers = {{"Authorization": f"x-api-key {{os.environ['API_KEY']}}"}}

response = httpx.get(f"{{API_BASE}}/v1/whoami", headers=headers, timeout=10)
if response.status_code == 401:
    error = response.json()["error"]  # e.g. {{"code": "key_expired", "message": ...}}
    raise SystemExit(f"API key refused: {{error['code']}}: {{error['message']}}")
response.raise_for_status()
print(response.json())""",
    language="python",
)
st.markdown("#### Errors you may see")
st.dataframe(
    {
        "code": [
            "missing_credentials",
            "malformed_credentials",
            "invalid_key",
            "key_expired",
            "key_revoked",
        ],
        "meaning": [
            "No key in the request",
            "Wrong scheme, empty or badly formed key",
            "The key is unknown or mistyped",
            "The key is past its expiry: create or roll a key",
            "The key was revoked (or its roll grace period ended)",
        ],
    },
    hide_index=True,
    width="stretch",
)
st.caption(f"API base URL: {_ui.text(base)} (admins change it under Settings).")
