"""Fuzzing of the ingest parser: malformed encoder bodies, fed in any chunking.

The inputs are built to reach the parser's edges rather than drawn as plain
noise: the real ffmpeg captures of tests/fixtures/ingest with boxes dropped,
duplicated, swapped, truncated or spliced from the other capture, fragments
before any moov, box headers with size 0, size 1 and a right or wrong 64-bit
largesize, sizes past the data or absurdly large, unknown and uuid boxes,
boxes inside moov and moof edited with their parents' sizes kept right (so
the corruption reaches the codec and fragment readers: a bad, missing or
doubled TfxdBox, odd trun and tfhd flags, field values at their limits),
bit flips, and the Live Server Manifest replaced by broken XML. Every input
is fed in random chunks, with cuts near box boundaries so that headers are
split too.

What must hold for every input:

* only :class:`BoxError` comes out of ``feed`` and ``close`` (what the parser
  documents), with a short one-line message (it ends up in the 400 body and
  the log), and the parser stays failed after it;
* no hang: each example runs under a watchdog (SIGALRM, for loops that would
  never end) and Hypothesis' deadline (for the merely very slow);
* memory is bounded: ``buffered`` never exceeds the limit of the box in
  progress (``max_box_size``, or ``max_mdat_size`` for an mdat);
* the chunking changes nothing: the events and the error are the same as
  when the whole body comes in one piece;
* what the parser accepts, the server can take: every fragment's time and
  end fit the 64-bit TfxdBox/TfrfBox fields, and its moof survives the
  rewrites the presentation makes once it is stored (TfrfBox, re-stamping);
  every track has a timescale that outputs can divide by and write.

Examples: 3000 in all by default, shared among the six fuzz tests by weight
(10-15 s on two cores); ``SMOOTHLIVE_FUZZ_EXAMPLES=100000`` sets the total for
a soak. Seeds are random (not derandomized); no example database is written
(``database=None``). The edges found so far follow as plain tests, so that a
regression names itself.

The corruption generator (:func:`corrupt`) takes a ``random.Random``, so the
end-to-end fuzzing of the HTTP endpoint draws the same kinds of bodies from
a fixed seed.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smoothlive.media.boxes import (
    TFDT,
    TFRF_UUID,
    TFXD_UUID,
    BoxError,
    box,
    box_header_bytes,
    iter_boxes,
    read_box_header,
)
from smoothlive.media.fragments import read_moof, retimed, with_lookahead
from smoothlive.media.ingest import (
    DEFAULT_MAX_BOX_SIZE,
    DEFAULT_MAX_MDAT_SIZE,
    EndOfStream,
    Event,
    Fragment,
    IngestParser,
    Movie,
    ServerManifest,
    StreamHeader,
)
from smoothlive.media.servermanifest import LIVE_SERVER_MANIFEST_UUID

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ingest"
CAPTURES = {p.stem: p.read_bytes() for p in sorted(FIXTURES.glob("*.ismv"))}

# -- how many examples ------------------------------------------------------------------------

DEFAULT_TOTAL = 3000
WEIGHTS = {"garbage": 2, "headers": 2, "order": 2, "tree": 4, "bytes": 2, "chunking": 2}


def _examples(test: str) -> int:
    total = int(os.environ.get("SMOOTHLIVE_FUZZ_EXAMPLES") or DEFAULT_TOTAL)
    return max(1, total * WEIGHTS[test] // sum(WEIGHTS.values()))


def fuzz_settings(test: str) -> settings:
    return settings(
        max_examples=_examples(test),
        deadline=timedelta(seconds=10),  # generous: a loaded machine is not a hang
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# -- a tree of boxes that can be edited and written back with right sizes ----------------------

# Container boxes and the bytes of their own fields before the child boxes.
CONTAINERS = {
    b"moov": 0, b"trak": 0, b"mdia": 0, b"minf": 0, b"stbl": 0, b"mvex": 0, b"dinf": 0,
    b"edts": 0, b"udta": 0, b"moof": 0, b"traf": 0, b"mfra": 0, b"sinf": 0,
    b"stsd": 8, b"avc1": 78, b"avc3": 78, b"encv": 78, b"mp4a": 28, b"enca": 28,
}  # fmt: skip


@dataclass
class Node:
    type: bytes
    usertype: bytes | None = None
    prefix: bytes = b""  # the box's own fields (all of a leaf's body)
    children: list[Node] | None = None
    size: int | None = None  # written instead of the true size (a lying header)
    large: bool = False  # written with a 64-bit largesize

    def to_bytes(self) -> bytes:
        body = self.prefix + b"".join(c.to_bytes() for c in self.children or ())
        head = 8 + (8 if self.large else 0) + (16 if self.usertype is not None else 0)
        size = head + len(body) if self.size is None else self.size
        if self.large:
            header = struct.pack(">I4sQ", 1, self.type, size & (1 << 64) - 1)
        else:
            header = struct.pack(">I4s", size & 0xFFFFFFFF, self.type)
        return header + (self.usertype or b"") + body

    def walk(self, parent: Node | None = None) -> Iterator[tuple[Node, Node | None]]:
        yield self, parent
        for child in self.children or ():
            yield from child.walk(self)

    def copy(self) -> Node:
        kids = None if self.children is None else [c.copy() for c in self.children]
        return Node(self.type, self.usertype, self.prefix, kids, self.size, self.large)


def parse_tree(data: bytes, start: int = 0, end: int | None = None) -> list[Node]:
    nodes = []
    for header in iter_boxes(data, start, len(data) if end is None else end):
        skip = CONTAINERS.get(header.type)
        node = Node(header.type, header.usertype, large=header.header_size in (16, 32))
        if skip is not None and header.payload_size >= skip:
            node.prefix = data[header.payload_offset : header.payload_offset + skip]
            try:
                node.children = parse_tree(data, header.payload_offset + skip, header.end)
            except BoxError:  # not really a container here: keep it whole
                node.children = None
        if node.children is None:
            node.prefix = data[header.payload_offset : header.end]
        nodes.append(node)
    return nodes


def top_level(data: bytes) -> list[bytes]:
    return [data[h.offset : h.end] for h in iter_boxes(data)]


BOXES = {name: top_level(data) for name, data in CAPTURES.items()}
TREES = {name: parse_tree(data) for name, data in CAPTURES.items()}

# -- synthetic boxes ---------------------------------------------------------------------------

INTERESTING_32 = (0, 1, 2, 7, 8, 0x7F, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000,
                  0xFFFFFFFE, 0xFFFFFFFF)  # fmt: skip
INTERESTING_64 = (0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 32, (1 << 62) + 1, (1 << 63) - 1, 1 << 63,
                  (1 << 64) - 1)  # fmt: skip
TYPES = (b"free", b"skip", b"wide", b"styp", b"sidx", b"emsg", b"prft", b"meta", b"moov",
         b"moof", b"mdat", b"mfra", b"ftyp", b"uuid", b"traf", b"trun", b"tfhd", b"tfdt",
         b"trak", b"mvex", b"trex", b"mfhd", b"\0\0\0\0", b"\xff\xff\xff\xff", b"abcd")  # fmt: skip
USERTYPES = (TFXD_UUID, TFRF_UUID, LIVE_SERVER_MANIFEST_UUID, bytes(16), bytes(range(16)))


def _u32(rng: random.Random) -> int:
    return rng.choice(INTERESTING_32) if rng.random() < 0.7 else rng.getrandbits(32)


def _u64(rng: random.Random) -> int:
    return rng.choice(INTERESTING_64) if rng.random() < 0.7 else rng.getrandbits(64)


def _blob(rng: random.Random, most: int = 64) -> bytes:
    return rng.randbytes(rng.choice((0, 1, 3, 4, 8, rng.randint(0, most))))


def synthetic_box(rng: random.Random) -> Node:
    """A small box of a kind the parser reads, with values at their edges."""
    kind = rng.randrange(9)
    version = rng.choice((0, 1, 1, 2, 255))
    vf = bytes([version]) + rng.choice((bytes(3), rng.randbytes(3)))
    if kind == 0:  # TfxdBox
        fields = struct.pack(">QQ", _u64(rng), _u64(rng)) if version else struct.pack(
            ">II", _u32(rng), _u32(rng))
        return Node(b"uuid", TFXD_UUID, (vf + fields)[: rng.choice((4, 8, 12, 20, 99))])
    if kind == 1:  # tfdt
        fields = struct.pack(">Q", _u64(rng)) if version else struct.pack(">I", _u32(rng))
        return Node(b"tfdt", None, (vf + fields)[: rng.choice((4, 6, 8, 12, 99))])
    if kind == 2:  # trun, flags and sample count at their edges
        flags = rng.choice((0, 1, 5, 0x301, 0xF05, 0xFFFFFF, rng.getrandbits(24)))
        count = rng.choice((0, 1, 2, 25, 0xFFFF, 0xFFFFFFFF, rng.getrandbits(8)))
        body = bytes([version]) + flags.to_bytes(3, "big") + struct.pack(">I", count)
        return Node(b"trun", None, body + _blob(rng, 200))
    if kind == 3:  # tfhd
        flags = rng.choice((0, 0x20000, 0x3B, 0x1, 0xFFFFFF, rng.getrandbits(24)))
        body = b"\0" + flags.to_bytes(3, "big") + struct.pack(">I", _u32(rng))
        return Node(b"tfhd", None, body + _blob(rng, 40))
    if kind == 4:  # TfrfBox
        count = rng.choice((0, 1, 2, 255))
        return Node(b"uuid", TFRF_UUID, vf + bytes([count]) + _blob(rng, 64))
    if kind == 5:  # an unknown box, or an unknown uuid
        if rng.random() < 0.3:
            return Node(b"uuid", rng.randbytes(16), _blob(rng))
        return Node(rng.randbytes(4), None, _blob(rng))
    if kind == 6:  # a known type with a body that is not what it should be
        return Node(rng.choice(TYPES), None, _blob(rng))
    if kind == 7:  # an empty container, or one holding a synthetic box
        node = Node(rng.choice((b"traf", b"moof", b"trak", b"mvex", b"mdia")), None, b"", [])
        if rng.random() < 0.5:
            node.children = [synthetic_box(rng)]
        return node
    return Node(b"mfhd", None, vf + struct.pack(">I", _u32(rng)))


# -- the server manifest, broken ---------------------------------------------------------------

BAD_SMIL = (
    b"", b"\0\0\0\0", b"<smil", b"<smil/>", b"not xml at all", b"\xff\xfe<\0s\0", b"\xfe\xff\0<",
    b"\xef\xbb\xbf<smil><body><switch><video/></switch></body></smil>",
    b'<?xml version="1.0" encoding="latin-1"?><smil/>',
    b'<!DOCTYPE smil [<!ENTITY a "aaaa">]><smil>&a;</smil>',
    b"<smil>" + b"<a>" * 100 + b"</a>" * 100 + b"</smil>",
    b"\x80\x81\x82 invalid utf-8",
)  # fmt: skip
PARAMS = ("trackID", "systemBitrate", "timescale", "FourCC", "CodecPrivateData", "MaxWidth",
          "SamplingRate", "Channels", "trackName", "systemLanguage")  # fmt: skip
VALUES = ("0", "1", "2", "-1", "0x", "0xFFFFFFFF", "4294967296", "18446744073709551616",
          "9" * 5000, "abc", "", " 1 ", "1e9", "\u0661")  # fmt: skip


def broken_manifest(rng: random.Random) -> bytes:
    """A Live Server Manifest Box whose SMIL is broken, or well formed with odd values."""
    if rng.random() < 0.4:
        document = rng.choice(BAD_SMIL)
    else:
        tracks = []
        for _ in range(rng.randint(0, 3)):
            kind = rng.choice(("video", "audio", "textstream", "other"))
            params = "".join(
                f'<param name="{rng.choice(PARAMS)}" value="{rng.choice(VALUES)}" '
                'valuetype="data"/>'
                for _ in range(rng.randint(0, 6))
            )
            track_id = rng.choice(("1", "2", "3", "0", "x"))
            tracks.append(f'<{kind}><param name="trackID" value="{track_id}"/>{params}</{kind}>')
        document = ("<smil><body><switch>" + "".join(tracks) + "</switch></body></smil>").encode()
    full = rng.random() < 0.7
    return Node(b"uuid", LIVE_SERVER_MANIFEST_UUID, (b"\0\0\0\0" if full else b"") + document
                ).to_bytes()


# -- corruption --------------------------------------------------------------------------------


def _base(rng: random.Random) -> tuple[str, list[int]]:
    """A capture and which of its top-level boxes to take: all of them, or the head,
    a few moof/mdat pairs and maybe the mfra."""
    name = rng.choice(sorted(BOXES))
    taken = list(range(len(BOXES[name])))
    if rng.random() < 0.5:
        pairs = rng.randint(0, 4)
        taken = taken[: 3 + 2 * pairs] + (taken[-1:] if rng.random() < 0.5 else [])
    return name, taken


def _other(name: str) -> str:
    names = sorted(BOXES)
    return names[(names.index(name) + 1) % len(names)]


def header_edit(rng: random.Random, boxes: list[bytes]) -> list[bytes]:
    """One top-level box header rewritten: a size that lies, a largesize, a new type."""
    if not boxes:
        return boxes
    boxes = list(boxes)
    i = rng.randrange(len(boxes))
    if len(boxes[i]) < 8:  # cut short by an earlier edit
        return boxes
    real, kind_ = len(boxes[i]), boxes[i][4:8]  # what the box is, whatever its header says
    body = boxes[i][8:]  # a usertype stays after the new header
    rest = sum(len(b) for b in boxes[i + 1 :])
    kind = rng.randrange(8)
    if kind == 0:  # size 0: to the end of the stream
        header = struct.pack(">I4s", 0, kind_)
    elif kind == 1:  # size 1 with a largesize: right, wrong, or absurd
        large = real + 8
        large = rng.choice((large, max(0, large - rng.randint(1, 24)),
                            large + rng.randint(1, 1 << 20), 0, 8, 15, 16, 1 << 40,
                            (1 << 48) + 1, (1 << 64) - 1))
        header = struct.pack(">I4sQ", 1, kind_, large)
    elif kind == 2:  # smaller than the header
        header = struct.pack(">I4s", rng.choice((2, 3, 7)), kind_)
    elif kind == 3:  # a little off
        header = struct.pack(">I4s", max(8, real + rng.randint(-16, 16)), kind_)
    elif kind == 4:  # larger than the data, or than any limit
        size = rng.choice((real + rest + 1, DEFAULT_MAX_BOX_SIZE + 1,
                           DEFAULT_MAX_MDAT_SIZE + 1, 0x7FFFFFFF, 0xFFFFFFFF))
        header = struct.pack(">I4s", size, kind_)
    elif kind == 5:  # another type, same size
        header = struct.pack(">I4s", real, rng.choice(TYPES))
    elif kind == 6:  # uuid: usertype cut short or unknown
        usertype = rng.choice(USERTYPES)[: rng.choice((0, 4, 15, 16))]
        header = struct.pack(">I4s", real + 16, b"uuid") + usertype
    else:  # the header cut in the middle, the stream goes on
        header, body = boxes[i][: rng.randint(1, 7)], b""
    boxes[i] = header + body
    return boxes


def order_edit(rng: random.Random, name: str, boxes: list[bytes]) -> list[bytes]:
    """Top-level boxes dropped, doubled, swapped, moved or brought in from elsewhere."""
    boxes = list(boxes)
    kind = rng.randrange(11)
    if not boxes:
        return [synthetic_box(rng).to_bytes()]
    i, j = rng.randrange(len(boxes)), rng.randrange(len(boxes) + 1)
    if kind == 0:
        del boxes[i]
    elif kind == 1:
        boxes.insert(j, boxes[i])
    elif kind == 2:
        j = min(j, len(boxes) - 1)
        boxes[i], boxes[j] = boxes[j], boxes[i]
    elif kind == 3:  # no moov at all: fragments come first
        boxes = [b for b in boxes if b[4:8] != b"moov"]
    elif kind == 4:  # the moov after the fragments
        moov = [b for b in boxes if b[4:8] == b"moov"]
        boxes = [b for b in boxes if b[4:8] != b"moov"] + moov
    elif kind == 5:  # a box of the other capture: its moov (other tracks), a moof, an mdat
        boxes.insert(j, rng.choice(BOXES[_other(name)]))
    elif kind == 6:  # an unknown or synthetic box anywhere
        boxes.insert(j, synthetic_box(rng).to_bytes())
    elif kind == 7:  # the manifest broken
        boxes = [broken_manifest(rng) if b[8:24] == LIVE_SERVER_MANIFEST_UUID else b
                 for b in boxes]
        if rng.random() < 0.3:
            boxes.insert(j, broken_manifest(rng))
    elif kind == 8:  # a box cut short, the stream goes on
        boxes[i] = boxes[i][: rng.randint(0, len(boxes[i]))]
    elif kind == 9:  # an mfra in the middle, or twice
        boxes.insert(j, box(b"mfra", _blob(rng, 16)))
    else:  # moof and mdat pairs out of step
        fragments = [b for b in boxes if b[4:8] in (b"moof", b"mdat")]
        rng.shuffle(fragments)
        rest = iter(fragments)
        boxes = [next(rest) if b[4:8] in (b"moof", b"mdat") else b for b in boxes]
    return boxes


def tree_edit(rng: random.Random, nodes: list[Node]) -> None:
    """One box inside the stream edited, its parents' sizes kept right (unless told not to)."""
    everything = [(n, p) for top in nodes for n, p in top.walk()]
    node, parent = rng.choice(everything)
    siblings = parent.children if parent is not None and parent.children is not None else nodes
    kind = rng.randrange(12)
    if kind == 0 and node in siblings:  # dropped (a missing tfxd, tfhd, trak, avcC...)
        siblings.remove(node)
    elif kind == 1:  # doubled
        siblings.insert(rng.randrange(len(siblings) + 1), node.copy())
    elif kind == 2:  # its own fields cut, grown or replaced
        cut = rng.randint(0, len(node.prefix))
        node.prefix = rng.choice((node.prefix[:cut], node.prefix + _blob(rng),
                                  rng.randbytes(len(node.prefix))))
    elif kind == 3 and node.prefix:  # a field at an edge value
        at = rng.randrange(len(node.prefix))
        width = rng.choice((1, 2, 4, 8))
        value = (_u64(rng) if width == 8 else _u32(rng)) & ((1 << 8 * width) - 1)
        edited = bytearray(node.prefix)
        edited[at : at + width] = value.to_bytes(width, "big")[: len(edited) - at]
        node.prefix = bytes(edited)
    elif kind == 4 and node.prefix:  # version and flags of a full box
        node.prefix = bytes([rng.choice((0, 1, 2, 255))]) + rng.choice(
            (node.prefix[1:4], rng.randbytes(3))) + node.prefix[4:]
    elif kind == 5 and node.prefix:  # bit flips
        edited = bytearray(node.prefix)
        for _ in range(rng.randint(1, 4)):
            edited[rng.randrange(len(edited))] ^= 1 << rng.randrange(8)
        node.prefix = bytes(edited)
    elif kind == 6:  # a synthetic box put in (a second or a bad tfxd, a tfdt, a trun...)
        box_ = synthetic_box(rng)
        target = node.children if node.children is not None else siblings
        target.insert(rng.randrange(len(target) + 1), box_)
    elif kind == 7 and node in siblings:  # replaced by a synthetic box
        siblings[siblings.index(node)] = synthetic_box(rng)
    elif kind == 8:  # its header lies about its size
        real = len(node.to_bytes())
        node.size = rng.choice((0, 1, 7, 8, real - 1, real + 1, real + 100, 0xFFFFFFFF))
    elif kind == 9:  # written with a largesize (valid) or with a wrong one
        node.large = True
        if rng.random() < 0.3:
            node.size = rng.choice((0, 15, 16, (1 << 64) - 1, len(node.to_bytes()) + 1))
    elif kind == 10:  # another type or usertype
        if rng.random() < 0.5:
            node.type, node.usertype = b"uuid", rng.choice(USERTYPES)
        else:
            node.type, node.usertype = rng.choice(TYPES[:-4]), None
    elif kind == 11 and node.children is not None:  # children reordered
        rng.shuffle(node.children)


def byte_edit(rng: random.Random, boxes: list[bytes]) -> list[bytes]:
    """Bit flips, overwrites, splices, deleted or repeated ranges in one box (mostly not an
    mdat: the header boxes and the moofs are where parsing is)."""
    boxes = list(boxes)
    if not boxes:
        return [rng.randbytes(rng.randint(0, 64))]
    weights = [1 if b[4:8] == b"mdat" else 8 for b in boxes]
    i = rng.choices(range(len(boxes)), weights)[0]
    data = boxes[i]
    if not data:
        return boxes
    edited = bytearray(data)
    kind = rng.randrange(6)
    a = rng.randrange(len(edited))
    b = min(len(edited), a + rng.choice((1, 2, 4, 8, 64, rng.randint(1, 4096))))
    if kind == 0:
        for _ in range(rng.randint(1, 8)):
            edited[rng.randrange(len(edited))] ^= 1 << rng.randrange(8)
    elif kind == 1:
        edited[a:b] = rng.randbytes(b - a)
    elif kind == 2:  # a range copied over another place
        c = rng.randrange(len(edited))
        edited[c : c + (b - a)] = data[a:b]
    elif kind == 3:
        del edited[a:b]
    elif kind == 4:
        edited[b:b] = data[a:b]
    else:  # a range of the other capture spliced in
        other = CAPTURES[rng.choice(sorted(CAPTURES))]
        c = rng.randrange(len(other))
        edited[a:a] = other[c : c + rng.randint(1, 2048)]
    boxes[i] = bytes(edited)
    return boxes


def garbage(rng: random.Random) -> bytes:
    """Noise, or a soup of small boxes (synthetic ones and pieces of the captures)."""
    kind = rng.randrange(3)
    if kind == 0:
        return rng.randbytes(rng.randint(0, 2048))
    parts = []
    for _ in range(rng.randint(1, 12)):
        choice = rng.randrange(4)
        if choice == 0:
            parts.append(synthetic_box(rng).to_bytes())
        elif choice == 1:
            name = rng.choice(sorted(BOXES))
            parts.append(rng.choice(BOXES[name][:8]))
        elif choice == 2:
            parts.append(rng.randbytes(rng.randint(0, 40)))
        else:
            node = synthetic_box(rng)
            node.size = _u32(rng)
            parts.append(node.to_bytes())
    if kind == 2:  # a plausible start, then the soup
        name = rng.choice(sorted(BOXES))
        parts = BOXES[name][: rng.randint(1, 3)] + parts
    return b"".join(parts)


KINDS = ("garbage", "headers", "order", "tree", "bytes")


def corrupt(rng: random.Random, kind: str | None = None) -> bytes:
    """A malformed encoder body of ``kind`` (one of KINDS; any when None)."""
    kind = kind or rng.choice(KINDS)
    if kind == "garbage":
        return garbage(rng)
    name, taken = _base(rng)
    boxes = [BOXES[name][i] for i in taken]
    if kind == "order":
        for _ in range(rng.randint(1, 3)):
            boxes = order_edit(rng, name, boxes)
        return b"".join(boxes)
    if kind == "tree":
        nodes = [TREES[name][i].copy() for i in taken]
        for _ in range(rng.randint(1, 3)):  # mostly in the head and the first moof
            tree_edit(rng, nodes[:5] if rng.random() < 0.8 else nodes)
        return b"".join(n.to_bytes() for n in nodes)
    if kind == "headers":
        for _ in range(rng.randint(1, 2)):
            boxes = header_edit(rng, boxes)
        return b"".join(boxes)
    assert kind == "bytes", kind
    for _ in range(rng.randint(1, 3)):
        boxes = byte_edit(rng, boxes)
    return b"".join(boxes)


def split_points(rng: random.Random, data: bytes, most: int = 40) -> list[int]:
    """Where the body is cut into chunks: anywhere, and close to box boundaries."""
    cuts = {rng.randrange(len(data) + 1) for _ in range(rng.randint(0, most // 2))}
    offset, boundaries = 0, []
    while offset + 8 <= len(data) and len(boundaries) < 64:
        boundaries.append(offset)
        size = struct.unpack_from(">I", data, offset)[0]
        if size < 8:
            break
        offset += size
    for _ in range(rng.randint(0, most // 2)):
        if boundaries:
            cuts.add(rng.choice(boundaries) + rng.randint(-3, 17))
    return sorted(c for c in cuts if 0 < c < len(data))


def chunks_of(data: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


# -- running the parser ------------------------------------------------------------------------


class Hang(Exception):
    """The watchdog fired: the parser did not come back."""


@contextlib.contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Raise Hang in the main thread if the block runs longer than ``seconds``."""

    def fire(signum, frame):
        raise Hang(f"no answer in {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Outcome:
    events: list[Event] = field(default_factory=list)
    error: BoxError | None = None
    peak: int = 0  # the most ``buffered`` was after any feed


LIMITS = (
    {},  # the server's
    {},
    {"max_box_size": 4096, "max_mdat_size": 65536},  # the captures' boxes fit
    {"max_box_size": 2048, "max_mdat_size": 45_000},  # some of their mdats do not
)


def parse(chunks: list[bytes], limits: dict[str, int], wrap: Callable = bytes) -> Outcome:
    """Feed the chunks, checking the memory bound after each; only BoxError may come out."""
    parser = IngestParser(**limits)
    bound_box = parser.max_box_size
    bound_mdat = parser.max_mdat_size
    outcome = Outcome()
    with watchdog(20):
        try:
            for chunk in chunks:
                outcome.events += parser.feed(wrap(chunk))
                held = parser.buffered
                outcome.peak = max(outcome.peak, held)
                assert held <= max(bound_box, bound_mdat), held
                box_ = parser._box  # the box in progress, header included: its own limit
                if box_ is not None:
                    assert held <= min(box_.size, bound_mdat if box_.type == b"mdat"
                                       else bound_box), (held, box_)
            outcome.events += parser.close()
        except BoxError as exc:
            outcome.error = exc
            outcome.events += getattr(exc, "events", [])
    if outcome.error is not None:
        message = str(outcome.error)
        assert message and len(message) < 600, message  # a short line for the 400 body
        assert message.isprintable(), message  # no line breaks or controls in the log
        assert parser.buffered == 0  # a failed parser lets go of what it held
        for again in (lambda: parser.feed(b"\0" * 8), parser.close):
            with pytest.raises(BoxError):  # and stays failed
                again()
    return outcome


SIGNED_64 = range(-(1 << 63), 1 << 63)


def check_events(outcome: Outcome) -> None:
    """The stream grammar holds, and what was accepted is what the server can take."""
    tracks: dict[int, int] = {}  # track_id -> timescale
    for event in outcome.events:
        if isinstance(event, StreamHeader):
            assert event.ftyp[4:8] == b"ftyp"
        elif isinstance(event, ServerManifest):
            assert isinstance(event.smil, str)
        elif isinstance(event, Movie):
            assert event.tracks and event.moov[4:8] == b"moov"
            for track in event.tracks:
                assert 0 < track.timescale <= 0xFFFFFFFF, track.timescale
                assert track.kind in ("video", "audio", "text")
            tracks = {t.track_id: t.timescale for t in event.tracks}
        elif isinstance(event, Fragment):
            data = event.data
            assert data.track_id in tracks, "a fragment of a track the moov did not have"
            assert data.duration >= 0
            assert data.time in SIGNED_64 and data.time + data.duration in SIGNED_64
            assert read_box_header(data.moof).type == b"moof"
            assert read_box_header(data.mdat).type == b"mdat"
            # What the presentation does to a stored fragment must not fail there.
            following = [(data.time + data.duration, data.duration)] * 2
            if data.time + 3 * data.duration in SIGNED_64:
                with_lookahead(data.moof, following)
            with_lookahead(data.moof, [])
            retimed(data.moof, max(0, data.time), data.duration)
        else:  # an mfra; the parser goes on after it (a resend may follow)
            assert isinstance(event, EndOfStream)


def run(data: bytes, rng: random.Random) -> Outcome:
    limits = rng.choice(LIMITS)
    wrap = rng.choice((bytes, bytes, bytearray, memoryview))
    outcome = parse(chunks_of(data, split_points(rng, data)), limits, wrap)
    check_events(outcome)
    return outcome


# -- the tests ---------------------------------------------------------------------------------


@fuzz_settings("garbage")
@given(rng=st.randoms(use_true_random=False))
def test_garbage_and_box_soup(rng: random.Random) -> None:
    run(corrupt(rng, "garbage"), rng)


@fuzz_settings("headers")
@given(rng=st.randoms(use_true_random=False))
def test_box_headers_that_lie(rng: random.Random) -> None:
    run(corrupt(rng, "headers"), rng)


@fuzz_settings("order")
@given(rng=st.randoms(use_true_random=False))
def test_boxes_missing_doubled_or_out_of_order(rng: random.Random) -> None:
    run(corrupt(rng, "order"), rng)


@fuzz_settings("tree")
@given(rng=st.randoms(use_true_random=False))
def test_boxes_inside_moov_and_moof_edited(rng: random.Random) -> None:
    run(corrupt(rng, "tree"), rng)


@fuzz_settings("bytes")
@given(rng=st.randoms(use_true_random=False))
def test_bit_flips_and_splices(rng: random.Random) -> None:
    run(corrupt(rng, "bytes"), rng)


@fuzz_settings("chunking")
@given(rng=st.randoms(use_true_random=False))
def test_the_chunking_changes_nothing(rng: random.Random) -> None:
    data = corrupt(rng)
    limits = rng.choice(LIMITS)
    whole = parse([data], limits)
    chunked = parse(chunks_of(data, split_points(rng, data, most=80)), limits)
    assert chunked.events == whole.events
    assert str(chunked.error) == str(whole.error)


# -- the edges named, once each (so that a regression names itself) ---------------------------


def _stream(name: str = "ch1-300k") -> list[bytes]:
    return list(BOXES[name])


def _outcome(data: bytes, **limits: int) -> Outcome:
    outcome = parse(chunks_of(data, list(range(1, len(data), 7))), limits)
    check_events(outcome)
    return outcome


def test_fragments_before_any_moov_are_refused() -> None:
    ftyp, lsm, moov, moof, mdat, *_ = _stream()
    assert "moof before the moov" in str(_outcome(ftyp + lsm + moof + mdat + moov).error)


def test_a_missing_tfxd_falls_back_and_a_bad_one_is_refused() -> None:
    ftyp, lsm, moov, moof, mdat, *_ = _stream()
    tree = parse_tree(moof)[0]
    traf = next(n for n, _ in tree.walk() if n.type == b"traf")
    assert traf.children is not None
    tfxd = next(n for n in traf.children if n.usertype == TFXD_UUID)
    traf.children.remove(tfxd)
    (fragment,) = [e for e in _outcome(ftyp + lsm + moov + tree.to_bytes() + mdat).events
                   if isinstance(e, Fragment)]
    assert fragment.data.time == 0 and fragment.data.duration == 10_000_000  # trun durations
    tfxd.prefix = tfxd.prefix[:10]  # truncated
    traf.children.append(tfxd)
    assert "Tfxd" in str(_outcome(ftyp + lsm + moov + tree.to_bytes() + mdat).error)
    tfxd.prefix = b"\x02" + bytes(19)  # a version nobody wrote
    assert "version 2" in str(_outcome(ftyp + lsm + moov + tree.to_bytes() + mdat).error)


@pytest.mark.parametrize("size", [0, 1, 3, 7, 0xFFFFFFFF])
def test_sizes_that_cannot_be(size: int) -> None:
    ftyp, lsm, moov, *_ = _stream()
    bad = struct.pack(">I4s", size, b"moof") + bytes(32)
    outcome = _outcome(ftyp + lsm + moov + bad)
    assert outcome.error is not None and outcome.peak <= DEFAULT_MAX_BOX_SIZE


def test_a_largesize_is_read_and_checked() -> None:
    ftyp, lsm, moov, moof, mdat, *_ = _stream()
    large = box_header_bytes(b"mdat", len(mdat) + 8, large=True) + mdat[8:]
    assert [type(e) for e in _outcome(ftyp + lsm + moov + moof + large).events][-1] is Fragment
    for wrong in (len(mdat) + 9, 15, 1 << 63):
        lying = struct.pack(">I4sQ", 1, b"mdat", wrong) + mdat[8:]
        assert _outcome(ftyp + lsm + moov + moof + lying).error is not None


@pytest.mark.parametrize("time", [1 << 63, (1 << 64) - 1])
def test_a_time_past_64_bit_signed_is_refused(time: int) -> None:
    """tfdt version 1 is unsigned: the parser must not accept what TfxdBox cannot carry."""
    ftyp, lsm, moov, moof, mdat, *_ = _stream()
    tree = parse_tree(moof)[0]
    traf = next(n for n, _ in tree.walk() if n.type == b"traf")
    assert traf.children is not None
    traf.children = [n for n in traf.children if n.usertype != TFXD_UUID]
    traf.children.insert(1, parse_tree(TFDT.build(time, version=1))[0])
    error = _outcome(ftyp + lsm + moov + tree.to_bytes() + mdat).error
    assert error is not None and "64-bit" in str(error)


def test_a_data_offset_the_rewrite_cannot_move_is_refused() -> None:
    """A trun data_offset near 2**31: adding a TfrfBox once stored would overflow it."""
    ftyp, lsm, moov, moof, mdat, *_ = _stream()
    edited = bytearray(moof)
    run_ = read_moof(moof).truns[0]
    at = run_[0].offset + run_[1].data_offset_at
    struct.pack_into(">i", edited, at, 0x7FFFFFF0)
    error = _outcome(ftyp + lsm + moov + bytes(edited) + mdat).error
    assert error is not None and "data_offset" in str(error)


@pytest.mark.parametrize("value", ["0", "4294967296"])
def test_a_manifest_timescale_outputs_cannot_use_is_refused(value: str) -> None:
    ftyp, lsm, moov, *rest = _stream()
    text = lsm[24:].replace(b'name="trackID" value="1" valuetype="data"/>',
                            b'name="trackID" value="1" valuetype="data"/>'
                            b'<param name="timescale" value="' + value.encode() + b'"/>', 1)
    assert text != lsm[24:], "the fixture's manifest changed: update this test"
    edited = Node(b"uuid", LIVE_SERVER_MANIFEST_UUID, text).to_bytes()
    error = _outcome(ftyp + edited + moov + b"".join(rest)).error
    assert error is not None and "timescale" in str(error)


def test_events_completed_before_an_error_in_the_same_chunk_are_kept() -> None:
    stream = _stream()
    data = b"".join(stream[:5]) + b"\0\0\0\x05junk"
    parser = IngestParser()
    with pytest.raises(BoxError) as failure:
        parser.feed(data)
    assert [type(e) for e in failure.value.events] == [StreamHeader, ServerManifest, Movie,
                                                       Fragment]
