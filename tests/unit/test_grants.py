"""Grant parsing and matching: the stand-in for IIS file ACLs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smoothlive.auth.grants import Grant, allows, parse_grant


def g(*texts: str) -> list[Grant]:
    return [parse_grant(t) for t in texts]


@pytest.mark.parametrize(
    ("grant", "access", "path", "expected"),
    [
        # '**' spans zero or more segments
        ("read:/events/**", "read", "/events/a.isml", True),
        ("read:/events/**", "read", "/events/x/y/z.isml", True),
        ("read:/events/**", "read", "/events", True),
        ("read:/events/**", "read", "/eventsX/a.isml", False),
        ("read:/events/**", "read", "/other/a.isml", False),
        ("read:/a/**/b.isml", "read", "/a/b.isml", True),
        ("read:/a/**/b.isml", "read", "/a/x/y/b.isml", True),
        ("read:/a/**/b.isml", "read", "/a/x/c.isml", False),
        # '*' stays inside one segment
        ("read:/live/*.isml", "read", "/live/ch1.isml", True),
        ("read:/live/*.isml", "read", "/live/sub/ch1.isml", False),
        ("read:/live/ch*", "read", "/live/ch1.isml", True),
        ("read:/live/ch*", "read", "/live/xch1.isml", False),
        ("read:/*/a.isml", "read", "/x/a.isml", True),
        ("read:/*/a.isml", "read", "/x/y/a.isml", False),
        # literal characters, including regex and glob metacharacters
        ("read:/live/a.isml", "read", "/live/a.isml", True),
        ("read:/live/a.isml", "read", "/live/aXisml", False),
        ("read:/live/[a].isml", "read", "/live/[a].isml", True),
        ("read:/live/[a].isml", "read", "/live/a.isml", False),
        ("read:/live/a?.isml", "read", "/live/ab.isml", False),
        # trailing '/' covers everything below
        ("read:/events/", "read", "/events/a.isml", True),
        ("read:/events/", "read", "/events/x/y.isml", True),
        ("read:/events/", "read", "/eventsa.isml", False),
        ("write:/", "write", "/anything/at/all.isml", True),
        ("write:/", "read", "/a.isml", True),
        ("write:/", "write", "/", True),
        ("read:/", "read", "/x.isml", True),
        # write implies read, read never gives write
        ("write:/live/**", "read", "/live/a.isml", True),
        ("read:/live/**", "write", "/live/a.isml", False),
        # case-sensitive: can only under-grant
        ("write:/live/**", "write", "/LIVE/a.isml", False),
        # traversal and unsafe request paths are never allowed
        ("write:/", "write", "/events/../etc/passwd", False),
        ("read:/events/**", "read", "/events/../admin.isml", False),
        ("read:/events/**", "read", "/events/./a.isml", False),
        ("write:/", "write", "/a\\b.isml", False),
        ("write:/", "write", "/a\x00.isml", False),
        ("write:/", "write", "relative.isml", False),
        ("write:/", "write", "", False),
    ],
)
def test_allows_table(grant: str, access: str, path: str, expected: bool) -> None:
    assert allows(g(grant), access, path) is expected


def test_no_grants_allows_nothing() -> None:
    assert not allows([], "read", "/a.isml")


def test_any_matching_grant_is_enough() -> None:
    grants = g("read:/events/**", "write:/live/ch1.isml")
    assert allows(grants, "write", "/live/ch1.isml")
    assert allows(grants, "read", "/events/e.isml")
    assert not allows(grants, "write", "/events/e.isml")


def test_unknown_access_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        allows(g("write:/"), "delete", "/a.isml")


def test_str_round_trips() -> None:
    grant = parse_grant("read:/events/**")
    assert grant == Grant("read", "/events/**")
    assert str(grant) == "read:/events/**"
    assert parse_grant(str(grant)) == grant


@pytest.mark.parametrize(
    "text",
    [
        "",
        "write",
        "admin:/",
        "Read:/",
        "read:",
        "read:events/**",
        "read:/events/../x",
        "read:/events/..",
        "read:/./x",
        "read:/a\\b",
        "read:/a\x00b",
        "read:/a\nb",
        "read:/a//b",
        "read:/a**/b",
    ],
)
def test_parse_grant_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="grant"):
        parse_grant(text)


_segment = st.text(alphabet="abc.-_", min_size=1, max_size=4).filter(lambda s: s not in (".", ".."))


@given(st.lists(_segment, min_size=1, max_size=5))
def test_root_write_covers_every_safe_path(segments: list[str]) -> None:
    path = "/" + "/".join(segments)
    assert allows(g("write:/"), "write", path)
    assert allows(g("write:/"), "read", path)
    assert allows(g("read:/**"), "read", path)


@given(st.lists(_segment, min_size=1, max_size=5), _segment)
def test_star_never_crosses_a_segment(segments: list[str], name: str) -> None:
    path = "/" + "/".join([*segments, name])
    assert allows(g("read:/" + "/".join(["*"] * len(segments)) + "/*"), "read", path)
    assert not allows(g("read:/*"), "read", path)
