"""SmoothStreaming.xsd: accepts every spec example, refuses what the schema forbids."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from lxml import etree

from smoothlive.management.errors import NS_MGMT, ManagementError, MgmtError, error_body
from smoothlive.management.schema import SCHEMA_RESOURCE, validate
from smoothlive.management.settings import render_settings
from smoothlive.management.xmlsafe import parse_xml
from tests.strategies import atom_entry, settings_strategy

M = f"{{{NS_MGMT}}}"
EXAMPLES = Path(__file__).parents[1] / "fixtures" / "spec_examples"


def smooth(inner: str) -> etree._Element:
    return parse_xml(f'<SmoothStreaming xmlns="{NS_MGMT}">{inner}</SmoothStreaming>'.encode())


def refused(inner: str) -> str:
    with pytest.raises(ManagementError) as raised:
        validate(smooth(inner))
    assert raised.value.error is MgmtError.INVALID_SCHEMA
    return raised.value.detail


# ---------------------------------------------------------------------------
# The examples of the spec pages, by hand (State, Statistics, Error), and the fixtures

STATE_ELEMENT_EXAMPLE = "<State><Value>Idle</Value></State>"

STATE_WITH_ERROR = "<State><Value>Error</Value><LastError>0x80070002</LastError></State>"

ERROR_EXAMPLE = """<Error>
    <ErrorCode>0x8088002E</ErrorCode>
    <ErrorMessage>The publishing point was not found.</ErrorMessage>
    <InternalError>0x80070002</InternalError>
  </Error>"""

# query-publishing-point-statistics.md, the response example (two of its eight input streams).
STATISTICS_EXAMPLE = """<Statistics>
        <InputStreams>
          <InputStream id="9092-stream2">
            <State>Started</State>
            <ArchiveFileName>9092-stream2.ismv</ArchiveFileName>
            <Sources>
              <Source name="HTTP Push">
                <Properties>
                  <Property name="Source Type">Push</Property>
                  <Property name="Source IP">fe80::e546:4b59:2f44:afed%14</Property>
                </Properties>
              </Source>
            </Sources>
            <Sinks>
              <Sink name="IIS Smooth Streaming" />
              <Sink name="Apple HTTP Live Streaming" />
            </Sinks>
            <Tracks>
              <Track id="2">
                <Name>video</Name>
                <EncodedBitRate>1427000</EncodedBitRate>
                <IncomingBitRate>1636359</IncomingBitRate>
                <IncomingFragmentWaitTime>PT0.811S</IncomingFragmentWaitTime>
                <IncomingFragmentTimeStamp>260000000</IncomingFragmentTimeStamp>
                <IncomingFragmentDuration>20000000</IncomingFragmentDuration>
                <RequestRate>0</RequestRate>
              </Track>
            </Tracks>
          </InputStream>
          <InputStream id="9092-stream0">
            <State>Started</State>
            <ArchiveFileName>9092-stream0.ismv</ArchiveFileName>
            <Sources>
              <Source name="HTTP Push">
                <Properties>
                  <Property name="Source Type">Push</Property>
                  <Property name="Source IP">fe80::e546:4b59:2f44:afed%14</Property>
                </Properties>
              </Source>
            </Sources>
            <Sinks>
              <Sink name="IIS Smooth Streaming" />
              <Sink name="Apple HTTP Live Streaming" />
            </Sinks>
            <Tracks>
              <Track id="2">
                <Name>video</Name>
                <EncodedBitRate>2962000</EncodedBitRate>
                <IncomingBitRate>3449096</IncomingBitRate>
                <IncomingFragmentWaitTime>PT0.764S</IncomingFragmentWaitTime>
                <IncomingFragmentTimeStamp>260000000</IncomingFragmentTimeStamp>
                <IncomingFragmentDuration>20000000</IncomingFragmentDuration>
                <RequestRate>1</RequestRate>
              </Track>
              <Track id="1">
                <Name>audio</Name>
                <EncodedBitRate>160000</EncodedBitRate>
                <IncomingBitRate>161273</IncomingBitRate>
                <IncomingFragmentWaitTime>PT0.748S</IncomingFragmentWaitTime>
                <IncomingFragmentTimeStamp>260063492</IncomingFragmentTimeStamp>
                <IncomingFragmentDuration>19969160</IncomingFragmentDuration>
                <RequestRate>0</RequestRate>
              </Track>
            </Tracks>
          </InputStream>
        </InputStreams>
        <OutputStreams>
          <OutputStream name="video">
            <LastOutputFragmentTimestamp>220000000</LastOutputFragmentTimestamp>
          </OutputStream>
          <OutputStream name="audio">
            <LastOutputFragmentTimestamp>220125170</LastOutputFragmentTimestamp>
          </OutputStream>
        </OutputStreams>
      </Statistics>"""

# A Sink with Properties (sink-element.md) and the empty forms of the element pages.
STATISTICS_SHAPES = [
    "<Statistics />",
    "<Statistics><InputStreams /><OutputStreams /></Statistics>",
    '<Statistics><InputStreams><InputStream id="s"><Sinks><Sink name="x"><Properties>'
    '<Property name="p">v</Property></Properties></Sink></Sinks></InputStream></InputStreams>'
    "</Statistics>",
]


@pytest.mark.parametrize(
    "inner",
    [
        STATE_ELEMENT_EXAMPLE, STATE_WITH_ERROR, ERROR_EXAMPLE, STATISTICS_EXAMPLE,
        *STATISTICS_SHAPES,
    ],
)
def test_accepts_the_examples_of_the_element_pages(inner):
    validate(smooth(inner))


@pytest.mark.parametrize(
    "fixture", sorted(p.name for p in EXAMPLES.glob("*.xml")) if EXAMPLES.is_dir() else []
)
def test_accepts_every_spec_example_body(fixture):
    root = parse_xml((EXAMPLES / fixture).read_bytes())
    found = list(root.iter(f"{M}SmoothStreaming"))
    for element in found:
        validate(element)


@pytest.mark.parametrize("error", list(MgmtError))
def test_accepts_every_error_body_the_server_sends(error):
    validate(parse_xml(error_body(error, internal=0x80070002)))
    validate(parse_xml(error_body(error)))  # an empty InternalError


@hypothesis_settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings_strategy())
def test_accepts_every_rendered_settings(value):
    root = parse_xml(atom_entry(render_settings(value)))
    validate(next(root.iter(f"{M}SmoothStreaming")))


def test_accepts_settings_children_in_any_order():
    validate(smooth(
        '<Settings><Modules /><ServerConnections enabled="true" /><Title>t</Title>'
        '<PushTo /><Archive enabled="0"><Path>p</Path><SegmentLength>PT1S</SegmentLength>'
        "</Archive><LookAheadChunks>1</LookAheadChunks></Settings>"
    ))


def test_pull_from_and_push_to_are_left_to_python():
    validate(smooth("<Settings><PullFrom /><PushTo /></Settings>"))


ENCRYPTION = (
    '<Settings><Modules><Module id="hls" type="sink"><HLS>{}</HLS></Module></Modules></Settings>'
)


@pytest.mark.parametrize(
    "inner",
    [
        '<Settings><Modules><Module id="dash" type="sink" enabled="false" />'
        '<Module id="smooth" type="sink" name="Smooth" enabled="1" /></Modules></Settings>',
        ENCRYPTION.format('<Encryption enabled="true"><Key>K</Key>'
                          "<KeyRotationPeriod>PT1H</KeyRotationPeriod></Encryption>"),
        ENCRYPTION.format('<Encryption enabled="true"><KeyRotationPeriod> PT10S '
                          "</KeyRotationPeriod><Key>K</Key></Encryption>"),
        ENCRYPTION.format('<Encryption enabled="false">'
                          "<KeyRotationPeriod>P1Y</KeyRotationPeriod></Encryption>"),
    ],
    ids=["Module enabled", "KeyRotationPeriod after Key", "before Key", "range left to python"],
)
def test_accepts_smoothlives_additions(inner):
    validate(smooth(inner))


# ---------------------------------------------------------------------------
# Refusals

REFUSED = {
    "empty SmoothStreaming": "",
    "two children": "<Settings /><State><Value>Idle</Value></State>",
    "unknown child of SmoothStreaming": "<Feed />",
    "unknown Settings child": "<Settings><Foo /></Settings>",
    "Settings child repeated": "<Settings><Title>a</Title><Title>b</Title></Settings>",
    "unknown attribute": '<Settings><Archive enabled="true" foo="1" /></Settings>',
    "text in Settings": "<Settings>junk</Settings>",
    "child in a value": "<Settings><Title>a<b/></Title></Settings>",
    "wrong namespace": '<Settings><Title xmlns="urn:x">a</Title></Settings>',
    "no namespace": '<Settings><Title xmlns="">a</Title></Settings>',
    "boolean": "<Settings><AutoStart>yes</AutoStart></Settings>",
    "boolean case": "<Settings><AutoStart>True</AutoStart></Settings>",
    "boolean attribute": '<Settings><Archive enabled="TRUE" /></Settings>',
    "duration": "<Settings><EstimatedDuration>10</EstimatedDuration></Settings>",
    "duration with no component": "<Settings><EstimatedDuration>PT</EstimatedDuration></Settings>",
    "duration in HLS": '<Settings><Modules><Module id="h" type="sink"><HLS>'
    "<SegmentLength>10s</SegmentLength></HLS></Module></Modules></Settings>",
    "unsignedInt": "<Settings><LookAheadChunks>-1</LookAheadChunks></Settings>",
    "unsignedInt range": '<Settings><Modules><Module id="h" type="sink"><HLS>'
    "<MaxBitRate>4294967296</MaxBitRate></HLS></Module></Modules></Settings>",
    "Archive without enabled": "<Settings><Archive /></Settings>",
    "ClientConnections without enabled": "<Settings><ClientConnections /></Settings>",
    "ServerConnections without enabled": "<Settings><ServerConnections /></Settings>",
    "Encryption without enabled": '<Settings><Modules><Module id="h" type="sink"><HLS>'
    "<Encryption /></HLS></Module></Modules></Settings>",
    "Module without id": '<Settings><Modules><Module type="sink" /></Modules></Settings>',
    "Module without type": '<Settings><Modules><Module id="m" /></Modules></Settings>',
    "Module enabled not a boolean": '<Settings><Modules><Module id="dash" type="sink" '
    'enabled="no" /></Modules></Settings>',
    "Module enabled case": '<Settings><Modules><Module id="dash" type="sink" '
    'enabled="False" /></Modules></Settings>',
    "KeyRotationPeriod in seconds": ENCRYPTION.format(
        '<Encryption enabled="true"><KeyRotationPeriod>3600</KeyRotationPeriod></Encryption>'
    ),
    "KeyRotationPeriod twice": ENCRYPTION.format(
        '<Encryption enabled="true"><KeyRotationPeriod>PT1H</KeyRotationPeriod>'
        "<KeyRotationPeriod>PT1H</KeyRotationPeriod></Encryption>"
    ),
    "KeyRotationPeriod outside Encryption": ENCRYPTION.format(
        "<KeyRotationPeriod>PT1H</KeyRotationPeriod>"
    ),
    "Module with an unknown child": '<Settings><Modules><Module id="m" type="sink"><HDS />'
    "</Module></Modules></Settings>",
    "PublishingPoint outside PublishingPoints": "<Settings><PushTo><PublishingPoint>"
    "http://x/a.isml</PublishingPoint></PushTo></Settings>",
    "State without Value": "<State />",
    "State with an unknown child": "<State><Value>Idle</Value><Reason /></State>",
    "InputStream without id": "<Statistics><InputStreams><InputStream /></InputStreams>"
    "</Statistics>",
    "Track without id": '<Statistics><InputStreams><InputStream id="s"><Tracks><Track />'
    "</Tracks></InputStream></InputStreams></Statistics>",
    "Property without name": '<Statistics><InputStreams><InputStream id="s"><Sources><Source>'
    "<Properties><Property>v</Property></Properties></Source></Sources></InputStream>"
    "</InputStreams></Statistics>",
    "Statistics with an unknown child": "<Statistics><Clients /></Statistics>",
    "Error without ErrorCode": "<Error><ErrorMessage>m</ErrorMessage></Error>",
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused(name):
    assert refused(REFUSED[name])


def test_the_message_names_the_problem():
    assert "enabled" in refused("<Settings><Archive /></Settings>")
    assert "Foo" in refused("<Settings><Foo /></Settings>")


def test_only_a_smoothstreaming_element_is_validated():
    with pytest.raises(ManagementError) as raised:
        validate(parse_xml(f'<Settings xmlns="{NS_MGMT}" />'.encode()))
    assert raised.value.error is MgmtError.INVALID_SCHEMA
    with pytest.raises(ManagementError):
        validate(parse_xml(b"<SmoothStreaming><Settings /></SmoothStreaming>"))


def test_the_schema_ships_as_package_data_and_stands_alone():
    data = resources.files("smoothlive.management").joinpath(SCHEMA_RESOURCE).read_bytes()
    schema = etree.fromstring(data)
    xs = "{http://www.w3.org/2001/XMLSchema}"
    assert schema.get("targetNamespace") == NS_MGMT
    assert schema.get("elementFormDefault") == "qualified"
    # Nothing to fetch, and nothing open-ended.
    for tag in ("import", "include", "redefine", "any", "anyAttribute"):
        assert schema.find(f".//{xs}{tag}") is None, tag
