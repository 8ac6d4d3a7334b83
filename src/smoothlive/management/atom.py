"""Atom entries and feeds of the management service (RFC 4287, RFC 5023).

Every resource of the REST service travels as an Atom ``entry`` whose
``content`` holds one ``SmoothStreaming`` element; the enumerations are
``feed`` documents. The shapes follow the examples of the IIS operation
pages: ids are the resource URL, titles are the point's Title, links are
built from the request's scheme and host.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

from lxml import etree

from smoothlive.management.errors import NS_MGMT, ManagementError, MgmtError

NS_ATOM = "http://www.w3.org/2005/Atom"
XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
ATOM_TYPE = "application/atom+xml"
# What a path keeps unencoded: "/" and the sub-delims, ":" and "@" of RFC 3986 pchar.
_PATH_SAFE = "/!$&'()*+,;=:@"

# Link titles as the IIS examples write them (the statistics page titles its
# self link "State"; clients built against IIS see the same text here).
_LINK_TITLES = {"settings": "Settings", "state": "State", "statistics": "State"}


def timestamp(when: float, *, millis: bool = False) -> str:
    """An RFC 3339 UTC time as IIS writes it: ``2011-06-15T18:42:13Z`` or ``...17.993Z``."""
    moment = datetime.fromtimestamp(when, tz=UTC)
    if millis:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Origin:
    """Scheme and host of the request: the base of every id and link."""

    scheme: str
    host: str

    def url(self, point_path: str, resource: str) -> str:
        # Percent-encoded: a point name may hold '%', '#', spaces or non-ASCII (a Slug of
        # /%252e%252e/x.isml names the folder "%2e%2e"); written raw, its links and Location
        # would lead elsewhere (to /../x.isml, or cut at '#'). quote() leaves every other
        # character of a path segment (RFC 3986 pchar) as it is.
        return f"{self.scheme}://{self.host}{quote(point_path, safe=_PATH_SAFE)}/{resource}"


def _link(href: str, rel: str, resource: str) -> str:
    return (
        f"<link href={quoteattr(href)} rel=\"{rel}\" type=\"{ATOM_TYPE}\" "
        f"title=\"{_LINK_TITLES[resource]}\" />"
    )


def entry(
    origin: Origin,
    point_path: str,
    resource: str,
    related: str,
    title: str | None,
    updated: float,
    body: str,
    *,
    author: bool = True,
    millis: bool = False,
) -> bytes:
    """One resource entry: ``resource`` is settings, state or statistics.

    ``body`` is the XML text of the SmoothStreaming child (Settings, State,
    Statistics), already rendered by its model.
    """
    self_url = origin.url(point_path, resource)
    parts = [XML_DECLARATION, f'<entry xmlns="{NS_ATOM}">\n', f"  <id>{escape(self_url)}</id>\n"]
    if title is not None:
        parts.append(f"  <title>{escape(title)}</title>\n")
    if author:
        parts.append("  <author>\n    <name />\n  </author>\n")
    parts += [
        f"  <updated>{timestamp(updated, millis=millis)}</updated>\n",
        "  " + _link(self_url, "self", resource) + "\n",
        "  " + _link(origin.url(point_path, related), "related", related) + "\n",
        '  <content type="application/xml">\n',
        f'    <SmoothStreaming xmlns="{NS_MGMT}">\n',
        body,
        "    </SmoothStreaming>\n",
        "  </content>\n",
        "</entry>\n",
    ]
    return "".join(parts).encode()


@dataclass(frozen=True, slots=True)
class FeedItem:
    point_path: str
    title: str
    updated: float
    settings_xml: str | None = None  # present in the "with details" feed


def feed(origin: Origin, items: list[FeedItem], now: float) -> bytes:
    """The publishing point collection feed (both enumerations)."""
    parts = [
        XML_DECLARATION,
        f'<feed xmlns="{NS_ATOM}">\n',
        "  <author>\n    <name></name>\n  </author>\n",
        "  <title>Publishing Point Collection</title>\n",
        f"  <updated>{timestamp(now, millis=True)}</updated>\n",
    ]
    for item in items:
        settings_url = origin.url(item.point_path, "settings")
        details = item.settings_xml is not None
        parts += [
            "  <entry>\n",
            f"    <id>{escape(settings_url)}</id>\n",
            f"    <title>{escape(item.title)}</title>\n",
            f"    <updated>{timestamp(item.updated)}</updated>\n",
            "    " + _link(settings_url, "self" if details else "related", "settings") + "\n",
            "    " + _link(origin.url(item.point_path, "state"), "related", "state") + "\n",
        ]
        if details:
            parts += [
                '    <content type="application/xml">\n',
                f'      <SmoothStreaming xmlns="{NS_MGMT}">\n',
                item.settings_xml or "",
                "      </SmoothStreaming>\n",
                "    </content>\n",
            ]
        parts.append("  </entry>\n")
    parts.append("</feed>\n")
    return "".join(parts).encode()


def smoothstreaming_of(root: etree._Element) -> etree._Element:
    """The SmoothStreaming element a request carries.

    The documented body is an Atom entry with the element in ``content``;
    a bare SmoothStreaming document is accepted as well. Anything else is
    MPE_MGMT_INVALID_SCHEMA.
    """
    tag = f"{{{NS_MGMT}}}SmoothStreaming"
    if root.tag == tag:
        return root
    if root.tag != f"{{{NS_ATOM}}}entry":
        raise ManagementError(MgmtError.INVALID_SCHEMA, f"root element {root.tag}")
    contents = root.findall(f"{{{NS_ATOM}}}content")
    if len(contents) != 1:
        raise ManagementError(MgmtError.INVALID_SCHEMA, "entry needs exactly one content")
    children = [child for child in contents[0] if isinstance(child.tag, str)]
    if len(children) != 1 or children[0].tag != tag:
        raise ManagementError(MgmtError.INVALID_SCHEMA, "content must hold SmoothStreaming")
    return children[0]
