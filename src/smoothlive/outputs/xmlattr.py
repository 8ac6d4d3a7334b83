"""Attribute values for the XML documents smoothlive writes by hand (sans-IO).

Manifests are built as text, not through an XML library, for speed; every
attribute value goes through ``xml_attr`` so that none can break the
document: markup characters are escaped, whitespace that attribute-value
normalisation would turn into spaces is kept as character references, and
what XML 1.0 cannot carry at all (control characters, lone surrogates,
U+FFFE/U+FFFF) becomes U+FFFD rather than an ill-formed document.
"""

from __future__ import annotations

import re

_ESCAPES = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    '"': "&quot;",
    "\t": "&#9;",
    "\n": "&#10;",
    "\r": "&#13;",
}
_SPECIAL = re.compile('[&<>"\t\n\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]')


def xml_attr(value: str) -> str:
    """``value`` escaped for a double-quoted XML attribute."""
    return _SPECIAL.sub(lambda m: _ESCAPES.get(m.group(), "\ufffd"), value)
