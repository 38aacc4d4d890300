"""Speculation through real sockets: the native WebSocket, Twilio Media Streams and WebRTC
on 127.0.0.1, the simulated gateway over real HTTP. A caller pauses mid-sentence, goes on, and
ends: one turn, one reply, the pause's requests cancelled at the gateway and counted.
"""

import httpx

from tests.samples import manifest, recording
from tests.stack import SIMULATION, app_stack
from tests.telephony_stack import speech, telephony_stack
from tests.webrtc_stack import events, rtc_call, webrtc_stack
from voice.audio.frames import PcmFrame
from voice.bench.carrier import TWILIO, CarrierCaller
from voice.bench.native import call
from voice.core.events import ResponseDone

FIRST, SECOND = "q01_what_time.wav", "q02_going_to_rain.wav"
PARTIAL = "So I wanted to ask you about the"
WHOLE = "So I wanted to ask you about the weather. Is it going to rain?"
SLOW_CHAT = SIMULATION.model_copy(update={"ttft_ms": 400, "transcripts": [PARTIAL, WHOLE]})
"""The pause's chat is still waiting for its first token when the caller goes on."""


def with_pause() -> PcmFrame:
    """Two recordings' speech with about half a second between them (the second's leading
    silence): one turn, for a turn detector that waits longer after words that trail off."""
    first, second = speech(FIRST, tail_s=0.1), recording(SECOND)
    return PcmFrame(first.pcm + second.pcm, first.sample_rate)


async def test_a_pause_mid_sentence_over_the_native_socket():
    """With ``full``: the reply also takes over the first sentence's speech. From a pause
    of 150 ms, so the first pause's chat has not written a sentence when the caller goes on."""
    turn = {"speculation": "full", "pause_ms": 150}
    async with app_stack(SLOW_CHAT, turn=turn) as (url, simulated):
        ws = url.replace("http", "ws", 1) + "/v1/session"
        result = await call(ws, with_pause(), timeout_s=30)
        assert sum(simulated.in_flight.values()) == 0
        requests = dict(simulated.requests)
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(url + "/metrics")).text
    assert [e["text"] for e in result.of_type("input.transcript")] == [WHOLE]
    assert len(result.of_type("input.speech_stopped")) == 1
    (done,) = result.of_type("response.done")
    assert done["status"] == "completed"
    assert done["speculation"] == {
        "pauses": 2,
        "committed": {"asr": 2, "llm": 1, "tts": 1},
        "cancelled": {"asr": 0, "llm": 1, "tts": 0},
    }
    # The first pause's words were kept and its chat cancelled; the turn's transcript is
    # those words and the rest, each part transcribed once; the reply's chat and first
    # speech are the second pause's, taken over.
    assert requests["transcribe"] == 2 and requests["chat"] == 2
    assert len(done["record"]["asr"]) == 2
    sentences = len(done["record"]["tts"])
    assert requests["speak"] == sentences
    # The words read finished: the turn ended at the short pause (250 ms, in frames) or,
    # if the transcript came later than that, as it came; never at the long one (900 ms).
    assert 260 <= done["timings"]["vad_ms"] < 900
    keys = [c["idempotency_key"] for c in done["record"]["asr"] + done["record"]["tts"]]
    assert None not in keys and len(set(keys)) == len(keys)
    # The operator sees the same costs in /metrics.
    assert "voice_speculations_total 2.0" in metrics
    for stage, outcome, count in [("llm", "cancelled", 1), ("asr", "committed", 2),
                                  ("tts", "committed", 1)]:  # fmt: skip
        line = f'voice_speculative_requests_total{{outcome="{outcome}",stage="{stage}"}} {count}.0'
        assert line in metrics
    assert 'outcome="cancelled",stage="tts"' not in metrics
    assert 'outcome="cancelled",stage="asr"' not in metrics


async def test_a_pause_mid_sentence_on_a_twilio_call():
    async with telephony_stack(SLOW_CHAT) as stack_:
        async with CarrierCaller(stack_.ws + "/v1/twilio", TWILIO) as caller:
            await caller.say(with_pause())
            await stack_.until(lambda: stack_.metrics.responses["completed"] == 1)
        await stack_.idle()
    assert caller.violations == []
    # Each chat request the gateway saw; the reply's is the committed transcript's.
    assert [chat[-1]["content"] for chat in stack_.gateway.chats] == [PARTIAL, WHOLE]
    (done,) = [e for e in stack_.metrics.events if isinstance(e, ResponseDone)]
    assert done.speculation.pauses == 2
    assert done.speculation.cancelled["llm"] == 1
    assert done.speculation.committed == {"asr": 2, "llm": 1, "tts": 1}  # the default: full
    # Two parts, no audio twice: the first up to the pause, the second after it, sent with
    # the first's words as its prompt.
    first, rest = stack_.gateway.transcribed
    assert stack_.gateway.prompts == [None, PARTIAL]
    spoken_ms = sum(1000 * (manifest()[n]["speech_end_s"] - manifest()[n]["speech_start_s"])
                    for n in (FIRST, SECOND))  # fmt: skip
    assert spoken_ms < first.duration_ms + rest.duration_ms < spoken_ms + 1500
    assert stack_.gateway.in_flight["chat"] == 0


async def test_a_pause_mid_sentence_over_webrtc():
    async with webrtc_stack(SLOW_CHAT) as (url, _, simulated):
        async with rtc_call(url, with_pause()) as caller:
            await events(caller, "response.done")
        assert [e["text"] for e in caller.of_type("input.transcript")] == [WHOLE]
        (done,) = caller.of_type("response.done")
        assert done["status"] == "completed"
        assert done["speculation"]["pauses"] == 2
        assert done["speculation"]["cancelled"]["llm"] == 1
        assert done["speculation"]["committed"] == {"asr": 2, "llm": 1, "tts": 1}
        assert simulated.requests["transcribe"] == 2
