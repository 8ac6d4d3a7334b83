"""The DVR window of a live point, read back from its archive after a restart.

A point that archives keeps every fragment of its DVR window on disk, in the
archive (see ``QualityLevel.store``): what a restart loses is only the index
in memory. This reads the index back from the archive folders the point was
writing (its segments included, each an on-demand presentation with its
``.ism``; after several restarts, one folder per run), keeping the fragments
whose chunks end within the window of the archive's end. The media stays in
the files; each fragment's moof is read once, for its duration and size.
Blocking: called once per point at start.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from smoothlive.archive.ondemand import OnDemandPresentation, locate_fragment
from smoothlive.media.boxes import BoxError
from smoothlive.media.fragments import read_moof
from smoothlive.media.model import TrackInfo

log = logging.getLogger("smoothlive.restore")


@dataclass(frozen=True, slots=True)
class RestoredFragment:
    time: int
    duration: int
    file: Path
    offset: int  # of its moof in ``file``
    moof_size: int
    size: int  # moof and mdat


@dataclass(frozen=True, slots=True)
class RestoredWindow:
    tracks: list[tuple[TrackInfo, list[RestoredFragment]]]  # the tracks as encoders sent them
    written: float  # wall clock of the archive's last write: when its newest fragment came


def read_window(folders: list[Path], window: int) -> RestoredWindow:
    """The fragments of the archives in ``folders`` within ``window`` ticks of their end
    (0: all of them), per track; tracks that cannot be read are left out (logged)."""
    found: dict[tuple[str, int], tuple[TrackInfo, list[tuple[int, int, Path]]]] = {}
    written = 0.0
    for folder, ism in [(f, ism) for f in folders for ism in sorted(f.rglob("*.ism"))]:
        try:
            presentation = OnDemandPresentation(ism, base=folder)
        except OSError as exc:
            log.warning("archive %s not read back: %s", ism, exc)
            continue
        for key, level in presentation.state.levels.items():
            entry = found.setdefault(key, (level.info, []))
            entry[1].extend((time, offset, level.path) for time, offset in
                            zip(level.fragments.times, level.fragments.offsets, strict=True))
            try:
                written = max(written, level.path.stat().st_mtime)
            except OSError:
                continue
    # The window is cut per StreamIndex, from its own end, as the live store trims it.
    ends: dict[str, int] = {}
    for (name, _), (_, entries) in found.items():
        if entries:
            ends[name] = max(ends.get(name, 0), max(time for time, _, _ in entries))
    tracks = []
    for (name, _), (info, entries) in found.items():
        start = ends.get(name, 0) - window if window else None
        kept = sorted(entry for entry in entries if start is None or entry[0] >= start)
        fragments = _read_fragments(info, kept)
        if fragments:
            tracks.append((_as_sent(info), fragments))
    return RestoredWindow(tracks, written)


def _read_fragments(info: TrackInfo, entries: list[tuple[int, int, Path]]
                    ) -> list[RestoredFragment]:
    fragments: list[RestoredFragment] = []
    handles: dict[Path, int] = {}
    try:
        for time, offset, path in entries:
            fd = handles.get(path)
            if fd is None:
                fd = handles[path] = os.open(path, os.O_RDONLY)
            size = os.fstat(fd).st_size
            found = locate_fragment(lambda at, count, fd=fd: os.pread(fd, count, at), offset, size)
            if found is None:
                log.warning("%s: no fragment at %d where its index says: the window read back "
                            "stops before it", path.name, offset)
                break
            moof, _, mdat_size = found
            try:
                parsed = read_moof(moof)
            except BoxError as exc:
                log.warning("%s: unreadable moof at %d (%s): the window read back stops before "
                            "it", path.name, offset, exc)
                break
            duration = parsed.tfxd_duration or parsed.samples_duration()
            fragments.append(RestoredFragment(time, duration, path, offset, len(moof),
                                              len(moof) + mdat_size))
    except OSError as exc:
        log.warning("archive of track %s not read back: %s", info.name, exc)
        return []
    finally:
        for fd in handles.values():
            os.close(fd)
    return fragments


def _as_sent(info: TrackInfo) -> TrackInfo:
    """The track as its encoder describes it: an archive names it by its StreamIndex
    (``audio_eng``), the live store by its name and language (``audio`` + ``eng``)."""
    suffix = f"_{info.language}" if info.language else ""
    if suffix and info.name.endswith(suffix):
        return dataclasses.replace(info, name=info.name[: -len(suffix)])
    return info
