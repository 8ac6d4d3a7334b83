"""Authentication of management requests: Digest or Basic against the ``UserStore``.

What the HTTP layer calls. ``challenge_headers()`` gives the 401 ``WWW-Authenticate``
headers (Digest SHA-256, Digest MD5, Basic: RFC 7235 section 4.1 lets a server offer
several); ``authenticate()`` checks an ``Authorization`` value.

Costs and abuse:

* argon2 verification (~50 ms of CPU) runs in a worker thread, a few at a time, so it
  never stalls the event loop; a successful Basic check is remembered for
  ``BASIC_CACHE_SECONDS`` keyed by user, a keyed hash of the password and the stored
  hash, so a changed password or a removed user is not served from the cache;
* failed attempts are counted per client host and per user name over a sliding window;
  past ``failure_threshold`` each further failure is answered only after a delay that
  doubles up to ``delay_cap`` (an ``asyncio.sleep``: other requests go on). A success
  clears the counters of that user and host. Successes are never delayed, so an
  attacker cannot lock the real user out;
* a host with too many slowed attempts in flight gets "throttled" at once.

Neither passwords nor ``Authorization`` values are ever logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from smoothlive.auth.basic import parse_basic
from smoothlive.auth.digest import DigestAuthority
from smoothlive.auth.users import User, UserStore

log = logging.getLogger(__name__)

BASIC_CACHE_SECONDS = 60.0
BASIC_CACHE_SIZE = 1024
MAX_TRACKED = 10_000  # failure-table entries (hosts and user names) kept at most
MAX_ARGON2_THREADS = 4
MAX_SLOWED_PER_HOST = 8


@dataclass(frozen=True, kw_only=True)
class AuthOutcome:
    """The answer for one request.

    ``reason`` is one of "ok", "missing" (no Authorization), "unsupported-scheme",
    "malformed", "bad-credentials", "stale" (Digest nonce out of date: re-challenge with
    ``stale=True``), "throttled". ``uri`` is the Digest ``uri`` parameter, which the caller
    must compare with the request target (RFC 7616 section 3.4.6); None for Basic.
    """

    user: User | None
    reason: str
    stale: bool = False
    uri: str | None = None
    scheme: str | None = None
    delay: float = 0.0

    @property
    def ok(self) -> bool:
        return self.user is not None


def _printable(name: str | None) -> str:
    """A user name as it may appear in a log line: bounded and escaped."""
    return "-" if name is None else repr(name[:64])


class Authenticator:
    """Digest (preferred) and Basic authentication with a failed-login slowdown.

    ``clock`` (monotonic) times the Basic cache, the failure window and store refreshes;
    ``wall_clock`` stamps the Digest nonces.
    """

    def __init__(
        self,
        store: UserStore,
        secret: bytes,
        realm: str = "smoothlive",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        *,
        nonce_lifetime: float = 300.0,
        failure_threshold: int = 5,
        failure_window: float = 300.0,
        delay_base: float = 0.5,
        delay_cap: float = 8.0,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        refresh_interval: float = 1.0,
    ) -> None:
        self.store = store
        self.realm = realm
        self.digest = DigestAuthority(secret, realm, nonce_lifetime)
        self._clock = clock
        self._wall_clock = wall_clock
        self.failure_threshold = failure_threshold
        self.failure_window = failure_window
        self.delay_base = delay_base
        self.delay_cap = delay_cap
        self._sleep = sleep
        self._refresh_interval = refresh_interval
        self._next_refresh = float("-inf")
        self._hasher = PasswordHasher()
        self._cache_key = secrets.token_bytes(32)
        self._basic_cache: OrderedDict[tuple[str, bytes, str], float] = OrderedDict()
        self._verifying: dict[tuple[str, bytes, str], asyncio.Future[bool]] = {}
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._slowed: dict[str, int] = {}
        self._argon2_slots: asyncio.Semaphore | None = None
        self._dummy_hash: str | None = None
        basic = f'Basic realm={self._quote(realm)}, charset="UTF-8"'
        self._basic_challenge = basic.encode()
        if store.realm != realm:
            log.warning(
                "the user store is configured for realm %r, not %r: Digest will fail",
                store.realm,
                realm,
            )

    @staticmethod
    def _quote(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    # -- challenges ---------------------------------------------------------------

    def challenge_headers(self, stale: bool = False) -> list[tuple[bytes, bytes]]:
        """The ``www-authenticate`` headers of a 401: Digest SHA-256, Digest MD5, Basic."""
        values = [v.encode() for v in self.digest.challenges(self._wall_clock(), stale)]
        values.append(self._basic_challenge)
        return [(b"www-authenticate", v) for v in values]

    # -- the slowdown -------------------------------------------------------------

    def failure_delay(self, failures: int) -> float:
        """Seconds to hold a failed answer after ``failures`` recent failures.

        Nothing up to the threshold, then base, 2*base, 4*base... capped.
        """
        excess = failures - self.failure_threshold
        if excess <= 0:
            return 0.0
        return min(self.delay_base * 2 ** min(excess - 1, 32), self.delay_cap)

    def _recent(self, key: str, now: float) -> deque[float] | None:
        stamps = self._failures.get(key)
        if stamps is None:
            return None
        while stamps and stamps[0] <= now - self.failure_window:
            stamps.popleft()
        if not stamps:
            del self._failures[key]
            return None
        return stamps

    def failure_count(self, key: str) -> int:
        """Recent failures for ``"host:..."`` or ``"user:..."`` (for tests and diagnostics)."""
        stamps = self._recent(key, self._clock())
        return len(stamps) if stamps else 0

    def _record_failure(self, keys: list[str]) -> int:
        """Count one failure for each key; the highest resulting count."""
        now = self._clock()
        worst = 0
        for key in keys:
            stamps = self._recent(key, now)
            if stamps is None:
                # a bounded deque: beyond the cap the delay stops growing anyway
                stamps = self._failures[key] = deque(maxlen=self.failure_threshold + 40)
            stamps.append(now)
            self._failures.move_to_end(key)
            worst = max(worst, len(stamps))
        while len(self._failures) > MAX_TRACKED:
            self._failures.popitem(last=False)
        return worst

    def _clear_failures(self, keys: list[str]) -> None:
        for key in keys:
            self._failures.pop(key, None)

    def _over_threshold(self, keys: list[str]) -> bool:
        now = self._clock()
        return any(
            (stamps := self._recent(key, now)) is not None and len(stamps) >= self.failure_threshold
            for key in keys
        )

    def _throttled(self, keys: list[str]) -> bool:
        """Refuse without checking while this host already has many slowed attempts waiting.

        Checked before any work, so the answer says nothing about the password, and a flood
        from one host costs neither argon2 time nor an unbounded number of sleepers.
        """
        host_key = keys[0]
        if self._slowed.get(host_key, 0) < MAX_SLOWED_PER_HOST or not self._over_threshold(keys):
            return False
        log.info(
            "auth throttled: %s, %d slowed attempts waiting", host_key, self._slowed[host_key]
        )
        return True

    # -- argon2 -------------------------------------------------------------------

    def _argon2_verify(self, argon2_hash: str, password: str) -> bool:
        """The expensive check, run in a worker thread."""
        try:
            return self._hasher.verify(argon2_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def _verify_off_loop(self, argon2_hash: str, password: str) -> bool:
        if self._argon2_slots is None:
            self._argon2_slots = asyncio.Semaphore(MAX_ARGON2_THREADS)
        async with self._argon2_slots:
            return await asyncio.to_thread(self._argon2_verify, argon2_hash, password)

    async def _burn_time(self, password: str) -> None:
        """Verify against a throwaway hash so unknown users cost as much as known ones."""
        if self._dummy_hash is None:
            self._dummy_hash = await asyncio.to_thread(self._hasher.hash, secrets.token_urlsafe(16))
        await self._verify_off_loop(self._dummy_hash, password)

    async def _check_basic(self, name: str, password: str) -> User | None:
        user = self.store.get(name)
        if user is None:
            await self._burn_time(password)
            return None
        digest = hmac.new(self._cache_key, password.encode(), hashlib.sha256).digest()
        key = (name, digest, user.argon2_hash)
        now = self._clock()
        expires = self._basic_cache.get(key)
        if expires is not None:
            if now < expires:
                return user
            del self._basic_cache[key]
        # Single flight: a burst of requests with one credential (a script
        # opening many connections) shares one argon2 run instead of queueing
        # one each behind the thread pool.
        pending = self._verifying.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._verify_off_loop(user.argon2_hash, password))
            self._verifying[key] = pending
            pending.add_done_callback(lambda _: self._verifying.pop(key, None))
        if not await asyncio.shield(pending):
            return None
        # the store may have reloaded while argon2 ran: only accept the hash we checked
        current = self.store.get(name)
        if current is None or current.argon2_hash != user.argon2_hash:
            return None
        self._basic_cache[key] = self._clock() + BASIC_CACHE_SECONDS
        while len(self._basic_cache) > BASIC_CACHE_SIZE:
            self._basic_cache.popitem(last=False)
        return current

    # -- the entry point ----------------------------------------------------------

    def _maybe_refresh(self) -> None:
        now = self._clock()
        if now >= self._next_refresh:
            self._next_refresh = now + self._refresh_interval
            self.store.refresh()

    async def authenticate(
        self, method: str, authorization: str | None, client_host: str
    ) -> AuthOutcome:
        """Check the ``Authorization`` value of a ``method`` request from ``client_host``."""
        self._maybe_refresh()
        if authorization is None or not authorization.strip():
            return AuthOutcome(user=None, reason="missing")
        scheme = authorization.strip().split(None, 1)[0].lower()
        host_key = f"host:{client_host}"

        if scheme == "digest":
            return await self._authenticate_digest(method, authorization, host_key)
        if scheme == "basic":
            return await self._authenticate_basic(authorization, host_key)
        return AuthOutcome(user=None, reason="unsupported-scheme")

    async def _authenticate_digest(
        self, method: str, authorization: str, host_key: str
    ) -> AuthOutcome:
        if self._throttled([host_key]):
            return AuthOutcome(user=None, reason="throttled", scheme="digest")
        result = self.digest.verify(
            authorization, method, self._wall_clock(), self.store.digest_ha1
        )
        keys = [host_key] if result.username is None else [host_key, f"user:{result.username}"]
        if result.ok:
            user = self.store.get(result.username or "")
            if user is not None:
                self._clear_failures(keys)
                return AuthOutcome(user=user, reason="ok", uri=result.uri, scheme="digest")
        elif result.stale:
            # right password, old nonce: not a failed login
            return AuthOutcome(
                user=None, reason="stale", stale=True, uri=result.uri, scheme="digest"
            )
        reason = "malformed" if result.reason == "malformed" else "bad-credentials"
        return await self._fail(
            keys, reason, "digest", result.username, result.reason, uri=result.uri
        )

    async def _authenticate_basic(self, authorization: str, host_key: str) -> AuthOutcome:
        credentials = parse_basic(authorization)
        if credentials is None:
            return await self._fail([host_key], "malformed", "basic", None, "malformed")
        name, password = credentials
        keys = [host_key, f"user:{name}"]
        if self._throttled(keys):
            return AuthOutcome(user=None, reason="throttled", scheme="basic")
        user = await self._check_basic(name, password)
        if user is not None:
            self._clear_failures(keys)
            return AuthOutcome(user=user, reason="ok", scheme="basic")
        return await self._fail(keys, "bad-credentials", "basic", name, "bad-password")

    async def _fail(
        self,
        keys: list[str],
        reason: str,
        scheme: str,
        name: str | None,
        detail: str,
        uri: str | None = None,
    ) -> AuthOutcome:
        failures = self._record_failure(keys)
        delay = self.failure_delay(failures)
        log.info(
            "auth failed (%s %s): %s user %s, %d recent failures",
            scheme,
            detail,
            keys[0],
            _printable(name),
            failures,
        )
        if delay > 0:
            host_key = keys[0]
            self._slowed[host_key] = self._slowed.get(host_key, 0) + 1
            try:
                await self._sleep(delay)
            finally:
                left = self._slowed[host_key] - 1
                if left:
                    self._slowed[host_key] = left
                else:
                    del self._slowed[host_key]
        return AuthOutcome(user=None, reason=reason, scheme=scheme, uri=uri, delay=delay)
