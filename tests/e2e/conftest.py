"""Fixtures: one real server for the module's tests, with users of each kind."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import Server, add_user

PASSWORDS = {
    "operator": "operator-pass-1",
    "reader": "reader-pass-1",
    "events": "events-pass-1",
}

_counter = itertools.count()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("server")
    srv = Server(base / "content", base / "state").start()
    add_user(srv.state_dir, "operator", PASSWORDS["operator"], "write:/")
    add_user(srv.state_dir, "reader", PASSWORDS["reader"], "read:/")
    add_user(srv.state_dir, "events", PASSWORDS["events"], "write:/events/", "read:/shared/**")
    # Users added by the CLI take effect without a restart: wait (bounded) for it.
    deadline = time.monotonic() + 10
    while True:
        status = httpx.get(
            srv.url + "/services/smoothstreaming/publishingpoints.isml",
            auth=("events", PASSWORDS["events"]), timeout=10).status_code
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 200, "users added with `smoothlive user add` were not picked up"
    yield srv
    srv.stop()


def client(srv: Server, user: str = "operator", *, digest: bool = False) -> httpx.Client:
    password = srv.admin_password if user == "admin" else PASSWORDS[user]
    auth = httpx.DigestAuth(user, password) if digest else httpx.BasicAuth(user, password)
    return httpx.Client(base_url=srv.url, auth=auth, timeout=20)


@pytest.fixture
def operator(server: Server) -> Iterator[httpx.Client]:
    with client(server) as http:
        yield http


@pytest.fixture
def reader(server: Server) -> Iterator[httpx.Client]:
    with client(server, "reader") as http:
        yield http


@pytest.fixture
def anonymous(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=20) as http:
        yield http


@pytest.fixture
def point_name() -> str:
    """A fresh point path per test, so tests sharing a server never collide."""
    return f"/tests/p{next(_counter)}-{int(time.time() * 1000) % 100000}.isml"


def fresh_dirs(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "content", tmp_path / "state"
