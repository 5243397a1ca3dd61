"""The console tests can fail: a page that raises is an error a test sees.

The router shows every exception as one sentence (never a traceback), so AppTest's
`at.exception` stays empty when a page crashes. `_ui.show_error` records each error it
shows; `assert_clean` fails on any of them. Here a copy of the console with a
`raise RuntimeError` injected right after each page's header proves it: the page's own
test goes red.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
from sqlalchemy import Engine

from pages import _ui
from tests import test_console_admin as admin_pages
from tests import test_console_app as app
from tests.factories import OrgFixture
from tests.test_console_app import PAGES, ROOT, Console, assert_clean, faults, texts

console = app.console
org = app.org


def _crash_after_header(source: str) -> str:
    """Return `source` with `raise RuntimeError` after its top-level `_ui.header(...)` call."""
    tree = ast.parse(source)
    for node in tree.body:
        call = node.value if isinstance(node, ast.Expr) else None
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr == "header"
        ):
            lines = source.splitlines(keepends=True)
            assert node.end_lineno is not None
            lines.insert(node.end_lineno, 'raise RuntimeError("injected crash")\n')
            return "".join(lines)
    raise AssertionError("no _ui.header(...) call at the top level of the page")


def _crashing_console(tmp: Path, page: str) -> Path:
    """A copy of console.py, pages/ and .streamlit/ in which `page` raises after its header."""
    root = tmp / "console-copy"
    shutil.copytree(ROOT / "pages", root / "pages")
    shutil.copytree(ROOT / ".streamlit", root / ".streamlit")
    shutil.copyfile(ROOT / "console.py", root / "console.py")
    target = root / page
    target.write_text(_crash_after_header(target.read_text()))
    return root


def test_the_experiment_of_the_review_now_fails(
    console: Console, org: OrgFixture, tmp_path: Path
) -> None:
    """The reported experiment: a raise after the Webhooks page's header used to pass."""
    admin_pages.test_webhooks_page_renders_for_admins(console, org)  # green as shipped
    crashing = Console(console.engine, _crashing_console(tmp_path, PAGES["Webhooks"]))
    with pytest.raises(AssertionError, match="RuntimeError"):
        admin_pages.test_webhooks_page_renders_for_admins(crashing, org)


@pytest.mark.parametrize("title", sorted(PAGES))
def test_a_crash_in_any_page_is_seen_by_assert_clean(
    engine: Engine, org: OrgFixture, tmp_path: Path, title: str, console: Console
) -> None:
    crashing = Console(engine, _crashing_console(tmp_path, PAGES[title]))
    at = crashing.app(crashing.token("admin@acme.test"))
    at.switch_page(PAGES[title]).run()
    assert not at.exception  # the router caught it: AppTest alone sees nothing
    assert texts(at, "error") == [_ui.GENERIC_ERROR]  # the person sees one sentence
    assert [(f.kind, f.error) for f in faults(at)] == [("unexpected", "RuntimeError")]
    with pytest.raises(AssertionError):
        assert_clean(at)


def test_a_page_that_works_passes_assert_clean(console: Console, org: OrgFixture) -> None:
    at = console.signed_in("admin@acme.test", "Webhooks")
    assert_clean(at)
    assert faults(at) == []
