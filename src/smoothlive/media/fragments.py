"""Reading and rewriting movie fragments: one ``moof`` with one ``traf``.

A Smooth Streaming fragment response is the encoder's ``moof`` and ``mdat``
(MS-SSTR §2.2.4, ISO/IEC 14496-12 §8.8). The server adds a TfrfBox to tell
live clients about the fragments that followed (MS-SSTR §2.2.4.5), re-stamps
times (TfxdBox §2.2.4.4, ``tfdt`` §8.8.12), and later outputs need a ``tfdt``.

Every rewrite here is one ``bytes`` join over slices of the original moof:
the boxes it does not touch are copied as they are, never re-serialised. A
rewrite that changes the moof's size moves the samples in the mdat that
follows, so trun ``data_offset`` values that count from the moof are shifted
by the same amount (§8.8.7.1: base-data-offset-present and
default-base-is-moof); an explicit base_data_offset is left alone.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from smoothlive.media.boxes import (
    TFDT,
    TFRF_UUID,
    TFXD,
    TFXD_UUID,
    BoxError,
    BoxHeader,
    Buffer,
    TrackFragmentHeader,
    TrackRun,
    box_header_bytes,
    build_tfrf,
    children,
    read_box_header,
    unpack,
)

_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class TrackFragment:
    """What a moof with a single track fragment says, and where its boxes sit.

    Offsets in the headers count from the start of the moof.
    """

    moof: BoxHeader
    traf: BoxHeader
    tfhd: TrackFragmentHeader
    truns: tuple[tuple[BoxHeader, TrackRun], ...]
    sequence_number: int | None = None
    tfxd: BoxHeader | None = None
    tfxd_version: int = 1
    tfxd_time: int | None = None
    tfxd_duration: int | None = None
    tfdt: BoxHeader | None = None
    tfdt_version: int = 1
    base_media_decode_time: int | None = None
    tfrfs: tuple[BoxHeader, ...] = ()

    @property
    def track_id(self) -> int:
        return self.tfhd.track_id

    @property
    def sample_count(self) -> int:
        return sum(run.sample_count for _, run in self.truns)

    def samples_duration(self, default_duration: int = 0) -> int:
        """The sum of the sample durations (trun, else tfhd default, else ``default_duration``)."""
        default = self.tfhd.default_sample_duration
        if default is None:
            default = default_duration
        total = 0
        for _, run in self.truns:
            durations = run.column("durations")
            total += sum(durations) if durations is not None else default * run.sample_count
        return total

    def first_sample_flags(self, default_flags: int = 0) -> int:
        """The first sample's flags (trun, then tfhd default, then ``default_flags``: trex)."""
        for _, run in self.truns:
            flags = run.first_flags()
            if flags is not None:
                return flags
            if run.sample_count:
                break
        if self.tfhd.default_sample_flags is not None:
            return self.tfhd.default_sample_flags
        return default_flags


def read_moof(moof: Buffer) -> TrackFragment:
    """Parse a whole moof box holding exactly one traf (ISO/IEC 14496-12 §8.8.4)."""
    header = read_box_header(moof, 0)
    if header.type != b"moof":
        raise BoxError(f"expected a moof box, got {header.type!r}")
    if header.size != len(moof):
        raise BoxError(f"moof size {header.size} does not match its {len(moof)} bytes")
    trafs: list[BoxHeader] = []
    sequence_number = None
    for child in children(moof, header):
        if child.type == b"traf":
            trafs.append(child)
        elif child.type == b"mfhd":
            (sequence_number,) = unpack(_U32, moof, child.payload_offset + 4, child.end, "mfhd")
    if len(trafs) != 1:
        raise BoxError("one track per moof is required" if trafs else "moof has no traf")
    traf = trafs[0]
    tfhd = None
    truns: list[tuple[BoxHeader, TrackRun]] = []
    tfrfs: list[BoxHeader] = []
    tfxd = tfdt = None
    tfxd_version = tfdt_version = 1
    tfxd_time = tfxd_duration = decode_time = None
    for child in children(moof, traf):
        kind = child.type
        if kind == b"tfhd":
            if tfhd is not None:
                raise BoxError("traf has two tfhd boxes")
            tfhd = TrackFragmentHeader.read(moof, child)
        elif kind == b"trun":
            truns.append((child, TrackRun.read(moof, child)))
        elif kind == b"tfdt":
            tfdt = child
            tfdt_version, _, (decode_time,) = TFDT.read(moof, child)
        elif child.usertype == TFXD_UUID:
            tfxd = child
            tfxd_version, _, (tfxd_time, tfxd_duration) = TFXD.read(moof, child)
        elif child.usertype == TFRF_UUID:
            tfrfs.append(child)
    if tfhd is None:
        raise BoxError("traf has no tfhd")
    return TrackFragment(
        moof=header,
        traf=traf,
        tfhd=tfhd,
        truns=tuple(truns),
        sequence_number=sequence_number,
        tfxd=tfxd,
        tfxd_version=tfxd_version,
        tfxd_time=tfxd_time,
        tfxd_duration=tfxd_duration,
        tfdt=tfdt,
        tfdt_version=tfdt_version,
        base_media_decode_time=decode_time,
        tfrfs=tuple(tfrfs),
    )


def sample_ranges(fragment: TrackFragment, default_size: int = 0) -> list[tuple[int, int]]:
    """``(offset, size)`` of every sample, offsets counted from the start of the moof.

    Sizes come from the trun, else the tfhd default, else ``default_size``
    (trex). Only for moof-relative data offsets (no tfhd base_data_offset).
    """
    if not fragment.tfhd.moof_relative:
        raise BoxError("sample offsets are absolute (tfhd base_data_offset)")
    default = fragment.tfhd.default_sample_size
    if default is None:
        default = default_size
    ranges: list[tuple[int, int]] = []
    position = 0  # §8.8.7.1: the first track fragment's base is the moof
    for _, run in fragment.truns:
        if run.data_offset is not None:
            position = run.data_offset
        sizes = run.column("sizes") or (default,) * run.sample_count
        for size in sizes:
            ranges.append((position, size))
            position += size
    return ranges


# -- building and rewriting ------------------------------------------------------------------


def tfxd_box(time: int, duration: int) -> bytes:
    """A version 1 TfxdBox (MS-SSTR §2.2.4.4): 64-bit time (signed) and duration."""
    return TFXD.build(time, duration, version=1)


def tfrf_box(entries: Sequence[tuple[int, int]]) -> bytes:
    """A version 1 TfrfBox (MS-SSTR §2.2.4.5) listing ``(time, duration)`` of next fragments."""
    return build_tfrf(entries, version=1)


def with_lookahead(moof: Buffer, entries: Sequence[tuple[int, int]]) -> bytes:
    """A copy of ``moof`` whose traf ends with a TfrfBox of ``entries``.

    An existing TfrfBox is replaced; with no entries, it is only removed.
    """
    fragment = read_moof(moof)
    tfrf = tfrf_box(entries) if entries else b""
    return _rewrite(moof, fragment, {h.offset: b"" for h in fragment.tfrfs}, append=tfrf)


def retimed(moof: Buffer, time: int, duration: int | None = None) -> bytes:
    """A copy of ``moof`` whose TfxdBox (and tfdt, if any) carry ``time``.

    The TfxdBox is rewritten as version 1 and keeps its duration unless
    ``duration`` is given; a moof without a TfxdBox gets one only when
    ``duration`` is given. A tfdt keeps its version when ``time`` fits.
    """
    fragment = read_moof(moof)
    replacements: dict[int, bytes] = {}
    append = b""
    if fragment.tfxd is not None:
        keep = fragment.tfxd_duration if duration is None else duration
        replacements[fragment.tfxd.offset] = tfxd_box(time, keep or 0)
    elif duration is not None:
        append = tfxd_box(time, duration)
    if fragment.tfdt is not None:
        replacements[fragment.tfdt.offset] = _tfdt_box(time, fragment.tfdt_version)
    if not replacements and not append:
        raise BoxError("moof has no tfxd or tfdt to carry a time")
    return _rewrite(moof, fragment, replacements, append=append)


def with_tfdt(moof: Buffer, time: int) -> bytes:
    """A copy of ``moof`` with a version 1 tfdt of ``time`` right after its tfhd.

    An existing tfdt is replaced where it stands.
    """
    fragment = read_moof(moof)
    tfdt = _tfdt_box(time, 1)
    if fragment.tfdt is not None:
        return _rewrite(moof, fragment, {fragment.tfdt.offset: tfdt})
    return _rewrite(moof, fragment, {}, after_tfhd=tfdt)


def _tfdt_box(time: int, version: int) -> bytes:
    if time < 0:
        raise BoxError(f"tfdt cannot carry a negative time ({time})")
    if version == 0 and time > 0xFFFFFFFF:
        version = 1
    return TFDT.build(time, version=version)


def _rewrite(
    moof: Buffer,
    fragment: TrackFragment,
    replacements: dict[int, bytes],
    *,
    after_tfhd: bytes = b"",
    append: bytes = b"",
) -> bytes:
    """The moof with traf children replaced (``b""`` drops them) or inserted, in one join.

    Sizes of traf and moof are fixed; moof-relative trun data offsets move by
    the change in size.
    """
    view = memoryview(moof)
    traf = fragment.traf
    pieces: list[Buffer | None] = []
    patches: list[tuple[int, TrackRun]] = []  # index of the data_offset piece, its run
    adjust = fragment.tfhd.moof_relative
    runs = {header.offset: run for header, run in fragment.truns}
    for child in children(view, traf):
        start, end = child.offset, child.end
        if start in replacements:
            if replacements[start]:
                pieces.append(replacements[start])
        elif adjust and start in runs and runs[start].data_offset_at is not None:
            run = runs[start]
            at = start + run.data_offset_at  # type: ignore[operator]
            pieces.append(view[start:at])
            patches.append((len(pieces), run))
            pieces.append(None)
            pieces.append(view[at + 4 : end])
        else:
            pieces.append(view[start:end])
        if child.type == b"tfhd" and after_tfhd:
            pieces.append(after_tfhd)
    if append:
        pieces.append(append)
    body = sum(len(p) for p in pieces if p is not None) + 4 * len(patches)
    traf_size = traf.header_size + body
    delta = traf_size - traf.size
    for index, run in patches:
        try:
            pieces[index] = _I32.pack(run.data_offset + delta)  # type: ignore[operator]
        except struct.error:
            raise BoxError("trun data_offset out of range after the rewrite") from None
    head = fragment.moof
    return b"".join(
        [
            box_header_bytes(b"moof", head.size + delta, large=head.header_size == 16),
            view[head.payload_offset : traf.offset],
            box_header_bytes(b"traf", traf_size, large=traf.header_size == 16),
            *pieces,  # type: ignore[list-item]
            view[traf.end : head.end],
        ]
    )
