"""What a Slug or URL may name (sans-IO)."""

from __future__ import annotations

import pytest

from smoothlive.pubpoint.paths import InvalidPointPath, parent_dir, point_path


@pytest.mark.parametrize(("text", "expected"), [
    ("/live/ch1.isml", "/live/ch1.isml"),
    ("live/ch1.isml", "/live/ch1.isml"),
    ("//live//ch1.ISML", None),  # UNC-looking: refused
    ("/a%20b/c.isml", "/a b/c.isml"),
    ("/Live/Ch1.Isml", "/Live/Ch1.Isml"),
])
def test_accepted_paths(text, expected):
    if expected is None:
        with pytest.raises(InvalidPointPath):
            point_path(text)
    else:
        assert point_path(text) == expected


@pytest.mark.parametrize("text", [
    "", "/", "/..", "/../x.isml", "/a/../x.isml", "%2e%2e/x.isml", "%2E%2e/x.isml",
    "/./x.isml", "C:/x.isml", "c:x.isml", "\\\\unc\\x.isml", "/a\\b.isml", "/x\x00.isml",
    "/x%00.isml", "/x.txt", "/.isml", "/x.isml/", "/.git/x.isml", "/a./x.isml",
    "/a /x.isml", "/x\n.isml", "/" + "a" * 256 + ".isml", "/" + "a/" * 600 + "x.isml",
    "/x<y.isml", "/x|y.isml", "/x:y.isml",
])
def test_refused_paths(text):
    with pytest.raises(InvalidPointPath):
        point_path(text)


def test_percent_decoding_happens_once():
    # %252e%252e decodes to the literal name "%2e%2e", never to "..".
    assert point_path("/%252e%252e/x.isml") == "/%2e%2e/x.isml"


def test_url_paths_are_not_decoded_again():
    assert point_path("/a%20b/x.isml", decode=False) == "/a%20b/x.isml"


def test_parent_dir():
    assert parent_dir("/live/ch1.isml") == "/live/"
    assert parent_dir("/ch1.isml") == "/"
