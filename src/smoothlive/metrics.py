"""Prometheus metrics, sans-IO: counters, gauges and histograms rendered as text 0.0.4.

No client library: the hot paths (a fragment request, a fragment stored) must
cost a dict update, so a series is a plain number (or a list of bucket counts)
in a dict keyed by the tuple of its label values, built once by the caller.
Label values may be any object with a ``str()`` (a status code stays an int
until rendered). Rendering escapes label values and caches each series' label
text, so a scrape of 10,000 series takes a few milliseconds.

The shell fills the gauges that describe state (points by state, the process)
just before it renders; the module-level ``REGISTRY`` holds every metric the
server exposes.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass

LabelKey = tuple  # label values, in the order of the metric's label names

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def escape_label(value: object) -> str:
    """A label value as the format quotes it: backslash, double quote, line feed escaped."""
    text = str(value)
    if "\\" in text or '"' in text or "\n" in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return text


def escape_help(text: str) -> str:
    """HELP text: only backslash and line feed are escaped (quotes are not)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value as Go's ParseFloat reads it: ints exact, +Inf, -Inf, NaN."""
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(value)


class Metric:
    """One metric family: a name, its HELP, its label names and its series."""

    kind = "untyped"

    def __init__(self, name: str, help: str, labels: Iterable[str] = ()) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labels)
        self._texts: dict[LabelKey, str] = {}  # key -> 'a="x",b="y"', made at first render

    def _check(self, key: LabelKey) -> None:
        """A new series: its key must have one value per label (checked once, not per inc)."""
        if len(key) != len(self.labelnames):
            raise ValueError(f"{self.name}: labels {self.labelnames}, got values {key!r}")

    def _text(self, key: LabelKey) -> str:
        text = self._texts.get(key)
        if text is None:
            text = ",".join(f'{name}="{escape_label(value)}"'
                            for name, value in zip(self.labelnames, key, strict=True))
            self._texts[key] = text
        return text

    def remove(self, key: LabelKey) -> None:
        """Forget one series (a publishing point that went away)."""
        self._series().pop(key, None)
        self._texts.pop(key, None)

    def _series(self) -> dict:
        raise NotImplementedError

    def render(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {escape_help(self.help)}")
        out.append(f"# TYPE {self.name} {self.kind}")
        self._render_samples(out)

    def _render_samples(self, out: list[str]) -> None:
        name, text = self.name, self._text
        for key, value in self._series().items():
            out.append(f"{name}{{{text(key)}}} {format_value(value)}" if key
                       else f"{name} {format_value(value)}")


class _Number(Metric):
    """One number per series; ``inc`` is one dict update."""

    def __init__(self, name: str, help: str, labels: Iterable[str] = ()) -> None:
        super().__init__(name, help, labels)
        self.values: dict[LabelKey, float] = {}
        if not self.labelnames:
            self.values[()] = 0

    def _series(self) -> dict:
        return self.values

    def inc(self, key: LabelKey = (), amount: float = 1) -> None:
        try:
            self.values[key] += amount
        except KeyError:
            self._check(key)
            self.values[key] = amount

    def set(self, key: LabelKey, value: float) -> None:
        """For a total counted elsewhere (the kernel's CPU time), copied at scrape time."""
        if key not in self.values:
            self._check(key)
        self.values[key] = value

    def get(self, key: LabelKey = ()) -> float:
        return self.values.get(key, 0)


class Counter(_Number):
    """A number that only goes up (a process restart starts it again from zero)."""

    kind = "counter"


class Gauge(_Number):
    """A number that goes up and down; state gauges are set just before a render."""

    kind = "gauge"

    def dec(self, key: LabelKey = (), amount: float = 1) -> None:
        self.inc(key, -amount)


class Histogram(Metric):
    """Observations counted into buckets (upper bounds, inclusive) with their sum.

    A series is a list: one count per bucket (not cumulative, so ``observe`` is
    one ``bisect`` and two additions), the +Inf bucket, then the sum. The
    cumulative counts of the format are computed when rendering.
    """

    kind = "histogram"

    def __init__(self, name: str, help: str, labels: Iterable[str] = (),
                 buckets: Iterable[float] = ()) -> None:
        super().__init__(name, help, labels)
        if "le" in self.labelnames:
            raise ValueError("a histogram cannot have a label named le")
        bounds = tuple(float(b) for b in buckets if not math.isinf(b))
        if not bounds or list(bounds) != sorted(set(bounds)):
            raise ValueError(f"{name}: buckets must be increasing: {bounds!r}")
        self.bounds = bounds
        self._le = [format_value(b) for b in bounds] + ["+Inf"]
        self.series: dict[LabelKey, list[float]] = {}
        if not self.labelnames:
            self.series[()] = self._empty()

    def _empty(self) -> list[float]:
        return [0] * (len(self.bounds) + 1) + [0.0]

    def _series(self) -> dict:
        return self.series

    def observe(self, key: LabelKey, value: float) -> None:
        series = self.series.get(key)
        if series is None:
            self._check(key)
            series = self.series[key] = self._empty()
        series[bisect_left(self.bounds, value)] += 1
        series[-1] += value

    def count(self, key: LabelKey = ()) -> int:
        series = self.series.get(key)
        return int(sum(series[:-1])) if series is not None else 0

    def sum(self, key: LabelKey = ()) -> float:
        series = self.series.get(key)
        return series[-1] if series is not None else 0.0

    def _render_samples(self, out: list[str]) -> None:
        name, le = self.name, self._le
        bucket, total_name, count_name = f"{name}_bucket{{", f"{name}_sum", f"{name}_count"
        for key, series in self.series.items():
            text = self._text(key)
            prefix = bucket + text + "," if key else bucket
            labels = "{" + text + "}" if key else ""
            cumulative = 0
            for position in range(len(le)):
                cumulative += series[position]
                out.append(f'{prefix}le="{le[position]}"}} {cumulative}')
            out.append(f"{total_name}{labels} {format_value(series[-1])}")
            out.append(f"{count_name}{labels} {cumulative}")


class Registry:
    """The metrics one ``/metrics`` answer renders, in the order they were made."""

    def __init__(self) -> None:
        self.metrics: dict[str, Metric] = {}

    def register(self, metric: Metric) -> Metric:
        if metric.name in self.metrics:
            raise ValueError(f"metric {metric.name} already registered")
        self.metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help: str, labels: Iterable[str] = ()) -> Counter:
        return self.register(Counter(name, help, labels))  # type: ignore[return-value]

    def gauge(self, name: str, help: str, labels: Iterable[str] = ()) -> Gauge:
        return self.register(Gauge(name, help, labels))  # type: ignore[return-value]

    def histogram(self, name: str, help: str, labels: Iterable[str] = (),
                  buckets: Iterable[float] = ()) -> Histogram:
        return self.register(Histogram(name, help, labels, buckets))  # type: ignore[return-value]

    def render(self) -> bytes:
        """The text exposition format 0.0.4, every line ending with a line feed."""
        out: list[str] = []
        for metric in self.metrics.values():
            metric.render(out)
        out.append("")
        return "\n".join(out).encode()


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """p50, p99 and max of a recent window of observations, in seconds."""

    count: int
    p50: float
    p99: float
    max: float


def summarize(values: Iterable[float]) -> LatencySummary | None:
    """Nearest-rank percentiles of ``values``; None when there are none."""
    ordered = sorted(values)
    if not ordered:
        return None

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p * len(ordered)) - 1)]

    return LatencySummary(len(ordered), rank(0.50), rank(0.99), ordered[-1])


# -- what the server exposes ------------------------------------------------------------------

SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REQUEST_BUCKETS = (0.0005, *SECONDS_BUCKETS)
TRACK_LABELS = ("point", "stream_index", "bitrate")

# The ``output`` label of requests: what a request asked for.
SMOOTH_MANIFEST = "smooth_manifest"
SMOOTH_FRAGMENT = "smooth_fragment"
HLS_PLAYLIST = "hls_playlist"
HLS_SEGMENT = "hls_segment"
DASH_MPD = "dash_mpd"
DASH_SEGMENT = "dash_segment"
KEY = "key"
ONDEMAND_MANIFEST = "ondemand_manifest"
ONDEMAND_FRAGMENT = "ondemand_fragment"
MANAGEMENT = "management"
INGEST = "ingest"

REGISTRY = Registry()
POINTS = REGISTRY.gauge(
    "smoothlive_points", "Publishing points by state.", ("state",))
INGEST_BYTES = REGISTRY.counter(
    "smoothlive_ingest_bytes_total",
    "Bytes of fragments (moof and mdat) received from encoders, per track.", TRACK_LABELS)
INGEST_FRAGMENTS = REGISTRY.counter(
    "smoothlive_ingest_fragments_total",
    "Fragments received from encoders, per track (duplicates included).", TRACK_LABELS)
INGEST_DUPLICATES = REGISTRY.counter(
    "smoothlive_ingest_duplicates_total",
    "Fragments dropped because the track already had one at that time "
    "(resends, redundant encoders).", TRACK_LABELS)
INGEST_LATE = REGISTRY.counter(
    "smoothlive_ingest_late_total",
    "Fragments stored after a later fragment of their track (out of order): listed "
    "in place when they fill a hole.", TRACK_LABELS)
PUBLISH_LATENCY = REGISTRY.histogram(
    "smoothlive_publish_latency_seconds",
    "From the last byte of a fragment received to its chunk listed in the manifest.",
    buckets=SECONDS_BUCKETS)
REQUESTS = REGISTRY.counter(
    "smoothlive_requests_total", "HTTP requests answered, by output and status.",
    ("output", "status"))
REQUEST_DURATION = REGISTRY.histogram(
    "smoothlive_request_duration_seconds",
    "Time in the handler, from dispatch to the last body message handed to the server "
    "(an ingest request lasts as long as the encoder's POST).",
    ("output",), REQUEST_BUCKETS)
ERRORS = REGISTRY.counter(
    "smoothlive_errors_total", "Management and ingest errors answered, by MPE_MGMT code.",
    ("code",))
ARCHIVE_FLUSH = REGISTRY.histogram(
    "smoothlive_archive_flush_seconds",
    "Duration of the once-a-second fsync of the archives being written.",
    buckets=SECONDS_BUCKETS)
# The request path's shortcuts: the counter's dict and each output's histogram series
# (request series are never removed, so holding them is safe).
_REQUEST_COUNTS = REQUESTS.values
_REQUEST_SERIES: dict[str, list[float]] = {}
_REQUEST_BOUNDS = REQUEST_DURATION.bounds


def observe_requests(output: str, status: int, count: int, seconds: float) -> None:
    """``count`` answered requests that took ``seconds`` in all (a front's cache
    hits, reported once a second): each is counted at their mean duration."""
    mean = seconds / count
    observe_request(output, status, mean)  # makes the series if they are new
    if count > 1:  # the rest at once: a front may report thousands a second
        _REQUEST_COUNTS[(output, status)] += count - 1
        series = _REQUEST_SERIES[output]
        series[bisect_left(_REQUEST_BOUNDS, mean)] += count - 1
        series[-1] += mean * (count - 1)


def observe_request(output: str, status: int, seconds: float) -> None:
    """Count one answered request: two dict lookups, a bisect, three additions."""
    key = (output, status)
    try:
        _REQUEST_COUNTS[key] += 1
    except KeyError:
        REQUESTS.inc(key)
    series = _REQUEST_SERIES.get(output)
    if series is None:
        REQUEST_DURATION.observe((output,), seconds)
        _REQUEST_SERIES[output] = REQUEST_DURATION.series[(output,)]
        return
    series[bisect_left(_REQUEST_BOUNDS, seconds)] += 1
    series[-1] += seconds
