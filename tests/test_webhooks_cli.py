"""The webhook commands, run for real against a receiver on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from tests._webhook_receiver import Receiver, Reply

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"])
def test_webhook_commands_from_add_to_replay(database_url: str, data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env.update(DATABASE_URL=database_url, INTEGRATION_DATA_DIR=str(data_dir))
    admin = "ann@acme.test"
    r = run(
        ["init", "--org", "Acme", "--admin", admin, "--password-stdin"], env, "a-long-passw0rd\n"
    )
    assert r.returncode == 0, r.stderr

    r = run(
        [
            "webhooks",
            "add",
            "--org",
            "Acme",
            "--url",
            "http://hooks.example.com/in",
            "--events",
            "api_key.created",
            "--by",
            admin,
        ],
        env,
    )
    assert r.returncode == 1 and r.stderr.startswith("error: URL must use https"), r.stderr

    env.update(INTEGRATION_WEBHOOK_ALLOW_HTTP="1", INTEGRATION_WEBHOOK_ALLOW_PRIVATE="1")
    with Receiver(lambda _r, i: Reply(500) if i == 1 else Reply(200)) as receiver:
        r = run(
            [
                "webhooks",
                "add",
                "--org",
                "Acme",
                "--url",
                receiver.url,
                "--events",
                "api_key.created,webhook.test",
                "--by",
                admin,
                "--description",
                "CI",
                "--json",
            ],
            env,
        )
        assert r.returncode == 0, r.stderr
        added = json.loads(r.stdout)
        endpoint_id, secret = added["id"], added["secret"]
        assert secret.startswith("whsec_")

        r = run(["webhooks", "list", "--org", "Acme", "--json"], env)
        assert r.returncode == 0, r.stderr
        (listed,) = json.loads(r.stdout)
        assert listed["id"] == endpoint_id and "secret" not in json.dumps(listed)

        r = run(["webhooks", "test", endpoint_id, "--by", admin, "--json"], env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["status_code"] == 200
        got = receiver.requests[0]
        assert Webhook(secret).verify(got.body, got.headers)["type"] == "webhook.test"

        r = run(
            [
                "keys",
                "create",
                "--org",
                "Acme",
                "--name",
                "Srv",
                "--expires",
                "30",
                "--by",
                admin,
                "--json",
            ],
            env,
        )
        assert r.returncode == 0, r.stderr
        r = run(["worker", "--once"], env)
        assert r.returncode == 0, r.stderr
        assert "1 delivery attempts" in r.stdout

        r = run(["webhooks", "deliveries", endpoint_id, "--json"], env)
        assert r.returncode == 0, r.stderr
        shown = json.loads(r.stdout)
        failed = [a for a in shown["attempts"] if not a["success"]]
        assert len(shown["attempts"]) == 2 and failed[0]["error"] == "HTTP 500"
        assert shown["stats"]["success_rate"] == 0.5

        r = run(["webhooks", "replay", failed[0]["message_id"], "--by", admin], env)
        assert r.returncode == 0, r.stderr
        r = run(["worker", "--once"], env)
        assert r.returncode == 0, r.stderr
        assert receiver.ids()[-1] == failed[0]["message_id"]

        r = run(["webhooks", "rotate-secret", endpoint_id, "--by", admin, "--json"], env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["secret"] not in (secret, "")

        r = run(["webhooks", "replay", "msg_doesnotexist", "--by", admin], env)
        assert r.returncode == 1 and r.stderr == "error: webhook message not found\n"
