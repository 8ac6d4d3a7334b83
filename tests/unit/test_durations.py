"""xs:duration values: exact, fixed-length, canonical."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smoothlive.management.durations import ZERO, Duration, is_xs_duration

PARSE_TABLE = [
    # text, exact seconds, canonical form
    ("PT0S", Fraction(0), "PT0S"),
    ("P0D", Fraction(0), "PT0S"),
    ("PT0.000S", Fraction(0), "PT0S"),
    ("PT10S", Fraction(10), "PT10S"),
    ("PT1H15M30.5S", Fraction(9061, 2), "PT1H15M30.5S"),  # the element pages' example
    ("PT2M", Fraction(120), "PT2M"),
    ("PT90M", Fraction(5400), "PT1H30M"),
    ("PT3600S", Fraction(3600), "PT1H"),
    ("PT61S", Fraction(61), "PT1M1S"),
    ("P1D", Fraction(86400), "PT24H"),
    ("P2DT1H", Fraction(2 * 86400 + 3600), "PT49H"),
    ("PT100H", Fraction(360000), "PT100H"),
    ("PT0.811S", Fraction(811, 1000), "PT0.811S"),  # IncomingFragmentWaitTime example
    ("PT0.670S", Fraction(67, 100), "PT0.67S"),
    ("PT1.50S", Fraction(3, 2), "PT1.5S"),
    ("PT.25S", Fraction(1, 4), "PT0.25S"),
    ("PT1.S", Fraction(1), "PT1S"),
    ("PT0.0000001S", Fraction(1, 10**7), "PT0.0000001S"),
    ("P0Y0M0DT0H0M10.000S", Fraction(10), "PT10S"),  # as javax.xml.datatype writes it
    ("  PT10S\n", Fraction(10), "PT10S"),
]


@pytest.mark.parametrize(("text", "seconds", "canonical"), PARSE_TABLE)
def test_parse_and_canonical_form(text, seconds, canonical):
    duration = Duration.parse(text)
    assert duration.seconds == seconds
    assert str(duration) == canonical
    assert str(Duration.parse(canonical)) == canonical


@pytest.mark.parametrize(
    "text",
    [
        "P1Y", "P1M", "P1Y2M3DT4H", "P0Y1M",  # no fixed length
        "-PT1S", "-PT0S", "-P1D",  # negative
        "", "P", "PT", "P1DT", "T1S", "1S", "PT1,5S", "PT1.5.5S", "PT1S1M", "PT1HS",
        "pt1s", "PT-1S", "PT\u0661S", "PT1H 2M", "PT" + "1" * 200 + "S",
    ],
)
def test_refused(text):
    with pytest.raises(ValueError):
        Duration.parse(text)


def test_is_xs_duration_tells_malformed_from_refused():
    assert is_xs_duration("P1Y") and is_xs_duration("-PT1S") and is_xs_duration(" PT1S ")
    assert not is_xs_duration("PT") and not is_xs_duration("10") and not is_xs_duration("P1DT")


@given(
    st.integers(0, 10**12), st.integers(0, 3),
)
def test_canonical_is_a_fixed_point(units, places):
    duration = Duration.from_seconds(Fraction(units, 10**places))
    text = str(duration)
    assert Duration.parse(text) == duration
    assert str(Duration.parse(text)) == text
    assert text == "PT0S" or not text.endswith("0S") or "." not in text


@given(
    st.integers(0, 40), st.integers(0, 200), st.integers(0, 200), st.integers(0, 10**6),
)
def test_components_add_up(days, hours, minutes, millis):
    text = f"P{days}DT{hours}H{minutes}M{millis // 1000}.{millis % 1000:03d}S"
    expected = days * 86400 + hours * 3600 + minutes * 60 + Fraction(millis, 1000)
    assert Duration.parse(text).seconds == expected


def test_from_seconds_accepts_exact_numbers_only():
    assert Duration.from_seconds(10) == Duration.parse("PT10S")
    assert Duration.from_seconds(Fraction(1, 8)) == Duration.parse("PT0.125S")
    assert Duration.from_seconds(Decimal("2.50")) == Duration.parse("PT2.5S")
    with pytest.raises(TypeError):
        Duration.from_seconds(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Duration.from_seconds(True)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Duration.from_seconds(Fraction(1, 3))  # no exact decimal text
    with pytest.raises(ValueError):
        Duration.from_seconds(-1)
    with pytest.raises(ValueError):
        Duration.from_seconds(Decimal("NaN"))


def test_ticks_are_100ns_units():
    assert Duration.parse("PT1S").ticks == 10_000_000
    assert Duration.parse("PT2S").ticks == 20_000_000  # IncomingFragmentDuration example
    assert Duration.parse("PT0.0000001S").ticks == 1
    assert Duration.parse("PT0.00000005S").ticks == 0  # below one tick: truncated
    assert Duration.from_ticks(260_000_000) == Duration.parse("PT26S")
    assert Duration.from_ticks(19_969_160).ticks == 19_969_160


def test_seconds_text():
    assert ZERO.to_seconds_text() == "0"
    assert Duration.parse("PT1H").to_seconds_text() == "3600"
    assert Duration.parse("PT1.125S").to_seconds_text() == "1.125"
    assert Duration.from_seconds_text(" 10 ") == Duration.parse("PT10S")
    assert Duration.from_seconds_text("0.50") == Duration.parse("PT0.5S")
    for bad in ("", "-1", "1e3", "NaN", "1,5", "ten", "1_000"):
        with pytest.raises(ValueError):
            Duration.from_seconds_text(bad)


def test_order_equality_and_hash():
    assert Duration.parse("PT59S") < Duration.parse("PT1M") < Duration.parse("P1D")
    assert Duration.parse("PT60S") == Duration.parse("PT1M") == Duration.from_seconds(60)
    assert len({Duration.parse("PT60S"), Duration.parse("PT1M")}) == 1
    assert repr(Duration.parse("PT90S")) == "Duration('PT1M30S')"
