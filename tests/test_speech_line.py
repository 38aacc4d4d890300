"""SpeechLine: sentences' speech in order, live for the head, buffered behind it."""

import asyncio

from voice.audio.frames import PcmFrame
from voice.core.playout import HeardText
from voice.pipeline.speech_line import SpeechLine


class ListSink:
    def __init__(self):
        self.frames: list[PcmFrame] = []

    async def write(self, frame):
        self.frames.append(frame)


def chunk(value, rate=24_000):
    return PcmFrame(bytes([value]) * 480, rate)  # 10 ms at 24 kHz


async def test_speech_is_written_in_sentence_order_whoever_arrives_first():
    sink, heard = ListSink(), HeardText()
    line = SpeechLine(sink, heard, capacity=3, max_buffered=64)
    first, second, third = [await line.add(t) for t in ("One.", "Two.", "Three.")]
    await line.deliver(third, chunk(3))
    await line.end(third)
    await line.deliver(second, chunk(2))
    await line.deliver(first, chunk(1))  # live: written at once
    assert [f.pcm[0] for f in sink.frames] == [1]
    await line.end(first)  # the line moves on: two's waiting speech is written, and is live
    assert [f.pcm[0] for f in sink.frames] == [1, 2]
    assert second.live and not third.live
    await line.deliver(second, chunk(2))
    await line.end(second)  # three, complete, follows at once
    assert [f.pcm[0] for f in sink.frames] == [1, 2, 2, 3]
    assert heard.heard(10) == "One."
    assert heard.heard(40) == "One. Two. Three."


async def test_waiting_speech_is_joined_per_sample_rate_and_none_is_lost():
    sink = ListSink()
    line = SpeechLine(sink, HeardText(), capacity=2, max_buffered=64)
    first, second = await line.add("One."), await line.add("Two.")
    for frame in (chunk(2), chunk(2), chunk(4, rate=16_000), chunk(4, rate=16_000)):
        await line.deliver(second, frame)
    await line.end(first)
    assert [(len(f.pcm), f.sample_rate) for f in sink.frames] == [(960, 24_000), (960, 16_000)]


async def test_a_full_buffer_holds_its_fetch_back_until_its_turn():
    sink = ListSink()
    line = SpeechLine(sink, HeardText(), capacity=2, max_buffered=2)
    first, second = await line.add("One."), await line.add("Two.")
    await line.deliver(second, chunk(2))
    held = asyncio.create_task(line.deliver(second, chunk(2)))
    await asyncio.sleep(0.01)
    assert not held.done()
    await line.end(first)
    await asyncio.wait_for(held, 1)
    assert sum(len(f.pcm) for f in sink.frames) == 960


async def test_the_line_holds_capacity_sentences_at_most():
    line = SpeechLine(ListSink(), HeardText(), capacity=2, max_buffered=64)
    first = await line.add("One.")
    await line.add("Two.")
    third = asyncio.create_task(line.add("Three."))
    await asyncio.sleep(0.01)
    assert not third.done()
    await line.end(first)
    assert (await asyncio.wait_for(third, 1)).text == "Three."
