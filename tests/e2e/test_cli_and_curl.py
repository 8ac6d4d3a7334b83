"""The operator's tools against a real server: the pubpoint client and curl."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.e2e.conftest import PASSWORDS
from tests.e2e.harness import run_cli

README = Path(__file__).parents[2] / "README.md"


def pubpoint(server, *args: str, user: str = "operator") -> subprocess.CompletedProcess:
    env = {"SMOOTHLIVE_URL": server.url, "SMOOTHLIVE_USER": user,
           "SMOOTHLIVE_PASSWORD": PASSWORDS[user]}
    return run_cli("pubpoint", *args, env=env)


def test_pubpoint_client_full_cycle(server):
    name = "cli/ch1.isml"
    created = pubpoint(server, "create", name, "--title", "Channel 1", "--auto-restart",
                       "--window-length", "PT30M", "--json")
    assert created.returncode == 0, created.stderr
    settings = json.loads(created.stdout)
    assert settings["Title"] == "Channel 1"
    assert settings["AutoRestartOnEncoderReconnect"] == "true"
    assert settings["ClientConnections"]["WindowLength"] == "PT30M"

    listed = json.loads(pubpoint(server, "list", "--json").stdout)
    assert any(p["path"] == "/cli/ch1.isml" and p["title"] == "Channel 1" for p in listed)

    shown = pubpoint(server, "show", name)
    assert "Title: Channel 1" in shown.stdout

    assert "Value: Idle" in pubpoint(server, "state", name).stdout
    started = pubpoint(server, "state", name, "Started", "--json")
    assert json.loads(started.stdout)["Value"] == "Starting"
    stats = pubpoint(server, "stats", name, "--json")
    assert stats.returncode == 0, stats.stderr

    assert pubpoint(server, "delete", name).returncode == 0
    missing = pubpoint(server, "show", name)
    assert missing.returncode == 1
    assert "MPE_MGMT_PUBLISHING_POINT_NOT_FOUND (0x8088002E)" in missing.stderr


def test_pubpoint_client_explains_errors(server):
    denied = pubpoint(server, "create", "cli/ro.isml", user="reader")
    assert denied.returncode == 1
    assert "MPE_MGMT_ACCESS_DENIED" in denied.stderr
    assert "access level" in denied.stderr
    bad = run_cli("pubpoint", "list", env={"SMOOTHLIVE_URL": server.url,
                                           "SMOOTHLIVE_USER": "operator",
                                           "SMOOTHLIVE_PASSWORD": "wrong"})
    assert bad.returncode == 1
    assert "MPE_MGMT_AUTHENTICATION_IS_REQUIRED" in bad.stderr
    unreachable = run_cli("pubpoint", "list", "--server", "http://127.0.0.1:9",
                          env={"SMOOTHLIVE_USER": "x", "SMOOTHLIVE_PASSWORD": "y"})
    assert unreachable.returncode == 1
    assert "Traceback" not in unreachable.stderr


def test_readme_curl_session_runs_as_written(server):
    """The curl session of the README, run line by line against the server."""
    assert shutil.which("curl"), "curl is needed (.ci/run installs it)"
    text = README.read_text()
    session = text.split("## A session with curl", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    env = {**os.environ, "PASSWORD": PASSWORDS["operator"]}
    script = session.replace("SL=http://127.0.0.1:8080", f"SL={server.url}").replace(
        'AUTH="admin:$PASSWORD"', 'AUTH="operator:$PASSWORD"')
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "<Title>Channel 1</Title>" in out  # the create answer
    assert "<Value>Starting</Value>" in out  # the state after the start
    assert "<Statistics>" in out
    assert re.search(r"<id>[^<]*/live/ch1\.isml/settings</id>", out)
    assert "ErrorCode" not in out
