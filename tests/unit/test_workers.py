"""The pieces of several processes: the change board, what a front keeps, the
owner's socket believing the front's client address."""

from __future__ import annotations

import asyncio
import os

from smoothlive.http.h1 import http_date
from smoothlive.workers.board import (
    HEADER,
    SCOPE_KEY,
    SLOTS,
    BoardReader,
    ChangeBoard,
    board_header,
    slot_of,
)
from smoothlive.workers.front import FOREVER, Entry, FrontApp, FrontCache, keepable, kept_headers
from smoothlive.workers.owner import OwnerSide, run_dir
from smoothlive.workers.relay import Upstream


def test_a_change_moves_the_token_and_the_reader_sees_it(tmp_path):
    board = ChangeBoard(tmp_path / "board")
    reader = BoardReader(tmp_path / "board")
    board.changed("/a.isml")
    slot, value = BoardReader.parse(board.token("/a.isml"))
    assert slot == slot_of("/a.isml") and reader.value(slot) == value
    board.changed("/a.isml")
    assert reader.value(slot) == value + 1
    presentation = ChangeBoard  # any object that takes a weak reference
    assert board_header(None, {SCOPE_KEY: board}, "/a.isml", presentation) == []
    assert board_header(board, {}, "/a.isml", presentation) == []
    assert board_header(board, {SCOPE_KEY: board}, "/a.isml", presentation) == [
        (HEADER, board.token("/a.isml"))]


def test_a_new_board_does_not_repeat_the_values_of_the_last(tmp_path):
    first = ChangeBoard(tmp_path / "board")
    first.changed("/a.isml")
    token = first.token("/a.isml")
    second = ChangeBoard(tmp_path / "board")
    second.changed("/a.isml")
    assert second.token("/a.isml") != token


def test_tokens_that_do_not_parse_are_not_kept():
    assert BoardReader.parse(b"12.34") == (12, 34)
    for bad in (b"", b"x.1", b"1.", b"-1.2", b"%d.1" % (2 * SLOTS)):
        assert BoardReader.parse(bad) is None


def test_what_a_front_may_keep():
    now = 100.0
    assert keepable([(b"cache-control", b"public, max-age=31536000, immutable")], now) == (
        -1, 0, FOREVER)
    assert keepable([(b"cache-control", b"public, max-age=1"),
                     (b"x-smoothlive-board", b"7.9")], now) == (7, 9, 101.0)
    # Short-lived without a token (an incomplete fragment), misses, private answers: never.
    assert keepable([(b"cache-control", b"public, max-age=1")], now) is None
    assert keepable([(b"cache-control", b"no-store")], now) is None
    assert keepable([(b"cache-control", b"private, no-store")], now) is None
    # The owner's token wins over what players are told (HLS without client caching),
    # for a second at most.
    assert keepable([(b"cache-control", b"no-store"),
                     (b"x-smoothlive-board", b"7.9")], now) == (7, 9, 101.0)
    assert keepable([], now) is None
    # An answer that varies on something the key does not hold.
    assert keepable([(b"cache-control", b"immutable"), (b"vary", b"authorization")],
                    now) is None


def _entry(body: bytes, slot: int = -1, value: int = 0, expires: float = FOREVER) -> Entry:
    return Entry([(b"content-length", b"%d" % len(body))], body, None, slot, value, expires)


def test_the_cache_holds_its_bytes_and_drops_the_least_recently_used(tmp_path):
    cache = FrontCache(250, BoardReader(ChangeBoard(tmp_path / "board").path))
    a, b, c = ((b"/%s" % n, b"", False) for n in (b"a", b"b", b"c"))
    cache.put(a, _entry(b"x" * 100))
    cache.put(b, _entry(b"y" * 100))
    assert cache.get(a, 0) is not None  # a is now the most recent
    cache.put(c, _entry(b"z" * 100))
    assert cache.get(b, 0) is None and cache.get(a, 0) is not None
    assert cache.size == 200 and len(cache) == 2
    cache.put((b"/big", b"", False), _entry(b"w" * 251))  # larger than the whole cache
    assert cache.size == 200


def test_large_bodies_are_kept_in_memory_files_that_are_closed_when_dropped(tmp_path):
    cache = FrontCache(1 << 20, BoardReader(ChangeBoard(tmp_path / "board").path))
    big = bytes(range(256)) * 400  # 100 KB: sent with sendfile
    cache.put((b"/big", b"", False), _entry(big))
    cache.put((b"/small", b"", False), _entry(b"tiny"))
    kept = cache.get((b"/big", b"", False), 0)
    assert kept.fd >= 0 and kept.body == b"" and kept.content() == big
    assert os.pread(kept.fd, len(big) + 1, 0) == big  # what sendfile sends
    assert cache.get((b"/small", b"", False), 0).fd == -1
    assert kept.head.startswith(b"HTTP/1.1 200 OK\r\n") and b"date" not in kept.head
    assert cache.files == 1 and cache.size == len(big) + 4
    cache.put((b"/big", b"", False), _entry(big[:-1]))  # replaced: the old file closed
    assert cache.files == 1 and cache.get((b"/big", b"", False), 0).content() == big[:-1]
    opened = len(os.listdir("/proc/self/fd"))
    cache.put((b"/other", b"", False), _entry(b"o" * ((1 << 20) - 8)))  # evicts the rest
    assert cache.files == 1 and cache.get((b"/big", b"", False), 0) is None
    assert len(os.listdir("/proc/self/fd")) == opened  # one file closed, one opened


def test_kept_answers_carry_the_date_of_their_sending(tmp_path):
    owner = [(b"content-length", b"4"), (b"date", b"Mon, 01 Jan 2024 00:00:00 GMT"),
             (b"connection", b"keep-alive"), (b"etag", b'"e"')]
    sent = kept_headers(owner)
    assert (b"date", owner[1][1]) not in sent and (b"x-cache", b"hit") in sent
    cache = FrontCache(1 << 20, BoardReader(ChangeBoard(tmp_path / "board").path))
    app = FrontApp(Upstream(tmp_path / "owner.sock"), cache)
    cache.put((b"/f", b"", False), Entry(sent, b"body", b'"e"', -1, 0, FOREVER))
    for headers in ([], [(b"if-none-match", b'"e"')]):
        answer = app.quick(b"GET", b"/f", headers)
        assert answer.head.count(b"date: ") == 1
        assert b"date: " + http_date() in answer.head  # now, not 2024
        assert b"2024" not in answer.head


def test_a_live_document_is_kept_while_the_board_and_its_max_age_agree(tmp_path):
    board = ChangeBoard(tmp_path / "board")
    cache = FrontCache(1 << 20, BoardReader(board.path))
    board.changed("/p.isml")
    slot, value = BoardReader.parse(board.token("/p.isml"))
    key = (b"/p.isml/Manifest", b"", True)
    cache.put(key, _entry(b"<m/>", slot, value, expires=10.0))
    assert cache.get(key, 5.0) is not None
    assert cache.get(key, 10.5) is None  # older than its max-age
    cache.put(key, _entry(b"<m/>", slot, value, expires=10.0))
    board.changed("/p.isml")
    assert cache.get(key, 5.0) is None  # the point changed
    assert cache.size == 0


def test_the_owner_believes_the_peer_header_only_on_its_socket(tmp_path):
    board = ChangeBoard(tmp_path / "board")
    seen = {}

    class App:
        async def http(self, scope, receive, send):
            seen.update(scope)

    side = OwnerSide(App(), board)
    scope = {"type": "http", "method": "GET", "path": "/x", "client": ("", 0),
             "headers": [(b"host", b"h"), (b"x-smoothlive-peer", b"192.0.2.7")]}
    asyncio.run(side(scope, None, None))
    assert seen["client"] == ("192.0.2.7", 0)
    assert seen["headers"] == [(b"host", b"h")]
    assert seen[SCOPE_KEY] is board


def test_the_socket_goes_to_a_short_private_folder_when_the_state_path_is_long(tmp_path):
    home, temporary = run_dir(tmp_path / "s")
    assert home == (tmp_path / "s").resolve() / "run" and not temporary
    deep = tmp_path / ("d" * 120)
    home, temporary = run_dir(deep)
    assert temporary and len(str(home / "owner.sock")) < 100
    assert oct(home.stat().st_mode & 0o777) == "0o700"


def test_a_new_presentation_moves_the_epoch_and_fragments_follow_it(tmp_path):
    board = ChangeBoard(tmp_path / "board")
    reader = BoardReader(tmp_path / "board")

    class Presentation:  # any object: the board only compares identities
        pass

    first, second = Presentation(), Presentation()
    scope = {SCOPE_KEY: board}
    (_, token), = board_header(board, scope, "/p.isml", first, fragment=True)
    assert board_header(board, scope, "/p.isml", first, fragment=True) == [(HEADER, token)]
    slot, value = BoardReader.parse(token)
    assert slot >= SLOTS and reader.value(slot) == value
    # A document of a new presentation moves the epoch before any fragment of it,
    # also when the owner answers a player directly (no front in the scope).
    assert board_header(board, {}, "/p.isml", second) == []
    assert reader.value(slot) != value
    # What a front keeps of a live fragment: as long as the epoch holds.
    assert keepable([(b"cache-control", b"public, max-age=31536000, immutable"),
                     (b"x-smoothlive-board", token)], 0.0) == (slot, value, FOREVER)
