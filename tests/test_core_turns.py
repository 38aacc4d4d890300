import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voice.core.events import SpeechDiscarded, SpeechStarted, SpeechStopped, TurnEvent
from voice.core.turns import TurnDetector, TurnState

FRAME_BYTES = 640  # 20 ms of 16 kHz PCM16


def frame(n: int) -> bytes:
    """A frame whose bytes say which frame it is, so audio can be checked by content."""
    return n.to_bytes(4, "big") * (FRAME_BYTES // 4)


def frames(first: int, last: int) -> bytes:
    """Frames ``first`` .. ``last - 1`` as one buffer."""
    return b"".join(frame(n) for n in range(first, last))


class Feeder:
    def __init__(self, detector: TurnDetector) -> None:
        self.detector = detector
        self.count = 0

    def state(self) -> TurnState:
        # A call, so that mypy does not keep a narrowed state across feed() calls.
        return self.detector.state

    def feed(self, pattern: str) -> list[TurnEvent]:
        """``pattern``: one character per frame, ``v`` voiced, ``.`` unvoiced."""
        events: list[TurnEvent] = []
        for ch in pattern:
            events += self.detector.feed(frame(self.count), ch == "v")
            self.count += 1
        return events


def stopped(event: TurnEvent) -> SpeechStopped:
    assert isinstance(event, SpeechStopped)
    return event


def make(**kwargs) -> Feeder:
    return Feeder(TurnDetector(**kwargs))


def test_silence_emits_nothing_and_advances_the_audio_clock():
    f = make()
    assert f.feed("." * 50) == []
    assert f.state() is TurnState.SILENCE
    assert f.detector.now_ms == 1000


def test_speech_starts_after_start_ms_at_the_onset_of_the_run():
    f = make()
    f.feed("." * 10)
    assert f.feed("vvvv") == []
    assert f.state() is TurnState.STARTING
    assert f.feed("v") == [SpeechStarted(at_ms=200)]
    assert f.state() is TurnState.SPEECH


def test_a_voiced_run_shorter_than_start_ms_is_not_speech():
    f = make()
    assert f.feed("vvvv.vvvv.vv") == []
    assert f.state() is TurnState.STARTING
    assert f.feed(".") == []
    assert f.state() is TurnState.SILENCE


def test_turn_ends_after_hangover_with_pre_roll_and_timings():
    f = make()
    f.feed("." * 30)
    events = f.feed("v" * 20) + f.feed("." * 24)
    assert events == [SpeechStarted(at_ms=600)]
    assert f.state() is TurnState.ENDING
    end = stopped(*f.feed("."))
    assert end.at_ms == f.detector.now_ms == (30 + 20 + 25) * 20
    assert end.speech_end_ms == (30 + 20) * 20
    assert end.at_ms - end.speech_end_ms == 500
    assert not end.cut
    # 300 ms of pre-roll (frames 15..29), then onset through declaration.
    assert end.audio == frames(15, 75)
    assert f.state() is TurnState.SILENCE


def test_pre_roll_is_whatever_audio_there_was_before_an_early_onset():
    f = make()
    f.feed("...")
    events = f.feed("v" * 20 + "." * 25)
    assert stopped(events[-1]).audio == frames(0, 48)


def test_pre_roll_includes_an_aborted_start():
    f = make()
    f.feed("." * 20 + "vv.")
    events = f.feed("v" * 20 + "." * 25)
    assert events[0] == SpeechStarted(at_ms=23 * 20)
    assert stopped(events[-1]).audio == frames(23 - 15, 23 + 45)


def test_voice_during_ending_returns_to_speech_and_restarts_the_hangover():
    f = make()
    f.feed("v" * 20 + "." * 24)
    assert f.feed("v") == []
    assert f.state() is TurnState.SPEECH
    assert f.feed("." * 24) == []
    end = stopped(*f.feed("."))
    assert end.speech_end_ms == 45 * 20
    assert end.audio == frames(0, 70)


def test_too_little_voiced_audio_is_discarded():
    f = make()
    events = f.feed("." * 10 + "v" * 5 + "." * 25)
    assert events == [SpeechStarted(at_ms=200), SpeechDiscarded(at_ms=800)]
    assert f.state() is TurnState.SILENCE


def test_voiced_audio_is_counted_across_pauses():
    f = make()
    events = f.feed("v" * 5 + "." * 10 + "v" * 5 + "." * 25)
    assert isinstance(events[-1], SpeechStopped)


def test_max_turn_cuts_and_a_caller_still_talking_opens_a_new_turn_at_once():
    f = make(max_turn_s=2.0)  # 100 frames
    f.feed("." * 20)
    assert f.feed("v" * 99) == [SpeechStarted(at_ms=400)]
    cut, started = f.feed("v")
    assert isinstance(cut, SpeechStopped) and cut.cut
    assert cut.at_ms == cut.speech_end_ms == 2400
    assert cut.audio == frames(5, 120)
    assert started == SpeechStarted(at_ms=2400)
    assert f.state() is TurnState.SPEECH
    # The next turn carries on from the cut, without pre-roll: no frame is sent twice.
    end = stopped(*f.feed("v" * 30 + "." * 25))
    assert not end.cut
    assert end.audio == frames(120, 175)


def test_a_cut_during_a_pause_returns_to_silence():
    f = make(max_turn_s=2.0)
    events = f.feed("v" * 90 + "." * 10)
    assert isinstance(events[-1], SpeechStopped) and events[-1].cut
    assert f.state() is TurnState.SILENCE
    assert f.feed("." * 30) == []


def test_a_short_tail_after_a_cut_is_discarded():
    f = make(max_turn_s=2.0)
    f.feed("v" * 100)
    assert f.feed("vvv" + "." * 25) == [SpeechDiscarded(at_ms=(103 + 25) * 20)]


def test_memory_is_bounded_by_pre_roll_and_max_turn():
    f = make(max_turn_s=2.0)
    f.feed("." * 30_000)  # ten minutes of silence
    events = f.feed("v" * 100)
    assert len(stopped(events[1]).audio) == (15 + 100) * FRAME_BYTES


def test_durations_round_up_to_whole_frames():
    f = make(hangover_ms=510, start_ms=30)
    assert f.feed("v") == []
    assert f.feed("v") == [SpeechStarted(at_ms=0)]
    assert f.feed("v" * 10 + "." * 25) == []
    assert isinstance(f.feed(".")[0], SpeechStopped)


def test_other_frame_sizes_keep_the_clock_in_milliseconds():
    f = make(frame_ms=10)
    events = f.feed("." * 5 + "v" * 30 + "." * 50)
    assert events[0] == SpeechStarted(at_ms=50)
    assert stopped(events[1]).speech_end_ms == 350
    assert stopped(events[1]).at_ms == 850


def test_reset_drops_the_open_turn_and_the_pre_roll_but_not_the_clock():
    f = make()
    f.feed("." * 20 + "v" * 10)
    f.detector.reset()
    assert f.state() is TurnState.SILENCE
    assert f.detector.now_ms == 600
    assert f.feed("." * 30) == []
    f.detector.reset()
    events = f.feed("v" * 20 + "." * 25)
    assert events[0] == SpeechStarted(at_ms=1200)
    assert stopped(events[1]).audio == frames(60, 105)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"frame_ms": 0},
        {"start_ms": 0},
        {"hangover_ms": -20},
        {"min_speech_ms": 0},
        {"max_turn_s": 0.0},
        {"preroll_ms": 180},
    ],
)
def test_invalid_durations_are_rejected(kwargs):
    with pytest.raises(ValueError):
        TurnDetector(**kwargs)


def test_state_changes_are_logged_at_debug(caplog):
    caplog.set_level(logging.DEBUG, logger="voice.core.turns")
    f = make()
    f.feed("v" * 5)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["turn SILENCE -> STARTING at 20 ms", "turn STARTING -> SPEECH at 100 ms"]


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 60)), max_size=60))
def test_any_vad_sequence_gives_well_formed_turns(runs):
    f = make(max_turn_s=1.5)
    events = []
    for voiced, length in runs:
        events += f.feed(("v" if voiced else ".") * length)
    open_turn = None
    last_at = 0
    for event in events:
        assert event.at_ms >= last_at
        last_at = event.at_ms
        if isinstance(event, SpeechStarted):
            assert open_turn is None
            open_turn = event
        else:
            assert open_turn is not None
            if isinstance(event, SpeechStopped):
                assert open_turn.at_ms < event.speech_end_ms <= event.at_ms
                assert len(event.audio) <= (15 + 75) * FRAME_BYTES
            open_turn = None
    assert (open_turn is not None) == (f.state() in (TurnState.SPEECH, TurnState.ENDING))
