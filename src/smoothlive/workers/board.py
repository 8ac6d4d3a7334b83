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
"""

from __future__ import annotations

import mmap
import os
import struct
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


class ChangeBoard:
    """The owner's side: creates the file and writes the slots."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, SLOTS * _SLOT.size)
            self._map = mmap.mmap(fd, SLOTS * _SLOT.size)
        finally:
            os.close(fd)
        # Values start at a random point so that two owner runs do not repeat
        # each other's values.
        self._counter = int.from_bytes(os.urandom(4), "little") << 24

    def changed(self, point: str) -> None:
        self._counter += 1
        _SLOT.pack_into(self._map, slot_of(point) * _SLOT.size, self._counter)

    def token(self, point: str) -> bytes:
        """What the owner attaches to a document of ``point``: ``slot.value``."""
        slot = slot_of(point)
        return b"%d.%d" % (slot, _SLOT.unpack_from(self._map, slot * _SLOT.size)[0])

    def close(self) -> None:
        self._map.close()


class BoardReader:
    """A front's side: reads the slots the owner writes."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            self._map = mmap.mmap(fd, SLOTS * _SLOT.size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)

    def value(self, slot: int) -> int:
        return _SLOT.unpack_from(self._map, slot * _SLOT.size)[0]

    @staticmethod
    def parse(token: bytes) -> tuple[int, int] | None:
        slot, _, value = token.partition(b".")
        if not (slot.isdigit() and value.isdigit()) or int(slot) >= SLOTS:
            return None
        return int(slot), int(value)


def board_header(scope: dict, point: str) -> list[tuple[bytes, bytes]]:
    """The token header for a live document of ``point``, when a front asked."""
    board = scope.get(SCOPE_KEY)
    return [(HEADER, board.token(point))] if board is not None else []
