"""The .isml publishing point file: IIS's layout, read and written without loss."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from lxml import etree

from smoothlive.management.durations import ZERO, Duration
from smoothlive.management.errors import ManagementError, MgmtError
from smoothlive.management.settings import (
    HLS_MODULE_NAME,
    ArchiveSettings,
    ClientConnections,
    HlsSettings,
    Module,
    Outputs,
    PublishingPointRef,
    ServerConnections,
    Settings,
    outputs_of,
)
from smoothlive.pubpoint.isml import (
    IIS_METAS,
    SMIL_NS,
    SMOOTHLIVE_METAS,
    settings_from_isml,
    settings_to_isml,
)
from tests.strategies import settings_strategy

S = f"{{{SMIL_NS}}}"
KEY = "8C339AD2F44E4B2B72C95888385221BE"

IIS_SAMPLE = """<?xml version="1.0" encoding="utf-8"?>
<smil xmlns="http://www.w3.org/2001/SMIL20/Language">
  <head>
    <meta name="title" content="" />
    <meta name="module" content="liveSmoothStreaming" />
    <meta name="sourceType" content="Push" />
    <meta name="publishing" content="Fragments;Streams;Archives" />
    <meta name="estimatedTime" content="0" />
    <meta name="lookaheadChunks" content="2" />
    <meta name="manifestWindowLength" content="0" />
    <meta name="startOnFirstRequest" content="False" />
    <meta name="archiveSegmentLength" content="0" />
    <meta name="restartOnEncoderReconnect" content="true" />
    <meta name="filters" content="" />
    <meta name="formats" content="m3u8-aapl" />
    <meta name="m3u8-aapl-segmentlength" content="10" />
    <meta name="m3u8-aapl-maxbitrate" content="3000000" />
    <meta name="m3u8-aapl-allowcaching" content="False" />
    <meta name="m3u8-aapl-backwardcompatible" content="True" />
    <meta name="m3u8-aapl-enableencryption" content="False" />
  </head>
  <body>
    <par>
      <ref src="http://downstream.example/live/ch1.isml" />
    </par>
  </body>
</smil>
"""

IIS_SAMPLE_SETTINGS = Settings(
    auto_restart_on_encoder_reconnect=True,
    push_to=(PublishingPointRef("http://downstream.example/live/ch1.isml"),),
    modules=(Module("hls", "sink", HLS_MODULE_NAME, HlsSettings()),),
)


def metas(data: bytes) -> list[tuple[str, str]]:
    root = etree.fromstring(data)
    return [(m.get("name"), m.get("content")) for m in root.iter(f"{S}meta")]


def isml(*meta_pairs: tuple[str, str], body: str = "") -> bytes:
    head = "".join(f'<meta name="{n}" content="{c}" />' for n, c in meta_pairs)
    return f'<smil xmlns="{SMIL_NS}"><head>{head}</head><body>{body}</body></smil>'.encode()


# ---------------------------------------------------------------------------
# Reading IIS files


def test_reads_the_iis_sample():
    assert settings_from_isml(IIS_SAMPLE.encode()) == IIS_SAMPLE_SETTINGS


def test_reads_a_utf16_iis_file():
    data = IIS_SAMPLE.replace('encoding="utf-8"', 'encoding="utf-16"').encode("utf-16")
    assert data[:2] in (b"\xff\xfe", b"\xfe\xff")
    assert settings_from_isml(data) == IIS_SAMPLE_SETTINGS


def test_reads_a_utf16_file_with_non_ascii_title():
    text = IIS_SAMPLE.replace('encoding="utf-8"', 'encoding="utf-16"').replace(
        '"title" content=""', '"title" content="Concert — été 日本"'
    )
    data = b"\xff\xfe" + text.encode("utf-16-le")
    assert settings_from_isml(data).title == "Concert — été 日本"


def test_missing_metas_take_defaults_and_unknown_ones_are_ignored():
    assert settings_from_isml(isml()) == Settings()
    assert settings_from_isml(f'<smil xmlns="{SMIL_NS}" />'.encode()) == Settings()
    assert settings_from_isml(b"<smil><head /></smil>") == Settings()  # no namespace
    assert settings_from_isml(isml(("vendor-thing", "x"), ("clientManifestVersion", "2.2"))) == (
        Settings(client_connections=ClientConnections(client_manifest_version="2.2"))
    )


@pytest.mark.parametrize("text", ["True", "true", "TRUE", "1", " True "])
def test_booleans_are_read_without_regard_to_case(text):
    assert settings_from_isml(isml(("startOnFirstRequest", text))).auto_start is True
    assert settings_from_isml(isml(("STARTONFIRSTREQUEST", text))).auto_start is True


def test_publishing_roles():
    read = settings_from_isml(isml(("publishing", "Fragments")))
    assert read.client_connections.enabled is True
    assert read.server_connections.enabled is False
    assert read.archive.enabled is False
    read = settings_from_isml(isml(("publishing", "")))
    assert not (read.client_connections.enabled or read.server_connections.enabled)
    read = settings_from_isml(isml(("publishing", "archives; streams")))
    assert (read.archive.enabled, read.server_connections.enabled) == (True, True)


def test_pull_points_read_their_sources_with_credentials():
    body = (
        '<par><ref src="http://up1.example/a.isml" credentialName="cred" />'
        '<ref src="http://up2.example/a.isml" /></par>'
    )
    read = settings_from_isml(isml(("sourceType", "Pull"), body=body))
    assert read.source_type == "Pull" and read.push_to == ()
    assert read.pull_from == (
        PublishingPointRef("http://up1.example/a.isml", "cred"),
        PublishingPointRef("http://up2.example/a.isml"),
    )


def test_fractional_seconds():
    read = settings_from_isml(
        isml(("estimatedTime", "5400.5"), ("manifestWindowLength", "0.125"),
             ("archiveSegmentLength", "600"), ("liveCacheLength", "30"))
    )
    assert read.estimated_duration == Duration.parse("PT1H30M0.5S")
    assert read.client_connections.window_length == Duration.parse("PT0.125S")
    assert read.archive.segment_length == Duration.parse("PT10M")
    assert read.client_connections.live_cache_length == Duration.parse("PT30S")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not xml",
        b"<html><head /></html>",
        b'<smil xmlns="urn:other" />',
        b"<smil><head>",
        b'<?xml version="1.0"?><!DOCTYPE smil [<!ENTITY x "y">]><smil>&x;</smil>',
    ],
)
def test_a_file_that_is_not_smil_is_a_value_error(data):
    with pytest.raises(ValueError, match="publishing point file"):
        settings_from_isml(data)


@pytest.mark.parametrize(
    "pair",
    [
        ("lookaheadChunks", "two"),
        ("lookaheadChunks", "50"),  # out of range
        ("startOnFirstRequest", "maybe"),
        ("estimatedTime", "-5"),
        ("estimatedTime", "00:00:10"),
        ("sourceType", "Both"),
        ("clientManifestVersion", "3.0"),
    ],
)
def test_a_meta_that_cannot_be_read_is_a_value_error(pair):
    with pytest.raises(ValueError, match=f"(?i){pair[0]}"):
        settings_from_isml(isml(pair))


def test_a_ref_without_src_is_a_value_error():
    with pytest.raises(ValueError, match="src"):
        settings_from_isml(isml(body="<par><ref /></par>"))


# ---------------------------------------------------------------------------
# Writing


def test_writes_the_iis_layout():
    data = settings_to_isml(IIS_SAMPLE_SETTINGS)
    text = data.decode("utf-8")
    assert text.startswith('<?xml version="1.0" encoding="utf-8"?>\n<smil xmlns="')
    assert '\n  <head>\n    <meta name="title" content="" />\n' in text
    ref = '<ref src="http://downstream.example/live/ch1.isml" />'
    assert f"\n  <body>\n    <par>\n      {ref}\n    </par>\n  </body>\n</smil>\n" in text
    written = metas(data)
    # Every meta of the IIS sample, with the sample's value, in IIS's order...
    assert written[: len(IIS_METAS)] == metas(IIS_SAMPLE.encode())
    # ...then smoothlive's, and no HLS module id/name when they are IIS's own.
    assert [name for name, _ in written[len(IIS_METAS):]] == [
        "liveCacheLength", "clientManifestVersion", "sendEndOfStreamOnStop", "archivePath",
        "useEventIdOnPath", "m3u8-aapl-includecodecs",
    ]


def test_all_metas_are_documented_in_the_module():
    from smoothlive.pubpoint import isml as module

    for name in IIS_METAS + SMOOTHLIVE_METAS:
        assert f"\n{name} " in module.__doc__, name


def test_writes_everything_smoothlive_adds():
    value = Settings(
        title='A & B <"live">',
        source_type="Pull",
        estimated_duration=Duration.parse("PT1.5S"),
        archive=ArchiveSettings(False, Duration.parse("PT10M"), "D:\\archives", True),
        client_connections=ClientConnections(False, Duration.parse("PT2H"),
                                             Duration.parse("PT45S"), "2.2"),
        server_connections=ServerConnections(True, False),
        pull_from=(PublishingPointRef("https://up.example/a.isml", "cred"),),
        modules=(Module("apple", "sink", None,
                        HlsSettings(Duration.parse("PT2.5S"), 1_600_000, True, False, True,
                                    True, KEY)),),
    )
    data = settings_to_isml(value)
    found = dict(metas(data))
    assert found["publishing"] == "Streams"
    assert found["estimatedTime"] == "1.5"
    assert found["manifestWindowLength"] == "7200"
    assert found["archivePath"] == "D:\\archives"
    assert found["m3u8-aapl-segmentlength"] == "2.5"
    assert found["m3u8-aapl-encryptionkey"] == KEY
    assert found["m3u8-aapl-moduleid"] == "apple"
    assert found["m3u8-aapl-modulename"] == ""
    assert b'credentialName="cred"' in data
    assert settings_from_isml(data) == value


def test_modules_beyond_one_hls_module_are_listed():
    value = Settings(modules=(
        Module("in;1", "source", "Ingest: main"),
        Module("hls", "sink", "Apple", HlsSettings()),
        Module("x", "sink"),
    ))
    found = dict(metas(settings_to_isml(value)))
    assert found["modules"] == "source:in%3B1:Ingest%3A%20main;sink:hls:Apple;sink:x"
    assert "m3u8-aapl-modulename" not in found
    assert settings_from_isml(settings_to_isml(value)) == value


def test_refuses_invalid_settings():
    with pytest.raises(ManagementError) as raised:
        settings_to_isml(Settings(look_ahead_chunks=99))
    assert raised.value.error is MgmtError.INVALID_DATA


@hypothesis_settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings_strategy())
def test_round_trip_is_exact(value):
    data = settings_to_isml(value)
    assert settings_from_isml(data) == value
    assert settings_to_isml(value, original=data) == data  # rewriting changes nothing


# ---------------------------------------------------------------------------
# Updating a file keeps what is not ours

OPERATOR_FILE = f"""<?xml version="1.0" encoding="utf-8"?>
<smil xmlns="{SMIL_NS}">
  <head>
    <!-- edited by hand, ticket 42 -->
    <meta name="title" content="Old" />
    <meta name="vendor-setting" content="keep me" />
    <meta name="filters" content="mobile" />
    <meta name="formats" content="m3u8-aapl;dash-future" />
    <meta name="m3u8-aapl-maxbitrate" content="1600000" />
    <meta name="lookaheadchunks" content="4" />
  </head>
  <body>
    <par>
      <ref src="http://old1.example/a.isml" />
      <note>operator's element</note>
      <ref src="http://old2.example/a.isml" />
    </par>
    <par>
      <ref src="http://old3.example/a.isml" />
    </par>
    <switch><video src="x.ismv" /></switch>
  </body>
</smil>
""".encode()


def test_update_keeps_unknown_metas_comments_and_body_content():
    value = Settings(title="New", push_to=(PublishingPointRef("http://new.example/a.isml"),))
    data = settings_to_isml(value, original=OPERATOR_FILE)
    root = etree.fromstring(data)
    found = metas(data)
    assert ("vendor-setting", "keep me") in found
    assert ("filters", "mobile") in found  # an IIS meta smoothlive does not model
    assert ("formats", "dash-future") in found  # HLS gone, the unknown format kept
    assert ("title", "New") in found and ("title", "Old") not in found
    assert not any(name.lower() == "lookaheadchunks" and c == "4" for name, c in found)
    assert not any(name.startswith("m3u8-aapl-") for name, _ in found)
    assert b"<!-- edited by hand, ticket 42 -->" in data
    assert root.findtext(f"{S}body/{S}par/{S}note") == "operator's element"
    assert root.find(f"{S}body/{S}switch/{S}video").get("src") == "x.ismv"
    assert [r.get("src") for r in root.iter(f"{S}ref")] == ["http://new.example/a.isml"]
    assert settings_from_isml(data) == value
    # Our metas first, in order; what we keep follows.
    assert [name for name, _ in found][: len(IIS_METAS) - 5] == [
        n for n in IIS_METAS if not n.startswith("m3u8-aapl-")
    ]


def test_update_of_an_iis_file_changes_only_what_changed():
    value = replace(IIS_SAMPLE_SETTINGS, title="Renamed")
    data = settings_to_isml(value, original=IIS_SAMPLE.encode())
    before, after = dict(metas(IIS_SAMPLE.encode())), dict(metas(data))
    assert {k: v for k, v in after.items() if k in before and before[k] != v} == {
        "title": "Renamed"
    }
    assert settings_from_isml(data) == value


def test_update_of_a_utf16_file_writes_utf8():
    original = IIS_SAMPLE.replace('encoding="utf-8"', 'encoding="utf-16"').encode("utf-16")
    data = settings_to_isml(IIS_SAMPLE_SETTINGS, original=original)
    assert data.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    assert settings_from_isml(data) == IIS_SAMPLE_SETTINGS


def test_update_with_a_broken_original_is_a_value_error():
    with pytest.raises(ValueError):
        settings_to_isml(Settings(), original=b"<html />")
    with pytest.raises(ValueError):
        settings_to_isml(Settings(), original=b"<smil><head>")


# ---------------------------------------------------------------------------
# Output switches and key rotation


def test_an_iis_file_switches_no_output_off_and_rotates_no_key():
    read = settings_from_isml(IIS_SAMPLE.encode())
    assert outputs_of(read) == Outputs(smooth=True, hls=HlsSettings(), dash=True)
    without_hls = IIS_SAMPLE.replace('content="m3u8-aapl"', 'content=""')
    assert outputs_of(settings_from_isml(without_hls.encode())) == Outputs(
        True, HlsSettings(), True
    )


def test_switched_off_outputs_are_listed_with_a_flag():
    value = Settings(modules=(
        Module("smooth", "sink", enabled=False),
        Module("dash", "sink", "MPEG: DASH", enabled=False),
        Module("hls", "sink"),
    ))
    data = settings_to_isml(value)
    found = dict(metas(data))
    assert found["modules"] == "sink:smooth::disabled;sink:dash:MPEG%3A%20DASH:disabled;sink:hls"
    assert found["formats"] == "" and "m3u8-aapl-enabled" not in found
    assert settings_from_isml(data) == value


def test_a_switched_off_hls_module_keeps_its_settings_out_of_formats():
    hls = HlsSettings(Duration.parse("PT4S"), encryption_enabled=True, key=KEY)
    value = Settings(modules=(Module("hls", "sink", HLS_MODULE_NAME, hls, enabled=False),))
    data = settings_to_isml(value)
    found = dict(metas(data))
    assert found["formats"] == ""  # IIS, given this file, serves no HLS either
    assert found["m3u8-aapl-segmentlength"] == "4"
    assert found["m3u8-aapl-enabled"] == "False"
    assert "modules" not in found
    assert settings_from_isml(data) == value
    assert outputs_of(settings_from_isml(data)).hls is None
    # Switched back on, formats names HLS again and the meta goes.
    on = replace(value, modules=(replace(value.modules[0], enabled=True),))
    found = dict(metas(settings_to_isml(on, original=data)))
    assert found["formats"] == "m3u8-aapl" and "m3u8-aapl-enabled" not in found


def test_a_switched_off_hls_module_among_others():
    value = Settings(modules=(
        Module("ingest", "source"),
        Module("apple", "sink", None, HlsSettings(), enabled=False),
        Module("hls", "sink"),
    ))
    data = settings_to_isml(value)
    found = dict(metas(data))
    assert found["modules"] == "source:ingest;sink:apple::disabled;sink:hls"
    assert (found["m3u8-aapl-moduleid"], found["m3u8-aapl-enabled"]) == ("apple", "False")
    assert settings_from_isml(data) == value


def test_switching_hls_off_keeps_the_other_formats():
    value = Settings(modules=(Module("hls", "sink", None, HlsSettings(), enabled=False),))
    data = settings_to_isml(value, original=OPERATOR_FILE)
    assert ("formats", "dash-future") in metas(data)
    assert settings_from_isml(data) == value


@pytest.mark.parametrize(
    ("pairs", "enabled"),
    [
        ((("formats", "m3u8-aapl"),), True),
        ((("formats", "m3u8-aapl"), ("m3u8-aapl-enabled", "false")), False),
        ((("formats", ""), ("M3U8-AAPL-ENABLED", "FALSE")), False),
        ((("formats", ""), ("m3u8-aapl-enabled", "True")), False),  # formats decides
        ((("formats", "m3u8-aapl"), ("modules", "sink:hls::DISABLED")), False),
    ],
)
def test_reading_the_hls_switch(pairs, enabled):
    (module,) = settings_from_isml(isml(*pairs)).modules
    assert module.hls == HlsSettings() and module.enabled is enabled


def test_key_rotation_is_kept_in_seconds():
    hls = HlsSettings(encryption_enabled=True, key=KEY, key_rotation=Duration.parse("PT1H0.5S"))
    value = Settings(modules=(Module("hls", "sink", HLS_MODULE_NAME, hls),))
    data = settings_to_isml(value)
    assert ("m3u8-aapl-keyrotationperiod", "3600.5") in metas(data)
    assert settings_from_isml(data) == value
    # PT0S, the default, writes nothing.
    plain = Settings(modules=(Module("hls", "sink", HLS_MODULE_NAME,
                                     replace(hls, key_rotation=ZERO)),))
    names = [name for name, _ in metas(settings_to_isml(plain, original=data))]
    assert "m3u8-aapl-keyrotationperiod" not in names


@pytest.mark.parametrize(
    "pairs",
    [
        (("formats", "m3u8-aapl"), ("m3u8-aapl-keyrotationperiod", "PT1H")),
        (("formats", "m3u8-aapl"), ("m3u8-aapl-keyrotationperiod", "5")),  # out of range
        (("formats", "m3u8-aapl"), ("m3u8-aapl-enabled", "maybe")),
        (("modules", "sink:dash::off"),),
        (("modules", "sink:dash:x:disabled:more"),),
        (("modules", "source:ingest::disabled"),),  # only sinks are switched off
    ],
)
def test_new_metas_that_cannot_be_read_are_value_errors(pairs):
    with pytest.raises(ValueError):
        settings_from_isml(isml(*pairs))
