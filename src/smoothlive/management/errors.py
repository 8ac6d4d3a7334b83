"""The management service's status and error table, as one table.

Every error the REST service returns is a row of ``ERRORS``: the MPE_MGMT
name, its HResult, the HTTP status and the message text of the IIS table
("Service Management Status and Error Codes"). The body shape is the IIS one::

    <SmoothStreaming xmlns="...management">
      <Error><ErrorCode>0x8088002E</ErrorCode><ErrorMessage>...</ErrorMessage>
      <InternalError>...</InternalError></Error>
    </SmoothStreaming>

Anything that is not in the table is answered as ``INTERNAL`` (500, same body
shape, generic E_FAIL code) and never carries a stack trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from xml.sax.saxutils import escape

NS_MGMT = "http://schemas.microsoft.com/iis/media/2011/03/streaming/management"


@dataclass(frozen=True, slots=True)
class ErrorRow:
    hresult: int
    status: int
    message: str

    @property
    def code(self) -> str:
        """The HResult as IIS writes it in ErrorCode: ``0x8088002E``."""
        return f"0x{self.hresult:08X}"


class MgmtError(Enum):
    """The MPE_MGMT table. The trailing ``L`` of the IIS table is a C suffix."""

    METHOD_NOT_ALLOWED = ErrorRow(
        0x80880020, 405,
        "The HTTP method for the request is not allowed for the requested resource.")
    CONTENT_TYPE_NOT_SUPPORTED = ErrorRow(
        0x80880021, 415,
        "The Content Type header value of the request is either missing or not supported.")
    AUTHENTICATION_IS_REQUIRED = ErrorRow(
        0x80880022, 401,
        "All requests to the management APIs must be authenticated. Please install and "
        "enable an appropriate IIS authentication module for this website.")
    ACCESS_DENIED = ErrorRow(
        0x80880023, 401,
        "The authenticated user does not have the access level that is required in order "
        "to complete this operation.")
    INVALID_SCHEMA = ErrorRow(
        0x80880024, 400,
        "The resource is not valid according to its schema. For information about valid "
        "resource representations, please see the documentation for the supported schemas.")
    INVALID_XML = ErrorRow(
        0x80880025, 400,
        "The resource representation is not valid XML. Please make sure the resource "
        "representation is a valid XML document.")
    INVALID_DATA = ErrorRow(
        0x80880026, 400,
        "The resource contains one or more elements that contain invalid data. For "
        "information about valid resource representations, please see the documentation "
        "for the supported schemas.")
    STATE_TRANSITION_NOT_SUPPORTED = ErrorRow(
        0x80880027, 400,
        "The requested publishing point state is an internal state only and cannot be set "
        "via an API call. For information about valid state transitions, please refer to "
        "the API documentation.")
    STATE_TRANSITION_INVALID = ErrorRow(
        0x80880028, 400,
        "The publishing point cannot change from its current state to the requested one. "
        "For information about valid state transitions, please refer to the API "
        "documentation.")
    PUBLISHING_POINT_IN_USE = ErrorRow(
        0x80880029, 400,
        "The requested operation cannot be completed while the publishing point is in use. "
        "Please make sure the publishing point is in \"Idle\" state before attempting this "
        "operation.")
    PUBLISHING_POINT_LOCKED = ErrorRow(
        0x8088002A, 400,
        "The requested operation could not be completed because a conflicting operation "
        "was in progress. Please try again.")
    PUBLISHING_POINT_ALREADY_EXISTS = ErrorRow(
        0x8088002B, 400, "The publishing point already exists.")
    SLUG_HEADER_REQUIRED = ErrorRow(
        0x8088002C, 400,
        "The HTTP request must contain a Slug header that contains the path for the new "
        "publishing point file.")
    SLUG_HEADER_INVALID = ErrorRow(
        0x8088002D, 400,
        "The path for the publishing point file in the Slug header is not valid.")
    PUBLISHING_POINT_NOT_FOUND = ErrorRow(
        0x8088002E, 404, "The publishing point was not found.")
    PUBLISHING_POINT_NOT_STARTED = ErrorRow(
        0x8088002F, 400, "The publishing point is not started.")
    # Not in the IIS table: what "other errors" are answered with (E_FAIL).
    INTERNAL = ErrorRow(0x80004005, 500, "An internal error occurred.")

    @property
    def symbol(self) -> str:
        """The IIS name of the error, ``MPE_MGMT_...``."""
        return "MPE_MGMT_" + self.name

    @property
    def status(self) -> int:
        return self.value.status

    @property
    def code(self) -> str:
        return self.value.code

    @property
    def message(self) -> str:
        return self.value.message


# Well-known Win32/COM HResults used as InternalError detail.
E_FILE_NOT_FOUND = 0x80070002
E_ACCESS_DENIED = 0x80070005
E_FAIL = 0x80004005


class ManagementError(Exception):
    """Raised anywhere in the core; the HTTP shell turns it into the IIS body.

    ``detail`` is for the server log only (never sent: it may hold paths);
    ``internal`` is an optional HResult sent as InternalError.
    """

    def __init__(self, error: MgmtError, detail: str = "", internal: int | None = None):
        super().__init__(f"{error.symbol}: {detail}" if detail else error.symbol)
        self.error = error
        self.detail = detail
        self.internal = internal


def error_body(error: MgmtError, internal: int | None = None) -> bytes:
    """The XML body of an error answer, exactly in the shape of the IIS table."""
    internal_text = f"0x{internal:08X}" if internal is not None else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<SmoothStreaming xmlns="{NS_MGMT}">\n'
        "  <Error>\n"
        f"    <ErrorCode>{error.code}</ErrorCode>\n"
        f"    <ErrorMessage>{escape(error.message)}</ErrorMessage>\n"
        f"    <InternalError>{internal_text}</InternalError>\n"
        "  </Error>\n"
        "</SmoothStreaming>\n"
    ).encode()


def find_by_code(code: str) -> MgmtError | None:
    """The table row for an ``ErrorCode`` text (used by the client to explain errors)."""
    try:
        value = int(code, 16)
    except ValueError:
        return None
    for error in MgmtError:
        if error.value.hresult == value:
            return error
    return None
