"""Output switches (Module/@enabled), key rotation and key generation in the Settings model."""

from __future__ import annotations

import re
import secrets
from dataclasses import FrozenInstanceError, replace

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from smoothlive.management.durations import ZERO, Duration
from smoothlive.management.errors import ManagementError, MgmtError
from smoothlive.management.settings import (
    DASH_MODULE_ID,
    HLS_MODULE_ID,
    KEY_ROTATION_MAX,
    KEY_ROTATION_MIN,
    OUTPUT_MODULE_IDS,
    SINK_NAMES,
    SMOOTH_MODULE_ID,
    HlsSettings,
    Module,
    Outputs,
    Settings,
    check_settings,
    hls_module,
    outputs_of,
    parse_settings,
    render_settings,
    with_generated_keys,
)
from tests.strategies import atom_entry, settings_strategy
from tests.unit.test_settings import (
    HLS_EXAMPLE_MODULE,
    KEY,
    UPDATE_EXAMPLE,
    read,
    read_rendered,
    read_unvalidated,
    settings_element,
)

ENCRYPTING = HlsSettings(encryption_enabled=True)


def modules(*inner: str) -> str:
    return "<Modules>" + "".join(inner) + "</Modules>"


def hls(encryption: str, module: str = '<Module id="hls" type="sink">') -> str:
    return modules(f"{module}<HLS>{encryption}</HLS></Module>")


def invalid_data(inner: str) -> ManagementError:
    with pytest.raises(ManagementError) as raised:
        read(inner)
    assert raised.value.error is MgmtError.INVALID_DATA, raised.value
    return raised.value


# ---------------------------------------------------------------------------
# Constants


def test_output_ids_and_sink_names():
    assert (SMOOTH_MODULE_ID, HLS_MODULE_ID, DASH_MODULE_ID) == ("smooth", "hls", "dash")
    assert OUTPUT_MODULE_IDS == ("smooth", "hls", "dash")
    assert dict(SINK_NAMES) == {
        "smooth": "IIS Smooth Streaming",
        "hls": "Apple HTTP Live Streaming",
        "dash": "MPEG-DASH",
    }
    with pytest.raises(TypeError):
        SINK_NAMES["dash"] = "x"  # type: ignore[index]


def test_new_fields_default_to_what_iis_does():
    assert Module("m", "sink").enabled is True
    assert HlsSettings().key_rotation == ZERO
    assert (Duration.parse("PT10S"), Duration.parse("P1D")) == (KEY_ROTATION_MIN, KEY_ROTATION_MAX)


# ---------------------------------------------------------------------------
# Module/@enabled


def test_enabled_false_switches_a_module_off():
    s = read(modules('<Module id="dash" type="sink" enabled="false" />'))
    assert s.modules == (Module("dash", "sink", enabled=False),)
    text = render_settings(s)
    assert '<Module id="dash" type="sink" enabled="false" />' in text
    assert read_rendered(s) == s


@pytest.mark.parametrize(("text", "value"), [("true", True), ("1", True), (" 0 ", False)])
def test_enabled_takes_any_xs_boolean(text, value):
    (module,) = read(modules(f'<Module id="smooth" type="sink" enabled="{text}" />')).modules
    assert module.enabled is value


def test_enabled_is_rendered_only_when_false():
    s = read(modules('<Module id="dash" type="sink" name="DASH" enabled="true" />'))
    assert s.modules == (Module("dash", "sink", "DASH"),)
    assert '<Module id="dash" type="sink" name="DASH" />' in render_settings(s)


def test_enabled_false_on_an_hls_module_keeps_its_settings():
    s = read(
        modules(
            '<Module id="hls" type="sink" name="HTTP Live Streaming" enabled="false"><HLS>'
            "<SegmentLength>PT4S</SegmentLength></HLS></Module>"
        )
    )
    (module,) = s.modules
    assert module.enabled is False and module.hls == HlsSettings(Duration.parse("PT4S"))
    assert (
        '<Module id="hls" type="sink" name="HTTP Live Streaming" enabled="false">'
        in render_settings(s)
    )
    assert read_rendered(s) == s


def read_example(settings_xml: str) -> Settings:
    return parse_settings(settings_element(atom_entry(settings_xml + "\n")))


def test_an_iis_body_renders_without_the_additions():
    text = render_settings(read_example(UPDATE_EXAMPLE))
    assert '<Module id="hls" type="sink" name="HTTP Live Streaming">' in text
    assert "KeyRotationPeriod" not in text


def test_only_a_sink_is_switched_off():
    assert "sink" in invalid_data(
        modules('<Module id="ingest" type="source" enabled="false" />')
    ).detail
    # A source with its id of an output is not an output: left alone, as before.
    s = read(modules('<Module id="dash" type="source" enabled="true" />'))
    assert outputs_of(s).dash is True


def test_a_second_hls_switch_is_refused():
    invalid_data(
        modules(
            '<Module id="hls" type="sink" enabled="false" />',
            '<Module id="apple" type="sink"><HLS /></Module>',
        )
    )
    # Beside the carrying module, a plain sink "hls" that stays on is allowed, as before.
    s = read(modules('<Module id="hls" type="sink" />', '<Module id="apple" type="sink"><HLS />'
                     "</Module>"))
    assert hls_module(s) == Module("apple", "sink", hls=HlsSettings())


@pytest.mark.parametrize("value", ["yes", "False", "", "off"])
@pytest.mark.parametrize("reader", [read, read_unvalidated], ids=["xsd", "python"])
def test_enabled_that_is_no_boolean_is_a_schema_error(value, reader):
    with pytest.raises(ManagementError) as raised:
        reader(modules(f'<Module id="dash" type="sink" enabled="{value}" />'))
    assert raised.value.error is MgmtError.INVALID_SCHEMA


@pytest.mark.parametrize(
    "value",
    [
        Settings(modules=(Module("dash", "sink", enabled=0),)),  # type: ignore[arg-type]
        Settings(modules=(Module("dash", "source", enabled=False),)),
        Settings(modules=(Module("hls", "sink", enabled=False),
                          Module("a", "sink", hls=HlsSettings()))),
        Settings(modules=(Module("hls", "sink", hls=HlsSettings(
            key_rotation="PT1H",  # type: ignore[arg-type]
        )),)),
        Settings(modules=(Module("hls", "sink", hls=HlsSettings(
            key_rotation=Duration.parse("PT5S"),
        )),)),
    ],
)
def test_check_settings_refuses_bad_new_values(value):
    with pytest.raises(ManagementError) as raised:
        check_settings(value)
    assert raised.value.error is MgmtError.INVALID_DATA


# ---------------------------------------------------------------------------
# Encryption/KeyRotationPeriod


def test_key_rotation_is_read_and_rendered_after_the_key():
    s = read(hls(f'<Encryption enabled="true"><Key>{KEY}</Key>'
                 "<KeyRotationPeriod>PT1H</KeyRotationPeriod></Encryption>"))
    assert s.modules[0].hls == HlsSettings(encryption_enabled=True, key=KEY,
                                           key_rotation=Duration.parse("PT1H"))
    text = render_settings(s)
    key_at, period_at = text.index("<Key>"), text.index("<KeyRotationPeriod>PT1H<")
    assert key_at < period_at < text.index("</Encryption>")
    assert read_rendered(s) == s


def test_key_rotation_without_a_key_and_in_any_order():
    s = read(hls('<Encryption enabled="true"><KeyRotationPeriod> PT30S </KeyRotationPeriod>'
                 f"<Key>{KEY}</Key></Encryption>"))
    assert s.modules[0].hls.key_rotation == Duration.parse("PT30S")
    s = replace(s, modules=(replace(s.modules[0], hls=replace(s.modules[0].hls, key=None)),))
    text = render_settings(s)
    assert "<Key>" not in text and "<KeyRotationPeriod>PT30S</KeyRotationPeriod>" in text
    assert read_rendered(s) == s


def test_zero_key_rotation_is_the_default_and_not_rendered():
    s = read(hls('<Encryption enabled="true"><KeyRotationPeriod>PT0S</KeyRotationPeriod>'
                 "</Encryption>"))
    assert s.modules[0].hls == ENCRYPTING
    assert '<Encryption enabled="true" />' in render_settings(s)


@pytest.mark.parametrize("period", ["PT10S", "PT24H", "P1D", "PT12H30M0.5S", "P0DT10S"])
def test_key_rotation_limits_are_inclusive(period):
    s = read(hls(f'<Encryption enabled="false"><KeyRotationPeriod>{period}</KeyRotationPeriod>'
                 "</Encryption>"))
    assert s.modules[0].hls.key_rotation == Duration.parse(period)
    assert read_rendered(s) == s


@pytest.mark.parametrize("period", ["PT1S", "PT9.999S", "PT0.001S", "PT24H0.001S", "P2D",
                                    "P1M", "P1Y", "-PT1M"])
def test_key_rotation_out_of_range_is_invalid_data(period):
    error = invalid_data(hls(f'<Encryption enabled="true"><KeyRotationPeriod>{period}'
                             "</KeyRotationPeriod></Encryption>"))
    assert "KeyRotationPeriod" in error.detail


@pytest.mark.parametrize(
    "inner",
    [
        hls('<Encryption enabled="true"><KeyRotationPeriod>3600</KeyRotationPeriod></Encryption>'),
        hls('<Encryption enabled="true"><KeyRotationPeriod>PT</KeyRotationPeriod></Encryption>'),
        hls('<Encryption enabled="true"><KeyRotationPeriod>PT1H</KeyRotationPeriod>'
            "<KeyRotationPeriod>PT1H</KeyRotationPeriod></Encryption>"),
        hls("<KeyRotationPeriod>PT1H</KeyRotationPeriod>"),
    ],
    ids=["seconds", "no component", "twice", "outside Encryption"],
)
@pytest.mark.parametrize("reader", [read, read_unvalidated], ids=["xsd", "python"])
def test_malformed_key_rotation_is_a_schema_error(inner, reader):
    with pytest.raises(ManagementError) as raised:
        reader(inner)
    assert raised.value.error is MgmtError.INVALID_SCHEMA


# ---------------------------------------------------------------------------
# outputs_of


def test_no_module_means_every_output_on():
    assert outputs_of(Settings()) == Outputs(smooth=True, hls=HlsSettings(), dash=True)


def test_the_iis_example_keeps_every_output_on_with_its_hls_settings():
    s = read_example(UPDATE_EXAMPLE)
    assert outputs_of(s) == Outputs(True, HLS_EXAMPLE_MODULE.hls, True)


@pytest.mark.parametrize(
    ("module_list", "expected"),
    [
        ((Module("smooth", "sink", enabled=False),), Outputs(False, HlsSettings(), True)),
        ((Module("dash", "sink", enabled=False),), Outputs(True, HlsSettings(), False)),
        ((Module("hls", "sink", enabled=False),), Outputs(True, None, True)),
        ((Module("hls", "sink"),), Outputs(True, HlsSettings(), True)),
        ((Module("hls", "sink", hls=ENCRYPTING, enabled=False),), Outputs(True, None, True)),
        ((Module("apple", "sink", hls=ENCRYPTING),), Outputs(True, ENCRYPTING, True)),
        ((Module("apple", "sink", hls=ENCRYPTING, enabled=False), Module("hls", "sink")),
         Outputs(True, None, True)),
        ((Module("dash", "source"), Module("smooth", "source")),
         Outputs(True, HlsSettings(), True)),
        ((Module("x", "sink", enabled=False), Module("DASH", "sink", enabled=False)),
         Outputs(True, HlsSettings(), True)),
        ((Module("smooth", "sink", enabled=False), Module("hls", "sink", enabled=False),
          Module("dash", "sink", enabled=False)), Outputs(False, None, False)),
    ],
)
def test_outputs_of(module_list, expected):
    value = Settings(modules=module_list)
    check_settings(value)
    assert outputs_of(value) == expected
    assert outputs_of(read_rendered(value)) == expected


def test_outputs_is_frozen():
    with pytest.raises(FrozenInstanceError):
        outputs_of(Settings()).dash = False  # type: ignore[misc]


# ---------------------------------------------------------------------------
# with_generated_keys


def _never() -> str:
    raise AssertionError("no key should be generated")


def test_a_key_is_generated_for_an_encrypting_module_without_one():
    value = Settings(title="t", modules=(Module("ingest", "source"),
                                         Module("hls", "sink", "HLS", ENCRYPTING)))
    keyed = with_generated_keys(value, lambda: KEY)
    assert keyed == replace(value, modules=(
        Module("ingest", "source"), Module("hls", "sink", "HLS", replace(ENCRYPTING, key=KEY)),
    ))
    check_settings(keyed)
    assert read_rendered(keyed) == keyed


def test_a_switched_off_module_gets_its_key_too():
    value = Settings(modules=(Module("hls", "sink", hls=ENCRYPTING, enabled=False),))
    assert with_generated_keys(value, lambda: KEY).modules[0].hls.key == KEY


@pytest.mark.parametrize(
    "value",
    [
        Settings(),
        Settings(modules=(Module("hls", "sink"), Module("dash", "sink", enabled=False))),
        Settings(modules=(Module("hls", "sink", hls=HlsSettings()),)),
        Settings(modules=(Module("hls", "sink", hls=replace(ENCRYPTING, key=KEY.lower())),)),
    ],
)
def test_settings_that_need_no_key_come_back_unchanged(value):
    assert with_generated_keys(value, _never) is value


def test_the_registrys_key_maker_makes_keys_the_check_accepts():
    value = with_generated_keys(
        Settings(modules=(Module("hls", "sink", hls=ENCRYPTING),)),
        lambda: secrets.token_hex(16).upper(),
    )
    key = value.modules[0].hls.key
    assert re.fullmatch(r"[0-9A-F]{32}", key)
    check_settings(value)


@pytest.mark.parametrize("bad", ["XYZ", KEY[:-1], KEY + "0", "G" * 32, None])
def test_a_key_maker_returning_no_key_is_a_value_error(bad):
    with pytest.raises(ValueError, match="32 hex digits"):
        with_generated_keys(Settings(modules=(Module("hls", "sink", hls=ENCRYPTING),)),
                            lambda: bad)


@hypothesis_settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings_strategy())
def test_drawn_settings_already_hold_their_keys(value):
    # So a server that generates missing keys gives drawn settings back unchanged.
    assert with_generated_keys(value, _never) is value


def test_an_atom_entry_with_every_addition_round_trips():
    value = Settings(modules=(
        Module("smooth", "sink", enabled=False),
        Module("hls", "sink", "HTTP Live Streaming",
               HlsSettings(encryption_enabled=True, key=KEY, key_rotation=KEY_ROTATION_MIN)),
        Module("dash", "sink", "MPEG-DASH", enabled=False),
    ))
    element = settings_element(atom_entry(render_settings(value)))
    assert parse_settings(element) == value
