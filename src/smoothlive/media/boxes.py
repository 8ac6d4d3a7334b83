"""ISO base media file format boxes: headers, walking, building, and box layouts.

The primitives follow ISO/IEC 14496-12 §4.2 (Object structure): a box is a
32-bit size and a four-character type, a 64-bit ``largesize`` when size is 1,
"to the end of the container" when size is 0, and a 16-byte ``usertype`` when
the type is ``uuid``. A full box adds an 8-bit version and 24-bit flags.

Every box this package reads is also a box it may write, so each is defined
once (the Shaka Packager idea): a :class:`FullBoxLayout` is a per-version
``struct`` layout that both ``read``\\s and ``build``\\s a fixed full box;
:class:`TrackFragmentHeader` and :class:`TrackRun` hold the optional,
flag-driven fields of ``tfhd`` and ``trun`` in one table used both ways.

Everything works on buffers (``bytes``, ``bytearray``, ``memoryview``) with
``struct.unpack_from`` and slices; a malformed structure raises
:class:`BoxError`, never ``IndexError`` or ``struct.error``.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Buffer = bytes | bytearray | memoryview
Payload = Buffer | Sequence[Buffer]  # one buffer, or several joined once

_SIZE_TYPE = struct.Struct(">I4s")
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")

# Sizes beyond this are not boxes anyone can hold (2**48 bytes = 256 TiB).
MAX_BOX_SIZE = 1 << 48
UUID = b"uuid"


class BoxError(ValueError):
    """A malformed or unacceptable box structure."""


@dataclass(frozen=True, slots=True)
class BoxHeader:
    """A box header (ISO/IEC 14496-12 §4.2) and where the box sits in its buffer.

    ``size`` is the whole box, header included (size 0 resolved to the end of
    the container); ``header_size`` is 8, 16 with a largesize, plus 16 for a
    ``uuid`` usertype.
    """

    type: bytes
    size: int
    header_size: int
    usertype: bytes | None = None
    offset: int = 0

    @property
    def end(self) -> int:
        return self.offset + self.size

    @property
    def payload_offset(self) -> int:
        return self.offset + self.header_size

    @property
    def payload_size(self) -> int:
        return self.size - self.header_size


def header_length(buf: Buffer, offset: int = 0) -> int:
    """How many bytes the header starting at ``offset`` takes, from its first 8 bytes."""
    if len(buf) - offset < 8:
        raise BoxError("truncated box header")
    size, box_type = _SIZE_TYPE.unpack_from(buf, offset)
    return (16 if size == 1 else 8) + (16 if box_type == UUID else 0)


def read_box_header(buf: Buffer, offset: int = 0, end: int | None = None) -> BoxHeader:
    """The header of the box at ``offset``; ``end`` bounds it (default: the buffer's end).

    Only the header has to be in the buffer; whether the box body fits is the
    caller's business (``iter_boxes`` checks it).
    """
    if end is None:
        end = len(buf)
    available = end - offset
    if available < 8:
        raise BoxError(f"truncated box header at {offset}")
    size, box_type = _SIZE_TYPE.unpack_from(buf, offset)
    header_size = 8
    if size == 1:
        if available < 16:
            raise BoxError(f"truncated largesize in {box_type!r} header at {offset}")
        (size,) = _U64.unpack_from(buf, offset + 8)
        header_size = 16
    elif size == 0:
        size = available
    usertype = None
    if box_type == UUID:
        if available < header_size + 16:
            raise BoxError(f"truncated uuid usertype at {offset}")
        usertype = bytes(buf[offset + header_size : offset + header_size + 16])
        header_size += 16
    if size < header_size:
        raise BoxError(f"{box_type!r} box at {offset} has size {size} < header {header_size}")
    if size > MAX_BOX_SIZE:
        raise BoxError(f"{box_type!r} box at {offset} has an absurd size {size}")
    return BoxHeader(box_type, size, header_size, usertype, offset)


def iter_boxes(buf: Buffer, start: int = 0, end: int | None = None) -> Iterator[BoxHeader]:
    """The boxes laid end to end in ``buf[start:end]``, each checked to fit."""
    if end is None:
        end = len(buf)
    offset = start
    while offset < end:
        header = read_box_header(buf, offset, end)
        if header.size > end - offset:
            raise BoxError(
                f"{header.type!r} box at {offset} runs past its container "
                f"({header.size} > {end - offset} bytes)"
            )
        yield header
        offset += header.size


def children(buf: Buffer, parent: BoxHeader, skip: int = 0) -> Iterator[BoxHeader]:
    """The child boxes of ``parent``, after ``skip`` bytes of its own fields."""
    return iter_boxes(buf, parent.payload_offset + skip, parent.end)


def _path(path: bytes | str) -> list[bytes]:
    if isinstance(path, str):
        path = path.encode("ascii")
    return [part for part in path.split(b"/") if part]


def find_all(
    buf: Buffer, path: bytes | str, start: int = 0, end: int | None = None
) -> Iterator[BoxHeader]:
    """Every box reached by ``path`` (``b"moov/trak/mdia"``), depth first, in order."""
    parts = _path(path)
    if not parts:
        return iter(())
    return _find_all(buf, parts, start, len(buf) if end is None else end)


def _find_all(buf: Buffer, parts: list[bytes], start: int, end: int) -> Iterator[BoxHeader]:
    head, rest = parts[0], parts[1:]
    for header in iter_boxes(buf, start, end):
        if header.type == head:
            if rest:
                yield from _find_all(buf, rest, header.payload_offset, header.end)
            else:
                yield header


def find(
    buf: Buffer, path: bytes | str, start: int = 0, end: int | None = None
) -> BoxHeader | None:
    """The first box reached by ``path``, or None."""
    return next(find_all(buf, path, start, end), None)


def find_uuid(
    buf: Buffer, usertype: bytes, start: int = 0, end: int | None = None
) -> BoxHeader | None:
    """The first ``uuid`` box with ``usertype`` among the boxes of ``buf[start:end]``."""
    for header in iter_boxes(buf, start, end):
        if header.usertype == usertype:
            return header
    return None


def payload(buf: Buffer, header: BoxHeader) -> memoryview:
    """The body of a box (after its header), without copying."""
    return memoryview(buf)[header.payload_offset : header.end]


# -- building -------------------------------------------------------------------------------


def _parts(body: Payload) -> list[Buffer]:
    if isinstance(body, (bytes, bytearray, memoryview)):
        return [body]
    return list(body)


def _nbytes(part: Buffer) -> int:
    return part.nbytes if isinstance(part, memoryview) else len(part)


def box_header_bytes(
    box_type: bytes, size: int, *, usertype: bytes | None = None, large: bool = False
) -> bytes:
    """A header for a box of total ``size``; a largesize one when asked or needed."""
    if usertype is not None and len(usertype) != 16:
        raise BoxError("a uuid usertype is 16 bytes")
    tail = usertype or b""
    if large or size > 0xFFFFFFFF:
        return _SIZE_TYPE.pack(1, box_type) + _U64.pack(size) + tail
    return _SIZE_TYPE.pack(size, box_type) + tail


def box(box_type: bytes, body: Payload = b"") -> bytes:
    """A whole box: header and ``body`` (one buffer or a sequence joined once)."""
    parts = _parts(body)
    size = 8 + sum(_nbytes(p) for p in parts)
    if size > 0xFFFFFFFF:
        size += 8
    return b"".join([box_header_bytes(box_type, size), *parts])


def version_flags(version: int, flags: int) -> bytes:
    """The FullBox version and flags word (ISO/IEC 14496-12 §4.2)."""
    if not 0 <= version <= 0xFF or not 0 <= flags <= 0xFFFFFF:
        raise BoxError(f"bad full box version {version} or flags {flags:#x}")
    return _U32.pack(version << 24 | flags)


def full_box(box_type: bytes, version: int, flags: int, body: Payload = b"") -> bytes:
    """A whole full box: header, version, flags and ``body``."""
    return box(box_type, [version_flags(version, flags), *_parts(body)])


def uuid_box(
    usertype: bytes, body: Payload = b"", *, version: int | None = None, flags: int = 0
) -> bytes:
    """A whole ``uuid`` box; with ``version``, a full box (as TfxdBox and TfrfBox are)."""
    parts = _parts(body)
    if version is not None:
        parts.insert(0, version_flags(version, flags))
    size = 24 + sum(_nbytes(p) for p in parts)
    if size > 0xFFFFFFFF:
        size += 8
    return b"".join([box_header_bytes(UUID, size, usertype=usertype), *parts])


def read_version_flags(buf: Buffer, header: BoxHeader) -> tuple[int, int]:
    """The version and flags of a full box."""
    (word,) = unpack(_U32, buf, header.payload_offset, header.end, f"{header.type!r} full box")
    return word >> 24, word & 0xFFFFFF


def unpack(layout: struct.Struct, buf: Buffer, offset: int, end: int, what: str) -> tuple:
    """``layout.unpack_from(buf, offset)``, refusing to read at or past ``end``."""
    end = min(end, len(buf))
    if offset < 0 or end - offset < layout.size:
        raise BoxError(f"{what}: truncated ({max(end - offset, 0)} < {layout.size} bytes)")
    return layout.unpack_from(buf, offset)


# -- box layouts: one definition reads and writes -------------------------------------------


class FullBoxLayout:
    """A full box whose body is a fixed ``struct`` layout per version.

    ``read`` gives ``(version, flags, values)`` with ``values`` a named tuple;
    ``build`` writes the same fields back. Trailing bytes after the layout are
    allowed when reading (boxes grow new fields over time).
    """

    __slots__ = ("box_type", "fields", "structs", "usertype", "values")

    def __init__(
        self,
        box_type: bytes,
        name: str,
        fields: Sequence[str],
        formats: Mapping[int, str],
        *,
        usertype: bytes | None = None,
    ) -> None:
        self.box_type = box_type
        self.usertype = usertype
        self.fields = tuple(fields)
        self.structs = {v: struct.Struct(">" + f) for v, f in formats.items()}
        self.values = namedtuple(name, self.fields)  # type: ignore[misc]

    def read(self, buf: Buffer, header: BoxHeader) -> tuple[int, int, Any]:
        """``(version, flags, values)`` of the box ``header`` points at in ``buf``."""
        version, flags = read_version_flags(buf, header)
        layout = self.structs.get(version)
        if layout is None:
            raise BoxError(f"{self.values.__name__} version {version} is not supported")
        start = header.payload_offset + 4
        values = unpack(layout, buf, start, header.end, self.values.__name__)
        return version, flags, self.values._make(values)

    def build(self, *values: Any, version: int = 0, flags: int = 0) -> bytes:
        """The whole box carrying ``values`` (in field order) as ``version``."""
        layout = self.structs.get(version)
        if layout is None:
            raise BoxError(f"{self.values.__name__} version {version} is not supported")
        try:
            body = layout.pack(*values)
        except struct.error as exc:
            raise BoxError(f"{self.values.__name__}: {exc}") from None
        if self.usertype is not None:
            return uuid_box(self.usertype, body, version=version, flags=flags)
        return full_box(self.box_type, version, flags, body)

    def size(self, version: int) -> int:
        """The whole box size for ``version`` (no largesize)."""
        return (24 if self.usertype else 8) + 4 + self.structs[version].size


# ISO/IEC 14496-12 §8.8.12 TrackFragmentBaseMediaDecodeTimeBox.
TFDT = FullBoxLayout(b"tfdt", "Tfdt", ["base_media_decode_time"], {0: "I", 1: "Q"})
# §8.8.5 MovieFragmentHeaderBox.
MFHD = FullBoxLayout(b"mfhd", "Mfhd", ["sequence_number"], {0: "I"})
# §8.8.3 TrackExtendsBox.
TREX = FullBoxLayout(
    b"trex",
    "Trex",
    [
        "track_id",
        "default_sample_description_index",
        "default_sample_duration",
        "default_sample_size",
        "default_sample_flags",
    ],
    {0: "IIIII"},
)
# §8.4.2 MediaHeaderBox (language: packed ISO-639-2/T, then pre_defined).
MDHD = FullBoxLayout(
    b"mdhd",
    "Mdhd",
    ["creation_time", "modification_time", "timescale", "duration", "language"],
    {0: "IIIIH2x", 1: "QQIQH2x"},
)
# §8.3.2 TrackHeaderBox (width and height are 16.16 fixed point).
TKHD = FullBoxLayout(
    b"tkhd",
    "Tkhd",
    [
        "creation_time",
        "modification_time",
        "track_id",
        "duration",
        "layer",
        "alternate_group",
        "volume",
        "matrix",
        "width",
        "height",
    ],
    {0: "III4xI8xhhh2x36sII", 1: "QQI4xQ8xhhh2x36sII"},
)
# §8.4.3 HandlerBox (the name string that follows is not read).
HDLR = FullBoxLayout(b"hdlr", "Hdlr", ["pre_defined", "handler_type"], {0: "I4s12x"})

# MS-SSTR §2.2.4.4 TfxdBox: the fragment's absolute time and duration. Version 1
# times are read as signed: encoders write pre-roll (AAC priming) as negative.
TFXD_UUID = bytes.fromhex("6d1d9b0542d544e680e2141daff757b2")
TFXD = FullBoxLayout(UUID, "Tfxd", ["time", "duration"], {0: "II", 1: "qQ"}, usertype=TFXD_UUID)

# MS-SSTR §2.2.4.5 TfrfBox: the times and durations of following fragments.
TFRF_UUID = bytes.fromhex("d4807ef2ca3946958e5426cb9e46a79f")
_TFRF_ENTRY = {0: "II", 1: "qQ"}  # per version: time, duration (64-bit times signed)
MAX_TFRF_ENTRIES = 255  # FragmentCount is one byte


def read_tfrf(buf: Buffer, header: BoxHeader) -> list[tuple[int, int]]:
    """The ``(time, duration)`` entries of a TfrfBox (MS-SSTR §2.2.4.5)."""
    version, _ = read_version_flags(buf, header)
    if version not in _TFRF_ENTRY:
        raise BoxError(f"TfrfBox version {version} is not supported")
    start = header.payload_offset + 4
    if header.end - start < 1:
        raise BoxError("TfrfBox: truncated fragment count")
    count = buf[start]
    fmt = ">" + _TFRF_ENTRY[version] * count
    values = unpack(struct.Struct(fmt), buf, start + 1, header.end, "TfrfBox")
    return list(zip(values[0::2], values[1::2], strict=True))


def build_tfrf(entries: Sequence[tuple[int, int]], version: int = 1) -> bytes:
    """A whole TfrfBox (MS-SSTR §2.2.4.5) carrying ``entries``; at most 255 of them."""
    if len(entries) > MAX_TFRF_ENTRIES:
        raise BoxError(f"a TfrfBox holds at most {MAX_TFRF_ENTRIES} entries")
    if version not in _TFRF_ENTRY:
        raise BoxError(f"TfrfBox version {version} is not supported")
    fmt = ">B" + _TFRF_ENTRY[version] * len(entries)
    try:
        body = struct.pack(fmt, len(entries), *(v for entry in entries for v in entry))
    except struct.error as exc:
        raise BoxError(f"TfrfBox: {exc}") from None
    return uuid_box(TFRF_UUID, body, version=version)


# -- tfhd and trun: optional fields driven by flags -------------------------------------------

# tf_flags, ISO/IEC 14496-12 §8.8.7.1
BASE_DATA_OFFSET_PRESENT = 0x000001
SAMPLE_DESCRIPTION_INDEX_PRESENT = 0x000002
DEFAULT_SAMPLE_DURATION_PRESENT = 0x000008
DEFAULT_SAMPLE_SIZE_PRESENT = 0x000010
DEFAULT_SAMPLE_FLAGS_PRESENT = 0x000020
DURATION_IS_EMPTY = 0x010000
DEFAULT_BASE_IS_MOOF = 0x020000

# tr_flags, §8.8.8.1
DATA_OFFSET_PRESENT = 0x000001
FIRST_SAMPLE_FLAGS_PRESENT = 0x000004
SAMPLE_DURATION_PRESENT = 0x000100
SAMPLE_SIZE_PRESENT = 0x000200
SAMPLE_FLAGS_PRESENT = 0x000400
SAMPLE_COMPOSITION_TIME_OFFSETS_PRESENT = 0x000800

# sample_flags, §8.8.3.1: sample_is_non_sync_sample.
SAMPLE_IS_NON_SYNC = 0x00010000

_TFHD_OPTIONAL = (
    (BASE_DATA_OFFSET_PRESENT, "base_data_offset", _U64),
    (SAMPLE_DESCRIPTION_INDEX_PRESENT, "sample_description_index", _U32),
    (DEFAULT_SAMPLE_DURATION_PRESENT, "default_sample_duration", _U32),
    (DEFAULT_SAMPLE_SIZE_PRESENT, "default_sample_size", _U32),
    (DEFAULT_SAMPLE_FLAGS_PRESENT, "default_sample_flags", _U32),
)
_TFHD_PRESENCE = sum(flag for flag, _, _ in _TFHD_OPTIONAL)


@dataclass(frozen=True, slots=True)
class TrackFragmentHeader:
    """TrackFragmentHeaderBox, ``tfhd`` (ISO/IEC 14496-12 §8.8.7).

    ``flags`` keeps the bits that are not presence bits (duration-is-empty,
    default-base-is-moof); presence follows from which fields are set.
    """

    track_id: int
    flags: int = 0
    base_data_offset: int | None = None
    sample_description_index: int | None = None
    default_sample_duration: int | None = None
    default_sample_size: int | None = None
    default_sample_flags: int | None = None

    @classmethod
    def read(cls, buf: Buffer, header: BoxHeader) -> TrackFragmentHeader:
        _, flags = read_version_flags(buf, header)
        offset, end = header.payload_offset + 4, header.end
        (track_id,) = unpack(_U32, buf, offset, end, "tfhd")
        offset += 4
        optional: dict[str, int] = {}
        for flag, name, layout in _TFHD_OPTIONAL:
            if flags & flag:
                (optional[name],) = unpack(layout, buf, offset, end, "tfhd")
                offset += layout.size
        return cls(track_id, flags & ~_TFHD_PRESENCE, **optional)

    def build(self) -> bytes:
        flags = self.flags & ~_TFHD_PRESENCE
        parts = [_U32.pack(self.track_id)]
        for flag, name, layout in _TFHD_OPTIONAL:
            value = getattr(self, name)
            if value is not None:
                flags |= flag
                parts.append(layout.pack(value))
        return full_box(b"tfhd", 0, flags, parts)

    @property
    def moof_relative(self) -> bool:
        """Whether trun data offsets count from the moof (no explicit base offset).

        With neither base-data-offset-present nor default-base-is-moof, the
        base of the first track fragment is the moof too (§8.8.7.1); this
        package only handles one track fragment per moof.
        """
        return self.base_data_offset is None


_TRUN_SAMPLE_FIELDS = (
    (SAMPLE_DURATION_PRESENT, "durations"),
    (SAMPLE_SIZE_PRESENT, "sizes"),
    (SAMPLE_FLAGS_PRESENT, "flags"),
    (SAMPLE_COMPOSITION_TIME_OFFSETS_PRESENT, "composition_offsets"),
)


@dataclass(frozen=True, slots=True)
class TrackRun:
    """TrackRunBox, ``trun`` (ISO/IEC 14496-12 §8.8.8).

    The per-sample table is kept as raw bytes and read column by column on
    demand (one ``unpack_from`` per column, no per-sample parsing on the hot
    path). ``data_offset_at`` is where data_offset sits, counted from the
    start of the box, so that a rewriter can patch it in place.
    """

    version: int
    flags: int
    sample_count: int
    data_offset: int | None = None
    first_sample_flags: int | None = None
    table: bytes = b""
    data_offset_at: int | None = None

    @classmethod
    def read(cls, buf: Buffer, header: BoxHeader) -> TrackRun:
        version, flags = read_version_flags(buf, header)
        offset, end = header.payload_offset + 4, min(header.end, len(buf))
        (count,) = unpack(_U32, buf, offset, end, "trun")
        offset += 4
        data_offset = data_offset_at = first_flags = None
        if flags & DATA_OFFSET_PRESENT:
            data_offset_at = offset - header.offset
            (data_offset,) = unpack(_I32, buf, offset, end, "trun data_offset")
            offset += 4
        if flags & FIRST_SAMPLE_FLAGS_PRESENT:
            (first_flags,) = unpack(_U32, buf, offset, end, "trun first_sample_flags")
            offset += 4
        row = 4 * sum(1 for flag, _ in _TRUN_SAMPLE_FIELDS if flags & flag)
        if row * count > end - offset:
            raise BoxError(f"trun: {count} samples of {row} bytes run past the box")
        table = bytes(buf[offset : offset + row * count])
        return cls(version, flags, count, data_offset, first_flags, table, data_offset_at)

    def column(self, name: str) -> tuple[int, ...] | None:
        """A per-sample column (``durations``, ``sizes``, ``flags``, ``composition_offsets``)."""
        present = [n for flag, n in _TRUN_SAMPLE_FIELDS if self.flags & flag]
        if name not in present:
            return None
        width = len(present)
        kind = "i" if name == "composition_offsets" and self.version == 1 else "I"
        values = struct.unpack_from(f">{width * self.sample_count}{kind}", self.table)
        return values[present.index(name) :: width]

    def first_flags(self) -> int | None:
        """The first sample's flags as the trun gives them, or None (use the defaults)."""
        if self.first_sample_flags is not None:
            return self.first_sample_flags
        if self.flags & SAMPLE_FLAGS_PRESENT and self.sample_count:
            # durations and sizes, when present, precede the flags in a row
            skip = 4 * sum(1 for flag, _ in _TRUN_SAMPLE_FIELDS[:2] if self.flags & flag)
            return _U32.unpack_from(self.table, skip)[0]
        return None

    @classmethod
    def build(
        cls,
        *,
        version: int = 0,
        data_offset: int | None = None,
        first_sample_flags: int | None = None,
        durations: Sequence[int] | None = None,
        sizes: Sequence[int] | None = None,
        flags: Sequence[int] | None = None,
        composition_offsets: Sequence[int] | None = None,
        sample_count: int | None = None,
    ) -> bytes:
        """A whole trun box; present columns set their flags, all must have one length."""
        columns = {
            "durations": durations,
            "sizes": sizes,
            "flags": flags,
            "composition_offsets": composition_offsets,
        }
        tr_flags = 0
        present: list[Sequence[int]] = []
        for flag, name in _TRUN_SAMPLE_FIELDS:
            column = columns[name]
            if column is not None:
                tr_flags |= flag
                present.append(column)
        lengths = {len(c) for c in present}
        if sample_count is None:
            sample_count = min(lengths, default=0)
        if lengths - {sample_count}:
            raise BoxError("trun columns differ in length from the sample count")
        parts = [_U32.pack(sample_count)]
        if data_offset is not None:
            tr_flags |= DATA_OFFSET_PRESENT
            parts.append(_I32.pack(data_offset))
        if first_sample_flags is not None:
            tr_flags |= FIRST_SAMPLE_FLAGS_PRESENT
            parts.append(_U32.pack(first_sample_flags))
        if present:
            rows = [v & 0xFFFFFFFF for row in zip(*present, strict=True) for v in row]
            parts.append(struct.pack(f">{len(rows)}I", *rows))
        return full_box(b"trun", version, tr_flags, parts)
