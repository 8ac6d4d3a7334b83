"""Metrics: the text exposition format exactly, and the latencies the presentation reports.

``parse_exposition`` is a small strict reader of the format (no client library
is installed); the end-to-end tests read the server's /metrics with it.
"""

from __future__ import annotations

import argparse
import bisect
import math
import re
import time
from dataclasses import replace
from pathlib import Path

import pytest

from smoothlive.config import add_arguments, from_arguments
from smoothlive.management.settings import Settings
from smoothlive.metrics import (
    INGEST_DUPLICATES,
    INGEST_FRAGMENTS,
    PUBLISH_LATENCY,
    REQUEST_DURATION,
    REQUESTS,
    Counter,
    Gauge,
    Histogram,
    Registry,
    escape_label,
    format_value,
    observe_request,
    observe_requests,
    summarize,
)
from smoothlive.pubpoint.live import LivePoint
from smoothlive.pubpoint.presentation import ManifestSettings, Presentation
from tests.unit.test_archive_writer import FRAGMENTS, TRACKS

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')
_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], text)


def parse_exposition(text: str) -> tuple[dict[str, str], Samples]:
    """(TYPE of each family, value of each sample keyed by name and sorted labels).

    Strict where it matters: the text ends with a line feed, every sample belongs to
    a family declared by TYPE (histograms by their _bucket/_sum/_count), the labels
    span the whole braces, a series appears once.
    """
    assert text.endswith("\n")
    types: dict[str, str] = {}
    samples: Samples = {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in _TYPES and name not in types, line
            types[name] = kind
            continue
        if line.startswith("#"):
            assert line.startswith("# HELP "), line
            continue
        match = _SAMPLE.match(line)
        assert match, line
        name, label_text, value = match.groups()
        family = name if name in types else re.sub(r"_(bucket|sum|count)$", "", name)
        assert family in types, f"sample of an undeclared family: {line}"
        labels: list[tuple[str, str]] = []
        if label_text:
            position = 0
            while position < len(label_text):
                found = _LABEL.match(label_text, position)
                assert found, f"bad labels: {line}"
                labels.append((found[1], _unescape(found[2])))
                position = found.end()
        key = (name, tuple(sorted(labels)))
        assert key not in samples, f"duplicate series: {line}"
        samples[key] = float(value)
    return types, samples


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


# -- the format ------------------------------------------------------------------------------

def test_counters_and_gauges_render_exactly():
    registry = Registry()
    requests = registry.counter("t_requests_total", "Requests \\ answered.\nBy status.",
                                ("output", "status"))
    requests.inc(("smooth_fragment", 200))
    requests.inc(("smooth_fragment", 200))
    requests.inc(("smooth_manifest", 404), 2.5)
    registry.gauge("t_up", "Up.").set((), 1)
    registry.counter("t_unused_total", "Labelled, never used.", ("code",))
    assert registry.render().decode() == (
        "# HELP t_requests_total Requests \\\\ answered.\\nBy status.\n"
        "# TYPE t_requests_total counter\n"
        't_requests_total{output="smooth_fragment",status="200"} 2\n'
        't_requests_total{output="smooth_manifest",status="404"} 2.5\n'
        "# HELP t_up Up.\n"
        "# TYPE t_up gauge\n"
        "t_up 1\n"
        "# HELP t_unused_total Labelled, never used.\n"
        "# TYPE t_unused_total counter\n")


def test_label_values_are_escaped_and_read_back():
    registry = Registry()
    points = registry.counter("t_total", "Per point.", ("point",))
    odd = 'a\\b"c\nd}e,f="g"'
    points.inc((odd,))
    text = registry.render().decode()
    assert 't_total{point="a\\\\b\\"c\\nd}e,f=\\"g\\""} 1\n' in text
    _, samples = parse_exposition(text)
    assert sample(samples, "t_total", point=odd) == 1
    assert escape_label("plain") == "plain"


def test_histogram_buckets_are_cumulative_and_upper_bounds_inclusive():
    registry = Registry()
    duration = registry.histogram("t_seconds", "Time.", ("output",), buckets=(0.1, 1))
    for value in (0.1, 0.5, 3):
        duration.observe(("m",), value)
    assert registry.render().decode() == (
        "# HELP t_seconds Time.\n"
        "# TYPE t_seconds histogram\n"
        't_seconds_bucket{output="m",le="0.1"} 1\n'
        't_seconds_bucket{output="m",le="1.0"} 2\n'
        't_seconds_bucket{output="m",le="+Inf"} 3\n'
        f't_seconds_sum{{output="m"}} {0.1 + 0.5 + 3}\n'
        't_seconds_count{output="m"} 3\n')
    assert duration.count(("m",)) == 3 and duration.sum(("m",)) == pytest.approx(3.6)


def test_an_unlabelled_histogram_renders_zeros_before_any_observation():
    registry = Registry()
    registry.histogram("t_flush_seconds", "Flush.", buckets=(0.001, 10))
    assert registry.render().decode().splitlines()[2:] == [
        't_flush_seconds_bucket{le="0.001"} 0',
        't_flush_seconds_bucket{le="10.0"} 0',
        't_flush_seconds_bucket{le="+Inf"} 0',
        "t_flush_seconds_sum 0.0",
        "t_flush_seconds_count 0",
    ]


def test_counters_count_and_series_can_be_removed():
    counter = Counter("t_total", "T.", ("point", "bitrate"))
    key = ("/a.isml", 300000)
    for _ in range(5):
        counter.inc(key)
    counter.inc(key, 1000)
    assert counter.get(key) == 1005
    counter.remove(key)
    assert counter.get(key) == 0 and counter.values == {}
    gauge = Gauge("t_g", "G.")
    gauge.inc()
    gauge.dec((), 3)
    assert gauge.get() == -2


def test_mistakes_are_refused():
    counter = Counter("t_total", "T.", ("a", "b"))
    with pytest.raises(ValueError):
        counter.inc(("only one",))
    with pytest.raises(ValueError):
        Histogram("t_h", "H.", ("le",), buckets=(1,))
    with pytest.raises(ValueError):
        Histogram("t_h", "H.", buckets=(1, 0.5))
    registry = Registry()
    registry.counter("t_total", "T.")
    with pytest.raises(ValueError):
        registry.gauge("t_total", "Again.")


def test_values_are_written_as_prometheus_reads_them():
    assert [format_value(v) for v in (3, 0.25, 1e-05, math.inf, -math.inf, math.nan)] == [
        "3", "0.25", "1e-05", "+Inf", "-Inf", "NaN"]


def test_ten_thousand_series_render_in_a_few_milliseconds():
    registry = Registry()
    bytes_total = registry.counter("t_ingest_bytes_total", "B.", ("point", "stream_index",
                                                                   "bitrate"))
    for n in range(10_000):
        bytes_total.inc((f"/live/p{n // 4}.isml", "video", 100_000 * (n % 4)), n)
    registry.render()  # the first render makes the label texts once
    started = time.perf_counter()
    body = registry.render()
    elapsed = time.perf_counter() - started
    print(f"10,000 series: {elapsed * 1000:.2f} ms, {len(body):,} bytes")
    assert body.count(b"\n") == 10_002
    assert elapsed < 0.05  # a few ms on the reference machine; generous for CI


def test_a_request_moves_its_counter_and_its_duration_histogram():
    before = REQUESTS.get(("unit_output", 200)), REQUEST_DURATION.count(("unit_output",))
    observe_request("unit_output", 200, 0.0004)
    observe_request("unit_output", 200, 0.003)  # the second goes by the shortcut
    observe_request("unit_output", 404, 20.0)
    assert REQUESTS.get(("unit_output", 200)) - before[0] == 2
    assert REQUESTS.get(("unit_output", 404)) == 1
    assert REQUEST_DURATION.count(("unit_output",)) - before[1] == 3
    series = REQUEST_DURATION.series[("unit_output",)]
    assert (series[0], series[REQUEST_DURATION.bounds.index(0.005)], series[-2]) == (1, 1, 1)


def test_a_fronts_hits_count_each_at_their_mean_duration():
    observe_requests("unit_hits", 200, 4, 0.008)  # new series: made by the first
    observe_requests("unit_hits", 200, 1, 0.5)
    assert REQUESTS.get(("unit_hits", 200)) == 5
    assert REQUEST_DURATION.count(("unit_hits",)) == 5
    series = REQUEST_DURATION.series[("unit_hits",)]
    assert series[bisect.bisect_left(REQUEST_DURATION.bounds, 0.002)] == 4  # 2 ms each
    assert abs(series[-1] - 0.508) < 1e-9  # the sum of durations


def test_percentiles_of_a_window():
    summary = summarize([0.001 * n for n in range(1, 101)])
    assert summary is not None
    assert (summary.count, summary.p50, summary.p99, summary.max) == (100, 0.05, 0.099, 0.1)
    assert summarize([]) is None


def test_the_metrics_token_is_a_setting_kept_out_of_repr(monkeypatch):
    monkeypatch.delenv("SMOOTHLIVE_METRICS_TOKEN", raising=False)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert from_arguments(parser.parse_args([])).metrics_token == ""
    config = from_arguments(parser.parse_args(["--metrics-token", "s3cret-token"]))
    assert config.metrics_token == "s3cret-token"
    assert "s3cret-token" not in repr(config)
    monkeypatch.setenv("SMOOTHLIVE_METRICS_TOKEN", "from-env")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert from_arguments(parser.parse_args([])).metrics_token == "from-env"


# -- the ingest-to-publish latency -----------------------------------------------------------

SECOND = 10_000_000
VIDEO = next(info for info in TRACKS if info.kind == "video")
VIDEO_FRAGMENTS = [d for d in FRAGMENTS if d.track_id == VIDEO.track_id]


def test_a_fragment_is_reported_when_its_chunk_is_listed(tmp_path: Path):
    """Two levels of one StreamIndex: a chunk is listed once both have it, and each
    stored fragment is reported then, with the time it arrived, once."""
    presentation = Presentation(ManifestSettings(), tmp_path / "spool")
    high = presentation.level_for(VIDEO)
    low = presentation.level_for(replace(VIDEO, bitrate=150_000))
    high.feeders = low.feeders = 1
    first, second = VIDEO_FRAGMENTS[:2]
    presentation.add_fragment(high, first, 0, arrived=1.0)
    presentation.add_fragment(high, second, 0, arrived=2.0)
    assert presentation.published == []  # the low level has neither yet
    presentation.add_fragment(low, first, 0, arrived=3.0)
    assert presentation.published == [(high, 1.0), (low, 3.0)]
    presentation.published.clear()
    presentation.add_fragment(low, first, 0, arrived=4.0)  # a duplicate: nothing new
    presentation.add_fragment(low, second, 0, arrived=5.0)
    assert presentation.published == [(high, 2.0), (low, 5.0)]
    assert high.fragments[first.time].arrived is None  # reported: forgotten


def test_a_fragment_for_a_chunk_already_listed_is_reported_when_stored(tmp_path: Path):
    presentation = Presentation(ManifestSettings(), tmp_path / "spool")
    high = presentation.level_for(VIDEO)
    high.feeders = 1
    for n, data in enumerate(VIDEO_FRAGMENTS[:3]):
        presentation.add_fragment(high, data, 0, arrived=float(n))
    presentation.published.clear()
    # A second level joins late and sends the first chunk, listed long ago.
    late = presentation.level_for(replace(VIDEO, bitrate=150_000))
    presentation.add_fragment(late, VIDEO_FRAGMENTS[0], 0, arrived=9.0)
    assert presentation.published == [(late, 9.0)]


def test_fragments_without_an_arrival_time_are_not_reported(tmp_path: Path):
    presentation = Presentation(ManifestSettings(), tmp_path / "spool")
    level = presentation.level_for(VIDEO)
    level.feeders = 1
    for data in VIDEO_FRAGMENTS:
        presentation.add_fragment(level, data, 0)
    assert presentation.published == []


async def test_a_live_point_observes_latencies_and_counts_per_track(tmp_path: Path):
    async def on_event(event, last_error) -> None:
        pass

    point = LivePoint("/unit/metrics.isml", Settings(), tmp_path / "spool", on_event)
    stream = point.open_stream("s", "127.0.0.1")
    point.movie(stream, TRACKS)
    before = PUBLISH_LATENCY.count()
    for data in FRAGMENTS:
        await point.fragment(stream, data, time.monotonic() - 0.002)
    await point.fragment(stream, FRAGMENTS[0], time.monotonic())  # a resend
    published = sum(len(i.chunks) for i in point.presentation.stream_indexes.values())
    assert PUBLISH_LATENCY.count() - before == published == len(FRAGMENTS)
    summary = point.latency_summary()
    assert summary is not None and summary.count == len(FRAGMENTS)
    assert 0.002 <= summary.p50 <= summary.max < 1.0
    key = ("/unit/metrics.isml", VIDEO.name, VIDEO.bitrate)
    assert INGEST_FRAGMENTS.get(key) == len(VIDEO_FRAGMENTS) + (
        FRAGMENTS[0].track_id == VIDEO.track_id)
    assert sum(INGEST_DUPLICATES.values.get(("/unit/metrics.isml", t.name, t.bitrate), 0)
               for t in TRACKS) == 1
    point.close()  # the point's series go with it
    assert INGEST_FRAGMENTS.get(key) == 0
