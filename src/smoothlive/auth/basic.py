"""HTTP Basic credentials (RFC 7617), parsed without any I/O.

Basic only protects the password with the transport, so the management API should be put
behind TLS when Basic is used; Digest (see ``digest.py``) is offered first for that reason.
"""

from __future__ import annotations

import base64
import binascii
import re

# RFC 7235 section 2.1: credentials = auth-scheme [ 1*SP token68 ]
_CREDENTIALS = re.compile(r"[ \t]*([!#$%&'*+.^_`|~0-9A-Za-z-]+) +([A-Za-z0-9+/]+=*)[ \t]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_TOKEN = 4096


def parse_basic(header_value: str) -> tuple[str, str] | None:
    """Return ``(user, password)`` from an ``Authorization: Basic ...`` value, else None.

    The scheme is case-insensitive; the payload is decoded as UTF-8 (RFC 7617 section 2.1,
    what every current client sends). Anything malformed gives None: wrong scheme, bad
    base64, no colon, invalid UTF-8, an empty user-id, or control characters, which
    RFC 7617 section 2 forbids in both parts. Missing base64 padding is tolerated.
    """
    match = _CREDENTIALS.fullmatch(header_value)
    if match is None or match.group(1).lower() != "basic":
        return None
    token = match.group(2)
    if len(token) > MAX_TOKEN:
        return None
    token = token.rstrip("=")
    token += "=" * (-len(token) % 4)
    try:
        text = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or _CONTROL.search(text):
        return None
    return user, password
