"""Hypothesis strategies for publishing point settings and for bodies that must be refused.

``settings_strategy()`` draws valid ``Settings`` (every field, the corners
included: fractional durations, XML-special and non-ASCII text, credentials,
modules with and without HLS, outputs switched off, key rotation), each one
already holding its keys (``with_generated_keys`` leaves it as it is), so it
round-trips through a server that generates missing keys too.

``invalid_settings_case_strategy()`` draws ``(body, expected error)`` pairs:
whole Atom entries around a Settings element that are not well-formed
(INVALID_XML), break the schema (INVALID_SCHEMA) or hold a value out of range
(INVALID_DATA); ``invalid_settings_xml_strategy()`` is the bodies alone.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

from hypothesis import strategies as st
from lxml import etree

from smoothlive.management.durations import ZERO, Duration
from smoothlive.management.errors import NS_MGMT, MgmtError
from smoothlive.management.settings import (
    DASH_MODULE_ID,
    HLS_MODULE_ID,
    HLS_MODULE_NAME,
    SMOOTH_MODULE_ID,
    ArchiveSettings,
    ClientConnections,
    HlsSettings,
    Module,
    PublishingPointRef,
    ServerConnections,
    Settings,
    render_settings,
)

__all__ = [
    "atom_entry",
    "durations",
    "invalid_settings_case_strategy",
    "invalid_settings_xml_strategy",
    "settings_strategy",
    "xml_text",
]

NS_ATOM = "http://www.w3.org/2005/Atom"
_M = f"{{{NS_MGMT}}}"

# XML 1.0 refuses C0 controls other than tab, LF and CR, surrogates, U+FFFE and U+FFFF.
_FORBIDDEN = "".join(chr(c) for c in range(0x20) if chr(c) not in "\t\n\r") + "\ufffe\uffff"
_XML_CHAR = st.characters(exclude_categories=("Cs",), exclude_characters=_FORBIDDEN)
_SPECIAL = st.sampled_from(
    ["&", "<", ">", '"', "'", "]]>", "&amp;", "é", "日本", "🎬", "\r", "\r\n", "\t", " ", "\x85"]
)


def xml_text(min_size: int = 0, max_size: int = 40) -> st.SearchStrategy[str]:
    """Any text XML 1.0 can carry, biased towards characters that need escaping."""
    piece = st.one_of(_XML_CHAR, _SPECIAL)
    # Pieces may be longer than one character: cut back to max_size.
    return st.lists(piece, min_size=min_size, max_size=max_size).map(
        lambda pieces: "".join(pieces)[:max_size]
    )


def _trimmed_text(max_size: int = 40) -> st.SearchStrategy[str]:
    """Non-empty text without surrounding whitespace (identifiers, paths, credentials)."""
    return xml_text(1, max_size).map(str.strip).filter(bool)


def durations(
    min_ms: int = 0, max_ms: int = 10**10, zero_weight: bool = True
) -> st.SearchStrategy[Duration]:
    """Durations with up to three decimals of a second."""
    drawn = st.integers(min_ms, max_ms).map(lambda ms: Duration.from_seconds(Fraction(ms, 1000)))
    return st.one_of(st.just(ZERO), drawn) if zero_weight and min_ms == 0 else drawn


_HOST = st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True).map(lambda h: f"{h}.example")
_PATH_PART = st.from_regex(r"[A-Za-z0-9._~-]{1,12}", fullmatch=True)


@st.composite
def _urls(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["http", "https", "HTTP"]))
    host = draw(st.one_of(_HOST, st.just("127.0.0.1"), st.just("[::1]")))
    port = draw(st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}")))
    parts = draw(st.lists(_PATH_PART, min_size=0, max_size=3))
    query = draw(st.sampled_from(["", "?a=1&b=2", "?x=%20y", "#frag"]))
    return f"{scheme}://{host}{port}/{'/'.join(parts)}.isml{query}"


_ARCHIVE_PATHS = st.lists(
    _PATH_PART.filter(lambda part: part.strip(".")), min_size=1, max_size=3
).map("/".join)

_REFS = st.lists(
    st.builds(
        PublishingPointRef,
        url=_urls(),
        credential_name=st.one_of(st.none(), _trimmed_text(20)),
    ),
    max_size=3,
).map(tuple)

_KEYS = st.from_regex(r"[0-9A-Fa-f]{32}", fullmatch=True)


@st.composite
def _hls(draw: st.DrawFn) -> HlsSettings:
    """HLS settings; an encrypting module has its key, as a stored point always has."""
    encryption_enabled = draw(st.booleans())
    return HlsSettings(
        segment_length=draw(durations(1000, 3_600_000)),
        max_bit_rate=draw(st.integers(1, 2**32 - 1)),
        allow_caching=draw(st.booleans()),
        backward_compatible=draw(st.booleans()),
        include_codecs=draw(st.booleans()),
        encryption_enabled=encryption_enabled,
        key=draw(_KEYS if encryption_enabled else st.one_of(st.none(), _KEYS)),
        key_rotation=draw(st.one_of(st.just(ZERO), durations(10_000, 86_400_000))),
    )


_MODULE_NAME = st.one_of(st.none(), xml_text(1, 30))
_MODULE_ID = st.one_of(
    st.sampled_from([SMOOTH_MODULE_ID, HLS_MODULE_ID, DASH_MODULE_ID]), _trimmed_text(20)
)


@st.composite
def _plain_module(draw: st.DrawFn) -> Module:
    """A module without HLS; only a sink may be switched off."""
    module_type = draw(st.sampled_from(["sink", "source"]))
    return Module(
        id=draw(_MODULE_ID),
        type=module_type,
        name=draw(_MODULE_NAME),
        enabled=module_type == "source" or draw(st.booleans()),
    )


@st.composite
def _modules(draw: st.DrawFn) -> tuple[Module, ...]:
    """Modules with unique ids; at most one carries HLS, and that one is a sink.

    A sink ``hls`` beside a module carrying HLS under another id stays on: the
    carrying module is the HLS switch (check_settings refuses a second one).
    """
    others = draw(st.lists(_plain_module(), max_size=3, unique_by=lambda m: m.id))
    if draw(st.booleans()):
        used = {m.id for m in others}
        module_id = draw(st.one_of(st.just(HLS_MODULE_ID), _trimmed_text(20)).filter(
            lambda i: i not in used
        ))
        name = draw(st.one_of(st.just(HLS_MODULE_NAME), _MODULE_NAME))
        hls = Module(id=module_id, type="sink", name=name, hls=draw(_hls()),
                     enabled=draw(st.booleans()))
        others = [
            Module(m.id, m.type, m.name) if m.id == HLS_MODULE_ID and m.type == "sink" else m
            for m in others
        ]
        others.insert(draw(st.integers(0, len(others))), hls)
    return tuple(others)


@st.composite
def _settings(draw: st.DrawFn) -> Settings:
    source_type = draw(st.sampled_from(["Push", "Pull"]))
    refs = draw(_REFS)
    return Settings(
        title=draw(xml_text(0, 256)),
        source_type=source_type,
        estimated_duration=draw(durations()),
        auto_start=draw(st.booleans()),
        auto_restart_on_encoder_reconnect=draw(st.booleans()),
        look_ahead_chunks=draw(st.integers(0, 10)),
        archive=ArchiveSettings(
            enabled=draw(st.booleans()),
            segment_length=draw(durations()),
            # Relative folders: a Path outside the content root is refused
            # (test_archive_path_outside_the_root_is_refused).
            path=draw(st.one_of(st.none(), _ARCHIVE_PATHS)),
            use_event_id_on_path=draw(st.booleans()),
        ),
        client_connections=ClientConnections(
            enabled=draw(st.booleans()),
            window_length=draw(durations()),
            live_cache_length=draw(durations()),
            client_manifest_version=draw(st.sampled_from(["2.0", "2.2"])),
        ),
        server_connections=ServerConnections(
            enabled=draw(st.booleans()),
            send_end_of_stream_on_stop=draw(st.booleans()),
        ),
        pull_from=refs if source_type == "Pull" else (),
        push_to=refs if source_type == "Push" else (),
        modules=draw(_modules()),
    )


def settings_strategy() -> st.SearchStrategy[Settings]:
    """Valid ``Settings``: ``parse_settings(render_settings(s)) == s`` for each one."""
    return _settings()


# ---------------------------------------------------------------------------
# Bodies that must be refused


def atom_entry(settings_xml: str) -> bytes:
    """An Atom entry (as the create/update pages show it) around a SmoothStreaming child."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<entry xmlns="{NS_ATOM}">\n'
        "  <id>http://contoso.com/media/bunny.isml/settings</id>\n"
        "  <title>Bunny</title>\n"
        "  <updated>2011-05-31T21:32:26Z</updated>\n"
        '  <content type="application/xml">\n'
        f'    <SmoothStreaming xmlns="{NS_MGMT}">\n'
        f"{settings_xml}"
        "    </SmoothStreaming>\n"
        "  </content>\n"
        "</entry>\n"
    ).encode()


Mutation = Callable[[st.DrawFn, etree._Element], None]


def _el(tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    element = etree.Element(_M + tag, **attrs)
    element.text = text
    return element


def _replace(settings: etree._Element, *new: etree._Element) -> None:
    """Put ``new`` in place of the children of the same names (appended if absent)."""
    for element in new:
        old = settings.find(element.tag)
        if old is None:
            settings.append(element)
        else:
            old.addprevious(element)
            settings.remove(old)


def _set_text(settings: etree._Element, path: str, text: str) -> None:
    """Set the text of ``path`` (local names separated by ``/``) below Settings."""
    found = settings.find("/".join(_M + name for name in path.split("/")))
    assert found is not None, path
    found.text = text


def _modules_with(*modules: etree._Element) -> etree._Element:
    element = _el("Modules")
    element.extend(modules)
    return element


def _hls_module(
    *children: etree._Element, module_type: str = "sink", module_id: str = "hls"
) -> etree._Element:
    module = _el("Module", id=module_id, type=module_type)
    hls = etree.SubElement(module, _M + "HLS")
    hls.extend(children)
    return module


def _refs_element(direction: str, url: str = "http://origin.example/live.isml") -> etree._Element:
    element = _el(direction)
    points = etree.SubElement(element, _M + "PublishingPoints")
    etree.SubElement(points, _M + "PublishingPoint").text = url
    return element


_DURATION_PATHS = [
    "EstimatedDuration",
    "Archive/SegmentLength",
    "ClientConnections/WindowLength",
    "ClientConnections/LiveCacheLength",
]
_BOOLEAN_PATHS = [
    "AutoStart",
    "AutoRestartOnEncoderReconnect",
    "ServerConnections/SendEndOfStreamOnStop",
]


def _schema_mutations() -> list[Mutation]:
    def unknown_element(draw: st.DrawFn, s: etree._Element) -> None:
        name = draw(st.sampled_from(["Foo", "title", "Setting", "Archives", "HLS", "Key"]))
        s.insert(draw(st.integers(0, len(s))), _el(name, "x"))

    def duplicate_child(draw: st.DrawFn, s: etree._Element) -> None:
        child = draw(st.sampled_from(list(s)))
        s.append(etree.fromstring(etree.tostring(child)))

    def bad_boolean(draw: st.DrawFn, s: etree._Element) -> None:
        _set_text(s, draw(st.sampled_from(_BOOLEAN_PATHS)),
                  draw(st.sampled_from(["yes", "True", "FALSE", "2", "", "on"])))

    def bad_enabled(draw: st.DrawFn, s: etree._Element) -> None:
        name = draw(st.sampled_from(["Archive", "ClientConnections", "ServerConnections"]))
        element = s.find(_M + name)
        if draw(st.booleans()):
            del element.attrib["enabled"]
        else:
            element.set("enabled", draw(st.sampled_from(["yes", "True", "", "enabled"])))

    def bad_unsigned(draw: st.DrawFn, s: etree._Element) -> None:
        _set_text(s, "LookAheadChunks",
                  draw(st.sampled_from(["two", "-1", "1.5", "", "4294967296", "0x2"])))

    def bad_duration(draw: st.DrawFn, s: etree._Element) -> None:
        _set_text(s, draw(st.sampled_from(_DURATION_PATHS)),
                  draw(st.sampled_from(["10", "PT", "P1DT", "ten", "PT1H30", "", "T10S"])))

    def module_without_id(draw: st.DrawFn, s: etree._Element) -> None:
        attrs = draw(st.sampled_from([{"type": "sink"}, {"id": "hls"}, {}]))
        _replace(s, _modules_with(_el("Module", **attrs)))

    def bad_hls_value(draw: st.DrawFn, s: etree._Element) -> None:
        child = draw(st.sampled_from([
            _el("SegmentLength", "10"),
            _el("MaxBitRate", "4294967296"),
            _el("MaxBitRate", "-5"),
            _el("AllowCaching", "no"),
            _el("Encryption"),  # enabled is required
            _el("Bogus", "1"),
        ]))
        _replace(s, _modules_with(_hls_module(child)))

    def bad_module_enabled(draw: st.DrawFn, s: etree._Element) -> None:
        value = draw(st.sampled_from(["no", "False", "", "off", "2"]))
        _replace(s, _modules_with(_el("Module", id="dash", type="sink", enabled=value)))

    def bad_key_rotation(draw: st.DrawFn, s: etree._Element) -> None:
        encryption = _el("Encryption", enabled="true")
        etree.SubElement(encryption, _M + "KeyRotationPeriod").text = draw(
            st.sampled_from(["3600", "PT", "P1DT", "1h", ""])
        )
        _replace(s, _modules_with(_hls_module(encryption)))

    def unknown_attribute(draw: st.DrawFn, s: etree._Element) -> None:
        child = draw(st.sampled_from(list(s)))
        child.set(draw(st.sampled_from(["foo", "Enabled", "id"])), "1")

    def text_in_settings(draw: st.DrawFn, s: etree._Element) -> None:
        s.text = draw(st.sampled_from(["junk", " x ", "Bunny"]))

    def foreign_namespace(draw: st.DrawFn, s: etree._Element) -> None:
        s.append(etree.Element("{urn:other}Title"))

    def element_in_simple_value(draw: st.DrawFn, s: etree._Element) -> None:
        title = s.find(_M + "Title")
        etree.SubElement(title, _M + "b").text = "bold"

    def second_root_child(draw: st.DrawFn, s: etree._Element) -> None:
        state = etree.SubElement(s.getparent(), _M + "State")
        etree.SubElement(state, _M + "Value").text = "Idle"

    return [
        unknown_element, duplicate_child, bad_boolean, bad_enabled, bad_unsigned,
        bad_duration, module_without_id, bad_hls_value, unknown_attribute,
        text_in_settings, foreign_namespace, element_in_simple_value, second_root_child,
        bad_module_enabled, bad_key_rotation,
    ]


def _data_mutations() -> list[Mutation]:
    def source_type(draw: st.DrawFn, s: etree._Element) -> None:
        _set_text(s, "SourceType", draw(st.sampled_from(["push", "Both", "", "Pul"])))

    def manifest_version(draw: st.DrawFn, s: etree._Element) -> None:
        _set_text(s, "ClientConnections/ClientManifestVersion",
                  draw(st.sampled_from(["3.0", "2.1", "", "2"])))

    def look_ahead(draw: st.DrawFn, s: etree._Element) -> None:
        _set_text(s, "LookAheadChunks", str(draw(st.integers(11, 2**32 - 1))))

    def unfixed_duration(draw: st.DrawFn, s: etree._Element) -> None:
        _set_text(s, draw(st.sampled_from(_DURATION_PATHS)),
                  draw(st.sampled_from(["P1Y", "P2M", "-PT1S", "P1Y2M3DT4H", "-P0D"])))

    def hls_value(draw: st.DrawFn, s: etree._Element) -> None:
        child = draw(st.sampled_from([
            _el("SegmentLength", "PT0.5S"),
            _el("SegmentLength", "PT0S"),
            _el("SegmentLength", "PT1H0.001S"),
            _el("SegmentLength", "P1M"),
            _el("MaxBitRate", "0"),
        ]))
        _replace(s, _modules_with(_hls_module(child)))

    def hls_key(draw: st.DrawFn, s: etree._Element) -> None:
        key = draw(st.sampled_from(["XYZ", "8C339AD2F44E4B2B72C95888385221B", "G" * 32,
                                    "8C339AD2F44E4B2B72C95888385221BE0"]))
        encryption = _el("Encryption", enabled="true")
        etree.SubElement(encryption, _M + "Key").text = key
        _replace(s, _modules_with(_hls_module(encryption)))

    def key_rotation(draw: st.DrawFn, s: etree._Element) -> None:
        encryption = _el("Encryption", enabled=draw(st.sampled_from(["true", "false"])))
        etree.SubElement(encryption, _M + "KeyRotationPeriod").text = draw(st.sampled_from(
            ["PT9.999S", "PT1S", "PT0.001S", "PT24H0.001S", "P2D", "P1M", "-PT1M"]
        ))
        _replace(s, _modules_with(_hls_module(encryption)))

    def switched_off_wrongly(draw: st.DrawFn, s: etree._Element) -> None:
        modules = draw(st.sampled_from([
            (_el("Module", id="dash", type="source", enabled="false"),),
            (_el("Module", id="ingest", type="source", enabled="0"),),
            (_el("Module", id="hls", type="sink", enabled="false"),
             _hls_module(module_id="apple")),
        ]))
        _replace(s, _modules_with(*modules))

    def module_type(draw: st.DrawFn, s: etree._Element) -> None:
        kind = draw(st.sampled_from(["filter", "Sink", "", "both"]))
        _replace(s, _modules_with(_el("Module", id="m", type=kind)))

    def module_rules(draw: st.DrawFn, s: etree._Element) -> None:
        modules = draw(st.sampled_from([
            (_el("Module", id="a", type="sink"), _el("Module", id="a", type="source")),
            (_hls_module(module_id="a"), _hls_module(module_id="b")),
            (_hls_module(module_type="source"),),
            (_el("Module", id=" ", type="sink"),),
        ]))
        _replace(s, _modules_with(*modules))

    def bad_url(draw: st.DrawFn, s: etree._Element) -> None:
        url = draw(st.sampled_from(["ftp://origin.example/a.isml", "/relative.isml", "http://",
                                    "not a url", "", "http://host:99999/a.isml", "file:///etc"]))
        kind = s.findtext(_M + "SourceType")
        direction = "PullFrom" if kind == "Pull" else "PushTo"
        for old in ("PullFrom", "PushTo"):
            if (element := s.find(_M + old)) is not None:
                s.remove(element)
        s.append(_refs_element(direction, url))

    def both_directions(draw: st.DrawFn, s: etree._Element) -> None:
        for old in ("PullFrom", "PushTo"):
            if (element := s.find(_M + old)) is not None:
                s.remove(element)
        s.append(_refs_element("PullFrom"))
        s.append(_el("PushTo") if draw(st.booleans()) else _refs_element("PushTo"))

    def wrong_direction(draw: st.DrawFn, s: etree._Element) -> None:
        kind = draw(st.sampled_from(["Push", "Pull"]))
        _set_text(s, "SourceType", kind)
        for old in ("PullFrom", "PushTo"):
            if (element := s.find(_M + old)) is not None:
                s.remove(element)
        s.append(_refs_element("PushTo" if kind == "Pull" else "PullFrom"))

    def long_title(draw: st.DrawFn, s: etree._Element) -> None:
        _set_text(s, "Title", "t" * draw(st.integers(257, 2000)))

    return [
        source_type, manifest_version, look_ahead, unfixed_duration, hls_value, hls_key,
        module_type, module_rules, bad_url, both_directions, wrong_direction, long_title,
        key_rotation, switched_off_wrongly,
    ]


def _malformed(draw: st.DrawFn, body: bytes) -> bytes:
    """A well-formed body made not well-formed in one of several ways."""
    end = body.rindex(b"</entry>")
    kind = draw(st.sampled_from([
        "truncate", "entity", "doctype", "mismatch", "bad-utf8", "empty", "nul", "two-roots",
        "unclosed-attribute",
    ]))
    if kind == "truncate":
        return body[: draw(st.integers(0, end - 1))]
    if kind == "entity":
        return body.replace(b"<Title>", b"<Title>&undefined;", 1)
    if kind == "doctype":
        doctype = (
            b'<!DOCTYPE entry [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>\n'
            if draw(st.booleans())
            else b'<!DOCTYPE entry SYSTEM "file:///etc/passwd">\n'
        )
        declaration_end = body.index(b"?>") + 3
        return body[:declaration_end] + doctype + body[declaration_end:]
    if kind == "mismatch":
        return body.replace(b"</Title>", b"</Titel>", 1)
    if kind == "bad-utf8":
        return body.replace(b"<Title>", b"<Title>\xff\xfe\xc3", 1)
    if kind == "empty":
        return draw(st.sampled_from([b"", b"   \n", b"\xef\xbb\xbf"]))
    if kind == "nul":
        return body.replace(b"<Title>", b"<Title>&#0;", 1)
    if kind == "two-roots":
        return body + b"<entry/>"
    return body.replace(b'<Archive enabled="', b"<Archive enabled=", 1)  # unquoted value


@st.composite
def _invalid_case(draw: st.DrawFn) -> tuple[bytes, MgmtError]:
    valid = draw(settings_strategy())
    body = atom_entry(render_settings(valid))
    kind = draw(st.sampled_from([MgmtError.INVALID_XML, MgmtError.INVALID_SCHEMA,
                                 MgmtError.INVALID_DATA]))
    if kind is MgmtError.INVALID_XML:
        return _malformed(draw, body), kind
    root = etree.fromstring(body)
    settings = root.find(f"{{{NS_ATOM}}}content/{_M}SmoothStreaming/{_M}Settings")
    mutations = _schema_mutations() if kind is MgmtError.INVALID_SCHEMA else _data_mutations()
    draw(st.sampled_from(mutations))(draw, settings)
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(root, encoding="utf-8"),
        kind,
    )


def invalid_settings_case_strategy() -> st.SearchStrategy[tuple[bytes, MgmtError]]:
    """``(body, error)``: an Atom entry that must be refused, and the error it must get."""
    return _invalid_case()


def invalid_settings_xml_strategy() -> st.SearchStrategy[bytes]:
    """Atom entries that are malformed, off-schema or out of range, never acceptable."""
    return _invalid_case().map(lambda case: case[0])
