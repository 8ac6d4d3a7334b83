"""Publishing point paths: what a Slug or a URL may name, checked once.

A point is addressed by its file path under the content root, written
URL-style: ``/live/ch1.isml``. Everything that arrives from a client (the
Slug header of a create, the path of a management URL) goes through
``point_path`` before it is used, so that no spelling can name a file outside
the root: ``..`` in any encoding, absolute drive letters, UNC paths,
backslashes, NUL and other control characters are refused, and the name must
end in ``.isml``.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import unquote

MAX_PATH_LENGTH = 1024
MAX_SEGMENT_LENGTH = 255
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DRIVE = re.compile(r"^[A-Za-z]:")
_SEGMENT_OK = re.compile(r"^[^\x00-\x1f\x7f/\\:*?\"<>|]+$")


class InvalidPointPath(ValueError):
    """The text does not name a publishing point file under the root."""


# A pure function of the path: players ask for the same URLs again and again.
@functools.lru_cache(maxsize=8192)
def point_path(text: str, *, decode: bool = True) -> str:
    """The canonical ``/a/b.isml`` path for ``text``, or InvalidPointPath.

    ``decode`` percent-decodes first (a Slug is a percent-encoded header
    value per RFC 5023 §9.7); the decoded text is decoded no further, so
    ``%252e%252e`` stays a literal name rather than becoming ``..``.
    """
    if decode:
        if _BAD_ESCAPE.search(text):
            raise InvalidPointPath("malformed percent-encoding")
        text = unquote(text, errors="strict")
    if not text or len(text) > MAX_PATH_LENGTH:
        raise InvalidPointPath("empty or too long")
    if text.endswith("/"):
        raise InvalidPointPath("names a folder")
    if "\\" in text or "\x00" in text:
        raise InvalidPointPath("backslash or NUL")
    if _DRIVE.match(text) or text.startswith("//"):
        raise InvalidPointPath("drive letter or UNC path")
    segments = [s for s in text.split("/") if s]
    if not segments:
        raise InvalidPointPath("no file name")
    for segment in segments:
        if segment in (".", ".."):
            raise InvalidPointPath("dot segment")
        if len(segment) > MAX_SEGMENT_LENGTH or not _SEGMENT_OK.match(segment):
            raise InvalidPointPath("segment with a forbidden character")
        if segment.startswith(".") or segment.endswith((" ", ".")):
            raise InvalidPointPath("hidden or trailing-dot segment")
    name = segments[-1]
    if not name.lower().endswith(".isml") or len(name) <= len(".isml"):
        raise InvalidPointPath("not a .isml file name")
    return "/" + "/".join(segments)


def parent_dir(path: str) -> str:
    """The folder of a point path, with a trailing slash: ``/live/``."""
    return path.rsplit("/", 1)[0] + "/"
