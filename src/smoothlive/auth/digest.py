"""HTTP Digest authentication (RFC 7616), server side, without I/O.

The server offers SHA-256 first and MD5 second, each with ``qop="auth"``. Clients differ
in which challenge they take, which is why the order matters:

* curl takes the first Digest challenge and ignores later ones (SHA-256);
* ffmpeg parses every Digest challenge and keeps the last one; it only implements MD5;
* httpx takes the first header that starts with ``Digest``.

Nonces are stateless: base64url of the issue time, an instance id, a serial number and an
HMAC-SHA256 (keyed with the server secret) over those and the realm. Any nonce this
instance issued can be checked without storing it, and it expires after
``nonce_lifetime`` seconds. A nonce with a good HMAC that this instance cannot vouch for
(expired, from a previous run, or forgotten by the bounded replay memory) is reported as
*stale* when the digest itself is right, so the client retries with a fresh nonce without
asking its user again (RFC 7616 section 3.3, ``stale``).

Replays are refused by remembering, per recently used nonce, the nonce counts (``nc``)
already accepted: a count must be new, and may arrive at most ``replay_window`` below the
highest seen so concurrent requests that overtake each other still pass. A request without
``qop`` (RFC 2069 style) has no count, so such a nonce is good for one request only.

The ``uri`` parameter is returned, not checked: only the HTTP layer knows the request
target it must equal (RFC 7616 section 3.4.6).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import re
import secrets
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

_HASHES: dict[str, Callable[[bytes], Any]] = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
}
ALGORITHMS: tuple[str, ...] = ("SHA-256", "MD5")  # the order the challenges are sent in

MAX_HEADER = 8192
CLOCK_SKEW = 5.0  # seconds a nonce may appear to come from the future (clock stepped back)

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PARAM = re.compile(rf'[ \t]*({_TOKEN})[ \t]*=[ \t]*(?:"((?:[^"\\]|\\.)*)"|([^\s",]+))[ \t]*')
_SCHEME = re.compile(rf"[ \t]*({_TOKEN})[ \t]+")
_QUOTED_PAIR = re.compile(r"\\(.)")
_HEX = re.compile(r"[0-9a-fA-F]+")
_NONCE = re.compile(r"[A-Za-z0-9_-]{64}")

# nonce layout: issue time (IEEE double) | instance id | serial | truncated HMAC-SHA256
_HEAD = struct.Struct(">d8sQ")
_MAC_LEN = 24


def digest_ha1(user: str, realm: str, password: str, algorithm: str) -> str:
    """Hex of H(user:realm:password) (RFC 7616 section 3.4.2) for "MD5" or "SHA-256".

    The value is password-equivalent for Digest: store it like a password.
    """
    hash_fn = _HASHES.get(algorithm.upper())
    if hash_fn is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    return hash_fn(f"{user}:{realm}:{password}".encode()).hexdigest()


def parse_digest_params(header_value: str) -> dict[str, str] | None:
    """The auth-params of an ``Authorization: Digest ...`` value (RFC 7235 section 2.1).

    Names are lower-cased, quoted strings unescaped, order is free. Returns None when the
    scheme is not Digest, the syntax is broken, or a parameter is repeated.
    """
    if len(header_value) > MAX_HEADER:
        return None
    scheme = _SCHEME.match(header_value)
    if scheme is None or scheme.group(1).lower() != "digest":
        return None
    params: dict[str, str] = {}
    pos, end = scheme.end(), len(header_value)
    while pos < end:
        if header_value[pos] in ", \t":  # empty list elements are allowed (RFC 7230 7)
            pos += 1
            continue
        match = _PARAM.match(header_value, pos)
        if match is None:
            return None
        name = match.group(1).lower()
        if name in params:
            return None
        quoted = match.group(2)
        params[name] = _QUOTED_PAIR.sub(r"\1", quoted) if quoted is not None else match.group(3)
        pos = match.end()
        if pos < end and header_value[pos] != ",":
            return None
    return params


def _username(params: dict[str, str]) -> str | None:
    """``username``, or ``username*`` in the RFC 8187 UTF-8 form (RFC 7616 section 3.4.4)."""
    if "username" in params:
        return None if "username*" in params else params["username"]
    extended = params.get("username*")
    if extended is None:
        return None
    charset, _, rest = extended.partition("'")
    _, _, encoded = rest.partition("'")
    if charset.lower() != "utf-8":
        return None
    try:
        return unquote(encoded, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        return None


def _quote(value: str) -> str:
    """A quoted-string (RFC 7230 section 3.2.6)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class DigestResult:
    """What ``DigestAuthority.verify`` found.

    ``ok`` means the digest is right and the nonce fresh; the caller must still check that
    ``uri`` equals the request target. ``stale`` means the digest is right but the nonce is
    not usable any more: answer 401 with ``stale=true`` challenges. ``reason`` is a short
    word for logs.
    """

    username: str | None
    ok: bool
    stale: bool
    uri: str | None
    reason: str = ""


class DigestAuthority:
    """Issues Digest challenges and verifies Digest credentials for one realm."""

    def __init__(
        self,
        secret: bytes,
        realm: str,
        nonce_lifetime: float = 300.0,
        *,
        max_nonces: int = 4096,
        replay_window: int = 64,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the digest secret must be at least 16 bytes")
        self.realm = realm
        self.nonce_lifetime = nonce_lifetime
        self._secret = secret
        self._realm_bytes = realm.encode()
        self._instance = secrets.token_bytes(8)
        self._serials = itertools.count(1)
        self._opaque = hmac.new(secret, b"opaque\0" + self._realm_bytes, "sha256").hexdigest()
        self._max_nonces = max_nonces
        self._window = replay_window
        # nonce -> [serial, highest nc, bitmap of accepted counts below the highest]
        self._seen: OrderedDict[str, list[int]] = OrderedDict()
        self._forgotten_through = 0  # serials at or below this may have lost their record
        self._lock = threading.Lock()

    # -- nonces -----------------------------------------------------------------------

    def _mac(self, head: bytes) -> bytes:
        return hmac.new(self._secret, head + self._realm_bytes, "sha256").digest()[:_MAC_LEN]

    def make_nonce(self, now: float) -> str:
        """A fresh nonce stamped with ``now``."""
        with self._lock:
            serial = next(self._serials)
        head = _HEAD.pack(now, self._instance, serial)
        return base64.urlsafe_b64encode(head + self._mac(head)).decode("ascii")

    def _open_nonce(self, nonce: str) -> tuple[float, bytes, int] | None:
        """(issued, instance, serial) of a nonce with a good HMAC, else None."""
        if not _NONCE.fullmatch(nonce):
            return None
        raw = base64.urlsafe_b64decode(nonce)
        head, mac = raw[: _HEAD.size], raw[_HEAD.size :]
        if not hmac.compare_digest(mac, self._mac(head)):
            return None
        return _HEAD.unpack(head)

    def challenges(self, now: float, stale: bool = False) -> list[str]:
        """``WWW-Authenticate`` values: SHA-256 first, then MD5 (see the module docstring)."""
        nonce = self.make_nonce(now)
        tail = ", stale=true" if stale else ""
        return [
            f'Digest realm={_quote(self.realm)}, qop="auth", algorithm={algorithm}, '
            f'nonce="{nonce}", opaque="{self._opaque}"{tail}'
            for algorithm in ALGORITHMS
        ]

    # -- verification -----------------------------------------------------------------

    def verify(
        self,
        header_value: str,
        method: str,
        now: float,
        ha1_lookup: Callable[[str, str], str | None],
    ) -> DigestResult:
        """Check an ``Authorization: Digest`` value for a request made with ``method``.

        ``ha1_lookup(username, algorithm)`` returns the stored HA1 hex for "MD5" or
        "SHA-256", or None when the user is unknown or has no usable HA1.
        """
        params = parse_digest_params(header_value)
        if params is None:
            return DigestResult(None, False, False, None, "malformed")
        username = _username(params)
        uri = params.get("uri")

        def refuse(reason: str, stale: bool = False) -> DigestResult:
            return DigestResult(username, False, stale, uri, reason)

        realm, nonce, response = params.get("realm"), params.get("nonce"), params.get("response")
        if username is None or uri is None or realm is None or nonce is None or response is None:
            return refuse("malformed")
        if params.get("userhash", "false").lower() != "false":
            return refuse("unsupported")  # never offered
        algorithm = params.get("algorithm", "MD5").upper()
        session = algorithm.endswith("-SESS")
        base_algorithm = algorithm.removesuffix("-SESS")
        hash_fn = _HASHES.get(base_algorithm)
        if hash_fn is None:
            return refuse("unsupported")
        if realm != self.realm:
            return refuse("realm")

        qop = params.get("qop")
        cnonce = params.get("cnonce")
        nc_text = params.get("nc")
        count = 0  # no qop: the nonce itself is single-use
        if qop is not None:
            if qop.lower() != "auth":
                return refuse("unsupported")
            if not cnonce or nc_text is None or len(nc_text) > 8 or not _HEX.fullmatch(nc_text):
                return refuse("malformed")
            count = int(nc_text, 16)
            if count == 0:
                return refuse("malformed")
        if session and not cnonce:
            return refuse("malformed")
        opaque = params.get("opaque")
        if opaque is not None and not hmac.compare_digest(
            opaque.encode("utf-8", "surrogatepass"), self._opaque.encode()
        ):
            return refuse("bad-nonce")
        opened = self._open_nonce(nonce)
        if opened is None:
            return refuse("bad-nonce")
        issued, instance, serial = opened

        ha1 = ha1_lookup(username, base_algorithm)
        if ha1 is None:
            return refuse("unknown-user")

        def h(*parts: str) -> str:
            return hash_fn(":".join(parts).encode()).hexdigest()

        if session:
            ha1 = h(ha1, nonce, cnonce or "")
        ha2 = h(method, uri)
        if qop is None:
            expected = h(ha1, nonce, ha2)
        else:
            expected = h(ha1, nonce, nc_text or "", cnonce or "", qop, ha2)
        if not _HEX.fullmatch(response) or not hmac.compare_digest(
            expected.encode(), response.lower().encode()
        ):
            return refuse("bad-response")

        # The digest is right: from here on a refusal is "stale", the client may retry.
        age = now - issued
        if instance != self._instance or not -CLOCK_SKEW <= age <= self.nonce_lifetime:
            return refuse("stale", stale=True)
        if not self._accept_count(nonce, serial, count):
            return refuse("replay", stale=True)
        return DigestResult(username, True, False, uri, "ok")

    def _accept_count(self, nonce: str, serial: int, count: int) -> bool:
        """Record ``count`` for ``nonce``; False when it was used already (a replay)."""
        with self._lock:
            record = self._seen.get(nonce)
            if record is None:
                if serial <= self._forgotten_through:
                    return False  # its record may have been evicted: cannot prove freshness
                self._seen[nonce] = [serial, count, 1]
                while len(self._seen) > self._max_nonces:
                    _, (old_serial, _, _) = self._seen.popitem(last=False)
                    self._forgotten_through = max(self._forgotten_through, old_serial)
                return True
            _, highest, seen = record
            if count > highest:
                shift = count - highest
                record[1] = count
                record[2] = ((seen << shift) | 1) & ((1 << self._window) - 1)
            else:
                offset = highest - count
                if offset >= self._window or (seen >> offset) & 1:
                    return False
                record[2] = seen | (1 << offset)
            self._seen.move_to_end(nonce)
            return True
