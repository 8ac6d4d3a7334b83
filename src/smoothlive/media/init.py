"""Initialization segments: ``ftyp`` + ``moov`` of one track, from the encoder's boxes.

An encoder's moov holds all of its tracks; players of fMP4 HLS, DASH and the
on-demand archive files want one track per init segment. The track's own
``trak`` and ``trex`` (kept in ``TrackInfo``) are reused byte for byte under
a new ``mvhd`` (duration 0: a fragmented file, the fragments say the rest),
so the sample entry (avcC, esds...) is exactly what the encoder wrote.
"""

from __future__ import annotations

import struct

from smoothlive.media.boxes import box, full_box
from smoothlive.media.model import SMOOTH_TIMESCALE, TrackInfo

# The brands of ffmpeg's ismv output (archives keep them: IIS files carry these).
ISML_FTYP = box(b"ftyp", b"isml" + struct.pack(">I", 1) + b"piffiso2iso6")
# CMAF (ISO/IEC 23000-19 §7.2): a CMAF header's ftyp lists cmfc; iso6 for tfdt v1.
CMAF_FTYP = box(b"ftyp", b"iso6" + struct.pack(">I", 0) + b"iso6cmfcdashmsix")
_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def mvhd_box(timescale: int, next_track_id: int) -> bytes:
    """A movie header for a fragmented file: duration 0."""
    body = struct.pack(">IIIIIHH8x", 0, 0, timescale, 0, 0x10000, 0x100, 0)
    body += _MATRIX + bytes(24) + struct.pack(">I", next_track_id)
    return full_box(b"mvhd", 0, 0, body)


def init_segment(info: TrackInfo, ftyp: bytes = CMAF_FTYP) -> bytes:
    """``ftyp`` and a one-track ``moov`` (mvhd, the trak, mvex/trex); ValueError without
    the encoder's boxes."""
    if not info.trak or not info.trex:
        raise ValueError(f"track {info.track_id} has no trak/trex for an init segment")
    moov = box(b"moov", [mvhd_box(info.timescale or SMOOTH_TIMESCALE, info.track_id + 1),
                         info.trak, box(b"mvex", info.trex)])
    return ftyp + moov
