"""The registry over a real content root and state dir (no HTTP)."""

from __future__ import annotations

import asyncio
import json

import pytest

from smoothlive.management.errors import ManagementError, MgmtError
from smoothlive.management.settings import Settings
from smoothlive.pubpoint.registry import Registry
from smoothlive.pubpoint.states import Event, State
from smoothlive.pubpoint.store import IsmlStore


@pytest.fixture
def registry(tmp_path):
    return Registry(IsmlStore(tmp_path / "content"), tmp_path / "state")


async def test_a_second_operation_during_one_in_progress_is_locked(registry):
    await registry.create("/a.isml", Settings(title="a"))
    runtime = registry.runtime("/a.isml")
    async with runtime.lock:  # an operation in progress
        with pytest.raises(ManagementError) as caught:
            await registry.request_state("/a.isml", State.STARTED)
        assert caught.value.error is MgmtError.PUBLISHING_POINT_LOCKED
        with pytest.raises(ManagementError) as caught:
            await registry.update_settings("/a.isml", Settings(title="b"))
        assert caught.value.error is MgmtError.PUBLISHING_POINT_LOCKED
        with pytest.raises(ManagementError) as caught:
            await registry.delete("/a.isml")
        assert caught.value.error is MgmtError.PUBLISHING_POINT_LOCKED
    assert registry.get("/a.isml").settings.title == "a"
    assert registry.runtime("/a.isml").state is State.IDLE


async def test_concurrent_creates_of_one_path_make_one_point(registry):
    results = await asyncio.gather(
        *(registry.create("/same.isml", Settings(title=str(i))) for i in range(10)),
        return_exceptions=True)
    made = [r for r in results if not isinstance(r, Exception)]
    refused = {r.error for r in results if isinstance(r, ManagementError)}
    assert len(made) == 1
    assert refused <= {MgmtError.PUBLISHING_POINT_LOCKED,
                       MgmtError.PUBLISHING_POINT_ALREADY_EXISTS}
    assert registry.get("/same.isml").settings.title == made[0].settings.title


@pytest.mark.parametrize(("saved", "recovered"), [
    ("Idle", State.IDLE), ("Starting", State.STARTING), ("Started", State.STARTING),
    ("Stopping", State.STOPPED), ("Stopped", State.STOPPED), ("ShuttingDown", State.IDLE),
    ("Error", State.ERROR),
])
async def test_restart_recovery_from_each_state(tmp_path, saved, recovered):
    first = Registry(IsmlStore(tmp_path / "content"), tmp_path / "state")
    await first.create("/p.isml", Settings())
    state_file = next((tmp_path / "state" / "points").glob("*.json"))
    data = json.loads(state_file.read_text())
    data["state"] = saved
    data["last_error"] = 0x80004005 if saved == "Error" else None
    state_file.write_text(json.dumps(data))

    second = Registry(IsmlStore(tmp_path / "content"), tmp_path / "state")
    second.recover()
    assert second.runtime("/p.isml").state is recovered
    third = Registry(IsmlStore(tmp_path / "content"), tmp_path / "state")
    third.recover()  # the recovered state was saved
    assert third.runtime("/p.isml").state is recovered
    if saved == "Error":
        assert third.runtime("/p.isml").last_error == 0x80004005


async def test_state_of_a_deleted_file_is_forgotten(tmp_path):
    first = Registry(IsmlStore(tmp_path / "content"), tmp_path / "state")
    await first.create("/gone.isml", Settings())
    (tmp_path / "content" / "gone.isml").unlink()
    second = Registry(IsmlStore(tmp_path / "content"), tmp_path / "state")
    second.recover()
    assert not list((tmp_path / "state" / "points").glob("*.json"))


async def test_events_move_the_state(registry):
    await registry.create("/e.isml", Settings())
    await registry.request_state("/e.isml", State.STARTED)
    await registry.event("/e.isml", Event.FIRST_FRAGMENT)
    assert registry.runtime("/e.isml").state is State.STARTED
    await registry.event("/e.isml", Event.SOURCE_ENDED)
    assert registry.runtime("/e.isml").state is State.STOPPED
    await registry.event("/e.isml", Event.FAILED, 0x80070070)
    runtime = registry.runtime("/e.isml")
    assert (runtime.state, runtime.last_error) == (State.ERROR, 0x80070070)


async def test_files_are_written_whole_and_private_state_is_0600(registry, tmp_path):
    await registry.create("/w/x.isml", Settings(title="x"))
    leftovers = [p.name for p in (tmp_path / "content" / "w").iterdir()]
    assert leftovers == ["x.isml"]  # no temporary file left behind
    state_file = next((tmp_path / "state" / "points").glob("*.json"))
    assert state_file.stat().st_mode & 0o777 == 0o600


async def test_error_to_idle_drops_the_live_presentation(registry):
    await registry.create("/e.isml", Settings(title="e"))
    await registry.request_state("/e.isml", State.STARTED)
    live = registry.live("/e.isml")
    assert live is not None
    await registry.event("/e.isml", Event.FAILED, 0x80070070)
    runtime = registry.runtime("/e.isml")
    assert runtime.state is State.ERROR and runtime.last_error == 0x80070070
    await registry.request_state("/e.isml", State.IDLE)
    assert runtime.state is State.IDLE and registry.live("/e.isml") is None
    assert not live.presentation.is_live


def test_an_archive_path_outside_the_root_is_invalid_data(registry, tmp_path):
    from dataclasses import replace

    from smoothlive.management.settings import ArchiveSettings

    outside = replace(Settings(), archive=ArchiveSettings(path=str(tmp_path / "elsewhere")))
    with pytest.raises(ManagementError) as caught:
        registry.check_settings("/a.isml", outside)
    assert caught.value.error is MgmtError.INVALID_DATA
    inside = replace(Settings(), archive=ArchiveSettings(path="records"))
    registry.check_settings("/a.isml", inside)
    assert registry.archive_base("/live/a.isml", inside) == (
        tmp_path / "content" / "records" / "live" / "a").resolve()
    allowed = Registry(IsmlStore(tmp_path / "content"), tmp_path / "state",
                       archive_allow=(tmp_path / "elsewhere",))
    allowed.check_settings("/a.isml", outside)
