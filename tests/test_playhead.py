"""The caller-side playback model: sync, clock passed in."""

from pytest import approx

from voice.core.playhead import Playhead


def test_audio_counts_as_played_only_as_real_time_passes():
    head = Playhead()
    head.sent(200, now=10.0)
    assert head.buffered_ms(10.0) == approx(200)
    assert head.played_ms(10.0) == approx(0)
    assert head.played_ms(10.1) == approx(100)
    assert head.played_ms(11.0) == approx(200)


def test_underrun_restarts_playback_when_audio_arrives():
    head = Playhead()
    head.sent(100, now=0.0)
    head.sent(100, now=0.5)  # the buffer ran dry at 0.1; this chunk plays 0.5..0.6
    assert head.played_ms(0.55) == approx(150)
    assert head.buffered_ms(0.55) == approx(50)


def test_clear_keeps_only_what_was_played():
    head = Playhead()
    head.sent(1000, now=0.0)
    head.clear(now=0.3)
    assert head.played_ms(5.0) == approx(300)
    assert head.sent_ms == approx(300)
    assert head.buffered_ms(0.3) == approx(0)


def test_reset_starts_a_new_response_from_zero():
    head = Playhead()
    head.sent(100, now=0.0)
    head.reset()
    assert head.played_ms(1.0) == approx(0)
    head.sent(40, now=2.0)
    assert head.played_ms(2.02) == approx(20)
