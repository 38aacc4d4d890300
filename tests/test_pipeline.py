"""Replies on scripted timelines: overlap, order, look-ahead, barge-in, faults, hang-ups.

The gateway is the in-process SimulatedGateway (scripted latencies); the sink is the real
PacedPlayout, playing in real time into a list.
"""

import asyncio
import time

import numpy as np
import pytest

from tests.timing import MS
from voice.audio.frames import PcmFrame
from voice.config import Settings
from voice.core.events import (
    ErrorEvent,
    ResponseDone,
    ResponseInterrupted,
    ResponseStarted,
    SpeechStopped,
    Transcript,
)
from voice.errors import GatewayUnavailable
from voice.gateway.simulated import Fault, SimulatedGateway, SimulationSettings
from voice.pipeline.session import Session
from voice.transports.playout import PacedPlayout

REPLY = "First one here. Then a second sentence. And a third to finish."
FAST = SimulationSettings(
    asr_ms=5,
    ttft_ms=10,
    ms_per_token=15,
    tts_ttfb_ms=10,
    tts_rtf=0.05,
    speech_ms_per_char=20,
    transcripts=["hello there"],
    replies=[REPLY],
)


class Recording:
    """Wraps a gateway and logs when each request starts and ends."""

    def __init__(self, inner):
        self.inner = inner
        self.log: list[tuple[float, str, str]] = []
        self.open_speech = 0
        self.max_open_speech = 0

    async def transcribe(self, wav, *, prompt=None, call=None):
        return await self.inner.transcribe(wav, prompt=prompt, call=call)

    async def chat(self, messages, *, call=None):
        self.log.append((time.monotonic(), "chat.start", ""))
        async for delta in self.inner.chat(messages, call=call):
            yield delta
        self.log.append((time.monotonic(), "chat.end", ""))

    async def speak(self, text, *, voice=None, call=None):
        self.log.append((time.monotonic(), "speak.start", text))
        self.open_speech += 1
        self.max_open_speech = max(self.max_open_speech, self.open_speech)
        try:
            async for frame in self.inner.speak(text, voice=voice, call=call):
                yield frame
        finally:
            self.open_speech -= 1
        self.log.append((time.monotonic(), "speak.end", text))

    async def models(self):
        return await self.inner.models()

    async def warm(self):
        pass

    async def aclose(self):
        pass

    def first(self, kind):
        return next(t for t, k, _ in self.log if k == kind)


class Harness:
    """A session with a real playout whose sent frames are recorded with their times."""

    def __init__(self, gateway, settings=None, vad=None):
        self.sent: list[tuple[float, bytes]] = []
        self.events = []
        settings = settings or Settings()
        self.playout = PacedPlayout(out_rate=24_000, send=self._send, lead_ms=100)
        self.session = Session(
            session_id="test",
            settings=settings,
            gateway=gateway,
            vad=vad,
        )
        self.session.attach(self.playout, self.events.append)

    async def _send(self, chunk):
        self.sent.append((time.monotonic(), chunk))

    async def __aenter__(self):
        self.pacer = asyncio.create_task(self.playout.run())
        return self

    async def __aexit__(self, *exc):
        await self.session.aclose()
        self.pacer.cancel()
        await asyncio.gather(self.pacer, return_exceptions=True)

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]

    async def until(self, predicate, timeout_ms=5000):
        async with asyncio.timeout(timeout_ms * MS):
            while not predicate():  # noqa: ASYNC110  # polls state owned by other tasks
                await asyncio.sleep(5 * MS)

    async def reply_done(self, count=1):
        await self.until(lambda: len(self.of(ResponseDone)) >= count)
        return self.of(ResponseDone)[count - 1]


def turn():
    return SpeechStopped(at_ms=1500, speech_end_ms=1000, audio=bytes(32_000))


async def test_first_sentence_is_spoken_while_the_llm_is_still_writing():
    gateway = Recording(SimulatedGateway(FAST))
    async with Harness(gateway) as h:
        await h.session.respond(turn())
        done = await h.reply_done()
    assert done.status == "completed"
    assert done.text == REPLY
    assert gateway.first("speak.start") < gateway.first("chat.end")
    spoken = [text for _, kind, text in gateway.log if kind == "speak.start"]
    assert spoken == ["First one here.", "Then a second sentence.", "And a third to finish."]
    assert [m.role for m in h.session.dialog.messages()] == ["system", "user", "assistant"]


async def test_timings_account_for_every_stage():
    async with Harness(SimulatedGateway(FAST)) as h:
        await h.session.respond(turn())
        timings = (await h.reply_done()).timings
    assert timings.vad_ms == 500
    assert timings.asr_ms >= 5
    assert timings.llm_ttft_ms >= 10
    assert timings.first_sentence_ms >= timings.llm_ttft_ms
    assert timings.tts_ttfb_ms >= 10
    assert timings.first_audio_ms >= 500 + 5 + 10 + 10
    assert timings.overhead_ms is not None and timings.overhead_ms >= 0


class ConstantSpeech(SimulatedGateway):
    """Speech for sentence i is the constant sample value i+1; the first is slowest."""

    def __init__(self, delays_ms):
        super().__init__(FAST)
        self.delays_ms = delays_ms
        self.index = {}

    async def speak(self, text, *, voice=None, call=None):
        i = self.index.setdefault(text, len(self.index))
        await asyncio.sleep(self.delays_ms[i] * MS)
        for _ in range(5):
            yield PcmFrame(np.full(960, i + 1, "<i2").tobytes(), 24_000)


async def test_audio_plays_in_sentence_order_even_when_later_speech_is_faster():
    async with Harness(ConstantSpeech([300, 10, 10])) as h:
        await h.session.respond(turn())
        await h.reply_done()
    values = [int(np.frombuffer(chunk, "<i2")[0]) for _, chunk in h.sent]
    assert values == sorted(values)
    assert set(values) == {1, 2, 3}


class CountingSink:
    """The harness's playout, with the size of every write it was given."""

    def __init__(self, inner):
        self.inner = inner
        self.writes: list[int] = []

    async def write(self, frame):
        self.writes.append(frame.num_samples)
        await self.inner.write(frame)

    def __getattr__(self, name):
        return getattr(self.inner, name)


async def test_the_head_sentence_is_written_as_it_arrives_and_the_ones_fetched_ahead_joined():
    async with Harness(ConstantSpeech([300, 10, 10])) as h:
        sink = h.session._sink = CountingSink(h.playout)
        await h.session.respond(turn())
        done = await h.reply_done()
    # The first sentence's speech comes last: the next two wait whole, and go in one write.
    assert sink.writes == [960] * 5 + [4800, 4800]
    values = np.concatenate([np.frombuffer(chunk, "<i2") for _, chunk in h.sent])
    assert [int((values == v).sum()) for v in (1, 2, 3)] == [4800] * 3
    assert done.status == "completed"
    assert done.text == REPLY


async def test_the_first_sentence_goes_from_chat_to_speech_to_sink_in_one_task():
    # Each hand-over to another task waits a pass of the event loop: under load, the
    # largest part of the pipeline's own latency.
    tasks = {}

    class Tracing(Recording):
        async def chat(self, messages, *, call=None):
            tasks["chat"] = asyncio.current_task()
            async for delta in super().chat(messages, call=call):
                yield delta

        async def speak(self, text, *, voice=None, call=None):
            tasks.setdefault("speak", asyncio.current_task())
            async for frame in super().speak(text, voice=voice, call=call):
                yield frame

    class FirstWriter(CountingSink):
        async def write(self, frame):
            tasks.setdefault("write", asyncio.current_task())
            await super().write(frame)

    async with Harness(Tracing(SimulatedGateway(FAST))) as h:
        h.session._sink = FirstWriter(h.playout)
        await h.session.respond(turn())
        await h.reply_done()
    assert tasks["chat"] is tasks["speak"] is tasks["write"]


async def test_speech_lookahead_is_bounded():
    reply = " ".join(f"Sentence number {n} is here." for n in range(8))
    gateway = Recording(SimulatedGateway(FAST.model_copy(update={"replies": [reply]})))
    settings = Settings.model_validate({"pipeline": {"tts_lookahead": 2}})
    async with Harness(gateway, settings) as h:
        await h.session.respond(turn())
        await h.reply_done()
    assert gateway.max_open_speech <= 3
    assert len([k for _, k, _ in gateway.log if k == "speak.start"]) == 8


async def test_barge_in_stops_audio_cancels_requests_and_keeps_only_heard_text():
    slow_llm = FAST.model_copy(update={"ms_per_token": 60, "speech_ms_per_char": 60})
    gateway = SimulatedGateway(slow_llm)
    async with Harness(gateway) as h:
        await h.session.respond(turn())
        await h.until(lambda: h.playout.played_ms() >= 400)
        began = time.monotonic()
        await h.session.interrupt()
        interrupt_ms = (time.monotonic() - began) * 1000
        frames_at_interrupt = len(h.sent)
        await asyncio.sleep(150 * MS)
        assert len(h.sent) == frames_at_interrupt, "audio kept flowing after barge-in"
        assert sum(gateway.in_flight.values()) == 0, "requests left open"
    assert interrupt_ms < 250  # generous: the figure itself is in the benchmark
    (interrupted,) = h.of(ResponseInterrupted)
    assert interrupted.heard_text
    assert REPLY.startswith(interrupted.heard_text)
    assert len(interrupted.heard_text) < len(REPLY)
    done = h.of(ResponseDone)[-1]
    assert done.status == "interrupted" and done.text == interrupted.heard_text
    assert h.session.dialog.messages()[-1].content == interrupted.heard_text


async def test_barge_in_before_any_audio_keeps_nothing_of_the_reply():
    gateway = SimulatedGateway(FAST.model_copy(update={"ttft_ms": 2000}))
    async with Harness(gateway) as h:
        await h.session.respond(turn())
        await h.until(lambda: h.of(ResponseStarted))
        await h.session.interrupt()
    assert h.of(ResponseInterrupted)[0].heard_text == ""
    assert [m.role for m in h.session.dialog.messages()] == ["system", "user"]
    assert sum(gateway.in_flight.values()) == 0


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Fault(route="speak", kind="status", status=503, count=-1), "gateway_unavailable"),
        (Fault(route="chat", kind="status", status=402), "payment_required"),
        (Fault(route="chat", kind="status", status=429, retry_after=1), "rate_limited"),
        (Fault(route="speak", kind="drop", after_chunks=2, count=-1), "gateway_unavailable"),
    ],
)
async def test_gateway_errors_reach_the_caller_and_the_session_goes_on(fault, code):
    gateway = SimulatedGateway(FAST.model_copy(update={"faults": [fault]}))
    async with Harness(gateway) as h:
        await h.session.respond(turn())
        failed = await h.reply_done()
        assert failed.status == "failed"
        assert [e.code for e in h.of(ErrorEvent)] == [code]
        gateway.update(FAST)
        await h.session.respond(turn())
        again = await h.reply_done(2)
    assert again.status == "completed"
    assert sum(gateway.in_flight.values()) == 0


async def test_asr_failure_is_reported_without_a_response():
    fault = Fault(route="transcribe", kind="status", status=500)
    gateway = SimulatedGateway(FAST.model_copy(update={"faults": [fault]}))
    async with Harness(gateway) as h:
        await h.session.respond(turn())
        await h.until(lambda: h.of(ErrorEvent))
    assert h.of(ErrorEvent)[0].code == "gateway_unavailable"
    assert not h.of(ResponseStarted)
    assert not h.of(Transcript)


async def test_hang_up_mid_reply_cancels_everything_in_flight():
    gateway = SimulatedGateway(FAST.model_copy(update={"ms_per_token": 200}))
    async with Harness(gateway) as h:
        await h.session.respond(turn())
        await h.until(lambda: gateway.in_flight["chat"] == 1 and gateway.in_flight["speak"])
    assert sum(gateway.in_flight.values()) == 0


class ScriptedVad:
    """Speech or not, as the test says: turn timelines without recordings."""

    speech = False

    def is_speech(self, frame, sample_rate):
        return self.speech

    def reset(self):
        pass


async def talk(session, vad, speech_ms=0, silence_ms=0):
    frame = bytes(640)  # 20 ms at 16 kHz
    vad.speech = True
    for _ in range(speech_ms // 20):
        await session.feed(frame)
    vad.speech = False
    for _ in range(silence_ms // 20):
        await session.feed(frame)


async def test_a_turn_cut_at_max_length_is_answered_with_what_follows():
    simulation = FAST.model_copy(update={"transcripts": ["part one", "part two"]})
    settings = Settings.model_validate({"turn": {"max_turn_s": 1.5}})
    vad = ScriptedVad()
    async with Harness(SimulatedGateway(simulation), settings, vad=vad) as h:
        await talk(h.session, vad, speech_ms=2000, silence_ms=600)
        done = await h.reply_done()
    stops = [e for e in h.events if isinstance(e, SpeechStopped)]
    assert [s.cut for s in stops] == [True, False]
    assert [t.text for t in h.of(Transcript)] == ["part one", "part two"]
    assert done.status == "completed"
    assert h.session.dialog.messages()[1].content == "part one part two"


async def test_a_cough_while_the_answer_is_being_prepared_does_not_lose_the_question():
    simulation = FAST.model_copy(update={"asr_ms": 300, "transcripts": ["the question"]})
    vad = ScriptedVad()
    # The fixed hangover: 520 ms of silence ends the turn (with speculation the pause would
    # wait for its words, and the cough would join the turn).
    off = Settings.model_validate({"turn": {"speculation": "off"}})
    async with Harness(SimulatedGateway(simulation), off, vad=vad) as h:
        await talk(h.session, vad, speech_ms=1000, silence_ms=520)  # turn ends; ASR starts
        await talk(h.session, vad, speech_ms=120, silence_ms=520)  # a cough, discarded
        done = await h.reply_done()
    assert done.status == "completed"
    assert [m.content for m in h.session.dialog.messages()[1:]] == ["the question", REPLY]


async def test_speaking_again_before_the_answer_is_heard_answers_both_turns_once():
    simulation = FAST.model_copy(update={"asr_ms": 200, "transcripts": ["first", "second"]})
    gateway = Recording(SimulatedGateway(simulation))
    vad = ScriptedVad()
    # The fixed hangover: 520 ms of silence ends each turn (speculation would still be
    # waiting for the words, and hear one turn).
    off = Settings.model_validate({"turn": {"speculation": "off"}})
    async with Harness(gateway, off, vad=vad) as h:
        await talk(h.session, vad, speech_ms=600, silence_ms=520)
        await talk(h.session, vad, speech_ms=600, silence_ms=520)
        done = await h.reply_done()
    assert done.status == "completed"
    assert len(h.of(ResponseDone)) == 1
    assert len([k for _, k, _ in gateway.log if k == "chat.start"]) == 1
    assert h.session.dialog.messages()[1].content == "first second"


class FailsAfterFirstSentence(SimulatedGateway):
    def __init__(self):
        super().__init__(FAST)
        self.fail = asyncio.Event()
        self.calls = 0

    async def speak(self, text, *, voice=None, call=None):
        self.calls += 1
        if self.calls == 1:
            for _ in range(40):
                yield PcmFrame(bytes(960), 24_000)
            return
        await self.fail.wait()
        raise GatewayUnavailable("speech broke")


async def test_a_failure_racing_a_barge_in_ends_the_response_exactly_once():
    gateway = FailsAfterFirstSentence()
    async with Harness(gateway) as h:
        await h.session.respond(turn())
        await h.until(lambda: h.playout.played_ms() >= 500)
        gateway.fail.set()
        await asyncio.sleep(0)  # the failing speech request raises in this loop turn...
        await h.session.interrupt()  # ...and the caller barges in in the same one
        await asyncio.sleep(50 * MS)
    (done,) = h.of(ResponseDone)
    assert done.status == "interrupted"
    assistant = [m for m in h.session.dialog.messages() if m.role == "assistant"]
    assert len(assistant) == 1 and assistant[0].content == done.text == "First one"
