"""Exact ``xs:duration`` values for publishing point settings.

The SmoothStreaming schema types EstimatedDuration, Archive/SegmentLength,
ClientConnections/WindowLength and LiveCacheLength (and the HLS module's
SegmentLength) as ``xs:duration``, written like ``PT1H15M30.5S``
(estimatedduration-element.md, segmentlength-element.md, windowlength-element.md).

A live server needs lengths it can count in fragments, so only durations with
a fixed length are accepted: days, hours, minutes and (fractional) seconds.
Years and months are refused (a month has no fixed number of seconds), and so
is a negative sign. Values are kept exact — a ``Fraction`` of seconds, never a
float — so a value read from a request is written back unchanged, and so the
100-ns tick count Smooth Streaming timescales use is exact too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

__all__ = ["TICKS_PER_SECOND", "ZERO", "Duration", "is_xs_duration"]

#: Smooth Streaming's default timescale: 10,000,000 ticks of 100 ns per second.
TICKS_PER_SECOND = 10_000_000

# Longer texts are refused before any arithmetic: a real duration is short, and
# a megabyte of digits should not cost a megabyte-sized Fraction.
_MAX_TEXT = 100

# The xs:duration lexical space (XML Schema 1.0 Part 2, 3.2.6), ASCII digits only.
_XS_DURATION = re.compile(
    r"(?P<sign>-)?P"
    r"(?:(?P<years>[0-9]+)Y)?"
    r"(?:(?P<months>[0-9]+)M)?"
    r"(?:(?P<days>[0-9]+)D)?"
    r"(?P<t>T"
    r"(?:(?P<hours>[0-9]+)H)?"
    r"(?:(?P<minutes>[0-9]+)M)?"
    r"(?:(?P<seconds>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)S)?"
    r")?"
)
_DECIMAL_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")


def _match(text: str) -> re.Match[str] | None:
    """The match of a lexically valid xs:duration (a designator and a number required)."""
    m = _XS_DURATION.fullmatch(text)
    if m is None:
        return None
    parts = ("years", "months", "days", "hours", "minutes", "seconds")
    if all(m.group(p) is None for p in parts):
        return None  # "P" alone
    if m.group("t") and all(m.group(p) is None for p in ("hours", "minutes", "seconds")):
        return None  # "P1DT": T needs a time component
    return m


def is_xs_duration(text: str) -> bool:
    """True when ``text`` is in the xs:duration lexical space, even if ``Duration`` refuses it.

    Lets callers tell a malformed value (a schema error) from a well-formed one
    that smoothlive does not accept, like ``P1Y`` or ``-PT1S`` (invalid data).
    """
    return _match(text.strip()) is not None


def _decimal_fraction(text: str) -> Fraction:
    """``"12.50"`` -> Fraction(25, 2), exactly, from an already checked decimal text."""
    whole, _, frac = text.partition(".")
    value = Fraction(int(whole or "0"))
    if frac:
        value += Fraction(int(frac), 10 ** len(frac))
    return value


def _decimal_digits(denominator: int) -> int | None:
    """How many decimal places ``1/denominator`` needs, or None if it never ends."""
    twos = fives = 0
    while denominator % 2 == 0:
        denominator //= 2
        twos += 1
    while denominator % 5 == 0:
        denominator //= 5
        fives += 1
    return max(twos, fives) if denominator == 1 else None


@dataclass(frozen=True, order=True)
class Duration:
    """A non-negative, fixed-length duration held as an exact ``Fraction`` of seconds.

    ``str()`` is the canonical xs:duration form: ``PT0S`` for zero, otherwise
    ``PT[nH][nM][n[.fff]S]`` — hours may exceed 24 (days fold into hours) and
    fractions carry no trailing zeros — so ``str(Duration.parse(str(d))) == str(d)``.
    Only values with a finite decimal expansion exist (1/3 s has no exact
    xs:duration text).
    """

    seconds: Fraction

    def __post_init__(self) -> None:
        value = self.seconds
        if isinstance(value, bool) or not isinstance(value, int | Fraction | Decimal):
            raise TypeError(f"duration seconds must be int, Fraction or Decimal, not {value!r}")
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise ValueError(f"duration seconds must be finite, not {value}")
            value = Fraction(value)
        value = Fraction(value)
        if value < 0:
            raise ValueError(f"negative durations are not allowed: {value} s")
        if _decimal_digits(value.denominator) is None:
            raise ValueError(f"{value} s has no exact decimal xs:duration form")
        object.__setattr__(self, "seconds", value)

    # -- constructors ---------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> Duration:
        """Read an xs:duration such as ``PT1H15M30.5S`` or ``P1DT2H``.

        Surrounding whitespace is ignored (xs:duration collapses whitespace).
        Raises ValueError for malformed text, for a negative duration and for
        non-zero years or months, which have no fixed length. Zero years and
        months (``P0Y0M0DT10S``, as some XML libraries write) are accepted.
        """
        stripped = text.strip()
        if len(stripped) > _MAX_TEXT:
            raise ValueError(f"duration text longer than {_MAX_TEXT} characters")
        m = _match(stripped)
        if m is None:
            raise ValueError(f"not an xs:duration: {text!r}")
        if m.group("sign"):
            raise ValueError(f"negative durations are not allowed: {stripped}")
        for part in ("years", "months"):
            if m.group(part) is not None and int(m.group(part)) != 0:
                raise ValueError(
                    f"{part} have no fixed length; use days, hours, minutes, seconds: {stripped}"
                )
        seconds = Fraction(0)
        for part, factor in (("days", 86400), ("hours", 3600), ("minutes", 60)):
            if m.group(part) is not None:
                seconds += int(m.group(part)) * factor
        if m.group("seconds") is not None:
            seconds += _decimal_fraction(m.group("seconds"))
        return cls(seconds)

    @classmethod
    def from_seconds(cls, seconds: int | Fraction | Decimal) -> Duration:
        """A duration of ``seconds``; floats are refused because they are not exact."""
        return cls(seconds)

    @classmethod
    def from_seconds_text(cls, text: str) -> Duration:
        """Read a plain decimal number of seconds (``"10"``, ``"2.5"``), as .isml files hold."""
        stripped = text.strip()
        if len(stripped) > _MAX_TEXT or not _DECIMAL_SECONDS.fullmatch(stripped):
            raise ValueError(f"not a non-negative decimal number of seconds: {text!r}")
        return cls(_decimal_fraction(stripped))

    @classmethod
    def from_ticks(cls, ticks: int) -> Duration:
        """A duration of ``ticks`` 100-ns units (the default Smooth Streaming timescale)."""
        return cls(Fraction(ticks, TICKS_PER_SECOND))

    # -- views ----------------------------------------------------------------

    @property
    def ticks(self) -> int:
        """Whole 100-ns ticks; a finer fraction (below 100 ns) is truncated."""
        return int(self.seconds * TICKS_PER_SECOND)

    def to_seconds_text(self) -> str:
        """The exact number of seconds as a plain decimal: ``"0"``, ``"10"``, ``"0.125"``."""
        whole = self.seconds.numerator // self.seconds.denominator
        return _format_decimal(whole, self.seconds - whole)

    def __str__(self) -> str:
        if self.seconds == 0:
            return "PT0S"
        whole = self.seconds.numerator // self.seconds.denominator
        fraction = self.seconds - whole
        hours, rest = divmod(whole, 3600)
        minutes, secs = divmod(rest, 60)
        text = "PT"
        if hours:
            text += f"{hours}H"
        if minutes:
            text += f"{minutes}M"
        if secs or fraction:
            text += _format_decimal(secs, fraction) + "S"
        return text

    def __repr__(self) -> str:
        return f"Duration({str(self)!r})"


def _format_decimal(whole: int, fraction: Fraction) -> str:
    """``whole`` plus a fraction below one, as decimal text without trailing zeros."""
    if not fraction:
        return str(whole)
    places = _decimal_digits(fraction.denominator)
    assert places is not None  # guaranteed by Duration.__post_init__
    digits = str(int(fraction * 10**places)).rjust(places, "0").rstrip("0")
    return f"{whole}.{digits}"


#: The zero duration, ``PT0S``: the default of most duration settings.
ZERO = Duration(Fraction(0))
