"""The README stays true: its commands parse, and every code and event is documented."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from core.auth.contract import Code
from core.cli import build_parser
from core.events import WEBHOOK_EVENTS, EventType

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _code_blocks() -> list[str]:
    return re.findall(r"```(?:bash|sh|console)?\n(.*?)```", README, flags=re.S)


def _cli_lines() -> list[str]:
    lines = []
    for block in _code_blocks():
        for raw in block.splitlines():
            line = raw.split("  #")[0].strip()
            if line.startswith("python -m core "):
                lines.append(line)
    return lines


def test_the_readme_shows_the_cli() -> None:
    assert len(_cli_lines()) >= 8


@pytest.mark.parametrize("line", _cli_lines())
def test_every_readme_command_parses(line: str) -> None:
    args = shlex.split(line)[3:]
    args = [a for a in args if a not in ("|", ">")]
    build_parser().parse_args(args)


def test_the_quick_start_has_the_two_commands() -> None:
    assert "pip install -r requirements.txt" in README
    assert "streamlit run console.py" in README
    assert "python -m pytest" in README


@pytest.mark.parametrize("code", [c.value for c in Code])
def test_every_result_code_is_documented(code: str) -> None:
    assert f"`{code}`" in README


@pytest.mark.parametrize("event", [str(e) for e in WEBHOOK_EVENTS])
def test_every_webhook_event_is_documented(event: str) -> None:
    assert f"`{event}`" in README


@pytest.mark.parametrize(
    "event",
    [str(e) for e in EventType if str(e).startswith(("member.", "account.", "auth."))],
)
def test_every_people_and_session_event_is_documented(event: str) -> None:
    assert f"`{event}`" in README


def test_the_throttling_limits_in_the_readme_are_the_code_s() -> None:
    from core.sessions import signin

    section = README.split("### Sign-in throttling", 1)[1].split("\n## ", 1)[0]
    for number in (signin.ADDRESS_FREE, signin.ACCOUNT_ADDRESS_FREE, signin.ACCOUNT_FREE):
        assert f"| {number} |" in section
    assert f"at most {int(signin.MAX_WAIT.total_seconds() // 60)} min" in section
    assert f"at most {int(signin.ACCOUNT_MAX_DELAY)} s" in section
