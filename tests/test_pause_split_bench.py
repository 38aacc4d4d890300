"""benchmarks/pause_split.py cuts a turn where a session would: at a pause the caller went
on after, and nowhere else."""

from benchmarks.pause_split import recordings, turns
from benchmarks.vad_tail import at_rate

BY_NAME = {r.name: r for r in recordings()}


def test_a_turn_is_cut_inside_its_inserted_pause_at_either_rate():
    clip = BY_NAME["p01_table_for"]  # 0.45 s of silence from 1.82 s, after "for"
    for rate in (16_000, 8_000):
        [(cuts, audio)] = turns(at_rate(clip.pcm, rate), rate, pause_ms=150)
        assert len(cuts) == 1
        # The cut is 150 ms after the last voiced frame, inside the pause. The turn's audio
        # starts with 300 ms of pre-roll before the onset at 0.32 s.
        cut_s = cuts[0] / (rate * 2) - 0.3 + 0.32
        assert 1.82 < cut_s < 2.26, cut_s
        assert len(audio) > cuts[0]


def test_a_question_said_without_a_pause_is_not_cut():
    [(cuts, _)] = turns(BY_NAME["q01_what_time"].pcm, 16_000, pause_ms=150)
    assert cuts == []


def test_gaps_inside_a_phrase_cut_only_when_every_gap_may():
    clip = BY_NAME["q09_cancelled_flight"]  # one sentence: gaps of 60-100 ms, no pause
    counts = [sum(len(c) for c, _ in turns(clip.pcm, 16_000, p, 0)) for p in (60, 100, 150)]
    assert counts[0] > counts[1] > counts[2] == 0, counts
    assert turns(clip.pcm, 16_000, 60) == turns(clip.pcm, 16_000, 150)  # VOICE_TURN_SPLIT_MS
