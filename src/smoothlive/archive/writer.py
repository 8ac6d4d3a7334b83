"""Writing a live presentation as on-demand Smooth Streaming, safe from crashes.

One ``.ismv`` per QualityLevel (``<StreamIndex>_<bitrate>.ismv``, the name
the statistics report as ArchiveFileName): ``ftyp`` and a ``moov`` holding
the encoder's ``trak`` and ``trex``, then every fragment's moof (with its
TfxdBox, as stored) and mdat, appended as it arrives. The ``.ism`` server
manifest naming the files is (re)written atomically whenever a track is
added, so an archive is a playable on-demand presentation from its first
fragment on, while it grows.

Crash safety, in three steps:

- a fragment is handed to the OS in one ``writev`` when it is stored: a
  crash of the server process loses nothing that was stored;
- ``flush`` (once a second, from a worker thread) fsyncs the files that
  grew: a power cut loses at most that second;
- ``close`` appends an ``mfra`` (a tfra per track and an mfro, so players
  and the reader find every fragment without walking the file) and writes
  the ``.ismc`` client manifest. An archive a crash left open has neither:
  ``recover`` cuts every file after its last whole moof+mdat pair and
  finishes it the same way. The :class:`ArchiveJournal` in the state dir
  says which archives were open.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

from smoothlive.archive.ondemand import (
    FileIndex,
    IsmDocument,
    IsmTrack,
    OnDemandPresentation,
    TrackFragments,
    index_file,
    parse_ism,
    render_ism,
)
from smoothlive.media.boxes import box, full_box
from smoothlive.media.init import ISML_FTYP, init_segment
from smoothlive.media.model import SMOOTH_TIMESCALE, TrackInfo
from smoothlive.pubpoint.store import atomic_write

log = logging.getLogger("smoothlive.archive")



class ArchiveError(OSError):
    """The archive cannot be written (disk full, folder not writable...)."""


def file_header(info: TrackInfo) -> bytes:
    """``ftyp`` and ``moov`` of a one-track archive file, with the brands of ffmpeg's ismv."""
    return init_segment(info, ISML_FTYP)


def mfra_box(track_id: int, entries: list[tuple[int, int]]) -> bytes:
    """mfra with one tfra (version 1: 64-bit time and offset, 1-byte traf/trun/sample
    numbers, all 1) and the mfro that lets a reader find it from the end of the file."""
    body = struct.pack(">III", track_id, 0, len(entries))
    body += b"".join(struct.pack(">QQBBB", t, o, 1, 1, 1) for t, o in entries)
    tfra = full_box(b"tfra", 1, 0, body)
    size = 8 + len(tfra) + 16
    return box(b"mfra", [tfra, full_box(b"mfro", 0, 0, struct.pack(">I", size))])


@dataclass
class _File:
    """One ``.ismv`` being written."""

    path: Path
    info: TrackInfo
    fd: int
    size: int
    # (time, moof offset) of each fragment, for the tfra: two arrays in time order, 16
    # bytes a fragment (a whole event is indexed here, not only a DVR window).
    fragments: TrackFragments = field(default_factory=TrackFragments)
    dirty: bool = False


def file_name(stream_index: str, bitrate: int) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stream_index)[:64]
    return f"{safe}_{int(bitrate)}.ismv"


class ArchiveWriter:
    """One archive presentation in ``folder``: ``<stem>.ism``, ``.ismc`` and ``.ismv`` files.

    ``add_track`` and ``add_fragment`` run on the event loop (page-cache
    writes); ``flush`` and ``close`` block on the disk and belong in a worker
    thread. A lock keeps them apart. Every OSError comes out as ArchiveError.
    """

    def __init__(self, folder: Path, stem: str) -> None:
        self.folder = folder
        self.stem = stem
        self._files: dict[tuple[str, int], _File] = {}
        self._tracks: list[IsmTrack] = []
        self._lock = threading.Lock()
        self.closed = False
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArchiveError(exc.errno, f"cannot create archive folder: {exc.strerror}",
                               str(folder)) from None

    @property
    def ism_path(self) -> Path:
        return self.folder / f"{self.stem}.ism"

    def has_track(self, stream_index: str, bitrate: int) -> bool:
        return (stream_index, bitrate) in self._files

    def add_track(self, stream_index: str, info: TrackInfo) -> None:
        """Start the file of a QualityLevel and list it in the ``.ism``."""
        key = (stream_index, info.bitrate)
        if key in self._files or self.closed:
            return
        path = self.folder / file_name(stream_index, info.bitrate)
        header = file_header(info)
        with self._lock:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
                try:
                    write_all(fd, [header])
                except OSError:
                    os.close(fd)
                    raise
            except OSError as exc:
                raise ArchiveError(exc.errno, f"cannot write archive file: {exc.strerror}",
                                   str(path)) from None
            self._files[key] = _File(path, info, fd, len(header), dirty=True)
            self._tracks.append(IsmTrack(
                kind=info.kind, src=path.name, bitrate=info.bitrate, track_id=info.track_id,
                name=stream_index, language=info.language,
                timescale=info.timescale if info.timescale != SMOOTH_TIMESCALE else None))
            self._write_ism()

    def add_fragment(self, stream_index: str, bitrate: int, time: int, moof: bytes,
                     mdat: bytes) -> tuple[Path, int] | None:
        """Append a fragment: the file and offset its moof now has (its mdat follows);
        None if this file has it already, or is unknown or closed."""
        file = self._files.get((stream_index, bitrate))
        if file is None or file.fragments.find(time) is not None or self.closed:
            return None
        with self._lock:
            try:
                write_all(file.fd, [moof, mdat])
            except OSError as exc:
                # Cut back to the last whole fragment: the file stays valid.
                with contextlib.suppress(OSError):
                    os.ftruncate(file.fd, file.size)
                raise ArchiveError(exc.errno, f"cannot append to archive: {exc.strerror}",
                                   str(file.path)) from None
            at = file.size
            file.fragments.add(time, at, 0)
            file.size += len(moof) + len(mdat)
            file.dirty = True
        return file.path, at

    def flush(self) -> None:
        """fsync the files that grew since the last flush (blocking)."""
        with self._lock:
            dirty = [f for f in self._files.values() if f.dirty]
            for file in dirty:
                file.dirty = False
            fds = [f.fd for f in dirty]
        for fd in fds:
            try:
                os.fsync(fd)
            except OSError as exc:
                raise ArchiveError(exc.errno, f"cannot flush archive: {exc.strerror}",
                                   str(self.folder)) from None

    def close(self) -> None:
        """Finish every file (mfra), write the ``.ismc``, fsync, release (blocking)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            errors = []
            for file in self._files.values():
                try:
                    fragments = file.fragments
                    entries = list(zip(fragments.times, fragments.offsets, strict=True))
                    write_all(file.fd, [mfra_box(file.info.track_id, entries)])
                    os.fsync(file.fd)
                except OSError as exc:
                    # No half mfra: the file ends after its last whole fragment, as
                    # readers and ``recover`` expect of an archive not finished yet.
                    with contextlib.suppress(OSError):
                        os.ftruncate(file.fd, file.size)
                    errors.append((exc, file.path))
                finally:
                    os.close(file.fd)
        if self._files:
            try:
                write_client_manifest(self.ism_path)
            except OSError as exc:
                errors.append((exc, self.ism_path.with_suffix(".ismc")))
        if errors:
            exc, path = errors[0]
            raise ArchiveError(exc.errno, f"cannot finish archive: {exc.strerror}", str(path))

    def _write_ism(self) -> None:
        document = IsmDocument(tuple(self._tracks), f"{self.stem}.ismc")
        try:
            atomic_write(self.ism_path, render_ism(document))
        except OSError as exc:
            raise ArchiveError(exc.errno, f"cannot write server manifest: {exc.strerror}",
                               str(self.ism_path)) from None


def write_all(fd: int, parts: list[bytes]) -> None:
    """writev until every byte is with the OS (a short write is possible near a full
    disk); the spool writes its fragments with it too."""
    views = [memoryview(p) for p in parts if p]
    while views:
        written = os.writev(fd, views)
        if written == 0:
            raise OSError(28, "No space left on device")
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


def write_client_manifest(ism: Path) -> None:
    """The ``.ismc`` beside ``ism``: the client manifest the on-demand reader serves."""
    presentation = OnDemandPresentation(ism)
    atomic_write(ism.with_suffix(".ismc"), presentation.manifest)


class SegmentedArchive:
    """A live point's archive: one presentation, or a new one every SegmentLength.

    Segments are folders ``Segment0001``, ``Segment0002``... inside the
    archive folder, each a whole on-demand presentation; a fragment belongs
    to the segment its start time falls in, counted from the first fragment
    archived. A segment is finished once every one of its tracks has moved on.
    """

    def __init__(self, folder: Path, stem: str, segment_ticks: int = 0) -> None:
        self.folder = folder
        self.stem = stem
        self.segment_ticks = segment_ticks
        self._tracks: dict[tuple[str, int], TrackInfo] = {}
        self._writers: dict[int, ArchiveWriter] = {}
        self._position: dict[tuple[str, int], int] = {}  # the segment each track is in
        self._origin: int | None = None
        self._finished: list[ArchiveWriter] = []
        self._lock = threading.Lock()
        if not segment_ticks:
            self._writers[0] = ArchiveWriter(folder, stem)

    @property
    def file_names(self) -> list[str]:
        return [file_name(name, bitrate) for name, bitrate in self._tracks]

    def add_track(self, stream_index: str, info: TrackInfo) -> None:
        self._tracks.setdefault((stream_index, info.bitrate), info)
        for writer in self._writers.values():
            writer.add_track(stream_index, info)

    def add_fragment(self, stream_index: str, bitrate: int, time: int, timescale: int,
                     moof: bytes, mdat: bytes) -> tuple[Path, int] | None:
        """Append a fragment to its segment: where its moof went (see ArchiveWriter)."""
        key = (stream_index, bitrate)
        info = self._tracks.get(key)
        if info is None:
            return None
        segment = self._segment(time * SMOOTH_TIMESCALE // (timescale or SMOOTH_TIMESCALE))
        writer = self._writers.get(segment)
        if writer is None:
            if segment < min(self._writers, default=segment):
                return None  # late fragment of a segment already finished
            writer = self._writers[segment] = ArchiveWriter(
                self.folder / f"Segment{segment + 1:04d}", self.stem)
            for (name, _), track in self._tracks.items():
                writer.add_track(name, track)
        where = writer.add_fragment(stream_index, bitrate, time, moof, mdat)
        if self._position.get(key) != segment:
            self._position[key] = segment
            self._retire()
        return where

    def _segment(self, ticks: int) -> int:
        if not self.segment_ticks:
            return 0
        if self._origin is None:
            self._origin = ticks
        return max(0, (ticks - self._origin) // self.segment_ticks)

    def _retire(self) -> None:
        """Hand segments every track has left to ``flush`` for closing."""
        if not self.segment_ticks or len(self._position) < len(self._tracks):
            return
        oldest = min(self._position.values())
        with self._lock:
            for segment in [s for s in self._writers if s < oldest]:
                self._finished.append(self._writers.pop(segment))

    @property
    def folders(self) -> list[Path]:
        return [w.folder for w in self._writers.values()]

    def flush(self) -> None:
        """fsync what grew and finish segments that are over (blocking)."""
        with self._lock:
            finished, self._finished = self._finished, []
            writers = list(self._writers.values())
        for writer in finished:
            writer.close()
        for writer in writers:
            writer.flush()

    def close(self) -> None:
        """Finish everything (blocking)."""
        with self._lock:
            writers = [*self._finished, *self._writers.values()]
            self._finished = []
        errors = []
        for writer in writers:
            try:
                writer.close()
            except ArchiveError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


# -- after a crash -----------------------------------------------------------------------------


def recover(folder: Path, *, strict: bool = False) -> list[str]:
    """Make every archive presentation under ``folder`` whole again; the files repaired.

    A file is cut after its last whole moof+mdat pair (a torn tail is never
    left behind), given an mfra if it has none, and the ``.ismc`` is
    rewritten. Finished files are left as they are. An unreadable ``.ism`` or
    a ``.ismc`` that cannot be written is logged and skipped; with ``strict``
    (an archive whose finishing failed, tried again) any failure to write is
    an ArchiveError instead, so the archive stays listed as open.
    """
    repaired: list[str] = []
    for ism in sorted(folder.rglob("*.ism")):
        try:
            document = parse_ism(ism.read_bytes())
        except (OSError, ValueError) as exc:
            log.error("archive %s: unreadable server manifest: %s", ism, exc)
            continue
        for src in dict.fromkeys(track.src for track in document.tracks):
            path = ism.parent / src
            if path.parent != ism.parent or not path.is_file():
                continue
            try:
                if _repair(path):
                    repaired.append(str(path))
            except OSError as exc:
                if not strict:
                    raise
                raise ArchiveError(exc.errno, f"cannot finish archive: {exc.strerror}",
                                   str(path)) from None
        try:
            write_client_manifest(ism)
        except (OSError, ValueError) as exc:
            if strict and isinstance(exc, OSError):
                raise ArchiveError(exc.errno, f"cannot finish archive: {exc.strerror}",
                                   str(ism.with_suffix(".ismc"))) from None
            log.error("archive %s: cannot write the client manifest: %s", ism, exc)
    return repaired


def _repair(path: Path) -> bool:
    with open(path, "r+b") as handle:
        fd = handle.fileno()
        size = os.fstat(fd).st_size
        index: FileIndex = index_file(lambda offset, n: os.pread(fd, n, offset), size)
        if index.finished:
            return False
        if index.tail:
            log.warning("archive %s: cutting %d bytes of an incomplete fragment",
                        path.name, index.tail)
        os.ftruncate(fd, index.end)
        os.lseek(fd, index.end, os.SEEK_SET)
        for track_id, fragments in index.tracks.items():
            entries = list(zip(fragments.times, fragments.offsets, strict=True))
            write_all(fd, [mfra_box(track_id, entries)])
            break  # one track per file
        os.fsync(fd)
    return True


class ArchiveJournal:
    """Which archives are open, kept in the state dir, so a restart can repair them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _entry(self, archive: Path) -> Path:
        return self.folder / (hashlib.sha256(str(archive).encode()).hexdigest()[:32] + ".open")

    def opened(self, archive: Path) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self._entry(archive), str(archive).encode())

    def closed(self, archive: Path) -> None:
        self._entry(archive).unlink(missing_ok=True)

    def recover_all(self) -> list[Path]:
        """Repair every archive left open; the archive folders repaired."""
        done = []
        for entry in sorted(self.folder.glob("*.open")) if self.folder.is_dir() else []:
            try:
                archive = Path(entry.read_text())
            except (OSError, UnicodeDecodeError):
                entry.unlink(missing_ok=True)
                continue
            if archive.is_dir():
                repaired = recover(archive)
                log.info("archive %s recovered after a restart (%d files repaired)",
                         archive, len(repaired))
                done.append(archive)
            entry.unlink(missing_ok=True)
        return done
