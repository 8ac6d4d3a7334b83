"""The Authenticator: Basic and Digest end to end, the Basic cache, the failed-login slowdown."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher

import smoothlive.auth.authenticator as authenticator_module
from smoothlive.auth.authenticator import Authenticator
from smoothlive.auth.basic import parse_basic
from smoothlive.auth.users import UserStore, users_path

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
SECRET = b"k" * 32
PASSWORD = "s3cret:with colon"


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class CountingAuthenticator(Authenticator):
    """Counts the real argon2 verifications and records the delays instead of sleeping."""

    def __init__(self, *args, **kwargs) -> None:
        self.delays: list[float] = []

        async def record(delay: float) -> None:
            self.delays.append(delay)

        kwargs.setdefault("sleep", record)
        super().__init__(*args, **kwargs)
        self.argon2_calls = 0

    def _argon2_verify(self, argon2_hash: str, password: str) -> bool:
        self.argon2_calls += 1
        return super()._argon2_verify(argon2_hash, password)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def store(tmp_path: Path) -> UserStore:
    store = UserStore(users_path(tmp_path), hasher=FAST)
    store.add("alice", PASSWORD, ["write:/live/"])
    store.add("bob", "bobpw", ["read:/"])
    return store


@pytest.fixture
def mono() -> Clock:
    return Clock(1000.0)


@pytest.fixture
def wall() -> Clock:
    return Clock(1_700_000_000.0)


@pytest.fixture
def auth(store: UserStore, mono: Clock, wall: Clock) -> CountingAuthenticator:
    return CountingAuthenticator(store, SECRET, clock=mono, wall_clock=wall)


# -- Basic parsing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (basic("alice", "pw"), ("alice", "pw")),
        ("basic " + base64.b64encode(b"a:b").decode(), ("a", "b")),
        ("BASIC " + base64.b64encode(b"a:b").decode(), ("a", "b")),
        ("Basic   " + base64.b64encode(b"a:b").decode() + "  ", ("a", "b")),
        (basic("a", "p:w:"), ("a", "p:w:")),  # only the first colon separates
        (basic("a", ""), ("a", "")),
        (basic("jörg", "pässwörd"), ("jörg", "pässwörd")),  # UTF-8
        ("Basic " + base64.b64encode(b"a:bc").decode().rstrip("="), ("a", "bc")),  # no padding
    ],
)
def test_parse_basic_accepts(value: str, expected: tuple[str, str]) -> None:
    assert parse_basic(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Basic",
        "Basic ",
        "Basicabc",
        "Bearer " + base64.b64encode(b"a:b").decode(),
        "Digest username=a",
        "Basic " + base64.b64encode(b"no colon").decode(),
        "Basic " + base64.b64encode(b":emptyuser").decode(),
        "Basic " + base64.b64encode(b"a:\xff\xfe").decode(),  # not UTF-8
        "Basic " + base64.b64encode(b"a:b\x00c").decode(),  # control characters
        "Basic " + base64.b64encode(b"a\r\n:b").decode(),
        "Basic !!!!",
        "Basic YWJj$GVm",
        "Basic a",  # impossible length
        "Basic " + base64.b64encode(b"a:b").decode() + " extra",
        "Basic " + "QUFB" * 2000,  # oversized
    ],
)
def test_parse_basic_refuses(value: str) -> None:
    assert parse_basic(value) is None


# -- Basic ---------------------------------------------------------------------------


async def test_basic_ok_and_cached(auth: CountingAuthenticator, mono: Clock) -> None:
    first = await auth.authenticate("GET", basic("alice", PASSWORD), "10.0.0.1")
    assert first.ok and first.reason == "ok" and first.user.name == "alice"
    assert first.scheme == "basic" and first.uri is None
    assert auth.argon2_calls == 1
    second = await auth.authenticate("GET", basic("alice", PASSWORD), "10.0.0.1")
    assert second.ok
    assert auth.argon2_calls == 1  # served from the cache
    mono.now += 61
    assert (await auth.authenticate("GET", basic("alice", PASSWORD), "10.0.0.1")).ok
    assert auth.argon2_calls == 2  # the cache entry expired


async def test_a_burst_of_one_credential_costs_one_argon2_run(
    auth: CountingAuthenticator,
) -> None:
    outcomes = await asyncio.gather(*(
        auth.authenticate("GET", basic("alice", PASSWORD), "10.0.0.1") for _ in range(20)))
    assert all(outcome.ok for outcome in outcomes)
    assert auth.argon2_calls == 1
    wrong = await asyncio.gather(*(
        auth.authenticate("GET", basic("alice", "not-it"), "10.0.0.2") for _ in range(3)))
    assert not any(outcome.ok for outcome in wrong)


async def test_cache_does_not_accept_other_passwords(auth: CountingAuthenticator) -> None:
    assert (await auth.authenticate("GET", basic("alice", PASSWORD), "h")).ok
    wrong = await auth.authenticate("GET", basic("alice", PASSWORD + "x"), "h")
    assert not wrong.ok and wrong.reason == "bad-credentials"
    assert auth.argon2_calls == 2


async def test_changed_password_invalidates_cache(
    auth: CountingAuthenticator, store: UserStore, mono: Clock
) -> None:
    assert (await auth.authenticate("GET", basic("alice", PASSWORD), "h")).ok
    UserStore(store.path, hasher=FAST).add("alice", "new password", replace=True)
    mono.now += 2  # past the refresh interval: the authenticator reloads the store
    old = await auth.authenticate("GET", basic("alice", PASSWORD), "h")
    assert not old.ok
    assert (await auth.authenticate("GET", basic("alice", "new password"), "h")).ok


async def test_removed_user_is_refused(
    auth: CountingAuthenticator, store: UserStore, mono: Clock
) -> None:
    assert (await auth.authenticate("GET", basic("bob", "bobpw"), "h")).ok
    UserStore(store.path, hasher=FAST).remove("bob")
    mono.now += 2
    assert not (await auth.authenticate("GET", basic("bob", "bobpw"), "h")).ok


async def test_unknown_user_still_pays_for_argon2(auth: CountingAuthenticator) -> None:
    outcome = await auth.authenticate("GET", basic("mallory", "pw"), "h")
    assert not outcome.ok and outcome.reason == "bad-credentials"
    assert auth.argon2_calls == 1  # against a throwaway hash: no timing oracle


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("Bearer abc", "unsupported-scheme"),
        ("Basic %%%", "malformed"),
        ("Digest nonsense", "malformed"),
    ],
)
async def test_refusal_reasons(
    auth: CountingAuthenticator, header: str | None, reason: str
) -> None:
    outcome = await auth.authenticate("GET", header, "h")
    assert not outcome.ok and outcome.reason == reason


# -- Digest --------------------------------------------------------------------------


def digest_via_httpx(auth: Authenticator, password: str = PASSWORD, *, stale: bool = False) -> str:
    """httpx.DigestAuth's own flow answering the authenticator's 401 headers."""
    headers = [(k.decode(), v.decode()) for k, v in auth.challenge_headers(stale=stale)]
    client_auth = httpx.DigestAuth("alice", password)
    flow = client_auth.sync_auth_flow(httpx.Request("PUT", "http://o/services/pp/live/a.isml"))
    request = next(flow)
    return flow.send(httpx.Response(401, headers=headers, request=request)).headers["authorization"]


def test_challenge_headers(auth: CountingAuthenticator) -> None:
    headers = auth.challenge_headers()
    assert [k for k, _ in headers] == [b"www-authenticate"] * 3
    assert b"algorithm=SHA-256" in headers[0][1]
    assert b"algorithm=MD5" in headers[1][1]
    assert headers[2][1] == b'Basic realm="smoothlive", charset="UTF-8"'
    assert all(b"stale=true" in v for _, v in auth.challenge_headers(stale=True)[:2])


async def test_digest_ok(auth: CountingAuthenticator) -> None:
    outcome = await auth.authenticate("PUT", digest_via_httpx(auth), "h")
    assert outcome.ok and outcome.user.name == "alice" and outcome.scheme == "digest"
    assert outcome.uri == "/services/pp/live/a.isml"
    assert auth.argon2_calls == 0


async def test_digest_wrong_password(auth: CountingAuthenticator) -> None:
    outcome = await auth.authenticate("PUT", digest_via_httpx(auth, "nope"), "h")
    assert not outcome.ok and outcome.reason == "bad-credentials" and not outcome.stale
    assert auth.failure_count("user:alice") == 1


async def test_digest_stale_nonce_is_not_a_failure(
    auth: CountingAuthenticator, wall: Clock
) -> None:
    value = digest_via_httpx(auth)
    wall.now += 301
    outcome = await auth.authenticate("PUT", value, "h")
    assert not outcome.ok and outcome.stale and outcome.reason == "stale"
    assert auth.failure_count("host:h") == 0


async def test_digest_unusable_after_realm_change(tmp_path: Path) -> None:
    UserStore(users_path(tmp_path), "old", hasher=FAST).add("alice", PASSWORD)
    store = UserStore(users_path(tmp_path), "smoothlive", hasher=FAST)
    auth = Authenticator(store, SECRET)
    assert not (await auth.authenticate("PUT", digest_via_httpx(auth), "h")).ok
    assert (await auth.authenticate("PUT", basic("alice", PASSWORD), "h")).ok


# -- the slowdown ---------------------------------------------------------------------


def test_failure_delay_values(auth: CountingAuthenticator) -> None:
    assert [auth.failure_delay(n) for n in range(13)] == [
        0,
        0,
        0,
        0,
        0,
        0,
        0.5,
        1,
        2,
        4,
        8,
        8,
        8,
    ]
    assert auth.failure_delay(10**6) == 8


async def test_delays_grow_after_five_failures_and_reset_on_success(
    auth: CountingAuthenticator,
) -> None:
    outcomes = [await auth.authenticate("GET", basic("alice", "bad"), "h") for _ in range(10)]
    assert all(o.reason == "bad-credentials" for o in outcomes)
    assert [o.delay for o in outcomes] == [0, 0, 0, 0, 0, 0.5, 1, 2, 4, 8]
    assert auth.delays == [0.5, 1, 2, 4, 8]

    ok = await auth.authenticate("GET", basic("alice", PASSWORD), "h")
    assert ok.ok and ok.delay == 0  # a success is never held back
    assert auth.failure_count("user:alice") == 0 and auth.failure_count("host:h") == 0
    again = await auth.authenticate("GET", basic("alice", "bad"), "h")
    assert again.delay == 0


async def test_failures_count_per_user_across_hosts(auth: CountingAuthenticator) -> None:
    for i in range(5):
        await auth.authenticate("GET", basic("alice", "bad"), f"10.0.0.{i}")
    sixth = await auth.authenticate("GET", basic("alice", "bad"), "10.9.9.9")
    assert sixth.delay == 0.5
    other_user = await auth.authenticate("GET", basic("bob", "bad"), "10.8.8.8")
    assert other_user.delay == 0


async def test_failures_count_per_host_across_users(auth: CountingAuthenticator) -> None:
    for i in range(5):
        await auth.authenticate("GET", basic(f"user{i}", "bad"), "10.0.0.1")
    assert (await auth.authenticate("GET", basic("bob", "bad"), "10.0.0.1")).delay == 0.5


async def test_digest_failures_are_slowed_too(auth: CountingAuthenticator) -> None:
    for _ in range(5):
        await auth.authenticate("PUT", digest_via_httpx(auth, "bad"), "h")
    assert (await auth.authenticate("PUT", digest_via_httpx(auth, "bad"), "h")).delay == 0.5


async def test_window_slides(auth: CountingAuthenticator, mono: Clock) -> None:
    for _ in range(5):
        await auth.authenticate("GET", basic("alice", "bad"), "h")
    mono.now += 301
    assert (await auth.authenticate("GET", basic("alice", "bad"), "h")).delay == 0


async def test_tables_stay_bounded(auth: CountingAuthenticator, monkeypatch) -> None:
    monkeypatch.setattr(authenticator_module, "MAX_TRACKED", 20)
    for i in range(30):
        await auth.authenticate("GET", "Basic %%%", f"10.0.0.{i}")
    assert len(auth._failures) <= 20


async def test_real_slowdown_waits_without_blocking_others(store: UserStore) -> None:
    auth = Authenticator(store, SECRET, delay_base=0.2, failure_threshold=1)
    await auth.authenticate("GET", basic("alice", "bad"), "10.0.0.1")

    async def timed(coro):
        start = time.perf_counter()
        outcome = await coro
        return outcome, time.perf_counter() - start

    (slow, slow_s), (fast, fast_s) = await asyncio.gather(
        timed(auth.authenticate("GET", basic("alice", "bad"), "10.0.0.1")),
        timed(auth.authenticate("GET", basic("bob", "bobpw"), "10.0.0.2")),
    )
    assert not slow.ok and slow.delay == 0.2 and slow_s >= 0.2
    assert fast.ok and fast_s < 0.2  # the event loop was free while the failure waited


async def test_too_many_slowed_attempts_are_throttled(auth: CountingAuthenticator) -> None:
    release = asyncio.Event()

    async def held(delay: float) -> None:
        await release.wait()

    auth._sleep = held
    for _ in range(5):
        await auth.authenticate("GET", basic("alice", "bad"), "h")
    pending = [
        asyncio.create_task(auth.authenticate("GET", basic("alice", "bad"), "h"))
        for _ in range(authenticator_module.MAX_SLOWED_PER_HOST)
    ]
    await asyncio.sleep(0.05)
    calls = auth.argon2_calls
    throttled = await auth.authenticate("GET", basic("alice", "bad"), "h")
    assert throttled.reason == "throttled"
    assert auth.argon2_calls == calls  # refused before spending CPU on argon2
    # while the host floods, even right credentials from it wait their turn
    assert (await auth.authenticate("PUT", digest_via_httpx(auth), "h")).reason == "throttled"
    assert (await auth.authenticate("GET", basic("alice", PASSWORD), "other")).ok
    release.set()
    assert all(o.reason == "bad-credentials" for o in await asyncio.gather(*pending))
    assert auth._slowed == {}


async def test_nothing_secret_is_logged(auth: CountingAuthenticator, caplog) -> None:
    header = basic("alice", PASSWORD + "-wrong")
    with caplog.at_level(logging.DEBUG):
        for _ in range(7):
            await auth.authenticate("GET", header, "h")
        await auth.authenticate("GET", basic("alice", PASSWORD), "h")
        await auth.authenticate("PUT", digest_via_httpx(auth, "digest-wrong"), "h")
    assert caplog.records  # failures are logged...
    text = caplog.text
    for secret in (PASSWORD, header.split()[1], "digest-wrong", "response="):
        assert secret not in text  # ...but never a password or Authorization value
