"""A live point archives what it stores, finishes at Stop, and fails loudly.

Driven with the tracks and fragments of a real ffmpeg ingest capture.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path

import pytest

from smoothlive.archive.ondemand import OnDemandPresentation
from smoothlive.archive.writer import ArchiveJournal
from smoothlive.management.settings import ArchiveSettings, Settings
from smoothlive.pubpoint.live import LivePoint, hresult_of
from smoothlive.pubpoint.states import Event
from tests.unit.test_archive_writer import FRAGMENTS, TRACKS


def _point(tmp_path: Path, base: Path, events: list, **archive) -> LivePoint:
    settings = replace(Settings(), archive=ArchiveSettings(enabled=True, **archive))

    async def on_event(event: Event, last_error: int | None) -> None:
        events.append((event, last_error))

    return LivePoint("/live/ch1.isml", settings, tmp_path / "spool", on_event,
                     archive_base=base, journal=ArchiveJournal(tmp_path / "journal"))


async def _push(point: LivePoint, fragments=FRAGMENTS, event_id: str | None = None):
    stream = point.open_stream("ch1-300k", "127.0.0.1", event_id)
    point.movie(stream, TRACKS)
    for data in fragments:
        await point.fragment(stream, data)
    return stream


async def test_the_archive_follows_the_live_presentation(tmp_path: Path) -> None:
    events: list = []
    point = _point(tmp_path, tmp_path / "archives" / "live" / "ch1", events,
                   use_event_id_on_path=True)
    await _push(point, event_id="ev/../1")
    folder = point.archive.folder
    assert folder == tmp_path / "archives" / "live" / "ch1" / "ev_.._1"
    assert list((tmp_path / "journal").glob("*.open"))
    point.stop_inputs()
    await asyncio.wait_for(point.archive_done, 10)
    assert not list((tmp_path / "journal").glob("*.open"))
    on_demand = OnDemandPresentation(folder / "ch1.ism")
    assert on_demand.state.finished
    live = point.presentation.manifest()
    # The live point is stopped: its manifest and the archive's list the same chunks.
    for index in point.presentation.stream_indexes.values():
        listed = [t for t, _ in index.chunks]
        view = next(v for v in on_demand.state.view.stream_indexes if v.name == index.name)
        assert [t for t, _ in view.chunks] == listed
    assert b"IsLive" not in live
    assert (Event.FAILED, None) not in events


async def test_a_second_event_in_the_same_folder_gets_a_new_one(tmp_path: Path) -> None:
    base = tmp_path / "archives"
    first = _point(tmp_path, base, [], use_event_id_on_path=True)
    await _push(first, FRAGMENTS[:4], event_id="ev")
    first.stop_inputs()
    await asyncio.wait_for(first.archive_done, 10)
    second = _point(tmp_path, base, [], use_event_id_on_path=True)
    await _push(second, FRAGMENTS[:4], event_id="ev")
    assert second.archive.folder == base / "ev-2"
    second.stop_inputs()
    await asyncio.wait_for(second.archive_done, 10)


async def test_an_unwritable_archive_folder_moves_the_point_to_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    events: list = []
    point = _point(tmp_path, tmp_path / "file" / "archives", events)
    stream = await _push(point, FRAGMENTS[:6])
    await asyncio.wait_for(point.archive_failure, 10)
    assert events[-1] == (Event.FAILED, 0x80070003)  # ERROR_PATH_NOT_FOUND
    # A point in Error takes no input: its POST is ended, nothing was published.
    assert stream.stopped
    assert not any(index.chunks for index in point.presentation.stream_indexes.values())
    assert point.archive is None


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
async def test_a_full_disk_moves_the_point_to_error_with_disk_full(tmp_path: Path) -> None:
    events: list = []
    point = _point(tmp_path, tmp_path / "archives", events)
    stream = await _push(point, FRAGMENTS[:4])
    writer = point.archive._writers[0]
    for file in writer._files.values():
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, file.fd)
        os.close(full)
    for data in FRAGMENTS[4:8]:
        await point.fragment(stream, data)
    await asyncio.wait_for(point.archive_failure, 10)
    assert (Event.FAILED, 0x80070070) in events  # ERROR_DISK_FULL
    assert point.archive is None


def test_hresults_of_os_errors() -> None:
    assert hresult_of(OSError(28, "full")) == 0x80070070
    assert hresult_of(OSError(13, "denied")) == 0x80070005
    assert hresult_of(OSError(27, "too large")) == 0x800700DF  # ERROR_FILE_TOO_LARGE
    assert hresult_of(OSError(5, "I/O")) == 0x8007045D  # ERROR_IO_DEVICE
    assert hresult_of(OSError(99, "other")) == 0x8007001F


async def test_an_archived_point_keeps_one_copy_on_disk(tmp_path: Path) -> None:
    # The archive doubles as the DVR store: the spool stays empty, and media
    # evicted from memory is read back from the archive's files.
    point = _point(tmp_path, tmp_path / "archives", [])
    point.presentation.settings = replace(point.presentation.settings, live_cache=1)
    await _push(point)
    levels = [lv for index in point.presentation.stream_indexes.values() for lv in index.levels]
    assert all(lv.spool_path.stat().st_size == 0 for lv in levels)
    by_time = {(d.track_id, d.time): d.mdat for d in FRAGMENTS}
    evicted = 0
    for level in levels:
        for fragment in level.fragments.values():
            assert fragment.file is not None and fragment.file.suffix == ".ismv"
            if fragment.mdat is None:
                evicted += 1
                mdat = level.read_mdat(fragment)
                assert mdat == by_time[(level.info.track_id, fragment.time)]
    assert evicted > 0
    point.stop_inputs()
    await asyncio.wait_for(point.archive_done, 10)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
async def test_the_fragment_the_archive_failed_on_goes_to_the_spool(tmp_path: Path) -> None:
    # Only the archive's disk is full: the fragment it could not take is kept in the
    # spool; the ones after it are not taken (the point is in Error, its POST ended).
    point = _point(tmp_path, tmp_path / "archives", [])
    stream = await _push(point, FRAGMENTS[:4])
    for file in point.archive._writers[0]._files.values():
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, file.fd)
        os.close(full)
    for data in FRAGMENTS[4:]:
        await point.fragment(stream, data)
    await asyncio.wait_for(point.archive_failure, 10)
    failed_on = FRAGMENTS[4]
    level = stream.levels[failed_on.track_id]
    kept = level.fragments[failed_on.time]
    assert kept.file is None and level.spool_path.stat().st_size > 0
    assert level.read_mdat(kept) == failed_on.mdat
    assert stream.stopped
    assert all(data.time not in stream.levels[data.track_id].fragments
               for data in FRAGMENTS[5:])
