"""On-demand Smooth Streaming from an archive folder: ``.ism`` + ``.ismv`` files.

The ``.ism`` is the on-demand server manifest (SMIL 2.0: "IIS Smooth
Streaming On-Demand Server Manifest Format" and its smil, head, meta, body,
switch, video, audio, textstream and param element pages): each ``video``,
``audio`` or ``textstream`` element names a file (``src``), a bitrate
(``systemBitrate``, the argument of ``QualityLevels()``), optionally a
language (``systemLanguage``), and params: ``trackID`` (required: the
track_ID of the trak and tfhd boxes), ``trackName`` (the name in
``Fragments()``, by default ``video``/``audio``/``textstream``) and
``timescale`` (default 10,000,000).

Each file is fragmented MP4: ``ftyp``, optionally a Live Server Manifest
box, ``moov``, then moof/mdat pairs and, once finished, an ``mfra`` whose
``tfra`` gives every fragment's time and moof offset (ISO/IEC 14496-12
§8.8.10) and whose ``mfro`` (§8.8.11) says where the mfra starts. A file is
indexed from its tfra when there is a valid one, else by walking its
top-level boxes and reading each moof's TfxdBox (MS-SSTR §2.2.4.4); only
box headers and moofs are read (``os.pread``), never media data. A file
still being written is re-indexed from where the last walk stopped.

The client manifest (``IsLive`` absent, ``Duration`` the total: "IIS Smooth
Streaming Client Manifest - SmoothStreamingMedia Element") lists, for each
StreamIndex, the fragment times every QualityLevel covering that time has
(as the live store lists a chunk once every fed QualityLevel has it), each
``d`` running to the next listed time, so the timeline has no holes. The
same function renders the ``.ismc`` the archive writer leaves next to the
``.ism``, so the file and the served manifest agree.

Times before zero follow the live rule (``pubpoint.presentation``): MS-SSTR
fragment times are unsigned, but ffmpeg's first audio fragment starts about
21 ms early (AAC priming: a negative TfxdBox time, while its tfra says 0).
Such a fragment is listed at 0, lasting until it ends, and served with its
TfxdBox re-stamped to match; a fragment that ends before zero is left out.
Every other fragment is served exactly as it sits in the file.
"""

from __future__ import annotations

import bisect
import gzip
import hashlib
import itertools
import logging
import os
import re
import struct
import threading
import time as _time
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from smoothlive.management.errors import ManagementError
from smoothlive.management.xmlsafe import parse_xml
from smoothlive.media.boxes import (
    TREX,
    BoxError,
    BoxHeader,
    find_all,
    read_box_header,
)
from smoothlive.media.codecs import DEFAULT_TRACK_NAMES, merge_manifest, tracks_from_moov
from smoothlive.media.fragments import read_moof, retimed
from smoothlive.media.model import SMOOTH_TIMESCALE, TrackInfo, TrackKind
from smoothlive.media.servermanifest import (
    LIVE_SERVER_MANIFEST_UUID,
    ManifestTrack,
    lsm_payload_text,
    parse_server_manifest,
)
from smoothlive.outputs.smooth import ManifestView, StreamIndexView, render_client_manifest
from smoothlive.outputs.xmlattr import xml_attr as _attr

log = logging.getLogger("smoothlive.ondemand")

SMIL_NAMESPACE = "http://www.w3.org/2001/SMIL20/Language"
CLIENT_MANIFEST_META = "clientManifestRelativePath"
MAX_ISM_BYTES = 1 << 20
MAX_HEADER_BOX = 16 << 20  # moov, Live Server Manifest, moof
MAX_MFRA = 64 << 20
_PEEK = 4096  # one read covers a box header, and usually a whole moof and the next header

Reader = Callable[[int, int], bytes]  # (offset, size) -> at most size bytes, like os.pread

_ELEMENTS: dict[str, TrackKind] = {"video": "video", "audio": "audio", "textstream": "text"}
_ELEMENT_OF: dict[TrackKind, str] = {"video": "video", "audio": "audio", "text": "textstream"}


def stream_index_name(info: TrackInfo) -> str:
    """The StreamIndex a track belongs to, as the live store names it (``audio_eng``)."""
    return f"{info.name}_{info.language}" if info.language else info.name


# -- the .ism server manifest (sans-IO) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IsmTrack:
    """One ``video``/``audio``/``textstream`` element of an on-demand server manifest."""

    kind: TrackKind
    src: str
    bitrate: int  # systemBitrate
    track_id: int  # param trackID
    name: str | None = None  # param trackName (None: the IIS default for the kind)
    language: str | None = None  # systemLanguage
    timescale: int | None = None  # param timescale (None: 10,000,000)


@dataclass(frozen=True, slots=True)
class IsmDocument:
    tracks: tuple[IsmTrack, ...]
    client_manifest: str | None = None  # meta clientManifestRelativePath


def render_ism(document: IsmDocument) -> bytes:
    """The ``.ism`` of ``document``, as IIS writes an on-demand server manifest.

    Every element gets ``trackID`` and ``trackName``; ``systemLanguage`` and
    ``timescale`` only when known and not the default (the param pages).
    """
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<smil xmlns="{SMIL_NAMESPACE}">',
        "  <head>",
    ]
    if document.client_manifest:
        lines.append(
            f'    <meta name="{CLIENT_MANIFEST_META}" content="{_attr(document.client_manifest)}"/>'
        )
    lines += ["  </head>", "  <body>", "    <switch>"]
    for track in document.tracks:
        element = _ELEMENT_OF[track.kind]
        head = f'      <{element} src="{_attr(track.src)}" systemBitrate="{int(track.bitrate)}"'
        if track.language:
            head += f' systemLanguage="{_attr(track.language)}"'
        lines.append(head + ">")
        params = [("trackID", str(int(track.track_id)))]
        params.append(("trackName", track.name or DEFAULT_TRACK_NAMES[track.kind]))
        if track.timescale and track.timescale != SMOOTH_TIMESCALE:
            params.append(("timescale", str(int(track.timescale))))
        for name, value in params:
            lines.append(
                f'        <param name="{name}" value="{_attr(value)}" valuetype="data"/>'
            )
        lines.append(f"      </{element}>")
    lines += ["    </switch>", "  </body>", "</smil>", ""]
    return "\n".join(lines).encode("utf-8")


def _local(tag: object) -> str:
    return tag.rpartition("}")[2].lower() if isinstance(tag, str) else ""


def _integer(text: str | None) -> int | None:
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def parse_ism(document: bytes) -> IsmDocument:
    """The tracks of an on-demand server manifest; ValueError if it is not readable XML.

    Parsed with the safe parser (no DTD, no entities). Names are matched
    without namespace or case; an element without ``src``, a usable
    ``systemBitrate`` or ``trackID`` is left out, as IIS could not serve it.
    """
    try:
        root = parse_xml(document)
    except ManagementError as exc:
        raise ValueError(f"server manifest is not readable XML: {exc}") from None
    if _local(root.tag) != "smil":
        raise ValueError("server manifest root is not smil")
    client = None
    tracks: list[IsmTrack] = []
    for element in root.iter():
        tag = _local(element.tag)
        if tag == "meta":
            if (element.get("name") or "").lower() in ("clientmanifestrelativepath",
                                                       "clientmanfiestpath"):
                client = element.get("content")
            continue
        kind = _ELEMENTS.get(tag)
        if kind is None:
            continue
        params = {
            (child.get("name") or "").strip().lower(): (child.get("value") or "").strip()
            for child in element
            if _local(child.tag) == "param"
        }
        src = (element.get("src") or "").strip()
        bitrate = _integer(element.get("systemBitrate") or params.get("systembitrate"))
        track_id = _integer(params.get("trackid"))
        if not src or bitrate is None or bitrate < 0 or not track_id or track_id < 0:
            continue
        timescale = _integer(params.get("timescale"))
        tracks.append(IsmTrack(
            kind=kind,
            src=src,
            bitrate=bitrate,
            track_id=track_id,
            name=params.get("trackname") or None,
            language=(element.get("systemLanguage") or "").strip() or None,
            timescale=timescale if timescale and timescale > 0 else None,
        ))
    return IsmDocument(tuple(tracks), client)


# -- fragment indexes (sans-IO: everything reads through a Reader) ----------------------------


def listed_time(time: int, duration: int) -> tuple[int, int] | None:
    """``(time, duration)`` as a fragment is listed: one starting before zero
    starts at zero and ends where it ended; None if it ends by zero."""
    if time >= 0:
        return time, duration
    if time + duration <= 0:
        return None
    return 0, time + duration


@dataclass(slots=True)
class TrackFragments:
    """The fragments of one track in one file: times ascending, their moof offsets.

    ``last_duration`` is the duration of the last fragment (the others last
    until the next one starts).
    """

    times: array = field(default_factory=lambda: array("q"))
    offsets: array = field(default_factory=lambda: array("q"))
    last_duration: int = 0

    def add(self, time: int, offset: int, duration: int) -> bool:
        """Record a fragment; False if one with this time is already there."""
        times = self.times
        if not times or time > times[-1]:
            times.append(time)
            self.offsets.append(offset)
            self.last_duration = duration
            return True
        index = bisect.bisect_left(times, time)
        if times[index] == time:
            return False
        times.insert(index, time)
        self.offsets.insert(index, offset)
        return True

    def find(self, time: int) -> int | None:
        """The moof offset of the fragment at ``time``, or None."""
        index = bisect.bisect_left(self.times, time)
        if index < len(self.times) and self.times[index] == time:
            return self.offsets[index]
        return None

    def copy(self) -> TrackFragments:
        return TrackFragments(array("q", self.times), array("q", self.offsets), self.last_duration)

    def __len__(self) -> int:
        return len(self.times)


@dataclass(slots=True)
class FileIndex:
    """What one fragmented MP4 file holds, as far as it has been read.

    ``end`` is where the next walk resumes: the end of the last whole box
    (of the last whole moof+mdat pair once fragments started); bytes past it
    that are not a whole box are ``tail`` (what a crash leaves). ``finished``:
    a whole ``mfra`` starts at ``end``.
    """

    end: int = 0
    moov: bytes | None = None
    moov_offset: int = 0
    lsm: bytes | None = None  # the Live Server Manifest document
    tracks: dict[int, TrackFragments] = field(default_factory=dict)
    infos: dict[int, TrackInfo] = field(default_factory=dict)  # from the moov (and LSM)
    finished: bool = False
    tail: int = 0
    _defaults: dict[int, int] = field(default_factory=dict)  # trex default_sample_duration
    _next: dict[int, int] = field(default_factory=dict)  # where a track's next fragment starts

    def copy(self) -> FileIndex:
        return FileIndex(
            self.end, self.moov, self.moov_offset, self.lsm,
            {k: v.copy() for k, v in self.tracks.items()}, dict(self.infos), self.finished,
            self.tail, dict(self._defaults), dict(self._next),
        )  # fmt: skip

    def fragment_count(self) -> int:
        return sum(len(t) for t in self.tracks.values())

    def _set_moov(self, moov: bytes, offset: int) -> None:
        self.moov, self.moov_offset = moov, offset
        manifest: Mapping[int, ManifestTrack] | None = None
        if self.lsm is not None:
            try:
                manifest = parse_server_manifest(self.lsm)
            except BoxError:
                manifest = None
        try:
            infos = tracks_from_moov(moov, manifest)
            for header in find_all(moov, b"moov/mvex/trex"):
                _, _, trex = TREX.read(moov, header)
                self._defaults[trex.track_id] = trex.default_sample_duration
        except BoxError as exc:
            log.warning("unreadable moov: %s", exc)
            infos = []
        self.infos = {info.track_id: info for info in infos}
        for info in infos:
            self.tracks.setdefault(info.track_id, TrackFragments())


def index_file(read: Reader, size: int, previous: FileIndex | None = None) -> FileIndex:
    """The index of a file of ``size`` bytes.

    With ``previous`` (an index of the same file when it was shorter and not
    finished), the walk resumes where it stopped; otherwise the tfra is used
    when it is valid, else the whole file is walked.
    """
    if previous is not None and not previous.finished and size >= previous.end:
        index = previous.copy()
        _walk(read, size, index)
        return index
    index = _from_mfra(read, size)
    if index is None:
        index = FileIndex()
        _walk(read, size, index)
    return index


def _whole(read: Reader, offset: int, size: int, chunk: bytes) -> bytes:
    return chunk[:size] if len(chunk) >= size else read(offset, size)


def _walk(read: Reader, size: int, index: FileIndex, *, stop_at_moof: bool = False) -> None:
    """Walk top-level boxes from ``index.end``, recording fragments, up to the first bad box."""
    offset = index.end
    index.tail = 0
    while offset < size:
        chunk = read(offset, min(_PEEK, size - offset))
        if len(chunk) < 8 or chunk[:4] == b"\0\0\0\0":  # short, or unsized: a torn tail
            break
        try:
            header = read_box_header(chunk, 0)
        except BoxError:
            break
        if header.size > size - offset:
            break  # runs past the end of the file
        kind = header.type
        if kind == b"moof":
            if stop_at_moof:
                break
            if index.moov is None or header.size > MAX_HEADER_BOX:
                break
            if not _pair(read, size, offset, header, chunk, index):
                break
            offset = index.end
            continue
        if kind == b"mfra":
            index.finished = True
            break
        if kind == b"moov" and index.moov is None:
            if header.size > MAX_HEADER_BOX:
                break
            index._set_moov(_whole(read, offset, header.size, chunk), offset)
        elif (header.usertype == LIVE_SERVER_MANIFEST_UUID and index.moov is None
              and header.size <= MAX_HEADER_BOX):
            body = _whole(read, offset, header.size, chunk)[header.header_size:]
            index.lsm = lsm_payload_text(body)
        offset += header.size  # ftyp, free, skip, sidx, a stray mdat...
        index.end = offset
    index.tail = 0 if index.finished else size - index.end


def _pair(
    read: Reader, size: int, offset: int, header: BoxHeader, chunk: bytes, index: FileIndex
) -> bool:
    """Record the moof at ``offset`` and its mdat; False if the pair is not whole and sound."""
    moof_size = header.size
    if len(chunk) < moof_size + 16 and offset + len(chunk) < size:
        chunk = read(offset, min(moof_size + 32, size - offset))
    if len(chunk) < moof_size + 8:
        return False
    try:
        fragment = read_moof(chunk[:moof_size])
        mdat = read_box_header(chunk, moof_size)
    except BoxError:
        return False
    if mdat.type != b"mdat" or chunk[moof_size : moof_size + 4] == b"\0\0\0\0":
        return False
    end = offset + moof_size + mdat.size
    if end > size:
        return False
    track_id = fragment.track_id
    track = index.tracks.get(track_id)
    if track is not None:
        if fragment.tfxd_time is not None and fragment.tfxd_duration:
            time, duration = fragment.tfxd_time, fragment.tfxd_duration
        else:
            time = fragment.tfxd_time
            if time is None:
                time = fragment.base_media_decode_time
            if time is None:
                time = index._next.get(track_id, 0)
            duration = fragment.samples_duration(index._defaults.get(track_id, 0))
        if not _INT64_MIN <= time <= _INT64_MAX - duration:
            return False  # a tfdt past 2**63: no timeline to put it on
        index._next[track_id] = time + duration
        listed = listed_time(time, duration)
        if listed is not None:
            track.add(listed[0], offset, listed[1])
    index.end = end
    return True


# ISO/IEC 14496-12 §8.8.10 TrackFragmentRandomAccessBox, §8.8.11 MovieFragmentRandomAccessOffsetBox
_MFRO = struct.Struct(">I4sII")  # size, type, version/flags, mfra size
_TFRA_HEAD = struct.Struct(">III")  # track_ID, length sizes, number_of_entry
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_NUMBER_CODES = {1: "B", 2: "H", 3: "3s", 4: "I"}
_ONE = {1: 1, 2: 1, 3: b"\0\0\1", 4: 1}


def read_tfra(mfra: bytes) -> dict[int, list[tuple[int, int]]] | None:
    """``{track_ID: [(time, moof_offset)...]}`` of a whole mfra; None if it is not one we trust.

    Only a fragment index is trusted: every entry pointing at the first
    sample of the first trun of the first traf (traf, trun and sample
    numbers 1), as one fragment per moof gives.
    """
    try:
        header = read_box_header(mfra, 0)
        if header.type != b"mfra" or header.size != len(mfra):
            return None
        tracks: dict[int, list[tuple[int, int]]] = {}
        for child in find_all(mfra, b"mfra/tfra"):
            start = child.payload_offset
            word, track_id, lengths, count = struct.unpack_from(">I" + "III", mfra, start)
            version = word >> 24
            sizes = [((lengths >> shift) & 3) + 1 for shift in (4, 2, 0)]
            layout = struct.Struct(
                ">" + ("QQ" if version == 1 else "II") + "".join(_NUMBER_CODES[s] for s in sizes)
            )
            body = start + 4 + _TFRA_HEAD.size
            if body + layout.size * count > child.end or version > 1:
                return None
            ones = tuple(_ONE[s] for s in sizes)
            entries = []
            for values in layout.iter_unpack(mfra[body : body + layout.size * count]):
                if values[2:] != ones:
                    return None
                time = values[0]  # signed, as TfxdBox times are read
                entries.append((time - (1 << 64) if time >= 1 << 63 else time, values[1]))
            tracks.setdefault(track_id, []).extend(entries)
        return tracks
    except (struct.error, BoxError, KeyError):
        return None


def _from_mfra(read: Reader, size: int) -> FileIndex | None:
    """The index from the tfra of a finished file, checked against the file; None if unusable."""
    if size < _MFRO.size + 8:
        return None
    tail = read(size - _MFRO.size, _MFRO.size)
    if len(tail) != _MFRO.size:
        return None
    box_size, kind, _, mfra_size = _MFRO.unpack(tail)
    start = size - mfra_size
    if box_size != _MFRO.size or kind != b"mfro" or not 0 < start < size or mfra_size > MAX_MFRA:
        return None
    entries = read_tfra(read(start, mfra_size))
    if not entries:
        return None
    index = FileIndex()
    _walk(read, start, index, stop_at_moof=True)
    if index.moov is None:
        return None
    first_moof = index.end
    for track_id, items in entries.items():
        track = index.tracks.get(track_id)
        if track is None or not items:
            continue
        items.sort()
        for position, (time, offset) in enumerate(items):
            if not first_moof <= offset < start or time < 0:
                return None
            if position and time == items[position - 1][0]:
                return None
            track.times.append(time)
            track.offsets.append(offset)
        # The first and last fragments must be where and when the tfra says
        # (the first may start before zero: ffmpeg's tfra then says 0).
        for position in (0, len(items) - 1):
            found = locate_fragment(read, items[position][1], start)
            try:
                moof = read_moof(found[0]) if found is not None else None
            except BoxError:
                moof = None
            if moof is None or moof.track_id != track_id:
                return None
            duration = moof.tfxd_duration or moof.samples_duration(
                index._defaults.get(track_id, 0))
            if moof.tfxd_time is not None:
                listed = listed_time(moof.tfxd_time, duration)
                if listed is None or listed[0] != items[position][0]:
                    return None
                duration = listed[1]
            if position == len(items) - 1:
                track.last_duration = duration
    index.end = start
    index.finished = True
    index.tail = 0
    return index


def locate_fragment(read: Reader, offset: int, size: int) -> tuple[bytes, int, int] | None:
    """``(moof, mdat_offset, mdat_size)`` of the pair at ``offset`` within ``size`` bytes."""
    chunk = read(offset, min(_PEEK, size - offset))
    try:
        header = read_box_header(chunk, 0)
        if header.type != b"moof" or header.size > MAX_HEADER_BOX:
            return None
        if len(chunk) < header.size + 16:
            chunk = read(offset, min(header.size + 32, size - offset))
        mdat = read_box_header(chunk, header.size)
    except BoxError:
        return None
    if mdat.type != b"mdat" or chunk[header.size : header.size + 4] == b"\0\0\0\0":
        return None
    if offset + header.size + mdat.size > size:
        return None
    return chunk[: header.size], offset + header.size, mdat.size


# -- the client manifest (sans-IO) ---------------------------------------------------------


def timeline(levels: Sequence[TrackFragments]) -> list[tuple[int, int]]:
    """The ``(time, duration)`` chunks of a StreamIndex whose QualityLevels are ``levels``.

    A time is listed when every level whose span (first to last fragment)
    covers it has a fragment there; each chunk lasts until the next listed
    one, the last as long as its fragment says. A level whose last fragment
    ends where the presentation's last one starts covers the end too: a crash
    cuts each file after its own last whole fragment, and a chunk listed at
    the very end must not be one some levels do not have.
    """
    levels = [level for level in levels if level.times]
    if not levels:
        return []
    if len(levels) == 1:
        times: Sequence[int] = levels[0].times
    else:
        final = max(level.times[-1] for level in levels)
        spans = [(level.times[0],
                  final if level.times[-1] + level.last_duration >= final else level.times[-1],
                  set(level.times)) for level in levels]
        union = sorted(set().union(*(held for _, _, held in spans)))
        times = [
            t for t in union
            if all(t in held or not first <= t <= last for first, last, held in spans)
        ]
    last = times[-1]
    ends = [lv.times[-1] + lv.last_duration for lv in levels if lv.times[-1] == last]
    last_duration = max(ends, default=last) - last
    chunks = [(t, following - t) for t, following in itertools.pairwise(times)]
    if last_duration <= 0 and chunks:
        last_duration = chunks[-1][1]
    chunks.append((last, max(last_duration, 0)))
    return chunks


def manifest_view(
    levels: Iterable[tuple[TrackInfo, TrackFragments]], version: str = "2.0"
) -> ManifestView:
    """The on-demand ManifestView of tracks and their fragments.

    ``TrackInfo.name`` is the StreamIndex name; StreamIndexes come in the
    order of their first track, QualityLevels by bitrate, highest first. A
    track without fragments is left out, as is a second track at the same
    name and bitrate (``QualityLevels(<bitrate>)`` could not tell them apart).
    """
    groups: dict[str, list[tuple[TrackInfo, TrackFragments]]] = {}
    for info, fragments in levels:
        if not fragments.times:
            continue
        group = groups.setdefault(info.name, [])
        if group and (group[0][0].kind != info.kind
                      or any(other.bitrate == info.bitrate for other, _ in group)):
            continue
        group.append((info, fragments))
    views: list[StreamIndexView] = []
    start: int | None = None
    end = 0
    for name, group in groups.items():
        group.sort(key=lambda item: -item[0].bitrate)
        first = group[0][0]
        chunks = timeline([fragments for _, fragments in group])
        scale = first.timescale or SMOOTH_TIMESCALE
        begin = chunks[0][0] * SMOOTH_TIMESCALE // scale
        finish = (chunks[-1][0] + chunks[-1][1]) * SMOOTH_TIMESCALE // scale
        start = begin if start is None else min(start, begin)
        end = max(end, finish)
        views.append(StreamIndexView(
            kind=first.kind,
            name=name,
            tracks=tuple(info for info, _ in group),
            chunks=chunks,
            language=first.language,
            timescale=scale,
        ))
    return ManifestView(
        stream_indexes=tuple(views),
        is_live=False,
        version=version,
        duration=end - (start or 0),
    )


# -- a presentation on disk ---------------------------------------------------------------------


def _as_listed(
    found: tuple[bytes, int, int], track_id: int, time: int
) -> tuple[bytes, int, int] | None:
    """The pair found where the index says, if it is the fragment the index listed.

    The moof is the file's, re-stamped only when it is listed at 0 but
    starts before zero. None when the file no longer holds that fragment
    there (rewritten in place): better a miss than another fragment under
    a cache header of a year.
    """
    moof, mdat_offset, mdat_size = found
    try:
        fragment = read_moof(moof)
        start = fragment.tfxd_time
        if start is None:
            start = fragment.base_media_decode_time
        if fragment.track_id != track_id:
            return None
        if start is None or start == time:
            return found
        if time != 0 or start > 0:
            return None
        listed = listed_time(start, fragment.tfxd_duration or fragment.samples_duration())
        if listed is None:
            return None
        return retimed(moof, 0, listed[1]), mdat_offset, mdat_size
    except BoxError:
        return None


def _reader(fd: int) -> Reader:
    return lambda offset, size: os.pread(fd, size, offset)


def _key(stat: os.stat_result) -> tuple[int, int, int]:
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


@dataclass(frozen=True, slots=True)
class OnDemandLevel:
    """One QualityLevel being served: its track, its file and its fragments."""

    info: TrackInfo
    path: Path
    inode: int
    fragments: TrackFragments


@dataclass(frozen=True, slots=True)
class OnDemandState:
    """One consistent view of the presentation; replaced whole when the files change."""

    levels: Mapping[tuple[str, int], OnDemandLevel]
    view: ManifestView
    manifest: bytes
    manifest_gzip: bytes
    etag: str
    finished: bool  # every file has its mfra: nothing will change

    @property
    def playable(self) -> bool:
        return bool(self.view.stream_indexes)


class OnDemandPresentation:
    """An archive presentation opened from its ``.ism``, re-indexed when its files change.

    ``refresh`` (blocking: call it from a worker thread) looks at the files
    at most every ``ttl`` seconds, by ``stat``: the .ism is re-read when its
    (inode, size, mtime) changes, an ``.ismv`` that grew is indexed from
    where it was left, one that shrank or was replaced is indexed again.
    ``state`` is always a whole, consistent snapshot for request handlers.
    """

    def __init__(
        self, ism: Path, *, base: Path | None = None, version: str = "2.0", ttl: float = 1.0
    ) -> None:
        self.path = ism
        self.version = version
        self.ttl = ttl
        self._base = os.path.realpath(base if base is not None else ism.parent)
        self._lock = threading.Lock()
        self._ism_key: tuple[int, int, int] | None = None
        self._document = IsmDocument(())
        self._files: dict[Path, tuple[tuple[int, int, int], FileIndex]] = {}
        self._checked = float("-inf")
        self.state: OnDemandState = self._build()
        self.refresh(force=True)

    @property
    def due(self) -> bool:
        """Whether ``refresh`` would look at the files now."""
        return _time.monotonic() - self._checked >= self.ttl

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read what changed on disk; True if the state changed. OSError if the .ism is gone.

        An .ism that cannot be parsed (or is too large) leaves a presentation
        without tracks, logged once per version of the file.
        """
        if not force and not self.due:
            return False
        with self._lock:
            if not force and not self.due:
                return False
            try:
                return self._reload()
            finally:
                self._checked = _time.monotonic()

    def _reload(self) -> bool:
        changed = False
        stat = os.stat(self.path)
        if _key(stat) != self._ism_key:
            self._ism_key = _key(stat)
            try:
                if stat.st_size > MAX_ISM_BYTES:
                    raise ValueError(f"larger than {MAX_ISM_BYTES} bytes")
                self._document = parse_ism(self.path.read_bytes())
            except ValueError as exc:  # nothing to serve until it is rewritten; said once
                log.warning("server manifest %s is unusable: %s", self.path, exc)
                self._document = IsmDocument(())
            changed = True
        files: dict[Path, tuple[tuple[int, int, int], FileIndex]] = {}
        for src in dict.fromkeys(track.src for track in self._document.tracks):
            path = self._resolve(src)
            if path is None:
                continue
            old = self._files.get(path)
            try:
                # A stat each time; the file is opened only when it changed.
                if old is not None and _key(os.stat(path)) == old[0]:
                    files[path] = old
                    continue
                with open(path, "rb") as handle:
                    key = _key(os.fstat(handle.fileno()))
                    if old is not None and old[0] == key:
                        files[path] = old
                        continue
                    previous = old[1] if old is not None and old[0][0] == key[0] else None
                    files[path] = (key, index_file(_reader(handle.fileno()), key[1], previous))
                    changed = True
            except OSError as exc:  # gone, a folder, unreadable: not part of the presentation
                log.debug("archive file %s skipped: %s", path, exc)
                continue
        if files.keys() != self._files.keys():
            changed = True
        self._files = files
        if changed:
            self.state = self._build()
        return changed

    def _resolve(self, src: str) -> Path | None:
        """The file a ``src`` names: relative, within the base folder, else None."""
        if "\\" in src or "\x00" in src or src.startswith("/") or re.match(r"^[A-Za-z]:", src):
            return None
        parts = src.split("/")
        if any(part in ("", ".", "..") for part in parts):
            return None
        path = self.path.parent.joinpath(*parts)
        real = os.path.realpath(path)
        if not real.startswith(self._base + os.sep):
            return None
        return path

    def _build(self) -> OnDemandState:
        pairs: list[tuple[TrackInfo, TrackFragments]] = []
        levels: dict[tuple[str, int], OnDemandLevel] = {}
        used: list[FileIndex] = []
        for track in self._document.tracks:
            path = self._resolve(track.src)
            entry = self._files.get(path) if path is not None else None
            if path is None or entry is None:
                continue
            (inode, _, _), index = entry
            info = index.infos.get(track.track_id)
            fragments = index.tracks.get(track.track_id)
            if info is None or fragments is None:
                continue
            info = merge_manifest(info, ManifestTrack(
                kind=track.kind,
                track_id=track.track_id,
                bitrate=track.bitrate,
                name=track.name or stream_index_name(info),
                language=track.language,
                timescale=track.timescale,
            ))
            used.append(index)
            pairs.append((info, fragments))
            if fragments.times:
                levels.setdefault(
                    (info.name, info.bitrate), OnDemandLevel(info, path, inode, fragments))
        view = manifest_view(pairs, self.version)
        manifest = render_client_manifest(view)
        return OnDemandState(
            levels=levels,
            view=view,
            manifest=manifest,
            manifest_gzip=gzip.compress(manifest, 6),
            etag='"' + hashlib.blake2b(manifest, digest_size=12).hexdigest() + '"',
            finished=bool(used) and all(index.finished for index in used),
        )

    def invalidate(self) -> None:
        """Make the next ``refresh`` look at the files (one changed under the index)."""
        self._checked = float("-inf")

    @property
    def manifest(self) -> bytes:
        """The client manifest as served (IsLive absent, Duration the total)."""
        return self.state.manifest

    def fragment(
        self, name: str, bitrate: int, time: int
    ) -> tuple[bytes, tuple[Path, int, int]] | None:
        """The fragment's moof and where its mdat box is: ``(path, offset, size)``; or None.

        Blocking (reads the moof): call it from a worker thread. The moof is
        the file's, re-stamped only for a fragment listed at 0 that starts
        before zero; a file replaced or rewritten since it was indexed gives
        None and is looked at again at the next ``refresh``.
        """
        level = self.state.levels.get((name, bitrate))
        if level is None:
            return None
        offset = level.fragments.find(time)
        if offset is None:
            return None
        try:
            with open(level.path, "rb") as handle:
                stat = os.fstat(handle.fileno())
                found = None
                if stat.st_ino == level.inode:  # not replaced since it was indexed
                    found = locate_fragment(_reader(handle.fileno()), offset, stat.st_size)
            if found is not None:
                found = _as_listed(found, level.info.track_id, time)
        except OSError:
            found = None
        if found is None:  # the file changed under the index: look again next time
            self.invalidate()
            return None
        moof, mdat_offset, mdat_size = found
        return moof, (level.path, mdat_offset, mdat_size)

    @staticmethod
    def read(mdat_range: tuple[Path, int, int]) -> bytes:
        """The bytes of a range ``fragment`` gave (blocking); OSError if the file got shorter."""
        path, offset, size = mdat_range
        with open(path, "rb") as handle:
            data = os.pread(handle.fileno(), size, offset)
        if len(data) != size:
            raise OSError(f"{path}: {size} bytes expected at {offset}, {len(data)} read")
        return data
