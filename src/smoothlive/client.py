"""A client of the management REST service, for scripts and the CLI.

It speaks the same Atom/XML as any IIS-era tool, over httpx, with Digest
authentication (Basic over HTTPS when asked). Errors come back as
``ClientError`` carrying the MPE_MGMT row, so callers can explain them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote

import httpx
from lxml import etree

from smoothlive.management.atom import NS_ATOM
from smoothlive.management.errors import NS_MGMT, MgmtError, find_by_code
from smoothlive.management.xmlsafe import parse_xml

SERVICE = "/services/smoothstreaming/publishingpoints.isml"
_A = f"{{{NS_ATOM}}}"
_M = f"{{{NS_MGMT}}}"


class ClientError(Exception):
    def __init__(self, status: int, error: MgmtError | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error


@dataclass
class PointSummary:
    path: str
    title: str
    updated: str
    settings: dict[str, object] = field(default_factory=dict)


def settings_entry(settings_xml: str, title: str = "") -> bytes:
    """An Atom entry around a ``<Settings>`` element, as IIS clients send it."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<entry xmlns="{NS_ATOM}"><id /><title>{title}</title><updated />'
        f'<content type="application/xml"><SmoothStreaming xmlns="{NS_MGMT}">'
        f"{settings_xml}</SmoothStreaming></content></entry>"
    ).encode()


def state_entry(value: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<entry xmlns="{NS_ATOM}"><content type="application/xml">'
        f'<SmoothStreaming xmlns="{NS_MGMT}"><State><Value>{value}</Value></State>'
        "</SmoothStreaming></content></entry>"
    ).encode()


def _element_to_dict(element: etree._Element) -> object:
    """A plain-data view of an XML element, for --json output."""
    children = [c for c in element if isinstance(c.tag, str)]
    attributes = dict(element.attrib)
    if not children:
        text = (element.text or "").strip()
        return {**attributes, "value": text} if attributes else text
    out: dict[str, object] = dict(attributes)
    for child in children:
        name = etree.QName(child).localname
        value = _element_to_dict(child)
        if name in out:
            existing = out[name]
            out[name] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            out[name] = value
    return out


class ManagementClient:
    def __init__(
        self,
        server: str,
        user: str | None = None,
        password: str | None = None,
        *,
        basic: bool = False,
        timeout: float = 30.0,
        verify: bool | str = True,
    ) -> None:
        auth: httpx.Auth | None = None
        if user is not None:
            auth = httpx.BasicAuth(user, password or "") if basic else httpx.DigestAuth(
                user, password or "")
        self.http = httpx.Client(
            base_url=server.rstrip("/"), auth=auth, timeout=timeout, verify=verify)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ManagementClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _point_url(path: str, resource: str) -> str:
        return quote("/" + path.strip("/")) + "/" + resource

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code < 400:
            return response
        error = None
        message = f"HTTP {response.status_code}"
        try:
            root = parse_xml(response.content)
            code = root.findtext(f"{_M}Error/{_M}ErrorCode")
            error = find_by_code(code or "")
            if error is not None:
                message = f"{error.symbol} ({error.code}): {error.message}"
        except Exception:
            pass
        raise ClientError(response.status_code, error, message)

    def _entry_content(self, response: httpx.Response) -> etree._Element:
        root = parse_xml(response.content)
        content = root.find(f"{_A}content/{_M}SmoothStreaming")
        if content is None or len(content) == 0:
            raise ClientError(response.status_code, None, "answer without SmoothStreaming content")
        return content[0]

    def list(self, details: bool = False) -> list[PointSummary]:
        url = SERVICE + ("/settings" if details else "")
        root = parse_xml(self._check(self.http.get(url)).content)
        points = []
        for entry in root.findall(f"{_A}entry"):
            href = entry.find(f"{_A}link[@title='Settings']").get("href", "")
            path = httpx.URL(href).path.rsplit("/settings", 1)[0]
            summary = PointSummary(
                path, entry.findtext(f"{_A}title") or "", entry.findtext(f"{_A}updated") or "")
            settings = entry.find(f"{_A}content/{_M}SmoothStreaming/{_M}Settings")
            if settings is not None:
                summary.settings = _element_to_dict(settings)  # type: ignore[assignment]
            points.append(summary)
        return points

    def create(self, path: str, settings_xml: str, title: str = "") -> dict[str, object]:
        response = self.http.post(
            SERVICE + "/settings",
            content=settings_entry(settings_xml, title),
            headers={"Content-Type": "application/atom+xml", "Slug": quote(path)},
        )
        return _element_to_dict(self._entry_content(self._check(response)))  # type: ignore[return-value]

    def settings(self, path: str) -> dict[str, object]:
        response = self._check(self.http.get(self._point_url(path, "settings")))
        return _element_to_dict(self._entry_content(response))  # type: ignore[return-value]

    def update_settings(self, path: str, settings_xml: str) -> None:
        self._check(self.http.put(
            self._point_url(path, "settings"), content=settings_entry(settings_xml),
            headers={"Content-Type": "application/atom+xml"}))

    def state(self, path: str) -> dict[str, object]:
        response = self._check(self.http.get(self._point_url(path, "state")))
        return _element_to_dict(self._entry_content(response))  # type: ignore[return-value]

    def set_state(self, path: str, value: str) -> None:
        self._check(self.http.put(
            self._point_url(path, "state"), content=state_entry(value),
            headers={"Content-Type": "application/atom+xml"}))

    def statistics(self, path: str) -> dict[str, object]:
        response = self._check(self.http.get(self._point_url(path, "statistics")))
        return _element_to_dict(self._entry_content(response))  # type: ignore[return-value]

    def delete(self, path: str) -> None:
        self._check(self.http.delete(self._point_url(path, "settings")))
