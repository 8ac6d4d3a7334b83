"""The management REST service: the nine operations of the IIS API.

The flow of one request, always in this order so that nothing is read or
revealed before it is allowed:

1. route: the service URLs, or ``/<path>.isml/settings|state|statistics``;
2. authenticate (401 with Basic and Digest challenges; the body is unread);
3. method (405 with Allow), Content-Type of PUT/POST (415), Slug of a create;
4. authorize against the user's grants (401 MPE_MGMT_ACCESS_DENIED);
5. read and parse the body (bounded, safe XML, the XSD, the data rules);
6. ask the registry for the change, render the Atom answer.

Every refusal is a ManagementError from the table in ``errors``; anything
unexpected is logged with its traceback and answered as a bare 500 body.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from smoothlive.auth.authenticator import Authenticator
from smoothlive.auth.grants import allows
from smoothlive.auth.users import User
from smoothlive.http.messages import BodyTimeout, BodyTooLarge, Request, Send, respond
from smoothlive.management import atom
from smoothlive.management.errors import ManagementError, MgmtError, error_body
from smoothlive.management.schema import validate
from smoothlive.management.settings import Settings, parse_settings, render_settings
from smoothlive.management.statistics import render_statistics
from smoothlive.management.xmlsafe import MAX_BODY_BYTES, parse_xml
from smoothlive.metrics import ERRORS, MANAGEMENT, observe_request
from smoothlive.pubpoint.paths import InvalidPointPath, point_path
from smoothlive.pubpoint.registry import Registry
from smoothlive.pubpoint.states import State

log = logging.getLogger("smoothlive.management")

SERVICE_PATH = "/services/smoothstreaming/publishingpoints.isml"
_RESOURCE = re.compile(r"^(?P<point>/.+?\.isml)/(?P<resource>settings|state|statistics)/?$", re.I)
_NS = "{http://schemas.microsoft.com/iis/media/2011/03/streaming/management}"

ATOM_CONTENT_TYPE = b"application/atom+xml; charset=utf-8"
ERROR_CONTENT_TYPE = b"application/xml; charset=utf-8"
# The documented type, the generic XML types, and the IIS page's own typo.
ACCEPTED_BODY_TYPES = frozenset(
    {"application/atom+xml", "application/xml", "text/xml", "applications/atom+xml"})

# Methods per resource; HEAD goes with GET.
ALLOWED = {
    "collection": ("GET", "HEAD"),
    "collection-settings": ("GET", "HEAD", "POST"),
    "settings": ("GET", "HEAD", "PUT", "DELETE"),
    "state": ("GET", "HEAD", "PUT"),
    "statistics": ("GET", "HEAD"),
}


@dataclass(frozen=True, slots=True)
class Route:
    resource: str
    point: str | None = None  # the URL's point path, undecoded further


def route(path: str) -> Route | None:
    """The management resource ``path`` names, or None if it is not one."""
    lowered = path.lower().rstrip("/")
    if lowered == SERVICE_PATH:
        return Route("collection")
    if lowered == SERVICE_PATH + "/settings":
        return Route("collection-settings")
    match = _RESOURCE.match(path)
    if match:
        return Route(match["resource"].lower(), match["point"])
    return None


class ManagementService:
    def __init__(self, registry: Registry, authenticator: Authenticator) -> None:
        self.registry = registry
        self.authenticator = authenticator

    async def __call__(self, request: Request, send: Send, found: Route) -> None:
        started = time.monotonic()
        head = request.method == "HEAD"
        # Every success is a 200 but a create's 201; every refusal goes through _send_error.
        status = 201 if found.resource == "collection-settings" and request.method == "POST" \
            else 200
        try:
            await self._dispatch(request, send, found, head)
        except ManagementError as exc:
            status = await self._send_error(request, send, exc, head)
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            status = await self._send_error(
                request, send, ManagementError(MgmtError.INTERNAL), head)
        observe_request(MANAGEMENT, status, time.monotonic() - started)

    async def _send_error(
        self, request: Request, send: Send, exc: ManagementError, head: bool
    ) -> int:
        error = exc.error
        ERRORS.inc((error.symbol,))
        headers: list[tuple[bytes, bytes]] = []
        if error is MgmtError.AUTHENTICATION_IS_REQUIRED:
            headers = self.authenticator.challenge_headers(stale=exc.detail == "stale")
        elif error is MgmtError.METHOD_NOT_ALLOWED:
            allowed = ALLOWED.get(exc.detail, ())
            headers = [(b"allow", ", ".join(allowed).encode())]
        if error.status >= 500:
            log.error("%s %s: %s", request.method, request.path, error.symbol)
        else:
            log.info(
                "%s %s: %s %s", request.method, request.path, error.symbol, exc.detail)
        await respond(
            send, error.status, error_body(error, exc.internal), ERROR_CONTENT_TYPE,
            headers, head=head)
        return error.status

    async def _authenticate(self, request: Request) -> User:
        outcome = await self.authenticator.authenticate(
            request.method, request.header("authorization"), request.client_host)
        if outcome.user is None:
            raise ManagementError(
                MgmtError.AUTHENTICATION_IS_REQUIRED, "stale" if outcome.stale else outcome.reason)
        if outcome.uri is not None and outcome.uri not in (request.target, request.path):
            raise ManagementError(MgmtError.AUTHENTICATION_IS_REQUIRED, "digest uri mismatch")
        return outcome.user

    async def _dispatch(self, request: Request, send: Send, found: Route, head: bool) -> None:
        user = await self._authenticate(request)
        method = "GET" if head else request.method
        if request.method not in ALLOWED[found.resource]:
            raise ManagementError(MgmtError.METHOD_NOT_ALLOWED, found.resource)
        if method in ("PUT", "POST"):
            _check_content_type(request)
        origin = atom.Origin(request.scheme, request.host)

        if found.resource == "collection":
            body = await self._enumerate(user, origin, details=False)
            await respond(send, 200, body, ATOM_CONTENT_TYPE, head=head)
            return
        if found.resource == "collection-settings":
            if method == "POST":
                await self._create(request, send, user, origin)
            else:
                body = await self._enumerate(user, origin, details=True)
                await respond(send, 200, body, ATOM_CONTENT_TYPE, head=head)
            return

        assert found.point is not None
        try:
            path = point_path(found.point, decode=False)
        except InvalidPointPath:
            raise ManagementError(MgmtError.PUBLISHING_POINT_NOT_FOUND, found.point) from None
        access = "read" if method == "GET" else "write"
        if not allows(user.grants, access, path):
            raise ManagementError(MgmtError.ACCESS_DENIED, f"{user.name} {access} {path}")

        handler = getattr(self, f"_{method.lower()}_{found.resource}")
        try:
            await handler(request, send, path, origin, head)
        except IsADirectoryError:
            # A folder named like a point file (a create with the Slug /a.isml/b.isml makes
            # /a.isml one) is no point: 404 as for any path without a .isml file, not a 500.
            raise ManagementError(MgmtError.PUBLISHING_POINT_NOT_FOUND, path) from None

    # -- collection --------------------------------------------------------

    async def _enumerate(self, user: User, origin: atom.Origin, details: bool) -> bytes:
        items = []
        for path in await self.registry.paths():
            if not allows(user.grants, "read", path):
                continue  # silently left out, as the spec asks
            point = self.registry.readable(path)
            if point is None:
                continue
            items.append(atom.FeedItem(
                path,
                _title(point.settings.title, path),
                point.modified,
                _details(point.settings) if details else None,
            ))
        return atom.feed(origin, items, time.time())

    async def _create(self, request: Request, send: Send, user: User, origin: atom.Origin) -> None:
        slug = request.header("slug")
        if slug is None or not slug.strip():
            raise ManagementError(MgmtError.SLUG_HEADER_REQUIRED)
        try:
            path = point_path(slug.strip())
        except (InvalidPointPath, UnicodeDecodeError) as exc:
            raise ManagementError(MgmtError.SLUG_HEADER_INVALID, str(exc)) from None
        if not allows(user.grants, "write", path):
            raise ManagementError(MgmtError.ACCESS_DENIED, f"{user.name} write {path}")
        settings = parse_settings(await _smoothstreaming_child(request, "Settings"))
        point = await self.registry.create(path, settings)
        location = origin.url(path, "settings")
        await respond(
            send, 201, _settings_entry(origin, path, point, author=False), ATOM_CONTENT_TYPE,
            [(b"location", location.encode())])

    # -- one point ---------------------------------------------------------

    async def _get_settings(self, request, send, path, origin, head) -> None:
        point = self.registry.get(path)
        await respond(send, 200, _settings_entry(origin, path, point), ATOM_CONTENT_TYPE, head=head)

    async def _put_settings(self, request, send, path, origin, head) -> None:
        self.registry.get(path)
        settings = parse_settings(await _smoothstreaming_child(request, "Settings"))
        await self.registry.update_settings(path, settings)
        await respond(send, 200)

    async def _delete_settings(self, request, send, path, origin, head) -> None:
        await self.registry.delete(path)
        await respond(send, 200)

    async def _get_state(self, request, send, path, origin, head) -> None:
        point = self.registry.get(path)
        runtime = self.registry.runtime(path)
        body = ["      <State>\n", f"        <Value>{runtime.state.value}</Value>\n"]
        if runtime.state is State.ERROR and runtime.last_error is not None:
            body.append(f"        <LastError>0x{runtime.last_error:08X}</LastError>\n")
        body.append("      </State>\n")
        entry = atom.entry(
            origin, path, "state", "settings", _title(point.settings.title, path),
            time.time(), "".join(body), millis=True)
        await respond(send, 200, entry, ATOM_CONTENT_TYPE, head=head)

    async def _put_state(self, request, send, path, origin, head) -> None:
        self.registry.get(path)
        state_element = await _smoothstreaming_child(request, "State")
        value = state_element.find(f"{_NS}Value")
        text = (value.text or "").strip() if value is not None else ""
        try:
            wanted = State.parse(text)
        except ValueError:
            raise ManagementError(MgmtError.INVALID_DATA, f"state {text!r}") from None
        await self.registry.request_state(path, wanted)
        await respond(send, 200)

    async def _get_statistics(self, request, send, path, origin, head) -> None:
        self.registry.get(path)
        runtime = self.registry.runtime(path)
        if runtime.state is State.IDLE:
            raise ManagementError(MgmtError.PUBLISHING_POINT_NOT_STARTED, path)
        live = self.registry.live(path)
        inputs, outputs = live.statistics(time.monotonic()) if live is not None else ([], [])
        body = render_statistics(inputs, outputs)
        entry = atom.entry(
            origin, path, "statistics", "settings", None, time.time(), body, millis=True)
        await respond(send, 200, entry, ATOM_CONTENT_TYPE, head=head)


def _title(title: str, path: str) -> str:
    """The Atom title: the point's Title, or its file name when it has none."""
    return title or path.rsplit("/", 1)[-1]


def _settings_entry(origin: atom.Origin, path: str, point, *, author: bool = True) -> bytes:
    return atom.entry(
        origin, path, "settings", "state", _title(point.settings.title, path),
        point.modified, render_settings(point.settings), author=author)


def _check_content_type(request: Request) -> None:
    content_type = request.header("content-type")
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type not in ACCEPTED_BODY_TYPES:
        raise ManagementError(MgmtError.CONTENT_TYPE_NOT_SUPPORTED, repr(content_type))


async def _smoothstreaming_child(request: Request, name: str):
    """The Settings or State element of the request body, validated by the XSD."""
    try:
        body = await request.body(MAX_BODY_BYTES)
    except BodyTooLarge as exc:
        raise ManagementError(MgmtError.INVALID_XML, f"body of {exc} bytes") from None
    except BodyTimeout as exc:  # incomplete: not a document
        raise ManagementError(MgmtError.INVALID_XML, str(exc)) from None
    root = atom.smoothstreaming_of(parse_xml(body))
    validate(root)
    children = [child for child in root if isinstance(child.tag, str)]
    if len(children) != 1 or children[0].tag != f"{_NS}{name}":
        raise ManagementError(MgmtError.INVALID_SCHEMA, f"expected {name}")
    return children[0]


_DETAILS: dict[int, tuple[Settings, str]] = {}


def _details(settings: Settings) -> str:
    """A point's Settings as the enumeration with details shows them, rendered once
    per settings object (the store keeps one per file version), not once per request."""
    cached = _DETAILS.get(id(settings))
    if cached is not None and cached[0] is settings:
        return cached[1]
    text = render_settings(settings, indent="        ")
    _DETAILS[id(settings)] = (settings, text)
    if len(_DETAILS) > 8192:
        _DETAILS.pop(next(iter(_DETAILS)))
    return text
