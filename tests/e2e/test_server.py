"""The server process itself: both HTTP servers, signals, health, TLS."""

from __future__ import annotations

import base64
import signal
import socket
import ssl
import subprocess
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.harness import Server
from tests.e2e.test_management_api import SERVICE, create, state_of


def _expect_continue_answer(url: str) -> str:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(
            f"POST {SERVICE}/settings HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Content-Type: application/atom+xml\r\nSlug: /x.isml\r\n"
            "Content-Length: 100000\r\nExpect: 100-continue\r\n\r\n".encode())
        return sock.recv(65536).decode("latin-1")


@pytest.mark.parametrize("http_server", ["granian", "uvicorn"])
def test_each_http_server_serves_the_api_and_stops_on_sigterm(tmp_path, http_server):
    srv = Server(tmp_path / "content", tmp_path / "state",
                 extra_args=("--http-server", http_server)).start()
    try:
        with httpx.Client(base_url=srv.url, auth=("admin", srv.admin_password), timeout=20) as h:
            assert create(h, "/s/one.isml").status_code == 201
            assert state_of(h, "/s/one.isml") == "Idle"
            assert h.get("/healthz").text == "ok\n"
        assert _expect_continue_answer(srv.url).startswith("HTTP/1.1 401")
    finally:
        code = srv.stop(signal.SIGTERM)
    assert code == 0
    assert "SIGTERM: shutting down" in srv.log()


def test_a_second_signal_exits_at_once(tmp_path):
    """A request still uploading holds up a graceful stop; a second signal does not wait.

    (With uvicorn an unfinished upload does not hold up the stop, so there is
    nothing to cut short: this is granian's case.)
    """
    srv = Server(tmp_path / "content", tmp_path / "state").start()
    parts = urlsplit(srv.url)
    token = base64.b64encode(f"admin:{srv.admin_password}".encode()).decode()
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(
            f"POST {SERVICE}/settings HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Authorization: Basic {token}\r\nContent-Type: application/atom+xml\r\n"
            "Slug: /slow.isml\r\nContent-Length: 1000\r\n\r\n<entry".encode())
        process = srv.process
        process.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=1)  # graceful: still waiting for the upload
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=5)
    srv.process = None
    assert process.returncode == 1
    assert "second signal: exiting at once" in srv.log()


@pytest.mark.parametrize("extra", [(), ("--workers", "2", "--fronts-only")],
                         ids=["one-process", "fronts-only"])
def test_tls(tmp_path, extra):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)], capture_output=True, timeout=60)
    assert made.returncode == 0, made.stderr
    srv = Server(tmp_path / "content", tmp_path / "state",
                 extra_args=("--tls-cert", str(cert), "--tls-key", str(key), *extra)).start()
    try:
        assert srv.url.startswith("https://")
        with httpx.Client(base_url=srv.url, auth=("admin", srv.admin_password), timeout=20,
                          verify=ssl.create_default_context(cafile=str(cert))) as h:
            response = h.get(SERVICE)
            assert response.status_code == 200
            assert "<feed" in response.text
    finally:
        srv.stop()


def test_unknown_urls_are_plain_404(server):
    response = httpx.get(server.url + "/nothing/here", timeout=10)
    assert response.status_code == 404


def test_demo_point_plays_two_bitrates(tmp_path):
    """`make run` runs the server with --demo: a live point fed by ffmpeg's test signal."""
    srv = Server(tmp_path / "content", tmp_path / "state", extra_args=("--demo",)).start()
    try:
        line = srv.lines.get(timeout=30)
        assert line.startswith("smoothlive demo: watch live video at ")
        assert "/web/player.html?url=" in line
        with httpx.Client(base_url=srv.url, timeout=20) as http:
            deadline = time.monotonic() + 60
            content = b""
            while time.monotonic() < deadline:
                response = http.get("/demo/live.isml/Manifest")
                content = response.content
                if response.status_code == 200 and b'Bitrate="300000"' in content and \
                        b'Bitrate="800000"' in content:
                    break
                time.sleep(0.2)
            assert b'Bitrate="800000"' in content and b'Bitrate="300000"' in content
            assert b'Type="audio"' in content
    finally:
        srv.stop()
    assert (tmp_path / "content" / "demo" / "live.isml").is_file()
