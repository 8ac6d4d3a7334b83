"""RFC 7616 Digest: challenges, verification, and interoperability with httpx.DigestAuth."""

from __future__ import annotations

import base64
import hashlib

import httpx
import pytest

from smoothlive.auth.digest import DigestAuthority, digest_ha1, parse_digest_params

REALM = "smoothlive"
SECRET = b"s" * 32
NOW = 1_700_000_000.0
PASSWORDS = {"alice": "correct horse", "bob": "b:ob"}


def lookup(name: str, algorithm: str) -> str | None:
    password = PASSWORDS.get(name)
    return None if password is None else digest_ha1(name, REALM, password, algorithm)


def httpx_authorization(
    challenges: list[str],
    *,
    password: str = PASSWORDS["alice"],
    url: str = "http://origin/services/smoothstreaming/publishingpoints?x=1",
    method: str = "GET",
    joined: bool = False,
    requests: int = 1,
) -> list[str]:
    """Run httpx.DigestAuth's real flow against a fake 401; the Authorization values sent."""
    auth = httpx.DigestAuth("alice", password)
    values = [*challenges, 'Basic realm="smoothlive", charset="UTF-8"']
    headers = (
        [("www-authenticate", ", ".join(values))]
        if joined
        else [("www-authenticate", v) for v in values]
    )
    request = httpx.Request(method, url)
    flow = auth.sync_auth_flow(request)
    first = next(flow)
    assert "authorization" not in first.headers
    retried = flow.send(httpx.Response(401, headers=headers, request=first))
    sent = [retried.headers["authorization"]]
    with pytest.raises(StopIteration):
        flow.send(httpx.Response(200, request=retried))
    for _ in range(requests - 1):  # later requests reuse the challenge with nc + 1
        flow = auth.sync_auth_flow(httpx.Request(method, url))
        sent.append(next(flow).headers["authorization"])
    return sent


@pytest.fixture
def authority() -> DigestAuthority:
    return DigestAuthority(SECRET, REALM, nonce_lifetime=300.0)


def test_ha1_is_hash_of_user_realm_password() -> None:
    # the credentials of the RFC 7616 section 3.9.1 example
    assert digest_ha1("Mufasa", "http-auth@example.org", "Circle of Life", "MD5") == (
        hashlib.md5(b"Mufasa:http-auth@example.org:Circle of Life").hexdigest()
    )
    assert digest_ha1("Mufasa", "http-auth@example.org", "Circle of Life", "sha-256") == (
        hashlib.sha256(b"Mufasa:http-auth@example.org:Circle of Life").hexdigest()
    )
    with pytest.raises(ValueError):
        digest_ha1("a", "r", "p", "SHA-512")


def test_rfc7616_example_response(authority: DigestAuthority) -> None:
    """Modelled on the example of RFC 7616 section 3.9.1, with our realm and nonce."""
    nonce = authority.make_nonce(NOW)
    ha1 = digest_ha1("Mufasa", REALM, "Circle of Life", "SHA-256")
    ha2 = hashlib.sha256(b"GET:/dir/index.html").hexdigest()
    cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
    response = hashlib.sha256(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}".encode()).hexdigest()
    header = (
        f'Digest username="Mufasa", realm="{REALM}", uri="/dir/index.html", '
        f'algorithm=SHA-256, nonce="{nonce}", nc=00000001, cnonce="{cnonce}", '
        f'qop=auth, response="{response}"'
    )
    result = authority.verify(
        header, "GET", NOW, lambda u, a: digest_ha1(u, REALM, "Circle of Life", a)
    )
    assert result.ok and result.username == "Mufasa" and result.uri == "/dir/index.html"


def test_challenges_shape_and_order(authority: DigestAuthority) -> None:
    sha, md5 = authority.challenges(NOW)
    assert sha.startswith('Digest realm="smoothlive", qop="auth", algorithm=SHA-256, nonce="')
    assert md5.startswith('Digest realm="smoothlive", qop="auth", algorithm=MD5, nonce="')
    assert 'opaque="' in sha and "stale" not in sha
    assert all(c.endswith(", stale=true") for c in authority.challenges(NOW, stale=True))
    # a fresh nonce per 401
    assert (
        parse_digest_params(sha)["nonce"]
        != parse_digest_params(authority.challenges(NOW)[0])["nonce"]
    )


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_httpx_round_trip(authority: DigestAuthority, algorithm: str) -> None:
    """httpx answers the first Digest challenge it is given; offer each algorithm alone."""
    challenge = next(c for c in authority.challenges(NOW) if f"algorithm={algorithm}," in c)
    (value,) = httpx_authorization([challenge])
    assert f"algorithm={algorithm}" in value
    result = authority.verify(value, "GET", NOW + 1, lookup)
    assert result.ok and not result.stale
    assert result.username == "alice"
    assert result.uri == "/services/smoothstreaming/publishingpoints?x=1"


def test_httpx_picks_sha256_from_separate_headers(authority: DigestAuthority) -> None:
    (value,) = httpx_authorization(authority.challenges(NOW))
    assert "algorithm=SHA-256" in value
    assert authority.verify(value, "GET", NOW, lookup).ok


def test_httpx_with_one_joined_header_ends_up_on_md5(authority: DigestAuthority) -> None:
    """If a proxy folds the three challenges into one header, httpx's naive split lets the
    MD5 challenge's parameters overwrite the SHA-256 ones; that still verifies because they
    are consistent with each other."""
    (value,) = httpx_authorization(authority.challenges(NOW), joined=True)
    assert "algorithm=MD5" in value
    assert authority.verify(value, "GET", NOW, lookup).ok


def test_nonce_reuse_with_increasing_nc(authority: DigestAuthority) -> None:
    values = httpx_authorization(authority.challenges(NOW), requests=3)
    assert [parse_digest_params(v)["nc"] for v in values] == ["00000001", "00000002", "00000003"]
    assert all(authority.verify(v, "GET", NOW + 2, lookup).ok for v in values)


def test_replayed_nc_is_refused(authority: DigestAuthority) -> None:
    (value,) = httpx_authorization(authority.challenges(NOW))
    assert authority.verify(value, "GET", NOW, lookup).ok
    replay = authority.verify(value, "GET", NOW, lookup)
    assert not replay.ok and replay.reason == "replay"


def test_out_of_order_counts_within_window_pass_once(authority: DigestAuthority) -> None:
    first, second, third = httpx_authorization(authority.challenges(NOW), requests=3)
    assert authority.verify(third, "GET", NOW, lookup).ok
    assert authority.verify(first, "GET", NOW, lookup).ok
    assert authority.verify(second, "GET", NOW, lookup).ok
    assert not authority.verify(first, "GET", NOW, lookup).ok
    assert not authority.verify(third, "GET", NOW, lookup).ok


def test_strict_increase_with_window_one() -> None:
    authority = DigestAuthority(SECRET, REALM, replay_window=1)
    first, second = httpx_authorization(authority.challenges(NOW), requests=2)
    assert authority.verify(second, "GET", NOW, lookup).ok
    assert not authority.verify(first, "GET", NOW, lookup).ok


def test_wrong_password(authority: DigestAuthority) -> None:
    (value,) = httpx_authorization(authority.challenges(NOW), password="wrong")
    result = authority.verify(value, "GET", NOW, lookup)
    assert not result.ok and not result.stale and result.reason == "bad-response"
    assert result.username == "alice"


def test_unknown_user(authority: DigestAuthority) -> None:
    (value,) = httpx_authorization(authority.challenges(NOW))
    result = authority.verify(value, "GET", NOW, lambda u, a: None)
    assert not result.ok and result.reason == "unknown-user"


def test_wrong_method_fails(authority: DigestAuthority) -> None:
    (value,) = httpx_authorization(authority.challenges(NOW), method="GET")
    assert not authority.verify(value, "DELETE", NOW, lookup).ok


def test_wrong_realm(authority: DigestAuthority) -> None:
    other = DigestAuthority(SECRET, "elsewhere")
    (value,) = httpx_authorization(other.challenges(NOW))
    result = authority.verify(value, "GET", NOW, lookup)
    assert not result.ok and not result.stale and result.reason == "realm"


def test_nonce_from_another_secret_is_refused(authority: DigestAuthority) -> None:
    other = DigestAuthority(b"x" * 32, REALM)
    (value,) = httpx_authorization(other.challenges(NOW))
    result = authority.verify(value, "GET", NOW, lookup)
    assert not result.ok and not result.stale and result.reason == "bad-nonce"


def _tamper(nonce: str, at: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(nonce))
    raw[at] ^= 1
    return base64.urlsafe_b64encode(bytes(raw)).decode()


@pytest.mark.parametrize("at", [0, 7, 12, 20, 40])  # time, instance, serial, mac bytes
def test_tampered_nonce(authority: DigestAuthority, at: int) -> None:
    """Changing any byte of the nonce, with the response recomputed to match, fails."""
    nonce = parse_digest_params(authority.challenges(NOW)[0])["nonce"]
    forged = _tamper(nonce, at)
    challenge = (
        f'Digest realm="{REALM}", qop="auth", algorithm=SHA-256, nonce="{forged}", opaque="o"'
    )
    (value,) = httpx_authorization([challenge])
    result = authority.verify(value, "GET", NOW, lookup)
    assert not result.ok and not result.stale


def test_garbage_nonce(authority: DigestAuthority) -> None:
    challenge = f'Digest realm="{REALM}", qop="auth", algorithm=MD5, nonce="abc", opaque="o"'
    (value,) = httpx_authorization([challenge])
    assert authority.verify(value, "GET", NOW, lookup).reason == "bad-nonce"


def test_expired_nonce_is_stale(authority: DigestAuthority) -> None:
    (value,) = httpx_authorization(authority.challenges(NOW))
    result = authority.verify(value, "GET", NOW + 301, lookup)
    assert not result.ok and result.stale and result.reason == "stale"
    assert result.username == "alice"


def test_expired_nonce_with_wrong_password_is_not_stale(authority: DigestAuthority) -> None:
    (value,) = httpx_authorization(authority.challenges(NOW), password="nope")
    result = authority.verify(value, "GET", NOW + 301, lookup)
    assert not result.ok and not result.stale


def test_nonce_from_previous_run_is_stale() -> None:
    """Same secret, new process: the replay memory is gone, so force a fresh nonce."""
    before = DigestAuthority(SECRET, REALM)
    after = DigestAuthority(SECRET, REALM)
    (value,) = httpx_authorization(before.challenges(NOW))
    result = after.verify(value, "GET", NOW, lookup)
    assert not result.ok and result.stale


def test_forgotten_nonces_are_stale_not_replayable() -> None:
    authority = DigestAuthority(SECRET, REALM, max_nonces=2)
    values = [httpx_authorization(authority.challenges(NOW))[0] for _ in range(3)]
    assert all(authority.verify(v, "GET", NOW, lookup).ok for v in values)
    # the first nonce's record was evicted: a replay must not slip through
    result = authority.verify(values[0], "GET", NOW, lookup)
    assert not result.ok and result.stale


def _handmade(
    authority: DigestAuthority,
    *,
    algorithm: str = "MD5",
    qop: str | None = "auth",
    nc: str = "00000001",
    name: str = "alice",
    password: str = PASSWORDS["alice"],
    uri: str = "/services/x",
    nonce: str | None = None,
    opaque: str | None = None,
) -> str:
    """An Authorization value built by hand, laid out like ffmpeg's httpauth.c does."""
    nonce = nonce or authority.make_nonce(NOW)
    base = algorithm.upper().removesuffix("-SESS")
    h = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[base]

    def hx(s: str) -> str:
        return h(s.encode()).hexdigest()

    cnonce = "0a4f113b"
    ha1 = hx(f"{name}:{REALM}:{password}")
    if algorithm.upper().endswith("-SESS"):
        ha1 = hx(f"{ha1}:{nonce}:{cnonce}")
    ha2 = hx(f"POST:{uri}")
    if qop is None:
        response = hx(f"{ha1}:{nonce}:{ha2}")
        return (
            f'Digest username="{name}",realm="{REALM}",nonce="{nonce}",uri="{uri}",'
            f'response="{response}"'
        )
    response = hx(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    # ffmpeg's layout: no spaces, quoted qop, algorithm unquoted, nc last
    return (
        f'Digest username="{name}",realm="{REALM}",nonce="{nonce}",uri="{uri}",'
        f'response="{response}",algorithm={algorithm},'
        + (f'opaque="{opaque}",' if opaque else "")
        + f'qop="{qop}",cnonce="{cnonce}",nc={nc}'
    )


def test_ffmpeg_style_md5(authority: DigestAuthority) -> None:
    """ffmpeg parses every Digest challenge and keeps the last: that must be MD5, which is
    all it implements."""
    last = [c for c in authority.challenges(NOW) if c.startswith("Digest ")][-1]
    params = parse_digest_params(last)
    assert params["algorithm"] == "MD5" and params["qop"] == "auth"
    value = _handmade(authority, nonce=params["nonce"], opaque=params["opaque"])
    result = authority.verify(value, "POST", NOW, lookup)
    assert result.ok and result.uri == "/services/x"


@pytest.mark.parametrize("algorithm", ["MD5-sess", "SHA-256-sess"])
def test_session_variants(authority: DigestAuthority, algorithm: str) -> None:
    assert authority.verify(_handmade(authority, algorithm=algorithm), "POST", NOW, lookup).ok


def test_rfc2069_style_without_qop_is_single_use(authority: DigestAuthority) -> None:
    value = _handmade(authority, qop=None)
    assert authority.verify(value, "POST", NOW, lookup).ok
    again = authority.verify(value, "POST", NOW, lookup)
    assert not again.ok and again.reason == "replay"


def test_username_with_colon_in_password(authority: DigestAuthority) -> None:
    value = _handmade(authority, name="bob", password=PASSWORDS["bob"])
    assert authority.verify(value, "POST", NOW, lookup).ok


@pytest.mark.parametrize(
    "broken",
    [
        "Basic YWxpY2U6cHc=",
        "Digest",
        'Digest username="alice"',  # missing everything else
        'Digest username="alice", username="bob", realm="smoothlive"',
        'Digest username="unterminated',
        "Digest username=alice realm=x",
        "",
    ],
)
def test_malformed_headers(authority: DigestAuthority, broken: str) -> None:
    result = authority.verify(broken, "GET", NOW, lookup)
    assert not result.ok and not result.stale


@pytest.mark.parametrize("qop", ["auth-int", "bogus"])
def test_unsupported_qop(authority: DigestAuthority, qop: str) -> None:
    assert not authority.verify(_handmade(authority, qop=qop), "POST", NOW, lookup).ok


@pytest.mark.parametrize("nc", ["00000000", "zz", "123456789"])
def test_bad_nc(authority: DigestAuthority, nc: str) -> None:
    assert not authority.verify(_handmade(authority, nc=nc), "POST", NOW, lookup).ok


def test_parameter_parsing() -> None:
    params = parse_digest_params(
        'dIgEsT  USERNAME="a\\"b", ,Realm = "x,y" ,nc=00000001,  uri="/p?q=\\\\"'
    )
    assert params == {"username": 'a"b', "realm": "x,y", "nc": "00000001", "uri": "/p?q=\\"}
    assert parse_digest_params('Digest a="1" b="2"') is None
    assert parse_digest_params("Digestusername=x") is None


def test_extended_username(authority: DigestAuthority) -> None:
    value = _handmade(authority).replace('username="alice"', "username*=UTF-8''%61lice")
    result = authority.verify(value, "POST", NOW, lookup)
    assert result.ok and result.username == "alice"


def test_short_secret_refused() -> None:
    with pytest.raises(ValueError):
        DigestAuthority(b"short", REALM)
