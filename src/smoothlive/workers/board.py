"""The change board: how front processes learn, without asking, that a live
point's documents changed.

A file of 64-bit slots, memory-mapped by every process. The owner writes a
new value into a point's slot whenever anything a player reads of that
point may have changed (a chunk listed, a state move, a new presentation);
values come from one counter that only grows, so a value is never seen
twice. A front keeps a live manifest with the slot and value the owner
named when it rendered it, and serves it again while the slot still holds
that value. Points share slots when there are more points than slots
(hashing): that costs a needless refetch, never a stale answer.

A second half of the file holds each point's *epoch*: it moves when the
point's presentation is a new one (a restart, a shutdown and start). A
fragment is immutable within its presentation only: an encoder that starts
again from zero sends new media under the old URLs, so a front keeps a
fragment with its point's epoch and drops it when the epoch moves.
"""

from __future__ import annotations

import mmap
import os
import struct
import weakref
import zlib
from pathlib import Path

SLOTS = 65536
_SLOT = struct.Struct("<Q")
# The ASGI scope key of a request a front relayed (its value: the board), and
# the header of an answer that carries a point's token.
SCOPE_KEY = "smoothlive.board"
HEADER = b"x-smoothlive-board"


def slot_of(point: str) -> int:
    """The slot of a point path (the same in every process)."""
    return zlib.crc32(point.encode()) % SLOTS


def epoch_slot_of(point: str) -> int:
    return SLOTS + slot_of(point)


class ChangeBoard:
    """The owner's side: creates the file and writes the slots."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, 2 * SLOTS * _SLOT.size)
            self._map = mmap.mmap(fd, 2 * SLOTS * _SLOT.size)
        finally:
            os.close(fd)
        # Values start at a random point so that two owner runs do not repeat
        # each other's values.
        self._counter = int.from_bytes(os.urandom(4), "little") << 24
        self._presentations: dict[str, weakref.ref] = {}

    def _write(self, slot: int) -> None:
        self._counter += 1
        _SLOT.pack_into(self._map, slot * _SLOT.size, self._counter)

    def changed(self, point: str) -> None:
        self._write(slot_of(point))

    def _token(self, slot: int) -> bytes:
        return b"%d.%d" % (slot, _SLOT.unpack_from(self._map, slot * _SLOT.size)[0])

    def token(self, point: str) -> bytes:
        """What the owner attaches to a document of ``point``: ``slot.value``."""
        return self._token(slot_of(point))

    def epoch_token(self, point: str, presentation: object) -> bytes:
        """What the owner attaches to a fragment of ``presentation``: its point's epoch,
        moved first if the point's presentation is not the one seen last. (A new
        presentation also changes the point's documents, so a player learns of it
        through an answer of the owner's, which moves the epoch.)"""
        slot = epoch_slot_of(point)
        seen = self._presentations.get(point)
        if seen is None or seen() is not presentation:
            self._presentations[point] = weakref.ref(presentation)
            self._write(slot)
        return self._token(slot)

    def close(self) -> None:
        self._map.close()


class BoardReader:
    """A front's side: reads the slots the owner writes."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            self._map = mmap.mmap(fd, 2 * SLOTS * _SLOT.size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)

    def value(self, slot: int) -> int:
        return _SLOT.unpack_from(self._map, slot * _SLOT.size)[0]

    @staticmethod
    def parse(token: bytes) -> tuple[int, int] | None:
        slot, _, value = token.partition(b".")
        if not (slot.isdigit() and value.isdigit()) or int(slot) >= 2 * SLOTS:
            return None
        return int(slot), int(value)


def board_header(board: ChangeBoard | None, scope: dict, point: str, presentation: object,
                 *, fragment: bool = False) -> list[tuple[bytes, bytes]]:
    """For an answer about ``presentation`` of ``point``: move the point's epoch if
    the presentation is new (whoever asks: a player that reads the new manifest
    from the owner directly must not then get old fragments from a front), and,
    when a front asked, the token header: the epoch for a fragment, the change
    token for a document."""
    if board is None:
        return []
    epoch = board.epoch_token(point, presentation)
    if scope.get(SCOPE_KEY) is None:
        return []
    return [(HEADER, epoch if fragment else board.token(point))]
