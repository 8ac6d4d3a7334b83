"""Every row of the MPE_MGMT table, provoked over HTTP on a real server."""

from __future__ import annotations

import hashlib
import re
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from smoothlive.management.errors import MgmtError
from tests.e2e.conftest import PASSWORDS, client
from tests.e2e.test_management_api import (
    ATOM,
    SERVICE,
    M,
    assert_error,
    create,
    set_state,
    settings_body,
    state_body,
    state_of,
    xml,
)


def test_anonymous_gets_401_with_basic_and_digest_challenges(anonymous, point_name):
    for method, url in (("GET", SERVICE), ("GET", f"{SERVICE}/settings"),
                        ("POST", f"{SERVICE}/settings"), ("GET", f"{point_name}/state"),
                        ("PUT", f"{point_name}/state"), ("DELETE", f"{point_name}/settings"),
                        ("GET", f"{point_name}/statistics")):
        response = anonymous.request(method, url)
        assert_error(response, MgmtError.AUTHENTICATION_IS_REQUIRED)
        challenges = response.headers.get_list("www-authenticate")
        assert any(c.startswith("Digest ") and "SHA-256" in c for c in challenges)
        assert any(c.startswith("Digest ") and "MD5" in c for c in challenges)
        assert any(c.startswith("Basic ") for c in challenges)


def test_401_goes_out_before_the_body_is_read(server):
    """A client sending Expect: 100-continue gets the 401, never a 100 Continue."""
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(
            f"POST {SERVICE}/settings HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Content-Type: application/atom+xml\r\nSlug: /x.isml\r\n"
            "Content-Length: 100000\r\nExpect: 100-continue\r\n\r\n".encode())
        answer = sock.recv(65536).decode("latin-1")
    assert answer.startswith("HTTP/1.1 401"), answer[:200]
    assert "100 Continue" not in answer


def test_wrong_password_and_unknown_user_are_refused(server):
    for auth in (("operator", "wrong"), ("nobody", "x")):
        with client(server) as http:
            http.auth = auth
            assert_error(http.get(SERVICE), MgmtError.AUTHENTICATION_IS_REQUIRED)


def test_digest_authentication_works(server, point_name):
    with client(server, "operator", digest=True) as http:
        assert create(http, point_name).status_code == 201
        assert state_of(http, point_name) == "Idle"


def test_read_only_user_cannot_change_anything(server, operator, point_name):
    create(operator, point_name)
    with client(server, "reader") as reader:
        assert reader.get(f"{point_name}/settings").status_code == 200
        assert_error(create(reader, "/reader-made.isml"), MgmtError.ACCESS_DENIED)
        assert_error(reader.put(f"{point_name}/settings", content=settings_body(), headers=ATOM),
                     MgmtError.ACCESS_DENIED)
        assert_error(set_state(reader, point_name, "Started"), MgmtError.ACCESS_DENIED)
        assert_error(reader.delete(f"{point_name}/settings"), MgmtError.ACCESS_DENIED)
    assert state_of(operator, point_name) == "Idle"
    assert operator.get("/reader-made.isml/settings").status_code != 200


def test_user_limited_to_a_folder(server):
    with client(server, "events") as events:
        assert create(events, "/events/mine.isml").status_code == 201
        assert_error(create(events, "/elsewhere.isml"), MgmtError.ACCESS_DENIED)
        assert_error(events.get("/elsewhere.isml/settings"), MgmtError.ACCESS_DENIED)


def test_wrong_method_is_405_with_allow(operator, point_name):
    create(operator, point_name)
    response = operator.post(f"{point_name}/state", content=state_body("Idle"), headers=ATOM)
    assert_error(response, MgmtError.METHOD_NOT_ALLOWED)
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "PUT"}
    response = operator.delete(SERVICE)
    assert_error(response, MgmtError.METHOD_NOT_ALLOWED)
    assert response.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json"])
def test_missing_or_wrong_content_type_is_415(operator, point_name, content_type):
    create(operator, point_name)
    headers = {"Slug": "/ct.isml"}
    if content_type:
        headers["Content-Type"] = content_type
    assert_error(operator.post(f"{SERVICE}/settings", content=settings_body(), headers=headers),
                 MgmtError.CONTENT_TYPE_NOT_SUPPORTED)
    headers.pop("Slug")
    assert_error(operator.put(f"{point_name}/state", content=state_body("Started"),
                              headers=headers), MgmtError.CONTENT_TYPE_NOT_SUPPORTED)
    assert state_of(operator, point_name) == "Idle"


def test_create_without_slug(operator):
    response = operator.post(f"{SERVICE}/settings", content=settings_body(), headers=ATOM)
    assert_error(response, MgmtError.SLUG_HEADER_REQUIRED)


@pytest.mark.parametrize("slug", [
    "/../escape.isml", "/a/../../escape.isml", "%2e%2e/escape.isml", "/%2E%2E/escape.isml",
    "..%2fescape.isml", "C:/Windows/escape.isml", "c:escape.isml", "//server/share/x.isml",
    "\\\\server\\share\\x.isml", "/a\\..\\x.isml", "/nul%00.isml", "/x.isml%00.txt",
    "/notisml.txt", "/.isml", "/", "/folder/", "/" + "a" * 300 + ".isml",
    "/" + "d/" * 600 + "x.isml", "/.hidden/x.isml", "/bad%ZZ.isml",
])
def test_slug_that_escapes_or_names_no_isml_is_refused(operator, server, slug):
    response = operator.post(f"{SERVICE}/settings", content=settings_body(),
                             headers={**ATOM, "Slug": slug})
    assert_error(response, MgmtError.SLUG_HEADER_INVALID)
    assert not (server.root.parent / "escape.isml").exists()


def test_create_twice_is_already_exists(operator, point_name):
    assert create(operator, point_name).status_code == 201
    assert_error(create(operator, point_name), MgmtError.PUBLISHING_POINT_ALREADY_EXISTS)


@pytest.mark.parametrize("url", [
    "/missing.isml/settings", "/missing.isml/state", "/missing.isml/statistics",
    "/../../etc/passwd.isml/settings",
])
def test_unknown_point_is_not_found(operator, url):
    assert_error(operator.get(url), MgmtError.PUBLISHING_POINT_NOT_FOUND)


@pytest.mark.parametrize("body", [
    b"", b"<entry", b"not xml at all", b"<a></b>",
    b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]><e>&x;</e>',
    b'<!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><l>&c;</l>',
    b"<a>" * 2000 + b"</a>" * 2000,
])
def test_bad_xml_is_invalid_xml(operator, point_name, body):
    create(operator, point_name)
    response = operator.put(f"{point_name}/settings", content=body, headers=ATOM)
    assert_error(response, MgmtError.INVALID_XML)
    assert "passwd" not in response.text and "root:" not in response.text


def test_oversized_body_is_refused(operator, point_name):
    create(operator, point_name)
    huge = settings_body("<Title>" + "x" * (2 << 20) + "</Title>")
    assert_error(operator.put(f"{point_name}/settings", content=huge, headers=ATOM),
                 MgmtError.INVALID_XML)


@pytest.mark.parametrize("inner", [
    "<Unknown>1</Unknown>", "<AutoStart>maybe</AutoStart>", "<LookAheadChunks>-1</LookAheadChunks>",
    '<Archive><Path /></Archive>', "<EstimatedDuration>an hour</EstimatedDuration>",
])
def test_body_against_the_schema_is_invalid_schema(operator, point_name, inner):
    create(operator, point_name)
    response = operator.put(f"{point_name}/settings", content=settings_body(inner), headers=ATOM)
    assert_error(response, MgmtError.INVALID_SCHEMA)


def test_wrong_root_or_resource_is_invalid_schema(operator, point_name):
    create(operator, point_name)
    assert_error(operator.put(f"{point_name}/settings", content=b"<foo/>", headers=ATOM),
                 MgmtError.INVALID_SCHEMA)
    # A State document sent to the settings resource.
    assert_error(operator.put(f"{point_name}/settings", content=state_body("Idle"), headers=ATOM),
                 MgmtError.INVALID_SCHEMA)


@pytest.mark.parametrize("inner", [
    "<SourceType>Multicast</SourceType>", "<LookAheadChunks>1000</LookAheadChunks>",
    '<ClientConnections enabled="true"><ClientManifestVersion>3.0</ClientManifestVersion>'
    "</ClientConnections>",
    "<EstimatedDuration>P1Y</EstimatedDuration>",
    '<Modules><Module id="hls" type="sink"><HLS><Encryption enabled="true"><Key>nothex</Key>'
    "</Encryption></HLS></Module></Modules>",
])
def test_values_out_of_range_are_invalid_data(operator, point_name, inner):
    create(operator, point_name)
    response = operator.put(f"{point_name}/settings", content=settings_body(inner), headers=ATOM)
    assert_error(response, MgmtError.INVALID_DATA)


def test_unknown_state_value_is_invalid_data(operator, point_name):
    create(operator, point_name)
    assert_error(set_state(operator, point_name, "Running"), MgmtError.INVALID_DATA)


def test_settings_changed_while_not_idle_is_in_use(operator, point_name):
    create(operator, point_name)
    assert set_state(operator, point_name, "Started").status_code == 200
    response = operator.put(f"{point_name}/settings", content=settings_body("<Title>new</Title>"),
                            headers=ATOM)
    assert_error(response, MgmtError.PUBLISHING_POINT_IN_USE)
    title = xml(operator.get(f"{point_name}/settings")).findtext(
        f".//{M}Settings/{M}Title")
    assert title == "t"


def test_statistics_of_an_idle_point_is_not_started(operator, point_name):
    create(operator, point_name)
    assert_error(operator.get(f"{point_name}/statistics"),
                 MgmtError.PUBLISHING_POINT_NOT_STARTED)


def test_no_error_answer_reveals_paths_or_traces(operator, server, point_name):
    create(operator, point_name)
    for response in (
        operator.put(f"{point_name}/settings", content=b"<a>", headers=ATOM),
        operator.get("/../../etc/passwd.isml/settings"),
        operator.post(f"{SERVICE}/settings", content=settings_body(),
                      headers={**ATOM, "Slug": "/../x.isml"}),
    ):
        assert "Traceback" not in response.text
        assert str(server.root) not in response.text
        assert str(server.state_dir) not in response.text


def test_removed_user_is_refused_without_a_restart(server):
    from tests.e2e.harness import add_user, run_cli

    add_user(server.state_dir, "temp", "temp-pass-1", "read:/")
    with client(server) as http:
        http.auth = ("temp", "temp-pass-1")
        deadline = time.monotonic() + 10
        while http.get(SERVICE).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert http.get(SERVICE).status_code == 200
        listed = run_cli("user", "list", "--json", "--state-dir", str(server.state_dir))
        assert "temp" in listed.stdout and "argon2" not in listed.stdout
        removed = run_cli("user", "remove", "temp", "--state-dir", str(server.state_dir))
        assert removed.returncode == 0, removed.stderr
        deadline = time.monotonic() + 10
        while http.get(SERVICE).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert_error(http.get(SERVICE), MgmtError.AUTHENTICATION_IS_REQUIRED)


def test_repeated_failed_logins_are_slowed_down(server):
    with httpx.Client(base_url=server.url, auth=("brute", "force"), timeout=30) as http:
        for _ in range(5):
            assert http.get(SERVICE).status_code == 401
        started = time.monotonic()
        assert http.get(SERVICE).status_code == 401
        assert time.monotonic() - started >= 0.45


def _challenge_params(header: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]+)', header)}


def test_digest_md5_as_ffmpeg_answers_it(server, point_name):
    """ffmpeg and older tools answer the MD5 challenge only (RFC 7616 with MD5, qop=auth)."""
    url = f"{point_name}/state"
    with httpx.Client(base_url=server.url, timeout=20) as http:
        challenges = http.get(url).headers.get_list("www-authenticate")
        md5 = next(c for c in challenges if c.startswith("Digest ") and "MD5" in c)
        params = _challenge_params(md5)

        def h(text: str) -> str:
            return hashlib.md5(text.encode()).hexdigest()

        user, password = "operator", PASSWORDS["operator"]
        ha1 = h(f"{user}:{params['realm']}:{password}")
        cnonce, nc = "0a4f113b", "00000001"
        response = h(f"{ha1}:{params['nonce']}:{nc}:{cnonce}:auth:{h(f'GET:{url}')}")
        header = (f'Digest username="{user}", realm="{params["realm"]}", '
                  f'nonce="{params["nonce"]}", uri="{url}", cnonce="{cnonce}", nc={nc}, '
                  f'qop=auth, response="{response}", algorithm=MD5, '
                  f'opaque="{params["opaque"]}"')
        answer = http.get(url, headers={"Authorization": header})
        assert_error(answer, MgmtError.PUBLISHING_POINT_NOT_FOUND)  # authenticated: 404, not 401
        replayed = http.get(url, headers={"Authorization": header})
        assert replayed.status_code == 401  # the same nonce count again is a replay
        wrong = header.replace(response, h("wrong"))
        assert http.get(url, headers={"Authorization": wrong}).status_code == 401
