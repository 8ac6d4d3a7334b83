"""The management service against hostile clients, on the real server.

What test_management_errors.py leaves out: external DTDs and parameter
entities (proved never fetched, over http or from a file), XML bombs at full
size, bodies that are huge without being sent, nesting at the documented
bound; Slug traversal in every spelling with the filesystem checked before
and after; every wrong method and content type on every resource; a
read-only user and a folder-limited user trying every door, encoded paths
included; the failed-login slowdown for Digest, for the ingest endpoint and
for guesses spread over addresses, names and endpoints. Every answer any of
these tests receives is checked for stack traces, Python exception names and
the server's own filesystem paths.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import itertools
import os
import re
import secrets
import select
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest
from lxml import etree

from smoothlive.management.errors import MgmtError
from tests.e2e.conftest import PASSWORDS
from tests.e2e.harness import Server
from tests.e2e.test_management_api import (
    ATOM,
    SERVICE,
    A,
    M,
    assert_error,
    create,
    settings_body,
    state_body,
    state_of,
)

TOKEN = secrets.token_hex(4)  # in every name this module makes, to find them on disk
_names = itertools.count()
BOUND = 5.0  # seconds any refusal here may take (they take milliseconds)


def fresh(prefix: str = "p") -> str:
    return f"/hostile/{TOKEN}/{prefix}{next(_names)}.isml"


# -- nothing revealed -----------------------------------------------------------

_EXCEPTION_NAMES = sorted(
    {name for name, value in vars(builtins).items()
     if isinstance(value, type) and issubclass(value, BaseException)}
    | {"XMLSyntaxError", "DocumentInvalid", "LxmlError", "ParseError", "InvalidPointPath",
       "ManagementError", "BodyTooLarge", "BoxError", "PointFileError", "UserFileError",
       "VerifyMismatchError", "InvalidHashError"},
    key=len, reverse=True)
_EXCEPTION = re.compile(r"\b(?:" + "|".join(_EXCEPTION_NAMES) + r")\b")
_TRACE = re.compile(r"Traceback|File \"|\.py\b|line \d+, in |\[Errno")


def _secret_paths(server: Server) -> set[str]:
    paths = set()
    for path in (server.root, server.state_dir, server.root.parent, Path.cwd(),
                 Path(__file__).parents[2] / "src"):
        paths |= {str(path), os.path.realpath(path)}
    paths.add(tempfile.gettempdir().rstrip(os.sep) + os.sep)
    return paths


def assert_reveals_nothing(server: Server, status: int, headers, body: bytes,
                           echo: str = "") -> None:
    """No stack trace, exception name or path of the server in an answer.

    ``echo`` is the client's own input that the answer may repeat (a Slug).
    """
    text = body.decode("utf-8", "replace") + "\n" + "\n".join(
        f"{name}: {value}" for name, value in headers)
    if echo:
        text = text.replace(echo, "").replace(quote(echo, safe="/!$&'()*+,;=:@"), "")
    for path in _secret_paths(server):
        assert path not in text, f"{status} answer reveals {path!r}: {text[:600]}"
    found = _EXCEPTION.search(text) or _TRACE.search(text)
    assert found is None, f"{status} answer reveals {found.group(0)!r}: {text[:600]}"


def _checking_hook(server: Server):
    def hook(response: httpx.Response) -> None:
        response.read()
        assert_reveals_nothing(server, response.status_code, response.headers.multi_items(),
                               response.content)
    return hook


def hostile_client(server: Server, user: str | None = "operator", *,
                   digest: bool = False, **options) -> httpx.Client:
    """An httpx client whose every answer is checked by assert_reveals_nothing."""
    auth = None
    if user is not None:
        auth = (httpx.DigestAuth if digest else httpx.BasicAuth)(user, PASSWORDS[user])
    return httpx.Client(base_url=server.url, auth=auth, timeout=20,
                        event_hooks={"response": [_checking_hook(server)]}, **options)


@pytest.fixture(scope="module")
def ops(server) -> Iterator[httpx.Client]:
    """The operator (write:/), one client for the module: making one costs 0.1 s."""
    with hostile_client(server) as http:
        yield http


# -- raw HTTP, for what httpx would tidy up or refuse to send -------------------

@dataclass
class Raw:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


def basic(user: str, password: str | None = None) -> str:
    secret = f"{user}:{PASSWORDS[user] if password is None else password}".encode()
    return "Basic " + base64.b64encode(secret).decode()


def raw_request(server: Server, method: str, target: str | bytes,
                headers: list[tuple[str, str | bytes]] = (), body: bytes = b"", *,
                content_length: int | None = None, source: str | None = None,
                timeout: float = 10.0) -> Raw:
    """One request on its own connection (from the address ``source``), bytes as given;
    every wait bounded."""
    parts = urlsplit(server.url)
    target = target.encode("latin-1") if isinstance(target, str) else target
    head = [method.encode() + b" " + target + b" HTTP/1.1",
            b"Host: " + parts.netloc.encode(), b"Connection: close"]
    for name, value in headers:
        head.append(name.encode() + b": " + (
            value.encode("latin-1") if isinstance(value, str) else value))
    if body or method in ("PUT", "POST"):
        length = len(body) if content_length is None else content_length
        head.append(b"Content-Length: %d" % length)
    deadline = time.monotonic() + timeout
    data = b""
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout,
                                  source_address=(source, 0) if source else None) as sock:
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
        while True:
            if b"\r\n\r\n" in data:
                top, _, rest = data.partition(b"\r\n\r\n")
                length = re.search(rb"(?im)^content-length:\s*(\d+)", top)
                if length and len(rest) >= int(length.group(1)):
                    break
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
    top, _, rest = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), f"no answer in {timeout}s: {data[:200]!r}"
    headers_out = [tuple(s.strip() for s in line.split(":", 1)) for line in lines[1:] if line]
    answer = Raw(int(lines[0].split()[1]), headers_out, rest)  # type: ignore[arg-type]
    assert_reveals_nothing(server, answer.status, answer.headers, answer.body)
    return answer


def assert_raw_error(answer: Raw, error: MgmtError) -> None:
    assert answer.status == error.status, answer
    root = etree.fromstring(answer.body)
    assert root.findtext(f"{M}Error/{M}ErrorCode") == error.code, answer
    assert root.findtext(f"{M}Error/{M}ErrorMessage") == error.message


# -- the filesystem, before and after ---------------------------------------------

def listing(base: Path) -> set[str]:
    """Every entry under ``base``, relative. Left out: atomic-write temporaries, and the
    archives and spools that points of other modules may still be finishing."""
    found = set()
    for folder, dirs, files in os.walk(base, followlinks=False):
        relative = Path(folder).relative_to(base)
        dirs[:] = [d for d in dirs if (relative / d).as_posix() not in
                   ("content/archives", "state/spool")]
        for name in dirs + files:
            if not name.startswith(".tmp-"):
                found.add((relative / name).as_posix())
    return found


def names_with(marker: str, server: Server) -> list[str]:
    """Files or folders whose name holds ``marker``: anywhere under the server's folder,
    and at the top of the working directory, the temp dir and the filesystem root (where
    a drive letter, UNC or absolute name taken literally would land)."""
    hits = [str(p) for p in server.root.parent.rglob(f"*{marker}*")]
    for top in (Path.cwd(), Path(tempfile.gettempdir()), Path("/")):
        hits += [str(top / n) for n in os.listdir(top) if marker in n]
    return hits


# -- XML that must never reach out --------------------------------------------------

@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback port nobody else uses: any connection to it is a fetch by the server."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def assert_not_contacted(sock: socket.socket) -> None:
    readable, _, _ = select.select([sock], [], [], 0)
    assert not readable, "the server connected to a URL named in a request body"


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    """A named pipe: a server that opens it to read blocks until a writer comes, so a
    file:// fetch shows as a request that never answers (and is then released)."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes here")
    path = tmp_path / f"{TOKEN}.dtd"
    os.mkfifo(path)
    yield path
    _release(path)


def _release(path: Path) -> bool:
    """Unblock a reader stuck on the pipe; True if there was one."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: nobody has it open for reading
        return False
    os.close(fd)
    return True


def _entry(inner: str = "<Title>t</Title>", xmlns_extra: str = "") -> str:
    return (f'<entry xmlns="http://www.w3.org/2005/Atom"{xmlns_extra}>'
            f'<content type="application/xml"><SmoothStreaming xmlns="{M[1:-1]}">'
            f"<Settings>{inner}</Settings></SmoothStreaming></content></entry>")


def _doctype_attacks(http: str, pipe: Path) -> dict[str, bytes]:
    laughs = '<!ENTITY l0 "lol">' + "".join(
        f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 11))
    big = "A" * 100_000
    attacks = {
        "external DTD over http": f'<!DOCTYPE entry SYSTEM "{http}/ext.dtd">{_entry()}',
        "external DTD, PUBLIC id": (
            f'<!DOCTYPE entry PUBLIC "-//Evil//DTD X//EN" "{http}/pub.dtd">{_entry()}'),
        "external DTD from a file": f'<!DOCTYPE entry SYSTEM "file://{pipe}">{_entry()}',
        "external DTD, bare path": f'<!DOCTYPE entry SYSTEM "{pipe}">{_entry()}',
        "external DTD /etc/passwd": f'<!DOCTYPE entry SYSTEM "file:///etc/passwd">{_entry()}',
        "parameter entity over http": (
            f'<!DOCTYPE entry [<!ENTITY % p SYSTEM "{http}/pe.dtd"> %p;]>{_entry()}'),
        "parameter entity from a file": (
            f'<!DOCTYPE entry [<!ENTITY % p SYSTEM "file://{pipe}"> %p;]>{_entry()}'),
        "out-of-band exfiltration": (
            '<!DOCTYPE entry [<!ENTITY % f SYSTEM "file:///etc/passwd">'
            f'<!ENTITY % d SYSTEM "{http}/oob.dtd"> %d;]>{_entry("<Title>&x;</Title>")}'),
        "external entity over http": (
            f'<!DOCTYPE entry [<!ENTITY x SYSTEM "{http}/x">]>{_entry("<Title>&x;</Title>")}'),
        "external entity from a file": (
            f'<!DOCTYPE entry [<!ENTITY x SYSTEM "file://{pipe}">]>'
            f'{_entry("<Title>&x;</Title>")}'),
        "billion laughs": f"<!DOCTYPE entry [{laughs}]>{_entry('<Title>&l10;</Title>')}",
        "quadratic blowup": (
            f'<!DOCTYPE entry [<!ENTITY a "{big}">]>'
            + _entry("<Title>" + "&a;" * 8000 + "</Title>")),
    }
    bodies = {name: ('<?xml version="1.0"?>' + text).encode() for name, text in attacks.items()}
    # The same XXE in UTF-16, for a filter that would look for the DOCTYPE in ASCII.
    bodies["XXE in UTF-16"] = (
        '<?xml version="1.0" encoding="UTF-16"?>'
        '<!DOCTYPE entry [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        + _entry("<Title>&x;</Title>")).encode("utf-16")
    assert all(len(body) < 1 << 20 for body in bodies.values())  # refused for what they are
    return bodies


@contextmanager
def _bounded(pipe: Path, what: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    except httpx.TimeoutException:
        stuck = _release(pipe)
        pytest.fail(f"{what}: no answer{' (the server opened the pipe)' if stuck else ''}")
    assert time.monotonic() - started < BOUND, f"{what} took {time.monotonic() - started:.1f}s"


def test_doctypes_are_refused_and_never_fetched(server, ops, listener, fifo):
    http = f"http://127.0.0.1:{listener.getsockname()[1]}"
    point = fresh()
    assert create(ops, point, "<Title>kept</Title>").status_code == 201
    file = server.root / point.strip("/")
    before = file.read_bytes()
    for name, body in _doctype_attacks(http, fifo).items():
        slug = fresh("xxe")
        for method, url, headers in (
            ("POST", f"{SERVICE}/settings", {**ATOM, "Slug": slug}),
            ("PUT", f"{point}/settings", ATOM),
            ("PUT", f"{point}/state", ATOM),
        ):
            with _bounded(fifo, f"{name} {method} {url}"):
                response = ops.request(method, url, content=body, headers=headers,
                                       timeout=10)
            assert_error(response, MgmtError.INVALID_XML)
            assert "root:" not in response.text and "lol" not in response.text
            assert_not_contacted(listener)
            assert not _release(fifo), f"{name}: the server opened {fifo.name}"
        assert ops.get(f"{slug}/settings").status_code == 404, name  # nothing created
    assert file.read_bytes() == before
    assert state_of(ops, point) == "Idle"
    assert ops.get("/healthz").status_code == 200


def test_xinclude_schema_locations_and_stylesheets_fetch_nothing(server, ops, listener, fifo):
    """XML that names other documents without a DOCTYPE: nothing is ever loaded."""
    http = f"http://127.0.0.1:{listener.getsockname()[1]}"
    point = fresh()
    assert create(ops, point).status_code == 201
    xi = ' xmlns:xi="http://www.w3.org/2001/XInclude"'
    xsi = ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    cases = [
        # xi:include is no element of Settings: the schema refuses it, unprocessed.
        (_entry(f'<xi:include href="{http}/inc.xml"/>', xi), MgmtError.INVALID_SCHEMA),
        (_entry(f'<Title><xi:include href="file://{fifo}" parse="text"/></Title>', xi),
         MgmtError.INVALID_SCHEMA),
        # Schema hints and processing instructions are allowed, and never followed.
        (_entry("<Title>hinted</Title>", xsi + f' xsi:schemaLocation="{M[1:-1]} {http}/s.xsd"'),
         None),
        (f'<?xml-stylesheet type="text/xsl" href="{http}/s.xsl"?>'
         + _entry("<Title>styled</Title>"), None),
    ]
    for body, error in cases:
        with _bounded(fifo, body[:60]):
            response = ops.put(f"{point}/settings", content=body.encode(), headers=ATOM,
                               timeout=10)
        if error is None:
            assert response.status_code == 200, response.text
        else:
            assert_error(response, error)
        assert_not_contacted(listener)
        assert not _release(fifo)


def test_nesting_is_bounded_at_the_documented_depth(ops):
    point = fresh()
    assert create(ops, point).status_code == 201

    def nested(levels: int) -> bytes:  # entry/content/SmoothStreaming/Settings/Title: 5 deep
        return _entry("<Title>" + "<a>" * levels + "x" + "</a>" * levels + "</Title>").encode()

    # 32 levels parse, and the schema refuses markup in a Title; 33 are refused as XML.
    assert_error(ops.put(f"{point}/settings", content=nested(27), headers=ATOM),
                 MgmtError.INVALID_SCHEMA)
    assert_error(ops.put(f"{point}/settings", content=nested(28), headers=ATOM),
                 MgmtError.INVALID_XML)
    started = time.monotonic()
    assert_error(ops.put(f"{point}/settings", content=nested(100_000), headers=ATOM),
                 MgmtError.INVALID_XML)
    assert_error(ops.put(f"{point}/state", content=b"<a>" * 100_000 + b"</a>" * 100_000,
                         headers=ATOM), MgmtError.INVALID_XML)
    assert time.monotonic() - started < 2 * BOUND


def test_huge_bodies_are_refused_without_being_read(server, ops):
    point = fresh()
    assert create(ops, point, "<Title>kept</Title>").status_code == 201
    # A gigabyte announced, six bytes sent: the answer comes at once, from the headers.
    for method, target, extra in (("PUT", f"{point}/settings", []),
                                  ("PUT", f"{point}/state", []),
                                  ("POST", f"{SERVICE}/settings", [("Slug", fresh("big"))])):
        started = time.monotonic()
        answer = raw_request(server, method, target,
                             [("Authorization", basic("operator")),
                              ("Content-Type", "application/atom+xml"), *extra],
                             b"<entry", content_length=1 << 30, timeout=BOUND)
        assert_raw_error(answer, MgmtError.INVALID_XML)
        assert time.monotonic() - started < BOUND
    # Chunked, with no length announced: refused once past 1 MiB, not read to the end.
    sent = 0

    def endless() -> Iterator[bytes]:
        nonlocal sent
        yield b'<entry xmlns="http://www.w3.org/2005/Atom"><content><Title>'
        while sent < 64 << 20:
            sent += 64 << 10
            yield b"x" * (64 << 10)

    try:
        response = ops.put(f"{point}/settings", content=endless(), headers=ATOM)
        assert_error(response, MgmtError.INVALID_XML)
    except httpx.WriteError:
        pass  # the server answered and closed while the client was still sending
    assert sent < 32 << 20, f"the server read {sent} bytes"
    # A full MiB of tiny elements costs a bounded time, not a stalled server.
    wide = _entry("<a/>" * 240_000).encode()
    assert len(wide) < 1 << 20
    started = time.monotonic()
    assert_error(ops.put(f"{point}/settings", content=wide, headers=ATOM),
                 MgmtError.INVALID_SCHEMA)
    assert time.monotonic() - started < BOUND
    assert "kept" in (server.root / point.strip("/")).read_text()


# -- Slugs ----------------------------------------------------------------------------

# "{m}" stands for a name made for each Slug, to find what it would create.
BAD_SLUGS = [
    # dot segments, plain and percent-encoded in any case
    "..", "../{m}.isml", "/../{m}.isml", "/a/../../{m}.isml", "/./{m}.isml",
    "%2e%2e/{m}.isml", "%2E%2e%2f{m}.isml", "/%2e%2E%2F%2E%2e%2f{m}.isml",
    "/.%2e/{m}.isml", "/%2e./{m}.isml", "..%2F{m}.isml", "/a/%2E%2E/%2e%2e/{m}.isml",
    # backslashes
    "..\\{m}.isml", "\\..\\{m}.isml", "/a\\..\\..\\{m}.isml", "%5c..%5c{m}.isml",
    "/{m}\\x.isml",
    # drive letters
    "C:\\{m}.isml", "c:{m}.isml", "C:/{m}.isml", "/C:/{m}.isml", "c%3a{m}.isml",
    "/d:\\{m}\\x.isml",
    # UNC paths
    "\\\\server\\share\\{m}.isml", "//server/share/{m}.isml",
    "%5c%5cserver%5cshare%5c{m}.isml", "/%2f%2fserver/share/{m}.isml",
    # NUL and other control characters, percent-encoded
    "/{m}%00.isml", "/{m}.isml%00", "/{m}.isml%00.txt", "%00/{m}.isml",
    "/{m}%0a.isml", "/{m}%09.isml", "/{m}%7f.isml", "/{m}%1b.isml",
    # overlong UTF-8 for "." and "/", and broken escapes
    "%c0%ae%c0%ae/{m}.isml", "/%C0%AE%C0%AE/{m}.isml", "%c0%2e%c0%2e/{m}.isml",
    "/..%c0%af{m}.isml", "%e0%80%ae%e0%80%ae/{m}.isml",
    "%f0%80%80%ae%f0%80%80%ae/{m}.isml", "/{m}%ZZ.isml", "/{m}%2.isml",
    # URLs and names the filesystem would read otherwise
    "file:///etc/{m}.isml", "http://127.0.0.1/{m}.isml", "/.{m}/x.isml",
    '/{m}".isml', "/{m}<x>.isml", "/{m}|x.isml", "/{m}*.isml", "/{m}?.isml",
    "/{m}.isml::$DATA",
    # not a .isml file
    "/{m}.txt", "/{m}", "/{m}.ism", "/{m}.isml.txt", "/{m}.isml;.txt",
    "/{m}.isml/", "/{m}/", "/.isml", "/{m}.isml.", "/{m}.isml%20",
    # very long
    "/{m}" + "a" * 256 + ".isml", "/{m}/" + "b/" * 520 + "x.isml",
    "/{m}" + "c" * 16_000 + ".isml",
]


@pytest.mark.parametrize("number", range(len(BAD_SLUGS)),
                         ids=[slug[:40] for slug in BAD_SLUGS])
def test_slug_in_any_spelling_creates_nothing(server, ops, number):
    marker = f"esc{TOKEN}n{number}"  # in the name every refused Slug would give its file
    slug = BAD_SLUGS[number].replace("{m}", marker)
    before = listing(server.root.parent)
    response = ops.post(f"{SERVICE}/settings", content=settings_body(),
                        headers={**ATOM, "Slug": slug})
    assert_error(response, MgmtError.SLUG_HEADER_INVALID)
    assert listing(server.root.parent) == before
    assert names_with(marker, server) == []


@pytest.mark.parametrize("slug", [
    b"/%s\x00.isml", b"/%s.isml\x00.txt", b"..\x00/%s.isml", b"/%s\x01.isml",
    b"/\xc0\xae\xc0\xae/%s\\x.isml",
], ids=repr)
def test_slug_with_raw_bytes_creates_nothing(server, slug):
    """Bytes httpx will not send: refused by the HTTP layer or the Slug rules, never written."""
    marker = f"raw{TOKEN}n{next(_names)}"
    before = listing(server.root.parent)
    answer = raw_request(server, "POST", f"{SERVICE}/settings",
                         [("Authorization", basic("operator")),
                          ("Content-Type", "application/atom+xml"),
                          ("Slug", slug % marker.encode())], settings_body())
    assert answer.status == 400
    if answer.body:  # the HTTP server's own 400 has none; the service's is the documented one
        assert_raw_error(answer, MgmtError.SLUG_HEADER_INVALID)
    assert listing(server.root.parent) == before
    assert names_with(marker, server) == []


def test_absolute_path_slug_is_a_path_under_the_root(server):
    """A Slug is always taken from the content root: the server's own absolute path in
    one names a point below the root, never the place it names on the disk."""
    outside = server.root.parent / f"abs{TOKEN}.isml"
    slug = str(outside)
    with httpx.Client(base_url=server.url, auth=("operator", PASSWORDS["operator"]),
                      timeout=20) as http:
        response = http.post(f"{SERVICE}/settings", content=settings_body(),
                             headers={**ATOM, "Slug": slug})
        assert response.status_code == 201, response.text
        assert_reveals_nothing(server, 201, response.headers.multi_items(), response.content,
                               echo=slug)
        assert not outside.exists()
        inside = server.root.joinpath(*outside.parts[1:])
        assert inside.is_file()
        assert http.delete(response.headers["location"]).status_code == 200
        assert not inside.exists()


def test_folder_named_like_a_point_is_not_found_never_a_500(server, ops):
    """A Slug can make a folder ending in .isml (/a.isml/b.isml): that folder is no point."""
    folder = fresh("dir")
    assert create(ops, f"{folder}/inner.isml").status_code == 201
    assert (server.root / folder.strip("/")).is_dir()
    for method, resource, body in (
        ("GET", "settings", None), ("HEAD", "settings", None), ("GET", "state", None),
        ("GET", "statistics", None), ("PUT", "settings", settings_body()),
        ("PUT", "state", state_body("Started")), ("DELETE", "settings", None),
    ):
        response = ops.request(method, f"{folder}/{resource}", content=body, headers=ATOM)
        assert response.status_code == 404, (method, resource, response.status_code)
        if method != "HEAD":
            assert_error(response, MgmtError.PUBLISHING_POINT_NOT_FOUND)
    refused = create(ops, folder)  # a create over the folder: refused, not a 500
    assert refused.status_code == 400, refused.text
    assert (server.root / folder.strip("/") / "inner.isml").is_file()
    assert ops.delete(f"{folder}/inner.isml/settings").status_code == 200


def test_every_link_leads_back_to_its_point(server, ops):
    """Names the Slug rules allow but a URL must escape: '%' (a folder literally named
    %2e%2e), '#', spaces, non-ASCII. Location, ids and links must all lead to the point."""
    victim = fresh("victim")
    assert create(ops, victim, "<Title>victim</Title>").status_code == 201
    folder, victim_name = victim.rsplit("/", 1)
    literal = f"{folder}/%2e%2e/{victim_name}"  # a client that reads %2e%2e as .. is at victim
    locations = {}
    for path in (literal, f"{folder}/a#b{TOKEN}.isml", f"{folder}/sp ace{TOKEN}.isml",
                 f"{folder}/caf\u00e9{TOKEN}.isml"):
        response = ops.post(f"{SERVICE}/settings", content=settings_body("<Title>named</Title>"),
                            headers={**ATOM, "Slug": quote(path)})
        assert response.status_code == 201, (path, response.text)
        location = locations[path] = response.headers["location"]
        assert location.isascii()
        followed = ops.get(location)
        assert followed.status_code == 200, (path, location, followed.status_code)
        assert etree.fromstring(followed.content).findtext(f"{A}id") == location
        assert (server.root / path.strip("/")).is_file()
    # The enumeration's links, followed, give each point's own entry.
    feed = etree.fromstring(ops.get(f"{SERVICE}/settings").content)
    hrefs = [entry.find(f"{A}link[@title='Settings']").get("href")
             for entry in feed.findall(f"{A}entry")]
    assert set(locations.values()) <= set(hrefs)
    for href in hrefs:
        if f"/{TOKEN}/" in href:
            assert etree.fromstring(ops.get(href).content).findtext(f"{A}id") == href
    # A delete sent to the Location deletes that point, and the victim stays.
    assert ops.delete(locations[literal]).status_code == 200
    assert not (server.root / literal.strip("/")).exists()
    assert (server.root / victim.strip("/")).is_file()
    for location in locations.values():  # the others, through their Location too
        if location != locations[literal]:
            assert ops.delete(location).status_code == 200


# -- methods and content types ------------------------------------------------------

RESOURCES = {
    "collection": ("", {"GET", "HEAD"}),
    "collection-settings": ("/settings", {"GET", "HEAD", "POST"}),
    "settings": ("settings", {"GET", "HEAD", "PUT", "DELETE"}),
    "state": ("state", {"GET", "HEAD", "PUT"}),
    "statistics": ("statistics", {"GET", "HEAD"}),
}
METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND",
           "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "PURGE", "FOO"]


@pytest.mark.parametrize("resource", RESOURCES)
def test_every_other_method_is_405_and_changes_nothing(server, ops, resource):
    point = fresh()
    assert create(ops, point, "<Title>kept</Title>").status_code == 201
    file = server.root / point.strip("/")
    before_file, before_tree = file.read_bytes(), listing(server.root.parent)
    suffix, allowed = RESOURCES[resource]
    url = f"{point}/{suffix}" if resource in ("settings", "state", "statistics") \
        else SERVICE + suffix
    for method in METHODS:
        if method in allowed:
            continue
        for user in ("operator", "reader"):  # 405 for anyone, before any access check
            response = raw_request(
                server, method, url,
                [("Authorization", basic(user)), ("Content-Type", "application/atom+xml"),
                 ("Slug", fresh("m"))], state_body("Started"))
            assert_raw_error(response, MgmtError.METHOD_NOT_ALLOWED)
            assert set(response.header("allow").split(", ")) == allowed, (method, url)
    assert file.read_bytes() == before_file
    assert state_of(ops, point) == "Idle"
    assert listing(server.root.parent) == before_tree


BAD_TYPES = [None, "", "text/plain", "application/json", "application/x-www-form-urlencoded",
             "multipart/form-data; boundary=x", "application/octet-stream", "text/html",
             "application/xhtml+xml", "application/atom+xmlx", "application/atom",
             "atom+xml", "*/*", "application/*", "text/xml-external-parsed-entity",
             "application/xml-dtd", "application/atom+xml, text/plain"]


def test_bodies_of_any_other_content_type_are_415_and_change_nothing(server, ops):
    point = fresh()
    assert create(ops, point, "<Title>kept</Title>").status_code == 201
    file = server.root / point.strip("/")
    before_file, before_tree = file.read_bytes(), listing(server.root.parent)
    for content_type in BAD_TYPES:
        headers = {} if content_type is None else {"Content-Type": content_type}
        for method, url, body, extra in (
            ("POST", f"{SERVICE}/settings", settings_body("<Title>new</Title>"),
             {"Slug": fresh("ct")}),
            ("PUT", f"{point}/settings", settings_body("<Title>changed</Title>"), {}),
            ("PUT", f"{point}/state", state_body("Started"), {}),
        ):
            response = ops.request(method, url, content=body, headers={**headers, **extra})
            assert_error(response, MgmtError.CONTENT_TYPE_NOT_SUPPORTED)
    assert file.read_bytes() == before_file
    assert state_of(ops, point) == "Idle"
    assert listing(server.root.parent) == before_tree


# -- who may do what ------------------------------------------------------------------

def test_read_only_user_changes_nothing_anywhere(server, ops):
    points = [fresh(), f"/hostile/{TOKEN}/deep/er/ro{next(_names)}.isml",
              f"/events/ro{TOKEN}.isml", f"/shared/ro{TOKEN}.isml", fresh("auto")]
    for point in points[:-1]:
        assert create(ops, point, "<Title>kept</Title>").status_code == 201
    assert create(ops, points[-1], "<AutoStart>true</AutoStart>").status_code == 201
    assert ops.put(f"{points[1]}/state", content=state_body("Started"),
                   headers=ATOM).status_code == 200
    states = {point: state_of(ops, point) for point in points}
    files = {point: (server.root / point.strip("/")).read_bytes() for point in points}
    tree = listing(server.root.parent)
    xxe = _doctype_attacks("http://127.0.0.1:9", Path("/nonexistent"))["external DTD /etc/passwd"]
    denied = MgmtError.ACCESS_DENIED
    for digest in (False, True):
        with hostile_client(server, "reader", digest=digest) as reader:
            for point in points:
                assert reader.get(f"{point}/settings").status_code == 200
                assert reader.head(f"{point}/state").status_code == 200
                for body in (settings_body("<Title>changed</Title>"), xxe):
                    # refused before the body is read: a hostile body is not even parsed
                    assert_error(reader.put(f"{point}/settings", content=body, headers=ATOM),
                                 denied)
                for value in ("Started", "Stopped", "Idle"):
                    assert_error(reader.put(f"{point}/state", content=state_body(value),
                                            headers=ATOM), denied)
                assert_error(reader.delete(f"{point}/settings"), denied)
                for slug in (point, point.replace(".isml", "-new.isml")):
                    assert_error(create(reader, slug), denied)
            assert_error(create(reader, f"/ro-new{TOKEN}.isml"), denied)
            # A missing point is denied the same way: no existence oracle.
            assert_error(reader.delete(f"/hostile/{TOKEN}/missing.isml/settings"), denied)
    # Nor through the ingest endpoint, where a push would start the AutoStart point.
    pushed = raw_request(server, "POST", f"{points[-1]}/Streams(ro)",
                         [("Authorization", basic("reader"))], b"\x00\x00\x00\x08free")
    assert_raw_error(pushed, denied)
    assert {point: state_of(ops, point) for point in points} == states
    assert {point: (server.root / point.strip("/")).read_bytes() for point in points} == files
    assert listing(server.root.parent) == tree
    idle = ops.put(f"{points[1]}/state", content=state_body("Idle"), headers=ATOM)
    assert idle.status_code == 200


def test_folder_user_cannot_reach_outside_through_encoded_paths(server, ops):
    """events may write /events/ and read /shared/**: no spelling of a URL or Slug gets
    it to /private/, and a refused point answers the same whether it exists or not."""
    private = f"/private/{TOKEN}.isml"
    assert create(ops, private, "<AutoStart>true</AutoStart>").status_code == 201
    file = server.root / private.strip("/")
    before_file, before_tree = file.read_bytes(), listing(server.root.parent)
    name = private.rsplit("/", 1)[1]
    urls = [
        f"/events/../private/{name}", f"/events/%2e%2e/private/{name}",
        f"/events/%2E%2e/private/{name}", f"/events/..%2fprivate%2f{name}",
        f"/events%2f..%2fprivate%2f{name}", f"/events/..%5cprivate%5c{name}",
        f"/events/%252e%252e/private/{name}", f"/events/./../private/{name}",
        f"/events/%c0%ae%c0%ae/private/{name}", f"/shared/../private/{name}",
        f"/shared/%2e%2e/private/{name}", f"//events/../private/{name}",
        f"/Events/../private/{name}", f"/events/%00/../private/{name}",
        f"/events/x.isml/../../private/{name}",
        f"/private/{name}", f"/PRIVATE/{name}", f"/eventsx/../private/{name}",
    ]
    events = [("Authorization", basic("events"))]
    typed = [*events, ("Content-Type", "application/atom+xml")]
    for url in urls:
        for method, resource, body in (
            ("GET", "settings", b""), ("GET", "state", b""), ("GET", "statistics", b""),
            ("PUT", "settings", settings_body("<Title>owned</Title>")),
            ("PUT", "state", state_body("Started")), ("DELETE", "settings", b""),
        ):
            answer = raw_request(server, method, f"{url}/{resource}", typed, body)
            assert answer.status in (401, 404), (method, url, resource, answer)
            if answer.status == 401:
                assert_raw_error(answer, MgmtError.ACCESS_DENIED)
            elif answer.body.startswith(b"<?xml"):
                assert_raw_error(answer, MgmtError.PUBLISHING_POINT_NOT_FOUND)
        pushed = raw_request(server, "POST", f"{url}/Streams(x)", events, b"\x00")
        assert pushed.status in (401, 404), (url, pushed)
    # Existing or not, a point outside its grants is only "access denied".
    for resource in ("settings", "state", "statistics"):
        there = raw_request(server, "GET", f"{private}/{resource}", events)
        missing = raw_request(server, "GET", f"/private/no{TOKEN}.isml/{resource}", events)
        assert_raw_error(there, MgmtError.ACCESS_DENIED)
        assert (there.status, there.body) == (missing.status, missing.body)
    for slug in (f"/events/../private/e{TOKEN}.isml", f"/events/%2e%2e/private/e{TOKEN}.isml",
                 f"/events/..%2fe{TOKEN}.isml", f"/events/..%5ce{TOKEN}.isml",
                 f"/events\\..\\e{TOKEN}.isml", f"/events/%c0%ae%c0%ae/e{TOKEN}.isml"):
        answer = raw_request(server, "POST", f"{SERVICE}/settings", [*typed, ("Slug", slug)],
                             settings_body())
        assert_raw_error(answer, MgmtError.SLUG_HEADER_INVALID)
    for slug in (f"/private/e{TOKEN}.isml", f"/Events/e{TOKEN}.isml", f"/eventsx/e{TOKEN}.isml",
                 f"/shared/e{TOKEN}.isml", f"/e{TOKEN}.isml"):
        answer = raw_request(server, "POST", f"{SERVICE}/settings", [*typed, ("Slug", slug)],
                             settings_body())
        assert_raw_error(answer, MgmtError.ACCESS_DENIED)
    assert file.read_bytes() == before_file
    assert state_of(ops, private) == "Idle"
    assert listing(server.root.parent) == before_tree
    # Double encoding is decoded once: a folder literally named %2e%2e, inside /events/.
    literal = f"/events/%252e%252e/lit{TOKEN}.isml"
    answer = raw_request(server, "POST", f"{SERVICE}/settings", [*typed, ("Slug", literal)],
                         settings_body())
    assert answer.status == 201, answer
    assert (server.root / "events" / "%2e%2e" / f"lit{TOKEN}.isml").is_file()
    assert ops.delete(answer.header("location")).status_code == 200


# -- the failed-login slowdown --------------------------------------------------------

SLOWED = 0.45  # the sixth failure in a row waits 0.5 s, the seventh 1 s


@pytest.fixture
def clean_failures(ops) -> Iterator[None]:
    """A success from this address before and after: it clears the failures counted for
    the address and for operator, so each test starts from none and leaves none."""
    assert ops.get(SERVICE).status_code == 200
    yield
    assert ops.get(SERVICE).status_code == 200


def _challenge(http: httpx.Client, url: str, algorithm: str) -> dict[str, str]:
    response = http.get(url)
    assert response.status_code == 401
    header = next(c for c in response.headers.get_list("www-authenticate")
                  if c.startswith("Digest ") and f"algorithm={algorithm}" in c)
    return {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]+)', header)}


def digest_header(user: str, password: str, method: str, uri: str, params: dict[str, str],
                  algorithm: str = "SHA-256") -> str:
    def h(text: str) -> str:
        return hashlib.new("md5" if algorithm == "MD5" else "sha256", text.encode()).hexdigest()

    ha1 = h(f"{user}:{params['realm']}:{password}")
    cnonce, nc = secrets.token_hex(8), "00000001"
    response = h(f"{ha1}:{params['nonce']}:{nc}:{cnonce}:auth:{h(f'{method}:{uri}')}")
    return (f'Digest username="{user}", realm="{params["realm"]}", nonce="{params["nonce"]}", '
            f'uri="{uri}", cnonce="{cnonce}", nc={nc}, qop=auth, response="{response}", '
            f'algorithm={algorithm}, opaque="{params["opaque"]}"')


def _timed(send) -> tuple[float, int]:
    started = time.monotonic()
    status = send()
    return time.monotonic() - started, status


def _assert_slowed(times: list[float]) -> None:
    """Failures 6 and 7 of a series (the first five are free) wait 0.5 s and 1 s."""
    assert times[5] >= SLOWED, times
    assert times[6] >= 2 * SLOWED, times


def test_digest_guessing_is_slowed_down_and_the_real_user_is_not(server, clean_failures):
    with hostile_client(server, None) as http:
        times = []
        for guess in range(7):
            algorithm = ("SHA-256", "MD5")[guess % 2]
            params = _challenge(http, SERVICE, algorithm)
            header = digest_header("operator", f"guess-{guess}", "GET", SERVICE, params,
                                   algorithm)
            elapsed, status = _timed(lambda h=header: http.get(
                SERVICE, headers={"Authorization": h}).status_code)
            assert status == 401
            times.append(elapsed)
        _assert_slowed(times)
        # The real user is never held back (the next failure would wait 2 s).
        params = _challenge(http, SERVICE, "SHA-256")
        header = digest_header("operator", PASSWORDS["operator"], "GET", SERVICE, params)
        elapsed, status = _timed(lambda: http.get(
            SERVICE, headers={"Authorization": header}).status_code)
        assert status == 200
        assert elapsed < 3 * SLOWED


@pytest.mark.parametrize("scheme", ["basic", "digest"])
def test_guessing_through_the_ingest_endpoint_is_slowed_down(server, ops, clean_failures,
                                                             scheme):
    point = fresh("ingest")
    assert create(ops, point, "<AutoStart>true</AutoStart>").status_code == 201
    url = f"{point}/Streams(guess)"
    with hostile_client(server, None) as http:
        times = []
        for guess in range(7):
            if scheme == "basic":
                header = basic("operator", f"guess-{guess}")
            else:
                params = _challenge(http, SERVICE, "MD5")  # ffmpeg answers MD5
                header = digest_header("operator", f"guess-{guess}", "POST", url, params, "MD5")
            elapsed, status = _timed(lambda h=header: http.post(
                url, content=b"\x00\x00\x00\x08free", headers={"Authorization": h}).status_code)
            assert status == 401
            times.append(elapsed)
    _assert_slowed(times)
    assert state_of(ops, point) == "Idle"  # no guess got a push in


def test_guesses_spread_over_endpoints_names_and_forwarded_addresses_add_up(
        server, ops, clean_failures):
    """One address guessing: switching between the management and ingest URLs, trying a
    new user name each time, claiming another X-Forwarded-For: all counted together."""
    point = fresh("spread")
    assert create(ops, point).status_code == 201
    with hostile_client(server, None) as http:
        times = []
        for guess in range(7):
            name = f"user{TOKEN}{guess}"
            method, url = (("GET", SERVICE), ("POST", f"{point}/Streams(g)"),
                           ("GET", f"{point}/state"))[guess % 3]
            header = digest_header(name, "guess", method, url, _challenge(http, SERVICE, "MD5"),
                                   "MD5")
            forwarded = {"X-Forwarded-For": f"198.51.100.{guess + 1}",
                         "Forwarded": f"for=203.0.113.{guess + 1}"}
            elapsed, status = _timed(lambda m=method, u=url, h=header, f=forwarded: http.request(
                m, u, content=b"" if m == "POST" else None,
                headers={"Authorization": h, **f}).status_code)
            assert status == 401
            times.append(elapsed)
    _assert_slowed(times)


def test_guessing_one_password_from_many_addresses_is_slowed_down(server, clean_failures):
    """Per user too: guesses at operator's password, each from another loopback address."""
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.2", 0))
    except OSError:
        pytest.skip("only 127.0.0.1 is a loopback address here")
    times = []
    with hostile_client(server, None) as http:
        for guess in range(7):
            header = digest_header("operator", f"guess-{guess}", "GET", SERVICE,
                                   _challenge(http, SERVICE, "SHA-256"))
            elapsed, answer = _timed(lambda h=header, a=f"127.0.0.{guess + 2}": raw_request(
                server, "GET", SERVICE, [("Authorization", h)], source=a))
            assert_raw_error(answer, MgmtError.AUTHENTICATION_IS_REQUIRED)
            times.append(elapsed)
    _assert_slowed(times)
