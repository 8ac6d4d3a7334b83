"""The incremental parser of one encoder POST: fragmented MP4 in, events out.

A Smooth Streaming encoder POSTs one long body (chunked transfer encoding):
``ftyp``, the Live Server Manifest Box (a ``uuid`` box), ``moov``, then
``moof``/``mdat`` pairs, one track per fragment, and an ``mfra`` when it
stops (IIS Smooth Streaming live ingest; ISO/IEC 14496-12 §8.8 movie
fragments; MS-SSTR §2.2.4 TfxdBox for fragment times).

:class:`IngestParser` is sans-IO: ``feed`` it the body's chunks as they come
(any sizes, down to single bytes) and it returns the events completed so
far. It holds at most the current top-level box, and refuses a box larger
than its limits as soon as the header says so. Chunks are kept by reference
where they are immutable ``bytes``, so a large mdat is copied once, when its
pieces are joined; small chunks are coalesced first so that memory stays
within a small factor of the box size whatever the chunking.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from smoothlive.media.boxes import (
    SAMPLE_IS_NON_SYNC,
    TKHD,
    TREX,
    BoxError,
    BoxHeader,
    Buffer,
    find_all,
    header_length,
    read_box_header,
)
from smoothlive.media.codecs import tracks_from_moov
from smoothlive.media.fragments import read_moof
from smoothlive.media.model import FragmentData, TrackInfo
from smoothlive.media.servermanifest import (
    LIVE_SERVER_MANIFEST_UUID,
    ManifestTrack,
    decode_smil,
    lsm_payload_text,
    parse_server_manifest,
)

DEFAULT_MAX_BOX_SIZE = 1 << 20  # any top-level box but mdat
DEFAULT_MAX_MDAT_SIZE = 64 << 20

_COALESCE = 64 << 10  # chunks smaller than this are copied together
_KEPT = (b"ftyp", b"moov", b"moof", b"mdat", b"mfra")

# Fragment times and ends must fit the signed 64-bit times of TfxdBox and TfrfBox
# version 1 (MS-SSTR 2.2.4.4-5): the presentation writes them into the moofs it
# serves once the fragment is stored, where a failure would poison the level.
_MIN_TIME, _END_TIME = -(1 << 63), 1 << 63
# The largest moof-relative trun data_offset: a stored moof gets a TfrfBox (and may
# be re-stamped), and its data offsets move by what that adds; they must still fit
# the 32-bit signed field (fragments.py raises otherwise, after the store).
_MAX_DATA_OFFSET = (1 << 31) - 1 - (64 << 10)


@dataclass(frozen=True, slots=True)
class StreamHeader:
    """The stream's ``ftyp`` box, whole."""

    ftyp: bytes


@dataclass(frozen=True, slots=True)
class ServerManifest:
    """The Live Server Manifest (SMIL text) and the tracks it describes by trackID."""

    smil: str
    tracks: dict[int, ManifestTrack] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Movie:
    """The stream's tracks (moov merged with the server manifest) and the ``moov`` box."""

    tracks: list[TrackInfo]
    moov: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Fragment:
    """One fragment: a moof and its mdat."""

    data: FragmentData


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """The encoder ended the stream: the ``mfra`` box it sent, or None."""

    mfra: bytes | None = None


Event = StreamHeader | ServerManifest | Movie | Fragment | EndOfStream


@dataclass(slots=True)
class _Track:
    info: TrackInfo
    default_duration: int = 0  # trex
    default_flags: int = 0  # trex
    next_time: int = 0  # where the next fragment starts when nothing says


@dataclass(frozen=True, slots=True)
class _Pending:
    moof: bytes
    track_id: int
    time: int
    duration: int
    keyframe: bool
    ignored: bool  # a track of a kind not served (hint, metadata)


class IngestParser:
    """Parses one encoder POST body incrementally (see the module docstring).

    ``feed`` and ``close`` raise :class:`BoxError` for a malformed or
    out-of-order stream; after an error the parser stays failed. The error
    raised by ``feed`` carries, as ``events``, the events that the same chunk
    completed before the fault, so that what comes out never depends on how
    the body was cut into chunks (``[]`` on ``close`` and on a failed parser).
    """

    __slots__ = (
        "_box",
        "_error",
        "_header",
        "_ignored",
        "_manifest",
        "_need",
        "_pending",
        "_pieces",
        "_remaining",
        "_skipping",
        "_small",
        "_tracks",
        "_tracks_key",
        "bytes_seen",
        "fragments_seen",
        "max_box_size",
        "max_mdat_size",
    )

    def __init__(
        self,
        *,
        max_box_size: int = DEFAULT_MAX_BOX_SIZE,
        max_mdat_size: int = DEFAULT_MAX_MDAT_SIZE,
    ) -> None:
        self.max_box_size = max_box_size
        self.max_mdat_size = max_mdat_size
        self.bytes_seen = 0
        self.fragments_seen = 0
        self._header = bytearray()
        self._need = 8  # bytes of header wanted before the box can start
        self._box: BoxHeader | None = None
        self._remaining = 0
        self._skipping = False
        self._pieces: list[Buffer] = []
        self._small = bytearray()
        self._manifest: dict[int, ManifestTrack] | None = None
        self._tracks: dict[int, _Track] | None = None
        self._tracks_key: list[tuple] = []
        self._ignored: set[int] = set()
        self._pending: _Pending | None = None
        self._error: BoxError | None = None

    @property
    def tracks(self) -> list[TrackInfo] | None:
        """The tracks of the moov, once it has come."""
        return None if self._tracks is None else [t.info for t in self._tracks.values()]

    @property
    def buffered(self) -> int:
        """Bytes held for the box in progress (never more than the box size limit)."""
        held = len(self._header) + len(self._small)
        return held + sum(len(piece) for piece in self._pieces)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Take the next chunk of the body; the events it completes, in order."""
        if self._error is not None:
            raise _again(self._error)
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        keep = isinstance(view.obj, bytes)  # immutable: safe to hold without a copy
        size = len(view)
        self.bytes_seen += size
        events: list[Event] = []
        position = 0
        try:
            while position < size:
                if self._box is None:
                    take = min(self._need - len(self._header), size - position)
                    self._header += view[position : position + take]
                    position += take
                    if len(self._header) < self._need:
                        break
                    if self._need == 8:
                        self._need = header_length(self._header)
                        if self._need > 8:
                            continue
                    self._start_box(events)
                else:
                    take = min(self._remaining, size - position)
                    if not self._skipping:
                        self._collect(view[position : position + take], keep)
                    position += take
                    self._remaining -= take
                    if not self._remaining:
                        self._finish_box(events)
        except BoxError as exc:
            self._fail(exc, events)
        except (struct.error, IndexError, OverflowError) as exc:  # a bounds check we missed
            self._fail(BoxError(f"malformed box: {exc}"), events)
        return events

    def close(self) -> list[Event]:
        """The body ended: BoxError if it ended inside a box or after a moof with no mdat."""
        if self._error is not None:
            raise _again(self._error)
        if self._box is not None:
            box = self._box
            got = box.size - self._remaining
            self._fail(
                BoxError(f"stream ended inside a {_name(box)} box ({got} of {box.size} bytes)")
            )
        if self._header:
            self._fail(BoxError(f"stream ended inside a box header ({len(self._header)} bytes)"))
        if self._pending is not None:
            self._fail(BoxError("stream ended after a moof without its mdat"))
        return []

    # -- box assembly --------------------------------------------------------------------------

    def _fail(self, error: BoxError, events: list[Event] | None = None) -> None:
        text = str(error)
        if not text.isprintable():  # lxml's messages hold line breaks, box types anything
            error.args = ("".join(c if c.isprintable() else repr(c)[1:-1] for c in text),)
        error.events = events or []  # type: ignore[attr-defined]
        self._error = error
        self._pieces, self._small, self._header = [], bytearray(), bytearray()
        self._box, self._pending = None, None
        raise error

    def _start_box(self, events: list[Event]) -> None:
        header_bytes = bytes(self._header)
        self._header = bytearray()
        self._need = 8
        if header_bytes[:4] == b"\0\0\0\0":
            raise BoxError(
                f"{header_bytes[4:8]!r} box has size 0 (to the end of the stream): "
                "a live stream needs sized boxes"
            )
        box = read_box_header(header_bytes)
        limit = self.max_mdat_size if box.type == b"mdat" else self.max_box_size
        if box.size > limit:
            raise BoxError(f"{_name(box)} box of {box.size} bytes is over the {limit} byte limit")
        self._box = box
        self._remaining = box.size - box.header_size
        self._skipping = not (box.type in _KEPT or box.usertype == LIVE_SERVER_MANIFEST_UUID)
        if not self._skipping:
            self._pieces = [header_bytes]
        if not self._remaining:
            self._finish_box(events)

    def _collect(self, chunk: memoryview, keep: bool) -> None:
        if keep and len(chunk) >= _COALESCE:
            if self._small:
                self._pieces.append(self._small)
                self._small = bytearray()
            self._pieces.append(chunk)
            return
        self._small += chunk
        if len(self._small) >= _COALESCE:
            self._pieces.append(self._small)
            self._small = bytearray()

    def _finish_box(self, events: list[Event]) -> None:
        box = self._box
        assert box is not None
        self._box = None
        if self._skipping:
            return
        if self._small:
            self._pieces.append(self._small)
        data = b"".join(self._pieces)
        self._pieces, self._small = [], bytearray()
        self._dispatch(box, data, events)

    # -- the stream's grammar ------------------------------------------------------------------

    def _dispatch(self, box: BoxHeader, data: bytes, events: list[Event]) -> None:
        kind = box.type
        if kind == b"mdat":
            self._on_mdat(data, events)
        elif kind == b"moof":
            self._on_moof(data)
        elif kind == b"moov":
            self._on_moov(data, events)
        elif kind == b"ftyp":
            events.append(StreamHeader(data))
        elif kind == b"mfra":
            if self._pending is not None:
                raise BoxError("mfra after a moof without its mdat")
            events.append(EndOfStream(data))
        else:  # the Live Server Manifest Box
            document = lsm_payload_text(memoryview(data)[box.header_size :])
            smil = decode_smil(document)
            self._manifest = parse_server_manifest(document)
            events.append(ServerManifest(smil, self._manifest))

    def _on_moov(self, moov: bytes, events: list[Event]) -> None:
        tracks = tracks_from_moov(moov, self._manifest)
        own = tracks_from_moov(moov) if self._manifest else tracks  # the moov's word alone
        key = [(t.track_id, t.identity, t.timescale) for t in [*tracks, *own]]
        if self._tracks is not None:
            if key != self._tracks_key:
                raise BoxError("a second moov with different tracks")
            return
        if not tracks:
            raise BoxError("the moov has no video, audio or text track")
        for info in tracks:
            # The Live Server Manifest may say timescale 0 (or more than 32 bits) where
            # the mdhd cannot: every output divides by it and writes it in 32 bits.
            if not 0 < info.timescale <= 0xFFFFFFFF:
                raise BoxError(f"track {info.track_id} has timescale {info.timescale}")
        states: dict[int, _Track] = {}
        for info in tracks:
            state = _Track(info)
            if info.trex:
                _, _, trex = TREX.read(info.trex, read_box_header(info.trex))
                state.default_duration = trex.default_sample_duration
                state.default_flags = trex.default_sample_flags
            states[info.track_id] = state
        self._ignored = _all_track_ids(moov) - states.keys()
        self._tracks, self._tracks_key = states, key
        events.append(Movie(tracks, moov))

    def _on_moof(self, moof: bytes) -> None:
        if self._tracks is None:
            raise BoxError("moof before the moov")
        if self._pending is not None:
            raise BoxError("moof after a moof without its mdat")
        fragment = read_moof(moof)
        track_id = fragment.track_id
        state = self._tracks.get(track_id)
        if state is None:
            if track_id not in self._ignored:
                raise BoxError(f"moof for track {track_id}, which the moov does not have")
            self._pending = _Pending(moof, track_id, 0, 0, False, ignored=True)
            return
        if fragment.tfxd_time is not None:
            time, duration = fragment.tfxd_time, fragment.tfxd_duration or 0
        else:
            time = fragment.base_media_decode_time
            if time is None:
                time = state.next_time
            duration = fragment.samples_duration(state.default_duration)
        if not _MIN_TIME <= time <= time + duration < _END_TIME:
            raise BoxError(
                f"fragment at {time} for {duration} does not fit 64-bit signed times")
        if fragment.tfhd.moof_relative:
            for _, run in fragment.truns:
                if run.data_offset is not None and not 0 <= run.data_offset <= min(
                        len(moof) + self.max_mdat_size, _MAX_DATA_OFFSET):
                    raise BoxError(f"trun data_offset {run.data_offset} is not in the fragment")
        flags = fragment.first_sample_flags(state.default_flags)
        keyframe = not flags & SAMPLE_IS_NON_SYNC
        self._pending = _Pending(moof, track_id, time, duration, keyframe, ignored=False)

    def _on_mdat(self, mdat: bytes, events: list[Event]) -> None:
        pending = self._pending
        if pending is None:
            raise BoxError("mdat without a moof")
        self._pending = None
        if pending.ignored:
            return
        assert self._tracks is not None
        self._tracks[pending.track_id].next_time = pending.time + pending.duration
        self.fragments_seen += 1
        events.append(
            Fragment(
                FragmentData(
                    track_id=pending.track_id,
                    time=pending.time,
                    duration=pending.duration,
                    moof=pending.moof,
                    mdat=mdat,
                    keyframe=pending.keyframe,
                )
            )
        )


def _again(error: BoxError) -> BoxError:
    """The error of a failed parser, raised again without the events it first carried."""
    again = BoxError(*error.args)
    again.events = []  # type: ignore[attr-defined]
    return again


def _name(box: BoxHeader) -> str:
    if box.usertype is not None:
        return f"uuid {box.usertype.hex()}"
    name = box.type.decode("latin-1")
    # A type read from garbage may hold line breaks or controls: escaped, it cannot
    # forge a line of the log or of the 400 body the message ends up in.
    return name if name.isprintable() else repr(box.type)


def _all_track_ids(moov: bytes) -> set[int]:
    return {TKHD.read(moov, tkhd)[2].track_id for tkhd in find_all(moov, b"moov/trak/tkhd")}
