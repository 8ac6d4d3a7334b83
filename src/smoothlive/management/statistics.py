"""The Statistics element of a running publishing point (sans-IO).

The shape is the one of the IIS "Query Publishing Point Statistics" page:
InputStreams (one per encoder stream: State, ArchiveFileName, Sources with
their type and IP, Sinks, Tracks with encoded and incoming bit rates, the
wait since the last fragment, the last fragment's timestamp and duration,
and the fragment request rate) and OutputStreams (one per StreamIndex, with
the timestamp of the last fragment output). The values are measured by the
live point; this module only writes them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr


@dataclass(frozen=True, slots=True)
class TrackStatistics:
    track_id: int
    name: str
    encoded_bitrate: int
    incoming_bitrate: int
    wait_seconds: float  # since the last fragment arrived
    fragment_timestamp: int
    fragment_duration: int
    request_rate: float


@dataclass(frozen=True, slots=True)
class InputStreamStatistics:
    stream_id: str
    state: str  # Started | Stopped
    archive_file_name: str
    source_ip: str
    sinks: tuple[str, ...]
    tracks: tuple[TrackStatistics, ...]
    source_type: str = "Push"


@dataclass(frozen=True, slots=True)
class OutputStreamStatistics:
    name: str
    last_timestamp: int


def _duration(seconds: float) -> str:
    """xs:duration with milliseconds, as IIS writes it: ``PT0.811S``."""
    return f"PT{max(seconds, 0.0):.3f}S"


def _rate(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


def render_statistics(
    inputs: list[InputStreamStatistics],
    outputs: list[OutputStreamStatistics],
    indent: str = "      ",
) -> str:
    """The ``<Statistics>`` element as text, for the body of an Atom entry."""
    i1, i2, i3, i4, i5, i6 = (indent + "  " * n for n in range(1, 7))
    parts = [f"{indent}<Statistics>\n", f"{i1}<InputStreams>\n"]
    for stream in inputs:
        parts += [
            f"{i2}<InputStream id={quoteattr(stream.stream_id)}>\n",
            f"{i3}<State>{stream.state}</State>\n",
            f"{i3}<ArchiveFileName>{escape(stream.archive_file_name)}</ArchiveFileName>\n",
            f"{i3}<Sources>\n",
            f'{i4}<Source name="HTTP {stream.source_type}">\n',
            f"{i5}<Properties>\n",
            f'{i6}<Property name="Source Type">{stream.source_type}</Property>\n',
            f'{i6}<Property name="Source IP">{escape(stream.source_ip)}</Property>\n',
            f"{i5}</Properties>\n",
            f"{i4}</Source>\n",
            f"{i3}</Sources>\n",
            f"{i3}<Sinks>\n",
            *(f"{i4}<Sink name={quoteattr(sink)} />\n" for sink in stream.sinks),
            f"{i3}</Sinks>\n",
            f"{i3}<Tracks>\n",
        ]
        for track in stream.tracks:
            parts += [
                f'{i4}<Track id="{track.track_id}">\n',
                f"{i5}<Name>{escape(track.name)}</Name>\n",
                f"{i5}<EncodedBitRate>{track.encoded_bitrate}</EncodedBitRate>\n",
                f"{i5}<IncomingBitRate>{track.incoming_bitrate}</IncomingBitRate>\n",
                f"{i5}<IncomingFragmentWaitTime>{_duration(track.wait_seconds)}"
                "</IncomingFragmentWaitTime>\n",
                f"{i5}<IncomingFragmentTimeStamp>{track.fragment_timestamp}"
                "</IncomingFragmentTimeStamp>\n",
                f"{i5}<IncomingFragmentDuration>{track.fragment_duration}"
                "</IncomingFragmentDuration>\n",
                f"{i5}<RequestRate>{_rate(track.request_rate)}</RequestRate>\n",
                f"{i4}</Track>\n",
            ]
        parts += [f"{i3}</Tracks>\n", f"{i2}</InputStream>\n"]
    parts += [f"{i1}</InputStreams>\n", f"{i1}<OutputStreams>\n"]
    for output in outputs:
        parts += [
            f"{i2}<OutputStream name={quoteattr(output.name)}>\n",
            f"{i3}<LastOutputFragmentTimestamp>{output.last_timestamp}"
            "</LastOutputFragmentTimestamp>\n",
            f"{i2}</OutputStream>\n",
        ]
    parts += [f"{i1}</OutputStreams>\n", f"{indent}</Statistics>\n"]
    return "".join(parts)


@dataclass
class RateMeter:
    """Events per second over a sliding window, in one-second buckets (bounded memory)."""

    window: int = 10
    buckets: deque = field(default_factory=deque)  # (second, count)

    def hit(self, now: float, count: float = 1) -> None:
        second = int(now)
        if self.buckets and self.buckets[-1][0] == second:
            self.buckets[-1][1] += count
        else:
            self.buckets.append([second, count])
        while self.buckets and self.buckets[0][0] <= second - self.window:
            self.buckets.popleft()

    def rate(self, now: float) -> float:
        second = int(now)
        total = sum(count for at, count in self.buckets if at > second - self.window)
        return total / self.window
