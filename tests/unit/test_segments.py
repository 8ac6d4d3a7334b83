"""HLS segmentation: whole fragments to SegmentLength, discontinuities, the sliding window."""

from __future__ import annotations

from smoothlive.outputs.segments import Segmenter, chunks_within, segments_of

S = 10_000_000  # one second in Smooth ticks


def seconds(segments):
    return [(s.sequence, s.start // S, s.end // S, s.discontinuity) for s in segments]


def test_whole_fragments_make_segments_of_the_target_length():
    segmenter = Segmenter(4 * S, S)
    for t in range(10):
        segmenter.add(t * S, S)
    # The open segment (8..10) is not listed while live: it can still grow.
    assert seconds(segmenter.segments()) == [(0, 0, 4, False), (1, 4, 8, False)]
    segmenter.finish()
    assert seconds(segmenter.segments())[-1] == (2, 8, 10, False)


def test_fragments_longer_than_the_target_are_one_segment_each():
    segmenter = segments_of([(t * 2 * S, 2 * S) for t in range(3)], S, S)
    assert seconds(segmenter.segments()) == [(0, 0, 2, False), (1, 2, 4, False), (2, 4, 6, False)]


def test_an_encoder_restart_and_a_gap_are_discontinuities():
    chunks = [(0, S), (S, S), (2 * S, S), (10 * S, S), (11 * S, S), (20 * S, S)]
    segmenter = segments_of(chunks, 10 * S, S, discontinuities={10 * S})
    assert seconds(segmenter.segments()) == [
        (0, 0, 3, False), (1, 10, 12, True), (2, 20, 21, True)]


def test_rounding_is_not_a_gap():
    chunks = [(0, S + 5), (S + 3, S), (2 * S + 4, S)]  # sub-millisecond jitter
    segmenter = segments_of(chunks, 10 * S, S)
    assert seconds(segmenter.segments()) == [(0, 0, 3, False)]


def test_the_window_slides_sequences_stay_and_dropped_discontinuities_count():
    segmenter = Segmenter(2 * S, S)
    for t in [0, 1, 2, 3, 10, 11, 12, 13, 14, 15]:
        segmenter.add(t * S, S, discontinuity=t == 10)
    assert [s.sequence for s in segmenter.segments()] == [0, 1, 2, 3]
    segmenter.trim(11 * S)
    assert [s.sequence for s in segmenter.segments()] == [3]
    assert segmenter.dropped_discontinuities == 1
    assert segmenter.find(12 * S).sequence == 3 and segmenter.find(13 * S) is None


def test_a_resent_chunk_changes_nothing():
    segmenter = Segmenter(2 * S, S)
    for t in [0, 1, 2, 1, 3, 4]:
        segmenter.add(t * S, S)
    assert seconds(segmenter.segments()) == [(0, 0, 2, False), (1, 2, 4, False)]


def test_audio_chunks_follow_the_video_boundaries():
    audio = [(0, S + 26_667), (S + 26_667, S), (2 * S + 26_667, S), (3 * S + 26_667, S)]
    assert chunks_within(audio, 0, 2 * S) == audio[:2]
    assert chunks_within(audio, 2 * S, 4 * S) == audio[2:]
