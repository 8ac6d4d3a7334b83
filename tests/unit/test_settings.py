"""The Settings model: defaults, the spec examples, the value rules, exact round trips."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from lxml import etree

from smoothlive.management.durations import Duration
from smoothlive.management.errors import NS_MGMT, ManagementError, MgmtError
from smoothlive.management.schema import validate
from smoothlive.management.settings import (
    ArchiveSettings,
    ClientConnections,
    HlsSettings,
    Module,
    PublishingPointRef,
    ServerConnections,
    Settings,
    check_settings,
    parse_settings,
    render_settings,
    settings_defaults,
)
from smoothlive.management.xmlsafe import parse_xml
from tests.strategies import atom_entry, invalid_settings_case_strategy, settings_strategy

M = f"{{{NS_MGMT}}}"
A = "{http://www.w3.org/2005/Atom}"
EXAMPLES = Path(__file__).parents[1] / "fixtures" / "spec_examples"
KEY = "8C339AD2F44E4B2B72C95888385221BE"


def settings_element(body: bytes) -> etree._Element:
    """The Settings element of a body, through the server's checks (parse, XSD)."""
    root = parse_xml(body)
    smooth = root if root.tag == f"{M}SmoothStreaming" else root.find(
        f"{A}content/{M}SmoothStreaming"
    )
    if smooth is None:
        raise ManagementError(MgmtError.INVALID_SCHEMA, "no SmoothStreaming element")
    validate(smooth)
    return smooth.find(f"{M}Settings")


def read(inner: str) -> Settings:
    """Parse ``<Settings>inner</Settings>`` the way a request is parsed."""
    return parse_settings(settings_element(atom_entry(f"<Settings>{inner}</Settings>\n")))


def read_unvalidated(inner: str) -> Settings:
    """Parse without the XSD first: parse_settings must defend itself."""
    root = parse_xml(f'<Settings xmlns="{NS_MGMT}">{inner}</Settings>'.encode())
    return parse_settings(root)


# ---------------------------------------------------------------------------
# Defaults


def test_defaults():
    s = settings_defaults()
    assert s == Settings()
    assert s.title == "" and s.source_type == "Push"
    assert s.estimated_duration == Duration.parse("PT0S")
    assert (s.auto_start, s.auto_restart_on_encoder_reconnect, s.look_ahead_chunks) == (
        False, False, 2,
    )
    assert s.archive == ArchiveSettings(True, Duration.parse("PT0S"), None, False)
    assert s.client_connections == ClientConnections(
        True, Duration.parse("PT0S"), Duration.parse("PT2M"), "2.0"
    )
    assert s.server_connections == ServerConnections(True, True)
    assert (s.pull_from, s.push_to, s.modules) == ((), (), ())
    hls = HlsSettings()
    assert (hls.segment_length, hls.max_bit_rate) == (Duration.parse("PT10S"), 3_000_000)
    assert (hls.allow_caching, hls.backward_compatible, hls.include_codecs) == (False, True, False)
    assert (hls.encryption_enabled, hls.key) == (False, None)


def test_an_empty_settings_element_takes_every_default():
    assert read("") == Settings()


def test_left_out_children_take_defaults():
    s = read('<Archive enabled="false" /><ClientConnections enabled="true" />')
    assert s.archive == ArchiveSettings(enabled=False)
    assert s.client_connections == ClientConnections()
    assert s.server_connections == ServerConnections()


# ---------------------------------------------------------------------------
# The spec examples, copied by hand from the element and operation pages

SETTINGS_ELEMENT_EXAMPLE = """
        <Settings>
        <Title>bunny</Title>
        <SourceType>Push</SourceType>
        <AutoStart>true</AutoStart>
        <AutoRestartOnEncoderReconnect>false</AutoRestartOnEncoderReconnect>
        <LookAheadChunks>2</LookAheadChunks>
          <Archive enabled="true">
          <Path useEventIdOnPath="false" />
        </Archive>
          <ClientConnections enabled="true">
          <ClientManifestVersion>2.0</ClientManifestVersion>
        </ClientConnections>
          <ServerConnections enabled="true">
          <SendEndOfStreamOnStop>true</SendEndOfStreamOnStop>
        </ServerConnections>
      </Settings>
"""

CREATE_EXAMPLE = """
      <Settings>
        <Title>Bunny</Title>
        <SourceType>Push</SourceType>
        <AutoStart>false</AutoStart>
        <AutoRestartOnEncoderReconnect>false</AutoRestartOnEncoderReconnect>
        <LookAheadChunks>2</LookAheadChunks>
        <Archive enabled="true">
          <Path useEventIdOnPath="false" />
        </Archive>
        <ClientConnections enabled="true">
          <ClientManifestVersion>2.0</ClientManifestVersion>
        </ClientConnections>
        <ServerConnections enabled="true">
          <SendEndOfStreamOnStop>true</SendEndOfStreamOnStop>
        </ServerConnections>
      </Settings>
"""

UPDATE_EXAMPLE = """
      <Settings>
        <Title>Bunny</Title>
        <SourceType>Push</SourceType>
        <AutoStart>false</AutoStart>
        <AutoRestartOnEncoderReconnect>false</AutoRestartOnEncoderReconnect>
        <LookAheadChunks>2</LookAheadChunks>
        <Archive enabled="true">
          <Path useEventIdOnPath="false" />
        </Archive>
        <ClientConnections enabled="true">
          <ClientManifestVersion>2.0</ClientManifestVersion>
        </ClientConnections>
        <ServerConnections enabled="true">
          <SendEndOfStreamOnStop>true</SendEndOfStreamOnStop>
        </ServerConnections>
          <Modules>
          <Module id="hls" type="sink" name="HTTP Live Streaming">
            <HLS>
              <SegmentLength>PT10S</SegmentLength>
              <MaxBitRate>3000000</MaxBitRate>
              <AllowCaching>false</AllowCaching>
              <BackwardCompatible>true</BackwardCompatible>
              <IncludeCodecs>false</IncludeCodecs>
              <Encryption enabled="true">
                <Key>8C339AD2F44E4B2B72C95888385221BE</Key>
              </Encryption>
            </HLS>
          </Module>
        </Modules>
      </Settings>
"""

ARCHIVE_EXAMPLE = """<Archive enabled="true">
  <Path useEventIdOnPath="false" />
</Archive>"""

PATH_EXAMPLE = """<Archive enabled="true">
  <Path useEventIdOnPath="false">%systemdrive%\\inetpub\\media\\archives</Path>
</Archive>"""

CLIENT_CONNECTIONS_EXAMPLE = """<ClientConnections enabled="true">
  <ClientManifestVersion>2.0</ClientManifestVersion>
</ClientConnections>"""

SERVER_CONNECTIONS_EXAMPLE = """<ServerConnections enabled="true">
  <SendEndOfStreamOnStop>true</SendEndOfStreamOnStop>
</ServerConnections>"""

MODULES_EXAMPLE = """<Modules>
  <Module id="hls" type="sink" name="HTTP Live Streaming">
    <!-- Apple HLS module configuration. -->
    <HLS>
      <SegmentLength>PT10S</SegmentLength>
      <MaxBitRate>3000000</MaxBitRate>
      <AllowCaching>false</AllowCaching>
      <BackwardCompatible>true</BackwardCompatible>
      <IncludeCodecs>false</IncludeCodecs>
      <Encryption enabled="true">
        <Key>8C339AD2F44E4B2B72C95888385221BE</Key>
      </Encryption>
    </HLS>
  </Module>
</Modules>"""

HLS_EXAMPLE_MODULE = Module(
    id="hls",
    type="sink",
    name="HTTP Live Streaming",
    hls=HlsSettings(
        segment_length=Duration.parse("PT10S"),
        max_bit_rate=3_000_000,
        allow_caching=False,
        backward_compatible=True,
        include_codecs=False,
        encryption_enabled=True,
        key=KEY,
    ),
)


def _inside(fragment: str) -> str:
    return f"<Settings>{fragment}</Settings>"


SPEC_EXAMPLES = {
    "settings-element": (SETTINGS_ELEMENT_EXAMPLE, Settings(title="bunny", auto_start=True)),
    "create (request, response, query)": (CREATE_EXAMPLE, Settings(title="Bunny")),
    "update-settings": (
        UPDATE_EXAMPLE, Settings(title="Bunny", modules=(HLS_EXAMPLE_MODULE,)),
    ),
    "archive-element": (_inside(ARCHIVE_EXAMPLE), Settings()),
    "path-element": (
        _inside(PATH_EXAMPLE),
        Settings(archive=ArchiveSettings(path="%systemdrive%\\inetpub\\media\\archives")),
    ),
    "clientconnections-element": (_inside(CLIENT_CONNECTIONS_EXAMPLE), Settings()),
    "serverconnections-element": (_inside(SERVER_CONNECTIONS_EXAMPLE), Settings()),
    "modules-element / module-element": (
        _inside(MODULES_EXAMPLE), Settings(modules=(HLS_EXAMPLE_MODULE,)),
    ),
}


def _leaf_values(element: etree._Element, prefix: str = "") -> dict[str, str]:
    """Path -> value for every attribute and leaf text below a Settings element."""
    values: dict[str, str] = {}
    for name, value in element.attrib.items():
        values[f"{prefix}@{name}"] = value
    children = [c for c in element if isinstance(c.tag, str)]
    if not children and prefix:
        values[prefix] = (element.text or "").strip()
    for child in children:
        key = f"{prefix}/{etree.QName(child).localname}"
        if child.get("id"):
            key += f"[{child.get('id')}]"
        values.update(_leaf_values(child, key))
    return values


@pytest.mark.parametrize("name", list(SPEC_EXAMPLES))
def test_spec_example_parses_with_its_values(name):
    settings_xml, expected = SPEC_EXAMPLES[name]
    element = settings_element(atom_entry(settings_xml + "\n"))
    assert parse_settings(element) == expected


@pytest.mark.parametrize("name", list(SPEC_EXAMPLES))
def test_rendering_a_spec_example_gives_back_its_values(name):
    settings_xml, _ = SPEC_EXAMPLES[name]
    element = settings_element(atom_entry(settings_xml + "\n"))
    rendered = settings_element(atom_entry(render_settings(parse_settings(element))))
    given_values, rendered_values = _leaf_values(element), _leaf_values(rendered)
    for path, value in given_values.items():
        assert rendered_values[path] == value, path
    assert parse_settings(rendered) == parse_settings(element)


@pytest.mark.parametrize(
    "fixture", sorted(p.name for p in EXAMPLES.glob("*.xml")) if EXAMPLES.is_dir() else []
)
def test_every_settings_fixture_parses_and_round_trips(fixture):
    root = parse_xml((EXAMPLES / fixture).read_bytes())
    for element in root.iter(f"{M}Settings"):
        validate(element.getparent())
        value = parse_settings(element)
        assert read_rendered(value) == value


def read_rendered(value: Settings) -> Settings:
    return parse_settings(settings_element(atom_entry(render_settings(value))))


# ---------------------------------------------------------------------------
# Rendering

SCHEMA_ORDER = [
    "Title", "SourceType", "EstimatedDuration", "AutoStart", "AutoRestartOnEncoderReconnect",
    "LookAheadChunks", "Archive", "ClientConnections", "ServerConnections", "PushTo", "Modules",
]


def test_render_writes_every_element_in_schema_order():
    text = render_settings(Settings())
    element = settings_element(atom_entry(text))
    assert [etree.QName(c).localname for c in element] == SCHEMA_ORDER
    assert [etree.QName(c).localname for c in element.find(f"{M}Archive")] == [
        "SegmentLength", "Path",
    ]
    assert [etree.QName(c).localname for c in element.find(f"{M}ClientConnections")] == [
        "WindowLength", "LiveCacheLength", "ClientManifestVersion",
    ]
    assert element.findtext(f"{M}EstimatedDuration") == "PT0S"
    assert element.findtext(f"{M}ClientConnections/{M}LiveCacheLength") == "PT2M"
    assert element.find(f"{M}PushTo/{M}PublishingPoints") is not None
    assert len(element.find(f"{M}PushTo/{M}PublishingPoints")) == 0


def test_render_indentation_and_newlines():
    text = render_settings(Settings(), indent="        ")
    lines = text.split("\n")
    assert lines[0] == "        <Settings>"
    assert lines[1] == "          <Title></Title>"
    assert lines[-2] == "        </Settings>" and lines[-1] == ""
    assert "xmlns" not in text


def test_render_pull_from_and_credentials():
    value = Settings(
        source_type="Pull",
        pull_from=(
            PublishingPointRef("http://a.example/live.isml", "upstream"),
            PublishingPointRef("https://b.example/live.isml?x=1&y=2"),
        ),
    )
    text = render_settings(value)
    assert "<PushTo>" not in text
    assert '<PublishingPoint credentialName="upstream">http://a.example/live.isml<' in text
    assert "<PublishingPoint>https://b.example/live.isml?x=1&amp;y=2</PublishingPoint>" in text
    assert read_rendered(value) == value


def test_render_hls_without_key_and_module_without_hls():
    value = Settings(
        modules=(
            Module("ingest", "source"),
            Module("out", "sink", "Out", HlsSettings(segment_length=Duration.parse("PT2.5S"))),
        )
    )
    text = render_settings(value)
    assert '<Module id="ingest" type="source" />' in text
    assert '<Encryption enabled="false" />' in text
    assert "<SegmentLength>PT2.5S</SegmentLength>" in text
    assert read_rendered(value) == value


def test_render_escapes_all_text():
    title = 'a<b>&c"d\'e\r\nf\tg ]]> é 日本 🎬'
    value = Settings(
        title=title,
        archive=ArchiveSettings(path="C:\\a&b<c>"),
        modules=(Module('x"<&>', "sink", name=' spaced\t"name"\n'),),
    )
    assert "&#13;" in render_settings(value)
    assert read_rendered(value) == value


@hypothesis_settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings_strategy())
def test_round_trip_is_exact(value):
    check_settings(value)
    assert read_rendered(value) == value


# ---------------------------------------------------------------------------
# Leniency

def test_children_in_any_order_and_whitespace_around_values():
    s = read(
        "<LookAheadChunks> 3 </LookAheadChunks>"
        "<PullFrom><PublishingPoints><PublishingPoint>\n   http://up.example/a.isml\n"
        "</PublishingPoint></PublishingPoints></PullFrom>"
        "<SourceType> Pull </SourceType>"
        "<AutoStart>1</AutoStart><Title> spaced </Title>"
        '<Archive enabled=" 0 "><Path>  D:\\archives  </Path>'
        "<SegmentLength> PT1H </SegmentLength></Archive>"
    )
    assert s.look_ahead_chunks == 3 and s.source_type == "Pull" and s.auto_start is True
    assert s.pull_from == (PublishingPointRef("http://up.example/a.isml"),)
    assert s.title == " spaced "  # free text is kept as sent
    assert s.archive == ArchiveSettings(False, Duration.parse("PT1H"), "D:\\archives", False)


def test_empty_optional_values_mean_not_set():
    s = read(
        '<Archive enabled="true"><Path useEventIdOnPath="true"></Path></Archive>'
        '<PushTo><PublishingPoints><PublishingPoint credentialName="">http://x.example/a.isml'
        "</PublishingPoint></PublishingPoints></PushTo>"
        '<Modules><Module id="m" type="sink" name="" /></Modules>'
    )
    assert s.archive.path is None and s.archive.use_event_id_on_path is True
    assert s.push_to[0].credential_name is None
    assert s.modules == (Module("m", "sink"),)


def test_an_empty_pull_from_on_a_push_point_is_harmless():
    assert read("<SourceType>Push</SourceType><PullFrom><PublishingPoints /></PullFrom>") == (
        Settings()
    )


def test_zero_years_and_months_are_accepted():
    assert read("<EstimatedDuration>P0Y0M1DT0S</EstimatedDuration>").estimated_duration == (
        Duration.parse("PT24H")
    )


# ---------------------------------------------------------------------------
# INVALID_DATA: one case per rule

HLS = '<Modules><Module id="hls" type="sink"><HLS>{}</HLS></Module></Modules>'
REF = "<PublishingPoints><PublishingPoint>{}</PublishingPoint></PublishingPoints>"

INVALID_DATA = {
    "SourceType": "<SourceType>Both</SourceType>",
    "SourceType case": "<SourceType>push</SourceType>",
    "ClientManifestVersion": '<ClientConnections enabled="true">'
    "<ClientManifestVersion>2.1</ClientManifestVersion></ClientConnections>",
    "LookAheadChunks above 10": "<LookAheadChunks>11</LookAheadChunks>",
    "LookAheadChunks huge": "<LookAheadChunks>4294967295</LookAheadChunks>",
    "EstimatedDuration years": "<EstimatedDuration>P1Y</EstimatedDuration>",
    "WindowLength months": '<ClientConnections enabled="true">'
    "<WindowLength>P1M</WindowLength></ClientConnections>",
    "SegmentLength negative": '<Archive enabled="true">'
    "<SegmentLength>-PT10S</SegmentLength></Archive>",
    "LiveCacheLength negative": '<ClientConnections enabled="true">'
    "<LiveCacheLength>-PT1M</LiveCacheLength></ClientConnections>",
    "HLS SegmentLength below PT1S": HLS.format("<SegmentLength>PT0.999S</SegmentLength>"),
    "HLS SegmentLength zero": HLS.format("<SegmentLength>PT0S</SegmentLength>"),
    "HLS SegmentLength above PT1H": HLS.format("<SegmentLength>PT1H0.5S</SegmentLength>"),
    "MaxBitRate 0": HLS.format("<MaxBitRate>0</MaxBitRate>"),
    "Key short": HLS.format(f'<Encryption enabled="true"><Key>{KEY[:-1]}</Key></Encryption>'),
    "Key long": HLS.format(f'<Encryption enabled="true"><Key>{KEY}0</Key></Encryption>'),
    "Key not hex": HLS.format(f'<Encryption enabled="true"><Key>{"Z" * 32}</Key></Encryption>'),
    "Module type": '<Modules><Module id="m" type="filter" /></Modules>',
    "Module type case": '<Modules><Module id="m" type="Sink" /></Modules>',
    "Module id empty": '<Modules><Module id=" " type="sink" /></Modules>',
    "Module ids repeated": '<Modules><Module id="m" type="sink" /><Module id="m" type="source" />'
    "</Modules>",
    "two HLS modules": '<Modules><Module id="a" type="sink"><HLS /></Module>'
    '<Module id="b" type="sink"><HLS /></Module></Modules>',
    "HLS on a source": '<Modules><Module id="a" type="source"><HLS /></Module></Modules>',
    "URL ftp": "<PushTo>" + REF.format("ftp://x.example/a.isml") + "</PushTo>",
    "URL relative": "<PushTo>" + REF.format("/live/a.isml") + "</PushTo>",
    "URL no host": "<PushTo>" + REF.format("http:///a.isml") + "</PushTo>",
    "URL empty": "<PushTo>" + REF.format("") + "</PushTo>",
    "URL bad port": "<PushTo>" + REF.format("http://x.example:99999/a.isml") + "</PushTo>",
    "URL with a space": "<PushTo>" + REF.format("http://x.example/a b.isml") + "</PushTo>",
    "PullFrom and PushTo": "<SourceType>Pull</SourceType><PullFrom /><PushTo />",
    "PullFrom on a Push point": "<SourceType>Push</SourceType><PullFrom>"
    + REF.format("http://up.example/a.isml") + "</PullFrom>",
    "PullFrom by default Push": "<PullFrom>"
    + REF.format("http://up.example/a.isml") + "</PullFrom>",
    "PushTo on a Pull point": "<SourceType>Pull</SourceType><PushTo>"
    + REF.format("http://down.example/a.isml") + "</PushTo>",
    "Title too long": "<Title>" + "t" * 257 + "</Title>",
}


@pytest.mark.parametrize("name", list(INVALID_DATA))
def test_invalid_data(name):
    with pytest.raises(ManagementError) as raised:
        read(INVALID_DATA[name])
    assert raised.value.error is MgmtError.INVALID_DATA, raised.value


def test_limits_are_inclusive():
    assert read("<LookAheadChunks>0</LookAheadChunks>").look_ahead_chunks == 0
    assert read("<LookAheadChunks>10</LookAheadChunks>").look_ahead_chunks == 10
    assert read("<Title>" + "t" * 256 + "</Title>").title == "t" * 256
    for length in ("PT1S", "PT1H", "PT59M59.999S"):
        (module,) = read(HLS.format(f"<SegmentLength>{length}</SegmentLength>")).modules
        assert module.hls.segment_length == Duration.parse(length)
    (module,) = read(HLS.format("<MaxBitRate>1</MaxBitRate>")).modules
    assert module.hls.max_bit_rate == 1


@pytest.mark.parametrize(
    "value",
    [
        Settings(title="a\x01b"),
        Settings(archive=ArchiveSettings(path="a\x00b")),
        Settings(archive=ArchiveSettings(path="")),
        Settings(archive=ArchiveSettings(path=" a")),
        Settings(look_ahead_chunks=True),  # type: ignore[arg-type]
        Settings(auto_start=1),  # type: ignore[arg-type]
        Settings(estimated_duration="PT1S"),  # type: ignore[arg-type]
        Settings(push_to=(PublishingPointRef("http://x.example/a.isml", ""),)),
        Settings(push_to=[PublishingPointRef("http://x.example/a.isml")]),  # type: ignore[arg-type]
        Settings(modules=(Module("m", "sink", ""),)),
        Settings(modules=(Module("hls", "sink", None, HlsSettings(max_bit_rate=2**32)),)),
    ],
)
def test_check_settings_refuses_values_no_request_could_carry(value):
    with pytest.raises(ManagementError) as raised:
        check_settings(value)
    assert raised.value.error is MgmtError.INVALID_DATA


# ---------------------------------------------------------------------------
# INVALID_SCHEMA, when parse_settings meets what the XSD would refuse

INVALID_SCHEMA = {
    "unknown element": "<Foo />",
    "repeated element": "<Title>a</Title><Title>b</Title>",
    "foreign namespace": '<Title xmlns="urn:other">a</Title>',
    "text in Settings": "junk",
    "element in a value": "<Title>a<b /></Title>",
    "bad boolean": "<AutoStart>yes</AutoStart>",
    "boolean case": "<AutoStart>True</AutoStart>",
    "missing enabled": "<Archive />",
    "missing enabled on Encryption": HLS.format("<Encryption />"),
    "bad enabled": '<ServerConnections enabled="on" />',
    "not an integer": "<LookAheadChunks>two</LookAheadChunks>",
    "negative integer": "<LookAheadChunks>-1</LookAheadChunks>",
    "unicode digits": "<LookAheadChunks>\u0663</LookAheadChunks>",
    "beyond unsignedInt": HLS.format("<MaxBitRate>4294967296</MaxBitRate>"),
    "malformed duration": "<EstimatedDuration>10</EstimatedDuration>",
    "unknown HLS child": HLS.format("<Bogus />"),
    "Module without id": '<Modules><Module type="sink" /></Modules>',
    "Module without type": '<Modules><Module id="m" /></Modules>',
    "junk in Modules": "<Modules><Title /></Modules>",
    "junk in PublishingPoints": "<PushTo><PublishingPoints><Foo /></PublishingPoints></PushTo>",
}


@pytest.mark.parametrize("name", list(INVALID_SCHEMA))
@pytest.mark.parametrize("reader", [read, read_unvalidated], ids=["xsd", "python"])
def test_invalid_schema(name, reader):
    with pytest.raises(ManagementError) as raised:
        reader(INVALID_SCHEMA[name])
    assert raised.value.error is MgmtError.INVALID_SCHEMA, raised.value


def test_parse_settings_wants_a_settings_element():
    with pytest.raises(ManagementError) as raised:
        parse_settings(parse_xml(f'<State xmlns="{NS_MGMT}" />'.encode()))
    assert raised.value.error is MgmtError.INVALID_SCHEMA


def test_comments_are_skipped():
    element = etree.fromstring(
        f'<Settings xmlns="{NS_MGMT}"><!-- c --><Title>a<!-- c -->b</Title>{MODULES_EXAMPLE}'
        "</Settings>"
    )
    assert parse_settings(element) == Settings(title="ab", modules=(HLS_EXAMPLE_MODULE,))


# ---------------------------------------------------------------------------
# The strategy of bad bodies: each gets the error it is meant to get


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(invalid_settings_case_strategy())
def test_every_bad_body_gets_its_documented_error(case):
    body, expected = case
    with pytest.raises(ManagementError) as raised:
        parse_settings(settings_element(body))
    assert raised.value.error is expected, (raised.value, body[:3000])


def test_replace_keeps_settings_valid():
    # Frozen values are edited with dataclasses.replace; the result is checked like any other.
    value = replace(Settings(), title="x", look_ahead_chunks=10)
    check_settings(value)
    assert read_rendered(value) == value
