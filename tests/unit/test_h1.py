"""The front processes' HTTP/1.1 server (http/h1.py), over loopback with raw sockets:
quick answers (from memory and with sendfile from a memory file), the ASGI path
with streamed bodies and 100-continue, pipelining, and its limits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvloop

from smoothlive.http.h1 import H1Server, Quick, listening_socket

BIG = bytes(range(256)) * 65536  # 16 MB: more than a socket buffer takes (4 MB at most)


def _memory_file(body: bytes) -> int:
    fd = os.memfd_create("test")
    os.write(fd, body)
    return fd


FILE = _memory_file(BIG)


def quick(method: bytes, target: bytes, headers) -> Quick | None:
    if target == b"/memory":
        return Quick(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", b"hello")
    if target == b"/dropped":  # the cache closes its file while the answer still goes out
        fd = _memory_file(BIG)
        asyncio.get_running_loop().call_soon(os.close, fd)
        return Quick(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(BIG),
                     fd=fd, size=len(BIG))
    if target == b"/file":
        return Quick(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(BIG),
                     fd=FILE, size=len(BIG))
    return None


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    if path in ("/memory", "/file"):  # as a front: its ASGI path answers hits too
        body = b"hello" if path == "/memory" else BIG
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
        return
    if path == "/refuse":  # answers before reading the body, as a 401 does
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": b"no"})
        return
    if path == "/fail":
        raise RuntimeError("a bug with a secret in it")
    if path == "/stream":  # no content-length: chunked
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for piece in (b"one", b"two", b""):
            await send({"type": "http.response.body", "body": piece, "more_body": bool(piece)})
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    text = f"{scope['method']} {path} {scope['query_string'].decode()} {size}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(text))]})
    await send({"type": "http.response.body", "body": text})


@contextmanager
def serving(**limits) -> Iterator[tuple[int, H1Server]]:
    """The server on a loopback port, in a thread with its own event loop."""
    sock = listening_socket("127.0.0.1", 0)
    server = H1Server(app, quick=quick, **limits)
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(sock),))
    thread.start()
    try:
        yield sock.getsockname()[1], server
    finally:
        loop.call_soon_threadsafe(server.stop)
        thread.join(10)
        sock.close()
        assert not thread.is_alive()


@contextmanager
def served(**limits) -> Iterator[int]:
    with serving(**limits) as (port, _):
        yield port


def connect(port: int) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    return client


def read_answer(client: socket.socket, buffer: bytearray,
                head_only: bool = False) -> tuple[bytes, bytes]:
    """(head, body) of one answer with a content-length or chunked; the rest stays."""
    while b"\r\n\r\n" not in buffer:
        data = client.recv(65536)
        assert data, f"connection closed; got {bytes(buffer)!r}"
        buffer += data
    end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:end])
    del buffer[:end]
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        body = b""
        while True:
            while b"\r\n" not in buffer:
                buffer += client.recv(65536)
            line_end = buffer.index(b"\r\n")
            size = int(buffer[:line_end], 16)
            while len(buffer) < line_end + 2 + size + 2:
                buffer += client.recv(65536)
            body += bytes(buffer[line_end + 2:line_end + 2 + size])
            del buffer[:line_end + 2 + size + 2]
            if size == 0:
                return head, body
    length = 0
    for line in lower.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    if head_only or head.startswith((b"HTTP/1.1 304", b"HTTP/1.1 100")):
        length = 0
    while len(buffer) < length:
        data = client.recv(1 << 20)
        assert data, "connection closed mid-body"
        buffer += data
    body = bytes(buffer[:length])
    del buffer[:length]
    return head, body


def closed_by_server(client: socket.socket) -> bool:
    client.settimeout(10)
    try:
        while client.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def test_quick_answers_from_memory_and_from_a_file_with_sendfile():
    with served() as port, connect(port) as client:
        buffer = bytearray()
        client.sendall(b"GET /memory HTTP/1.1\r\nhost: x\r\n\r\n")
        assert read_answer(client, buffer) == (
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", b"hello")
        client.sendall(b"GET /file HTTP/1.1\r\nhost: x\r\n\r\n")
        head, body = read_answer(client, buffer)
        assert body == BIG  # by sendfile, continued as the socket has room
        client.sendall(b"HEAD /file HTTP/1.1\r\nhost: x\r\n\r\n")
        head, _ = read_answer(client, buffer, head_only=True)
        assert head.startswith(b"HTTP/1.1 200") and b"content-length: %d" % len(BIG) in head
        client.sendall(b"GET /memory HTTP/1.1\r\nhost: x\r\n\r\n")  # no body came between
        assert read_answer(client, buffer)[1] == b"hello"


def test_a_slow_reader_gets_a_file_answer_whole():
    with served() as port, connect(port) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.sendall(b"GET /file HTTP/1.1\r\nhost: x\r\n\r\n" * 3)
        buffer = bytearray()
        for _ in range(3):
            assert read_answer(client, buffer)[1] == BIG


def test_a_file_answer_outlives_the_cache_entry_it_came_from():
    with served() as port, connect(port) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.sendall(b"GET /dropped HTTP/1.1\r\nhost: x\r\n\r\n"
                       b"GET /memory HTTP/1.1\r\nhost: x\r\n\r\n")
        buffer = bytearray()
        assert read_answer(client, buffer)[1] == BIG  # more than the socket takes at once
        assert read_answer(client, buffer)[1] == b"hello"  # then, in order, the next


def _certificate(folder) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (PEM files: cert, key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


def test_over_tls_file_answers_are_read_and_written(tmp_path):
    cert, key = _certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with serving(ssl_context=context) as (port, _):
        client_context = ssl.create_default_context(cafile=cert)
        with client_context.wrap_socket(connect(port), server_hostname="127.0.0.1") as client:
            buffer = bytearray()
            client.sendall(b"GET /file HTTP/1.1\r\nhost: x\r\n\r\n"
                           b"GET /memory HTTP/1.1\r\nhost: x\r\n\r\n"
                           b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc")
            assert read_answer(client, buffer)[1] == BIG  # no sendfile through TLS
            assert read_answer(client, buffer)[1] == b"hello"
            assert read_answer(client, buffer)[1] == b"POST /echo  3"


def test_pipelined_requests_are_answered_in_order_across_both_paths():
    with served() as port, connect(port) as client:
        client.sendall(b"GET /app?a=1 HTTP/1.1\r\nhost: x\r\n\r\n"
                       b"GET /memory HTTP/1.1\r\nhost: x\r\n\r\n"
                       b"GET /app?a=2 HTTP/1.1\r\nhost: x\r\n\r\n")
        buffer = bytearray()
        assert read_answer(client, buffer)[1] == b"GET /app a=1 0"
        # Behind a request in progress, a quick one waits its turn (on the ASGI path).
        assert read_answer(client, buffer)[1] == b"hello"
        assert read_answer(client, buffer)[1] == b"GET /app a=2 0"


def test_a_streamed_body_reaches_the_application_and_chunked_answers_go_out():
    with served() as port, connect(port) as client:
        buffer = bytearray()
        client.sendall(b"POST /ingest HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(50):
            client.sendall(b"10000\r\n" + b"m" * 0x10000 + b"\r\n")
        client.sendall(b"0\r\n\r\n")
        assert read_answer(client, buffer)[1] == b"POST /ingest  %d" % (50 * 0x10000)
        client.sendall(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")  # the same connection
        head, body = read_answer(client, buffer)
        assert b"transfer-encoding: chunked" in head and body == b"onetwo"


def test_100_continue_is_sent_only_when_the_application_reads_the_body():
    with served() as port:
        with connect(port) as client:
            client.sendall(b"POST /refuse HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n"
                           b"expect: 100-continue\r\n\r\n")
            head, _ = read_answer(client, bytearray())
            assert head.startswith(b"HTTP/1.1 401") and b"connection: close" in head
            assert closed_by_server(client)  # the unread body cannot be skipped
        with connect(port) as client:
            client.sendall(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n"
                           b"expect: 100-continue\r\n\r\n")
            buffer = bytearray()
            assert read_answer(client, buffer)[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
            client.sendall(b"abcde")
            assert read_answer(client, buffer)[1] == b"POST /echo  5"


def test_a_100_continue_waits_for_a_file_answer_still_going_out():
    with served() as port, connect(port) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.sendall(b"GET /file HTTP/1.1\r\nhost: x\r\n\r\n"
                       b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n"
                       b"expect: 100-continue\r\n\r\n")
        buffer = bytearray()
        assert read_answer(client, buffer)[1] == BIG  # not cut by the 100
        assert read_answer(client, buffer)[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.sendall(b"abcde")
        assert read_answer(client, buffer)[1] == b"POST /echo  5"


def test_an_application_error_is_a_500_without_details():
    with served() as port, connect(port) as client:
        client.sendall(b"GET /fail HTTP/1.1\r\nhost: x\r\n\r\n")
        head, body = read_answer(client, bytearray())
        assert head.startswith(b"HTTP/1.1 500") and b"secret" not in body


def test_malformed_and_oversized_heads_are_refused():
    with served(max_header_kb=8) as port:
        with connect(port) as client:
            client.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            assert read_answer(client, bytearray())[0].startswith(b"HTTP/1.1 400")
        with connect(port) as client:
            client.sendall(b"GET / HTTP/1.1\r\nx-big: " + b"a" * 9000 + b"\r\n\r\n")
            assert read_answer(client, bytearray())[0].startswith(b"HTTP/1.1 431")


def test_a_connection_without_a_head_is_closed_after_the_header_timeout():
    with served(header_timeout=0.5) as port, connect(port) as client:
        client.sendall(b"GET /memory HTTP/1.1\r\n")  # never finished
        assert client.recv(100) == b""  # closed by the sweep, within the socket timeout


def test_connections_over_the_limit_wait_in_the_listen_queue():
    with served(max_connections=1) as port, connect(port) as first:
        buffer = bytearray()
        first.sendall(b"GET /memory HTTP/1.1\r\nhost: x\r\n\r\n")
        assert read_answer(first, buffer)[1] == b"hello"  # held: the limit is reached
        with connect(port) as second:  # the kernel queues it
            second.sendall(b"GET /memory HTTP/1.1\r\nhost: x\r\n\r\n")
            second.settimeout(0.5)
            try:
                early = second.recv(100)
            except TimeoutError:
                early = None
            assert early is None  # not accepted while the first is open
            first.close()
            second.settimeout(10)
            assert read_answer(second, bytearray())[1] == b"hello"


def test_the_lifespan_runs_around_serving():
    events = []

    async def recording(scope, receive, send):
        assert scope["type"] == "lifespan"
        events.append((await receive())["type"])
        await send({"type": "lifespan.startup.complete"})
        events.append((await receive())["type"])
        await send({"type": "lifespan.shutdown.complete"})

    sock = listening_socket("127.0.0.1", 0)
    server = H1Server(recording)

    async def run():
        serving = asyncio.create_task(server.serve(sock))
        while not events:
            await asyncio.sleep(0.01)
        server.stop()
        await asyncio.wait_for(serving, 10)

    uvloop.run(run())
    sock.close()
    assert events == ["lifespan.startup", "lifespan.shutdown"]


def test_a_client_that_pipelines_and_never_reads_is_held_to_a_bounded_buffer():
    with serving() as (port, server), connect(port) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.settimeout(0.2)
        with contextlib.suppress(TimeoutError):  # the server may stop reading first
            for _ in range(200):  # 16 MB answers: 3 GB if all were buffered
                client.sendall(b"GET /file HTTP/1.1\r\nhost: x\r\n\r\n")

        def paused() -> bool:  # read from this thread: a snapshot is enough
            return any(c.read_paused for c in list(server.connections))

        for _ in range(100):  # bounded: 5 s
            if paused():
                break
            threading.Event().wait(0.05)
        assert paused()
        (connection,) = server.connections
        assert connection.transport.get_write_buffer_size() < 2 * len(BIG)  # one answer
