"""Coverage-guided fuzzing of the ingest parser with atheris (libFuzzer) - optional.

Not part of ``make test``: atheris is not a dependency of the project. To run it::

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/atheris_ingest.py -runs=100000        # or -max_total_time=600
    .venv/bin/python fuzz/atheris_ingest.py var/fuzz-corpus     # keep what it finds

The ffmpeg captures of tests/fixtures/ingest are the seeds (``-seed_inputs``),
whether or not a corpus directory is given. Any libFuzzer flag may be given;
``-max_len`` defaults to 256 KiB so that whole captures fit.

Each input is a body; its CRC chooses the chunk size it is fed in and the
parser's limits, so the seeds are the captures as they are. What is checked
is what tests/unit/test_fuzz_ingest.py checks: only BoxError comes out of
``feed`` and ``close``, ``buffered`` stays under the limit of the box in
progress, and every fragment the parser accepts has times that fit 64 bits
and a moof the presentation can rewrite. Anything else is a crash that
libFuzzer reports with the input that caused it (about 700 inputs a second
on one core).
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from smoothlive.media.boxes import BoxError
    from smoothlive.media.fragments import retimed, with_lookahead
    from smoothlive.media.ingest import Fragment, IngestParser, Movie

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = ROOT / "tests" / "fixtures" / "ingest"
LIMITS = ((1 << 20, 64 << 20), (4096, 65536), (2048, 45_000))
SIGNED_64 = range(-(1 << 63), 1 << 63)


def check(events: list) -> None:
    for event in events:
        if isinstance(event, Movie):
            assert all(0 < t.timescale <= 0xFFFFFFFF for t in event.tracks)
        elif isinstance(event, Fragment):
            data = event.data
            assert data.duration >= 0
            assert data.time in SIGNED_64 and data.time + data.duration in SIGNED_64
            with_lookahead(data.moof, [])
            retimed(data.moof, max(0, data.time), data.duration)


def test_one_input(body: bytes) -> None:
    crc = zlib.crc32(body)
    chunk = 1 + crc % 70_000
    max_box, max_mdat = LIMITS[(crc >> 20) % len(LIMITS)]
    parser = IngestParser(max_box_size=max_box, max_mdat_size=max_mdat)
    events: list = []
    try:
        for position in range(0, len(body), chunk):
            events += parser.feed(body[position : position + chunk])
            limit = max_mdat if parser._box is not None and parser._box.type == b"mdat" \
                else max_box
            assert parser.buffered <= limit + 32, (parser.buffered, limit)
        events += parser.close()
    except BoxError as exc:
        events += getattr(exc, "events", [])
    check(events)


def main() -> None:
    args = list(sys.argv)
    if not any(arg.startswith("-max_len=") for arg in args):
        args.append("-max_len=262144")
    if not any(arg.startswith("-seed_inputs=") for arg in args):
        args.append("-seed_inputs=" + ",".join(str(p) for p in sorted(CAPTURES.glob("*.ismv"))))
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
