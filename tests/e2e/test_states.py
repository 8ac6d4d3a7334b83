"""Publishing point states over HTTP: the table, concurrency, restarts."""

from __future__ import annotations

import asyncio
import signal

import httpx
import pytest

from smoothlive.management.errors import MgmtError
from tests.e2e.conftest import PASSWORDS
from tests.e2e.harness import Server, add_user
from tests.e2e.test_management_api import (
    ATOM,
    SERVICE,
    A,
    M,
    assert_error,
    create,
    set_state,
    settings_body,
    state_body,
    state_of,
    xml,
)


def test_start_stop_shutdown_cycle(operator, point_name):
    create(operator, point_name)
    assert state_of(operator, point_name) == "Idle"
    assert set_state(operator, point_name, "Started").status_code == 200
    assert state_of(operator, point_name) == "Starting"  # waits for its encoder
    assert set_state(operator, point_name, "Started").status_code == 200  # already on its way
    assert state_of(operator, point_name) == "Starting"
    assert set_state(operator, point_name, "Stopped").status_code == 200
    assert state_of(operator, point_name) == "Stopped"
    assert set_state(operator, point_name, "Stopped").status_code == 200  # no change
    assert set_state(operator, point_name, "Idle").status_code == 200
    assert state_of(operator, point_name) == "Idle"


def test_starting_can_be_shut_down_directly(operator, point_name):
    create(operator, point_name)
    set_state(operator, point_name, "Started")
    assert set_state(operator, point_name, "Idle").status_code == 200
    assert state_of(operator, point_name) == "Idle"


def test_stopped_to_started_and_idle_to_stopped_are_invalid(operator, point_name):
    create(operator, point_name)
    assert_error(set_state(operator, point_name, "Stopped"), MgmtError.STATE_TRANSITION_INVALID)
    set_state(operator, point_name, "Started")
    set_state(operator, point_name, "Stopped")
    assert_error(set_state(operator, point_name, "Started"), MgmtError.STATE_TRANSITION_INVALID)
    assert state_of(operator, point_name) == "Stopped"


@pytest.mark.parametrize("value", ["Starting", "Stopping", "ShuttingDown", "Error"])
def test_internal_states_cannot_be_requested(operator, point_name, value):
    create(operator, point_name)
    assert_error(set_state(operator, point_name, value), MgmtError.STATE_TRANSITION_NOT_SUPPORTED)
    assert state_of(operator, point_name) == "Idle"


def test_pull_point_goes_to_error_with_last_error(operator, point_name, server):
    inner = ("<SourceType>Pull</SourceType><PullFrom><PublishingPoints>"
             "<PublishingPoint>http://127.0.0.1:9/up.isml</PublishingPoint>"
             "</PublishingPoints></PullFrom>")
    assert create(operator, point_name, inner).status_code == 201
    assert set_state(operator, point_name, "Started").status_code == 200
    state = xml(operator.get(f"{point_name}/state")).find(
        f"{A}content/{M}SmoothStreaming/{M}State")
    assert state.findtext(f"{M}Value") == "Error"
    assert state.findtext(f"{M}LastError") == "0x80004001"
    assert "SourceType Pull" in server.log()
    assert_error(set_state(operator, point_name, "Started"), MgmtError.STATE_TRANSITION_INVALID)
    assert set_state(operator, point_name, "Idle").status_code == 200
    assert state_of(operator, point_name) == "Idle"


async def test_concurrent_state_changes_leave_a_consistent_point(server, point_name):
    """Many clients at once: each gets a documented answer; the end state is real."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30,
                                 auth=("operator", PASSWORDS["operator"])) as http:
        await http.post(f"{SERVICE}/settings", content=settings_body(),
                        headers={**ATOM, "Slug": point_name})
        values = ["Started", "Stopped", "Idle", "Started", "Idle"] * 8
        responses = await asyncio.gather(*(
            http.put(f"{point_name}/state", content=state_body(v), headers=ATOM)
            for v in values))
        documented = {200, 400}
        assert {r.status_code for r in responses} <= documented
        for response in responses:
            if response.status_code == 400:
                code = xml(response).findtext(f"{M}Error/{M}ErrorCode")
                assert code in {MgmtError.STATE_TRANSITION_INVALID.code,
                                MgmtError.PUBLISHING_POINT_LOCKED.code}
        final = (await http.get(f"{point_name}/state")).content
        assert any(f"<Value>{s}</Value>".encode() in final
                   for s in ("Idle", "Starting", "Stopped"))
        # Concurrent updates of the settings never leave a half-written file.
        titles = [f"title-{i}" for i in range(20)]
        await asyncio.gather(*(
            http.put(f"{point_name}/settings", content=settings_body(f"<Title>{t}</Title>"),
                     headers=ATOM) for t in titles))
        await http.put(f"{point_name}/state", content=state_body("Idle"), headers=ATOM)
        shown = xml(await http.get(f"{point_name}/settings"))
        assert shown.findtext(f".//{M}Settings/{M}Title") in [*titles, "t", ""]


def test_states_and_settings_survive_a_restart(tmp_path):
    srv = Server(tmp_path / "content", tmp_path / "state").start()
    add_user(srv.state_dir, "op", "op-pass", "write:/")
    try:
        with httpx.Client(base_url=srv.url, auth=("admin", srv.admin_password), timeout=20) as h:
            for name in ("idle", "starting", "stopped", "error"):
                create(h, f"/r/{name}.isml", f"<Title>{name}</Title><LookAheadChunks>4"
                       "</LookAheadChunks>" + (
                           "<SourceType>Pull</SourceType>" if name == "error" else ""))
            set_state(h, "/r/starting.isml", "Started")
            set_state(h, "/r/stopped.isml", "Started")
            set_state(h, "/r/stopped.isml", "Stopped")
            set_state(h, "/r/error.isml", "Started")
        assert srv.stop(signal.SIGKILL) is not None
        srv.start()
        assert srv.admin_password is not None  # from the first start; not printed again
        assert not any("created user 'admin'" in line for line in srv.stdout_seen[-3:])
        with httpx.Client(base_url=srv.url, auth=("op", "op-pass"), timeout=20) as h:
            assert state_of(h, "/r/idle.isml") == "Idle"
            assert state_of(h, "/r/starting.isml") == "Starting"
            assert state_of(h, "/r/stopped.isml") == "Stopped"
            assert state_of(h, "/r/error.isml") == "Error"
            shown = xml(h.get("/r/idle.isml/settings"))
            assert shown.findtext(f".//{M}Settings/{M}Title") == "idle"
            assert shown.findtext(f".//{M}Settings/{M}LookAheadChunks") == "4"
    finally:
        srv.stop()


def test_admin_password_is_printed_once_and_never_logged(tmp_path):
    srv = Server(tmp_path / "content", tmp_path / "state").start()
    try:
        password = srv.admin_password
        assert password and len(password) >= 16
        with httpx.Client(base_url=srv.url, auth=("admin", password), timeout=20) as h:
            assert h.get(SERVICE).status_code == 200
        users_file = srv.state_dir / "users.toml"
        assert users_file.stat().st_mode & 0o777 == 0o600
        assert password not in users_file.read_text()
        srv.stop()
        srv.start()
        assert srv.stdout_seen.count(f"    {password}") == 1
        assert password not in srv.log()
    finally:
        srv.stop()
