"""Per-user access grants, standing in for the NTFS ACLs IIS checked on ``.isml`` files.

A grant is the text ``read:PATTERN`` or ``write:PATTERN``. PATTERN is a URL-style path
glob that starts with ``/``:

* ``**`` as a whole segment matches zero or more segments;
* ``*`` matches any run of characters inside one segment (never a ``/``);
* everything else is literal (no ``?``, no ``[...]``: publishing point names may use them);
* a trailing ``/`` covers everything under it, so ``/events/`` means ``/events/**`` and
  ``write:/`` grants everything.

``write`` implies ``read``. There are no deny rules, so grants can only add access; a path
that matches no grant is refused. Paths are compared case-sensitively, which can only
under-grant on a case-insensitive store, never over-grant.

Dot segments (RFC 3986 section 3.3) are refused both in patterns and in the paths being
checked, so ``/events/../admin.isml`` never matches ``read:/events/**``. Paths must be
percent-decoded by the caller before they get here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

Access = Literal["read", "write"]
ACCESS_LEVELS: tuple[Access, ...] = ("read", "write")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Grant:
    """One access rule: ``access`` on every path that ``pattern`` matches."""

    access: Access
    pattern: str

    def __str__(self) -> str:
        return f"{self.access}:{self.pattern}"


def _path_problem(path: str) -> str | None:
    """Why ``path`` (a pattern or a request path) is unsafe, or None when it is fine."""
    if not path.startswith("/"):
        return "must start with '/'"
    if "\x00" in path:
        return "must not contain NUL"
    if "\\" in path:
        return "must not contain a backslash"
    if _CONTROL.search(path):
        return "must not contain control characters"
    if any(segment in (".", "..") for segment in path.split("/")):
        return "must not contain '.' or '..' segments"
    return None


def parse_grant(text: str) -> Grant:
    """Parse ``read:/events/**`` or ``write:/``; ``ValueError`` says what is wrong."""
    access, sep, pattern = text.strip().partition(":")
    if not sep:
        raise ValueError(f"grant {text!r} must look like 'read:/path' or 'write:/path'")
    if access not in ACCESS_LEVELS:
        raise ValueError(f"grant {text!r}: access must be 'read' or 'write', not {access!r}")
    problem = _path_problem(pattern)
    if problem is not None:
        raise ValueError(f"grant {text!r}: pattern {problem}")
    segments = pattern[1:].split("/")
    for i, segment in enumerate(segments):
        if segment == "" and i != len(segments) - 1:
            raise ValueError(f"grant {text!r}: pattern must not contain empty segments ('//')")
        if "**" in segment and segment != "**":
            raise ValueError(f"grant {text!r}: '**' must be a whole segment")
    return Grant(access, pattern)  # type: ignore[arg-type]  # checked against ACCESS_LEVELS


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern[str]:
    """Translate a validated pattern into an anchored regex (cached: hot path)."""
    segments = pattern[1:].split("/")
    if segments[-1] == "":
        segments[-1] = "**"  # a trailing '/' covers everything under it
    parts = []
    for segment in segments:
        if segment == "**":
            parts.append("(?:/[^/]*)*")
        else:
            parts.append("/" + "[^/]*".join(re.escape(piece) for piece in segment.split("*")))
    return re.compile("".join(parts))


def allows(grants: Iterable[Grant], access: str, path: str) -> bool:
    """Whether any grant gives ``access`` ("read" or "write") on ``path``.

    ``path`` is a publishing point file path such as ``/live/ch1.isml`` (or the Slug path
    when creating one). Unsafe paths (dot segments, backslashes, NUL) are always refused.
    """
    if access not in ACCESS_LEVELS:
        raise ValueError(f"access must be 'read' or 'write', not {access!r}")
    if _path_problem(path) is not None:
        return False
    for grant in grants:
        if access == "write" and grant.access != "write":
            continue
        if _compile(grant.pattern).fullmatch(path):
            return True
    return False
