"""A write that fails (full disk, file too large, access denied, I/O error) while a
point archives or spools: the point goes to Error with the right LastError, says so in
one log line, keeps serving what it had, and comes back once space is back.

The disk is the ``os`` module of the archive writer and of the spool, replaced by
one that fails on demand as a full or broken disk does (a short write, then the
error), fed with the tracks and fragments of a real ffmpeg ingest capture.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from dataclasses import replace
from pathlib import Path

import pytest

from smoothlive.archive import writer
from smoothlive.archive.ondemand import OnDemandPresentation, index_file
from smoothlive.archive.writer import ArchiveJournal
from smoothlive.management.errors import ManagementError, MgmtError
from smoothlive.management.settings import ArchiveSettings, Settings
from smoothlive.pubpoint import live as live_module
from smoothlive.pubpoint import presentation
from smoothlive.pubpoint import registry as registry_module
from smoothlive.pubpoint.live import LivePoint
from smoothlive.pubpoint.registry import Registry
from smoothlive.pubpoint.states import Event, State
from smoothlive.pubpoint.store import IsmlStore
from tests.unit.test_archive_writer import FRAGMENTS, TRACKS

PATH = "/live/ch1.isml"
# errno -> the LastError IIS would report: HRESULT_FROM_WIN32 of ERROR_DISK_FULL,
# ERROR_FILE_TOO_LARGE, ERROR_ACCESS_DENIED, ERROR_IO_DEVICE.
ERRORS = {
    errno.ENOSPC: 0x80070070,
    errno.EFBIG: 0x800700DF,
    errno.EACCES: 0x80070005,
    errno.EIO: 0x8007045D,
}
BY_TIME = {(data.track_id, data.time): data for data in FRAGMENTS}


class Disk:
    """The ``os`` module, with the writes a full or broken disk refuses."""

    def __init__(self) -> None:
        self.room: int | None = None  # bytes writes may still add; None: no limit
        self.error = errno.ENOSPC
        self.fsync_fails = False
        self.create_fails = False

    def __getattr__(self, name: str):
        return getattr(os, name)

    def _refuse(self) -> OSError:
        return OSError(self.error, os.strerror(self.error))

    def writev(self, fd: int, buffers) -> int:
        if self.room is None:
            return os.writev(fd, buffers)
        if self.room == 0:
            raise self._refuse()
        written = os.write(fd, b"".join(bytes(b) for b in buffers)[: self.room])
        self.room -= written  # a short write first, as near a full disk
        return written

    def fsync(self, fd: int) -> None:
        if self.fsync_fails:
            raise self._refuse()
        os.fsync(fd)

    def open(self, path, flags: int, mode: int = 0o777):
        if self.create_fails and flags & os.O_CREAT:
            raise self._refuse()
        return os.open(path, flags, mode)

    def fill(self, error: int, room: int = 0) -> None:
        self.error, self.room = error, room


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Disk:
    fake = Disk()
    monkeypatch.setattr(writer, "os", fake)
    monkeypatch.setattr(presentation, "os", fake)
    return fake


def _point(tmp_path: Path, events: list, archive: bool = True) -> LivePoint:
    settings = replace(Settings(), archive=ArchiveSettings(enabled=archive))

    async def on_event(event: Event, last_error: int | None) -> None:
        events.append((event, last_error))

    point = LivePoint(PATH, settings, tmp_path / "spool", on_event,
                      archive_base=tmp_path / "archives" if archive else None,
                      journal=ArchiveJournal(tmp_path / "journal"))
    # Keep only the index in memory: what players get is read back from the files.
    point.presentation.settings = replace(point.presentation.settings, live_cache=1)
    return point


async def _push(point: LivePoint, fragments=FRAGMENTS):
    stream = point.open_stream("ch1-300k", "127.0.0.1")
    point.movie(stream, TRACKS)
    for data in fragments:
        await point.fragment(stream, data)
    return stream


def _listed(point: LivePoint) -> dict[str, list[int]]:
    return {name: [t for t, _ in index.chunks]
            for name, index in point.presentation.stream_indexes.items()}


def _assert_served(point: LivePoint, listed: dict[str, list[int]]) -> None:
    """Every chunk listed is still listed, and each of its fragments reads back whole
    from the file it was written to (the archive's or the spool), the bytes the encoder
    sent: players get them from there once they leave memory."""
    assert _listed(point) == listed
    assert not point.presentation.is_live  # the newest fragment is served too, not 412
    for name, times in listed.items():
        index = point.presentation.stream_indexes[name]
        for level in index.levels:
            for t in times:
                fragment = level.fragments[t]
                sent = BY_TIME[(level.info.track_id, t)]
                moof, _, mdat = level.read_back(fragment, level.following(t))
                assert (moof, mdat) == (sent.moof, sent.mdat)


def _the_error_line(caplog: pytest.LogCaptureFixture, hresult: int, error: int) -> str:
    """The one ERROR line: the point, the OS error, the LastError; no traceback anywhere."""
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert not any(r.exc_info for r in caplog.records)
    line = errors[0].getMessage()
    assert line.startswith(f"{PATH}: ")
    assert os.strerror(error) in line and errno.errorcode[error] in line
    assert f"LastError 0x{hresult:08X}" in line
    return line


def _ends_after_its_last_fragment(folder: Path) -> OnDemandPresentation:
    """The archive as the on-demand reader sees it: whole fragments only, no torn tail."""
    for file in folder.glob("*.ismv"):
        size = file.stat().st_size
        data = file.read_bytes()
        index = index_file(lambda offset, n, d=data: d[offset:offset + n], size)
        assert index.tail == 0, file
    return OnDemandPresentation(folder / "ch1.ism")


async def _space_is_back_and_the_point_shuts_down(point: LivePoint, disk: Disk,
                                                  tmp_path: Path, folder: Path,
                                                  listed: dict[str, list[int]]) -> None:
    disk.room, disk.fsync_fails, disk.create_fails = None, False, False
    point.close()
    await asyncio.wait_for(point.archive_retry, 10)
    archive = OnDemandPresentation(folder / "ch1.ism")
    assert archive.state.finished
    for view in archive.state.view.stream_indexes:
        assert [t for t, _ in view.chunks] == listed[view.name]
    assert not list((tmp_path / "journal").glob("*.open"))


@pytest.mark.parametrize("error", list(ERRORS))
async def test_a_failure_at_the_first_write_of_the_archive(tmp_path, disk, caplog, error):
    events: list = []
    point = _point(tmp_path, events)
    if error == errno.EACCES:
        disk.create_fails, disk.error = True, error  # the first .ismv cannot be created
    else:
        disk.fill(error)  # its header cannot be written
    stream = await _push(point)
    await asyncio.wait_for(point.archive_failure, 10)
    assert events == [(Event.FAILED, ERRORS[error])]
    _the_error_line(caplog, ERRORS[error], error)
    assert stream.stopped and point.archive is None
    assert not any(_listed(point).values())  # nothing taken: an Error point takes no input


@pytest.mark.parametrize("error", list(ERRORS))
async def test_a_failure_mid_event_keeps_what_was_published(tmp_path, disk, caplog, error):
    events: list = []
    point = _point(tmp_path, events)
    stream = await _push(point, FRAGMENTS[:4])
    folder = point.archive.folder
    listed = _listed(point)
    assert listed == {"video": [0, 10000000, 20000000], "audio": [10026667]}
    disk.fill(error, room=100)  # the next fragment is written in part, then refused
    for data in FRAGMENTS[4:]:
        await point.fragment(stream, data)
    await asyncio.wait_for(point.archive_failure, 10)
    await asyncio.wait_for(point.archive_done, 10)
    assert events == [(Event.FIRST_FRAGMENT, None), (Event.FAILED, ERRORS[error])]
    line = _the_error_line(caplog, ERRORS[error], error)
    assert "video_300000.ismv" in line or "audio_64000.ismv" in line
    assert stream.stopped
    assert point.open_stream("late", "127.0.0.1").stopped  # before the registry's Error
    _assert_served(point, listed)
    # The archive holds what was stored, cut after its last whole fragment, and plays.
    archive = _ends_after_its_last_fragment(folder)
    assert not archive.state.finished  # the disk is still full: no mfra yet
    for view in archive.state.view.stream_indexes:
        assert [t for t, _ in view.chunks] == listed[view.name]
    await _space_is_back_and_the_point_shuts_down(point, disk, tmp_path, folder, listed)


@pytest.mark.parametrize("error", [errno.EIO, errno.ENOSPC])
async def test_a_failure_of_the_once_a_second_fsync(tmp_path, disk, caplog, monkeypatch, error):
    monkeypatch.setattr(live_module, "ARCHIVE_FLUSH_SECONDS", 0.01)
    events: list = []
    point = _point(tmp_path, events)
    stream = await _push(point, FRAGMENTS[:4])
    folder = point.archive.folder
    listed = _listed(point)
    disk.fsync_fails, disk.error = True, error
    for _ in range(500):  # bounded: 5 s
        if point.archive_failure is not None:
            break
        await asyncio.sleep(0.01)
    await asyncio.wait_for(point.archive_failure, 10)
    assert events[-1] == (Event.FAILED, ERRORS[error])
    assert "cannot flush archive" in _the_error_line(caplog, ERRORS[error], error)
    assert stream.stopped
    await point.fragment(stream, FRAGMENTS[4])  # still in the handler's chunk: not taken
    _assert_served(point, listed)
    await asyncio.wait_for(point.archive_done, 10)
    await _space_is_back_and_the_point_shuts_down(point, disk, tmp_path, folder, listed)


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EFBIG])
async def test_a_failure_to_finish_the_archive_at_stop(tmp_path, disk, caplog, error):
    events: list = []
    point = _point(tmp_path, events)
    await _push(point)
    folder = point.archive.folder
    listed = _listed(point)
    disk.fill(error, room=10)  # the mfra does not fit
    point.stop_inputs()  # Stopping
    assert await asyncio.wait_for(point.archive_done, 10) == folder
    await asyncio.wait_for(point.archive_failure, 10)
    assert events[-1] == (Event.FAILED, ERRORS[error])  # Stopped -> Error
    assert "cannot finish archive" in _the_error_line(caplog, ERRORS[error], error)
    _assert_served(point, listed)
    assert not _ends_after_its_last_fragment(folder).state.finished
    assert list((tmp_path / "journal").glob("*.open"))  # repaired at the next start, else
    await _space_is_back_and_the_point_shuts_down(point, disk, tmp_path, folder, listed)


async def test_a_client_manifest_that_cannot_be_written(tmp_path, disk, caplog, monkeypatch):
    full = [False]
    written = writer.atomic_write

    def atomic_write(target: Path, data: bytes, **kwargs) -> None:
        if target.suffix == ".ismc" and full[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        written(target, data, **kwargs)

    monkeypatch.setattr(writer, "atomic_write", atomic_write)
    events: list = []
    point = _point(tmp_path, events)
    await _push(point)
    folder = point.archive.folder
    listed = _listed(point)
    full[0] = True  # the .ismv files take their mfra, the .ismc finds the disk full
    point.stop_inputs()
    await asyncio.wait_for(point.archive_done, 10)
    await asyncio.wait_for(point.archive_failure, 10)
    assert events[-1] == (Event.FAILED, 0x80070070)
    assert "ch1.ismc" in _the_error_line(caplog, 0x80070070, errno.ENOSPC)
    assert not (folder / "ch1.ismc").exists()
    full[0] = False
    await _space_is_back_and_the_point_shuts_down(point, disk, tmp_path, folder, listed)
    assert (folder / "ch1.ismc").exists()


@pytest.mark.parametrize("error", list(ERRORS))
async def test_a_spool_that_cannot_be_written(tmp_path, disk, caplog, error):
    events: list = []
    point = _point(tmp_path, events, archive=False)
    stream = await _push(point, FRAGMENTS[:4])
    listed = _listed(point)
    disk.fill(error, room=1000)
    for data in FRAGMENTS[4:]:
        await point.fragment(stream, data)
    await asyncio.wait_for(point.archive_failure, 10)
    assert events == [(Event.FIRST_FRAGMENT, None), (Event.FAILED, ERRORS[error])]
    assert "cannot write the spool" in _the_error_line(caplog, ERRORS[error], error)
    assert stream.stopped
    # The failed write was cut back: every fragment before it reads back as sent.
    _assert_served(point, listed)
    point.close()


async def test_no_chunk_a_failed_level_lacks_is_listed_after(tmp_path, disk, caplog):
    # Two bitrates of one StreamIndex: the 300k fragment at 3 s is stored, the 150k one
    # finds the disk full. The encoders' POSTs then end one after the other; the chunk
    # at 3 s must not be listed, since the 150k QualityLevel does not have it.
    point = _point(tmp_path, [], archive=False)
    low = [replace(info, bitrate=150000) if info.kind == "video" else info
           for info in TRACKS]
    streams = [point.open_stream("ch1-300k", "127.0.0.1"),
               point.open_stream("ch1-150k", "127.0.0.1")]
    point.movie(streams[0], TRACKS)
    point.movie(streams[1], low)
    video = [data for data in FRAGMENTS if data.track_id == 1]
    for data in video[:3]:
        for stream in streams:
            await point.fragment(stream, data)
    listed = _listed(point)
    assert listed["video"] == [0, 10000000, 20000000]
    disk.room = video[3].size  # room for one copy of the next fragment
    for stream in streams:
        await point.fragment(stream, video[3])
    await asyncio.wait_for(point.archive_failure, 10)
    index = point.presentation.stream_indexes["video"]
    assert [level.bitrate for level in index.levels] == [300000, 150000]
    assert 30000000 in index.levels[0].fragments and 30000000 not in index.levels[1].fragments
    await point.close_stream(streams[1], ended=False)  # the 150k POST ends first
    await point.close_stream(streams[0], ended=False)
    assert _listed(point)["video"] == listed["video"]
    point.close()


async def test_a_spool_that_cannot_be_created(tmp_path, disk, caplog, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(args[0]))

    monkeypatch.setattr(presentation, "open", refuse, raising=False)
    events: list = []
    point = _point(tmp_path, events, archive=False)
    stream = await _push(point)
    await asyncio.wait_for(point.archive_failure, 10)
    assert events == [(Event.FAILED, 0x80070005)]
    assert "cannot create the spool" in _the_error_line(caplog, 0x80070005, errno.EACCES)
    assert stream.stopped and not any(_listed(point).values())
    await point.close_stream(stream, ended=False)  # the handler ends the POST
    assert point.presentation.manifest()  # no half-made StreamIndex left behind


async def test_error_then_idle_then_started_once_space_is_back(tmp_path, disk, caplog):
    """The operator's way back, through the registry and its state rules."""
    registry = Registry(IsmlStore(tmp_path / "content"), tmp_path / "state")
    await registry.create(PATH, Settings())  # archives by default
    await registry.request_state(PATH, State.STARTED)
    point = await registry.open_ingest(PATH, "ch1-300k", None)
    stream = await _push(point, FRAGMENTS[:4])
    runtime = registry.runtime(PATH)
    assert runtime.state is State.STARTED
    first_archive = point.archive.folder
    disk.fill(errno.ENOSPC)
    await point.fragment(stream, FRAGMENTS[4])
    await asyncio.wait_for(point.archive_failure, 10)
    assert (runtime.state, runtime.last_error) == (State.ERROR, 0x80070070)
    _the_error_line(caplog, 0x80070070, errno.ENOSPC)
    # Players still have the presentation; the encoder and the operator are refused.
    assert registry.live(PATH) is point and b"<StreamIndex" in point.presentation.manifest()
    for attempt in (registry.open_ingest(PATH, "ch1-300k", None),
                    registry.request_state(PATH, State.STARTED)):
        with pytest.raises(ManagementError) as refused:
            await attempt
        assert refused.value.error is MgmtError.STATE_TRANSITION_INVALID
    await point.close_stream(stream, ended=False)
    disk.room = None  # space is back
    await registry.request_state(PATH, State.IDLE)
    assert (runtime.state, runtime.last_error, registry.live(PATH)) == (State.IDLE, None, None)
    await asyncio.wait_for(point.archive_retry, 10)
    assert OnDemandPresentation(first_archive / "ch1.ism").state.finished
    await registry.request_state(PATH, State.STARTED)
    again = await registry.open_ingest(PATH, "ch1-300k", None)
    stream = await _push(again)
    second_archive = again.archive.folder
    assert runtime.state is State.STARTED and second_archive != first_archive
    await again.close_stream(stream, ended=True)
    assert runtime.state is State.STOPPED
    assert await asyncio.wait_for(again.archive_done, 10) is None  # finished
    assert OnDemandPresentation(second_archive / "ch1.ism").state.finished


async def test_a_state_file_that_cannot_be_written(tmp_path, disk, caplog, monkeypatch):
    registry = Registry(IsmlStore(tmp_path / "content"), tmp_path / "state")
    await registry.create(PATH, Settings())
    await registry.request_state(PATH, State.STARTED)
    point = await registry.open_ingest(PATH, "ch1-300k", None)
    stream = await _push(point, FRAGMENTS[:4])

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(registry_module, "atomic_write", full)  # the state dir is full too
    disk.fill(errno.ENOSPC)
    await point.fragment(stream, FRAGMENTS[4])
    await asyncio.wait_for(point.archive_failure, 10)  # and raised nothing
    runtime = registry.runtime(PATH)
    assert (runtime.state, runtime.last_error) == (State.ERROR, 0x80070070)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 2 and "state file cannot be written" in lines[1]
    assert not any(r.exc_info for r in caplog.records)
