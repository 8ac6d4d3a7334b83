"""Validation of SmoothStreaming bodies against SmoothStreaming.xsd.

IIS defines the management bodies by "the SmoothStreaming.xsd file"
(smoothstreaming-schema-reference.md); smoothlive ships its own rendering of
that schema, written from the element pages, as package data next to this
module. A body the schema refuses — unknown or repeated elements, a missing
required attribute, a value that is not an ``xs:boolean``/``xs:duration``/
``xs:unsignedInt`` — is ``MPE_MGMT_INVALID_SCHEMA``. Range checks on values the
schema accepts are ``settings.check_settings``'s job (``INVALID_DATA``).
"""

from __future__ import annotations

import threading
from functools import cache
from importlib import resources

from lxml import etree

from smoothlive.management.errors import NS_MGMT, ManagementError, MgmtError

__all__ = ["SCHEMA_RESOURCE", "validate"]

SCHEMA_RESOURCE = "SmoothStreaming.xsd"

_ROOT = f"{{{NS_MGMT}}}SmoothStreaming"
# An XMLSchema keeps the error log of its last run on itself; one run at a time.
_LOCK = threading.Lock()


@cache
def _schema() -> etree.XMLSchema:
    """The compiled schema, loaded once; its parser never touches the network or a DTD."""
    data = resources.files("smoothlive.management").joinpath(SCHEMA_RESOURCE).read_bytes()
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False
    )
    return etree.XMLSchema(etree.fromstring(data, parser))


def validate(element: etree._Element) -> None:
    """Check a ``{NS_MGMT}SmoothStreaming`` element (usually inside an Atom entry).

    Raises ``ManagementError(INVALID_SCHEMA, message)``, the message being the
    first schema error (for the log), when the element does not conform.
    """
    if not isinstance(element.tag, str) or element.tag != _ROOT:
        raise ManagementError(
            MgmtError.INVALID_SCHEMA, f"expected SmoothStreaming element, got {element.tag!r}"
        )
    schema = _schema()
    with _LOCK:
        if schema.validate(element):
            return
        errors = schema.error_log.filter_from_errors() or schema.error_log
        first = errors[0] if len(errors) else None
        message = f"line {first.line}: {first.message}" if first else "not valid"
    raise ManagementError(MgmtError.INVALID_SCHEMA, message)
