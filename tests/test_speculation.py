"""Speculation on scripted timelines: work started at a pause, cancelled when the caller
goes on, committed when the pause ends the turn; nothing played or added to the dialog
before that. The gateway is the in-process SimulatedGateway; the sink a real PacedPlayout.
"""

import asyncio

from tests.test_pipeline import FAST, Harness, Recording, ScriptedVad, talk
from voice.config import Settings
from voice.core.events import (
    ResponseDone,
    ResponseInterrupted,
    ResponseStarted,
    SpeechStopped,
    Transcript,
)
from voice.gateway.simulated import SimulatedGateway

FRAME = bytes(640)  # 20 ms at 16 kHz


def settings(mode="full", **turn) -> Settings:
    return Settings.model_validate({"turn": {"speculation": mode, **turn}})


async def pause(session, vad, ms):
    """Silence in real time, so the gateway works while the caller pauses."""
    vad.speech = False
    for _ in range(ms // 20):
        await session.feed(FRAME)
        await asyncio.sleep(0.02)


def nothing_committed(h) -> None:
    assert h.sent == []
    assert not h.of(ResponseStarted) and not h.of(Transcript)
    assert not h.session.dialog.awaiting_reply
    assert [m.role for m in h.session.dialog.messages()] == ["system"]


async def test_a_pause_speculates_and_resuming_cancels_it_at_the_gateway():
    slow_chat = FAST.model_copy(update={"ttft_ms": 5000, "transcripts": ["hello there"]})
    sim = SimulatedGateway(slow_chat)
    vad = ScriptedVad()
    async with Harness(sim, settings("full"), vad=vad) as h:
        await talk(h.session, vad, speech_ms=600, silence_ms=220)
        await h.until(lambda: sim.in_flight["chat"] == 1)
        nothing_committed(h)
        await talk(h.session, vad, speech_ms=400)  # the caller goes on
        assert sim.in_flight == dict.fromkeys(sim.in_flight, 0)
        assert sim.requests["chat"] == 1
        nothing_committed(h)

        sim.update(FAST.model_copy(update={"transcripts": ["hello there"]}))
        await talk(h.session, vad, silence_ms=600)
        done = await h.reply_done()

    assert done.status == "completed"
    assert [t.text for t in h.of(Transcript)] == ["hello there"]  # the committed one only
    assert [m.content for m in h.session.dialog.messages() if m.role == "user"] == ["hello there"]
    assert len(h.of(SpeechStopped)) == 1  # one turn
    assert done.speculation.pauses == 2
    # The words before the first pause were kept, and the second part continued them.
    assert done.speculation.cancelled == {"asr": 0, "llm": 1, "tts": 0}
    assert done.speculation.committed == {"asr": 2, "llm": 1, "tts": 1}
    assert len(done.record.calls["asr"]) == 2
    assert sim.requests["transcribe"] == 1 + 1  # after update(): the counts restart


async def test_nothing_plays_and_the_dialog_waits_until_the_pause_ends_the_turn():
    unfinished = FAST.model_copy(update={"transcripts": ["I'd like to book a table for"]})
    gateway = Recording(SimulatedGateway(unfinished))
    vad = ScriptedVad()
    turn = {"hangover_min_ms": 250, "hangover_max_ms": 900}
    async with Harness(gateway, settings("full", **turn), vad=vad) as h:
        await talk(h.session, vad, speech_ms=600)
        await pause(h.session, vad, 600)  # the words trail off: wait up to 900 ms
        # The reply's chat and its first sentence's speech are under way...
        assert [k for _, k, _ in gateway.log].count("speak.start") == 1
        nothing_committed(h)  # ...but nothing is played or added before the turn ends
        await pause(h.session, vad, 320)
        [stopped] = h.of(SpeechStopped)
        assert stopped.at_ms - stopped.speech_end_ms == 900
        done = await h.reply_done()
    assert done.status == "completed"
    assert done.speculation.committed == {"asr": 1, "llm": 1, "tts": 1}
    assert done.speculation.cancelled == {"asr": 0, "llm": 0, "tts": 0}
    # The speculative speech was played, not asked for again.
    spoken = [text for _, k, text in gateway.log if k == "speak.start"]
    assert len(spoken) == len(set(spoken)) == 3
    assert len([k for _, k, _ in gateway.log if k == "chat.start"]) == 1
    assert done.record.calls["tts"][0].attempts == 1


async def test_finished_words_end_the_turn_after_the_short_pause():
    gateway = SimulatedGateway(FAST.model_copy(update={"transcripts": ["What time is it?"]}))
    vad = ScriptedVad()
    turn = {"pause_ms": 200, "hangover_min_ms": 300, "hangover_max_ms": 900}
    async with Harness(gateway, settings("llm", **turn), vad=vad) as h:
        await talk(h.session, vad, speech_ms=600)
        await pause(h.session, vad, 500)
        [stopped] = h.of(SpeechStopped)
        # the verdict came ~5 ms after the 200 ms pause: the floor decides
        assert stopped.at_ms - stopped.speech_end_ms == 300
        done = await h.reply_done()
    assert done.speculation.committed == {"asr": 1, "llm": 1, "tts": 0}
    assert done.timings.vad_ms == 300


async def test_finished_words_wait_for_the_reply_to_be_ready_to_play():
    # The chat takes ~400 ms to its first sentence: a turn ended at the 300 ms floor would
    # only wait in silence, so it ends when the sentence is there.
    slow_chat = FAST.model_copy(update={"ttft_ms": 400, "transcripts": ["What time is it?"]})
    gateway = SimulatedGateway(slow_chat)
    vad = ScriptedVad()
    turn = {"pause_ms": 200, "hangover_min_ms": 300, "hangover_max_ms": 1500}
    async with Harness(gateway, settings("llm", **turn), vad=vad) as h:
        await talk(h.session, vad, speech_ms=600)
        await pause(h.session, vad, 500)
        assert not h.of(SpeechStopped)  # past the floor, the reply not ready
        await pause(h.session, vad, 500)
        [stopped] = h.of(SpeechStopped)
        done = await h.reply_done()
    waited = stopped.at_ms - stopped.speech_end_ms
    # 200 ms pause + ~5 ms ASR + 400 ms to the first token + its words, in 20 ms frames
    assert 600 <= waited <= 900
    assert done.timings.vad_ms == waited
    assert done.timings.first_sentence_ms is not None and done.timings.first_sentence_ms < 100
    assert done.speculation.committed == {"asr": 1, "llm": 1, "tts": 0}


async def test_a_caller_who_goes_on_while_the_reply_is_prepared_is_not_cut_off():
    slow_chat = FAST.model_copy(update={"ttft_ms": 600, "transcripts": ["I need a taxi"]})
    gateway = SimulatedGateway(slow_chat)
    vad = ScriptedVad()
    turn = {"pause_ms": 150, "hangover_min_ms": 250, "hangover_max_ms": 900}

    async def turns(**hold):
        async with Harness(gateway, settings("llm", **turn, **hold), vad=vad) as h:
            await talk(h.session, vad, speech_ms=600)
            await pause(h.session, vad, 400)  # past the floor: the words read finished
            await talk(h.session, vad, speech_ms=400)  # "...to the airport"
            await pause(h.session, vad, 1000)
            await h.reply_done()
            return h.of(SpeechStopped)

    assert len(await turns()) == 1
    assert len(await turns(hold_until_ready=False)) == 2  # cut at the floor


async def test_the_hold_ends_at_the_longest_wait():
    stuck = FAST.model_copy(update={"ttft_ms": 5000, "transcripts": ["What time is it?"]})
    vad = ScriptedVad()
    turn = {"pause_ms": 200, "hangover_min_ms": 300, "hangover_max_ms": 700}
    async with Harness(SimulatedGateway(stuck), settings("llm", **turn), vad=vad) as h:
        await talk(h.session, vad, speech_ms=600)
        await pause(h.session, vad, 800)
        [stopped] = h.of(SpeechStopped)
    assert stopped.at_ms - stopped.speech_end_ms == 700


async def test_full_holds_until_the_first_audio():
    slow_speech = FAST.model_copy(update={"tts_ttfb_ms": 500, "transcripts": ["Hi there."]})
    vad = ScriptedVad()
    turn = {"pause_ms": 200, "hangover_min_ms": 300, "hangover_max_ms": 1500}
    async with Harness(SimulatedGateway(slow_speech), settings("full", **turn), vad=vad) as h:
        await talk(h.session, vad, speech_ms=600)
        await pause(h.session, vad, 1200)
        [stopped] = h.of(SpeechStopped)
        done = await h.reply_done()
    assert 700 <= stopped.at_ms - stopped.speech_end_ms <= 1000
    assert done.timings.tts_ttfb_ms is not None and done.timings.tts_ttfb_ms < 100
    assert done.speculation.committed == {"asr": 1, "llm": 1, "tts": 1}


async def test_asr_mode_starts_no_chat_before_the_turn_ends():
    unfinished = FAST.model_copy(update={"transcripts": ["so the thing is"]})
    sim = SimulatedGateway(unfinished)
    vad = ScriptedVad()
    async with Harness(sim, settings("asr"), vad=vad) as h:
        await talk(h.session, vad, speech_ms=600)
        await pause(h.session, vad, 400)
        assert sim.requests["transcribe"] == 1 and sim.requests["chat"] == 0
        await pause(h.session, vad, 600)
        done = await h.reply_done()
    assert sim.requests["transcribe"] == 1  # the speculative transcription is the turn's
    assert done.speculation.committed == {"asr": 1, "llm": 0, "tts": 0}


async def test_off_waits_the_fixed_hangover_and_speculates_nothing():
    sim = SimulatedGateway(FAST)
    vad = ScriptedVad()
    async with Harness(sim, settings("off", hangover_ms=500), vad=vad) as h:
        await talk(h.session, vad, speech_ms=600, silence_ms=480)
        await asyncio.sleep(0.1)
        assert sim.requests["transcribe"] == 0
        await talk(h.session, vad, silence_ms=40)
        done = await h.reply_done()
    assert done.speculation.pauses == 0
    assert done.timings.vad_ms == 500


async def test_a_failed_speculative_transcription_is_done_again_when_the_turn_ends():
    from voice.gateway.simulated import Fault

    failing = FAST.model_copy(
        update={"faults": [Fault(route="transcribe", kind="status", status=500, count=1)]}
    )
    sim = SimulatedGateway(failing)
    vad = ScriptedVad()
    async with Harness(sim, settings("full"), vad=vad) as h:
        await talk(h.session, vad, speech_ms=600)
        await pause(h.session, vad, 700)
        done = await h.reply_done()
    [stopped] = h.of(SpeechStopped)
    assert stopped.at_ms - stopped.speech_end_ms == 500  # no verdict: the fixed hangover
    assert done.status == "completed"
    assert sim.requests["transcribe"] == 2
    assert done.speculation.cancelled["asr"] == 1


async def test_a_barge_in_then_a_pause_speculates_on_the_new_turn_only():
    replies = ["A first answer that takes a while to say. With a second sentence too."]
    transcripts = ["first question", "and the", "second one?"]
    sim = SimulatedGateway(FAST.model_copy(update={"transcripts": transcripts, "replies": replies}))
    vad = ScriptedVad()
    async with Harness(sim, settings("full"), vad=vad) as h:
        await talk(h.session, vad, speech_ms=600)
        await pause(h.session, vad, 400)
        await h.until(lambda: len(h.sent) > 5)  # the first reply is playing
        await talk(h.session, vad, speech_ms=300)  # barge-in
        await h.until(lambda: bool(h.of(ResponseInterrupted)))
        await pause(h.session, vad, 220)  # speculating on the new turn...
        await talk(h.session, vad, speech_ms=200)  # ...which goes on
        await pause(h.session, vad, 500)
        second = await h.reply_done(2)
    first = h.of(ResponseDone)[0]
    assert first.status == "interrupted"
    assert second.status == "completed"
    assert second.speculation.pauses == 2
    assert second.speculation.cancelled["asr"] == 0
    assert second.speculation.committed["asr"] == 2
    users = [m.content for m in h.session.dialog.messages() if m.role == "user"]
    assert users == ["first question", "and the second one?"]  # the kept words and the rest


async def test_hanging_up_while_speculating_cancels_every_request():
    slow = FAST.model_copy(update={"ttft_ms": 5000, "transcripts": ["and then"]})
    sim = SimulatedGateway(slow)
    vad = ScriptedVad()
    async with Harness(sim, settings("full"), vad=vad) as h:
        await talk(h.session, vad, speech_ms=600, silence_ms=220)
        await h.until(lambda: sim.in_flight["chat"] == 1)
    # Harness exit: the session closed, as when the caller hangs up.
    assert sim.in_flight == dict.fromkeys(sim.in_flight, 0)


async def test_a_gap_inside_a_phrase_throws_its_words_away_and_hears_the_turn_whole():
    async def one_turn(split_ms: int):
        sim = SimulatedGateway(FAST.model_copy(update={"transcripts": ["hello there"]}))
        vad = ScriptedVad()
        turn = {"pause_ms": 60, "split_ms": split_ms}
        async with Harness(sim, settings("llm", **turn), vad=vad) as h:
            await talk(h.session, vad, speech_ms=600)
            await pause(h.session, vad, 100)  # a stop's closure, not a pause
            await talk(h.session, vad, speech_ms=400)
            await pause(h.session, vad, 1000)
            done = await h.reply_done()
        return done, sim.requests["transcribe"]

    done, uploads = await one_turn(split_ms=200)
    assert done.status == "completed"
    assert len(done.record.calls["asr"]) == 1  # one part: the whole turn
    assert done.speculation.cancelled["asr"] == 1 and done.speculation.committed["asr"] == 1
    assert uploads == 2

    kept, _ = await one_turn(split_ms=0)  # every pause keeps its words, as before
    assert len(kept.record.calls["asr"]) == 2
    assert kept.speculation.cancelled["asr"] == 0


async def test_a_gap_thrown_away_after_a_pause_kept_leaves_the_kept_words_alone():
    # Slow enough that the kept part is still being transcribed when the gap's is dropped.
    slow_asr = FAST.model_copy(update={"transcripts": ["hello there"], "asr_ms": 1500})
    sim = SimulatedGateway(slow_asr)
    vad = ScriptedVad()
    turn = {"pause_ms": 60, "hangover_min_ms": 600}  # a pause of 300 ms does not end it
    async with Harness(sim, settings("llm", **turn), vad=vad) as h:
        await talk(h.session, vad, speech_ms=600)
        await pause(h.session, vad, 300)  # a real pause: its words are kept
        await talk(h.session, vad, speech_ms=400)
        await pause(h.session, vad, 100)  # a gap: its part is thrown away
        await talk(h.session, vad, speech_ms=400)
        await pause(h.session, vad, 1000)
        done = await h.reply_done()
    assert done.status == "completed"  # the kept part was not cancelled with the gap's
    assert len(done.record.calls["asr"]) == 2  # the kept words, then the rest in one part
    assert done.speculation.cancelled["asr"] == 1 and done.speculation.committed["asr"] == 2
