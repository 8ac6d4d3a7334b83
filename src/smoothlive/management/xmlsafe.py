"""Parsing of untrusted XML bodies: no DTD, no entities, no network, bounded size.

A management body comes from the network. libxml2 is told never to load or
resolve anything external, never to expand entities, and any document that
declares a DOCTYPE at all is refused: the SmoothStreaming and Atom formats
have no use for one, and refusing it closes XXE and entity-expansion bombs
in one place. Depth is bounded too, so a deeply nested document cannot cost
more than a small one.
"""

from __future__ import annotations

from lxml import etree

from smoothlive.management.errors import ManagementError, MgmtError

MAX_BODY_BYTES = 1 << 20
MAX_DEPTH = 32



class _RefuseEverything(etree.Resolver):
    """Defence in depth: any external resource libxml2 asks for is empty."""

    def resolve(self, url, pubid, context):  # type: ignore[override]
        return self.resolve_string("", context)


def make_parser(*, keep_comments: bool = False, remove_blank_text: bool = False) -> etree.XMLParser:
    """A parser that never loads, resolves or expands anything external.

    collect_ids=False is left out on purpose: with it, libxml2 opens an
    external DTD subset named by a DOCTYPE even when load_dtd is False.
    """
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=not keep_comments,
        remove_pis=not keep_comments,
        remove_blank_text=remove_blank_text,
    )
    parser.resolvers.add(_RefuseEverything())
    return parser


_PARSER = make_parser()


def parse_xml(body: bytes) -> etree._Element:
    """The root element of ``body``, or ManagementError(INVALID_XML).

    Raises INVALID_XML for anything that is not a plain well-formed document:
    empty bodies, DTDs, entity references, too deep or too large documents.
    """
    if not body or not body.strip():
        raise ManagementError(MgmtError.INVALID_XML, "empty body")
    if len(body) > MAX_BODY_BYTES:
        raise ManagementError(MgmtError.INVALID_XML, "body too large")
    try:
        root = etree.fromstring(body, _PARSER)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise ManagementError(MgmtError.INVALID_XML, f"not well-formed: {exc}") from None
    if root is None:
        raise ManagementError(MgmtError.INVALID_XML, "no root element")
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise ManagementError(MgmtError.INVALID_XML, "DOCTYPE declarations are refused")
    for element in root.iter():
        if not isinstance(element.tag, str):  # entity references and the like
            raise ManagementError(MgmtError.INVALID_XML, "entity references are refused")
    if _depth(root) > MAX_DEPTH:
        raise ManagementError(MgmtError.INVALID_XML, "document nested too deeply")
    return root


def _depth(root: etree._Element) -> int:
    deepest = 0
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in element)
    return deepest
