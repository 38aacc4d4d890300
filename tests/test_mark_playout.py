"""MarkedPlayout: the carrier-facing sink, driven by a fake carrier that echoes on demand."""

import asyncio
import json

from tests.timing import MS
from voice.audio.frames import PcmFrame
from voice.transports.codecs import PCMU
from voice.transports.mark_playout import MarkedPlayout


class Messages:
    def media(self, payload):
        return json.dumps({"event": "media", "n": len(payload)})

    def mark(self, name):
        return json.dumps({"event": "mark", "name": name})

    def clear(self):
        return json.dumps({"event": "clear"})


class Carrier:
    def __init__(self):
        self.sent = []
        self.changed = asyncio.Event()

    async def send(self, text):
        self.sent.append(json.loads(text))
        self.changed.set()

    def marks(self):
        return [m["name"] for m in self.sent if m["event"] == "mark"]

    async def until(self, predicate):
        async with asyncio.timeout(2000 * MS):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


def audio(ms, rate=24_000):
    return PcmFrame(b"\x10\x00" * (rate * ms // 1000), rate)


async def running(playout):
    task = asyncio.create_task(playout.run())
    await asyncio.sleep(0)
    return task


async def test_a_mark_follows_each_chunk_and_the_lead_stays_bounded():
    carrier = Carrier()
    playout = MarkedPlayout(codec=PCMU, messages=Messages(), send=carrier.send, lead_ms=100)
    task = await running(playout)
    try:
        playout.start_response()
        await playout.write(audio(300))
        await carrier.until(lambda: len(carrier.marks()) == 5)
        await asyncio.sleep(20 * MS)
        assert len(carrier.marks()) == 5  # 100 ms out and not echoed: it waits
        kinds = [m["event"] for m in carrier.sent]
        assert kinds == ["media", "mark"] * 5
        assert {m["n"] for m in carrier.sent if m["event"] == "media"} == {160}
        assert playout.first_sent_at is not None
        assert await playout.on_mark(carrier.marks()[1])
        assert playout.played_ms() == 40
        await carrier.until(lambda: len(carrier.marks()) == 7)
        finishing = asyncio.create_task(playout.finish())
        while not finishing.done():
            for name in carrier.marks():
                await playout.on_mark(name)
            await asyncio.sleep(5 * MS)
        await finishing
        for name in carrier.marks():
            await playout.on_mark(name)
        await asyncio.wait_for(playout.wait_played(), 1)
        assert round(playout.played_ms()) == 300
        assert not await playout.on_mark("not-ours")
    finally:
        task.cancel()


async def test_clear_tells_the_carrier_and_keeps_the_played_position():
    carrier = Carrier()
    playout = MarkedPlayout(codec=PCMU, messages=Messages(), send=carrier.send, lead_ms=60)
    task = await running(playout)
    try:
        playout.start_response()
        await playout.write(audio(500))
        await carrier.until(lambda: len(carrier.marks()) == 3)
        await playout.on_mark(carrier.marks()[0])
        playout.clear()
        await carrier.until(lambda: carrier.sent[-1]["event"] == "clear")
        for name in carrier.marks():  # the carrier returns the rest: dropped, not played
            await playout.on_mark(name)
        assert playout.played_ms() == 20
        await playout.write(audio(100))  # a late write from the cancelled reply: refused
        await asyncio.sleep(20 * MS)
        assert carrier.sent[-1]["event"] == "clear"
        await asyncio.wait_for(playout.wait_played(), 1)
        playout.start_response()
        assert playout.played_ms() == 0 and playout.first_sent_at is None
        await playout.write(audio(40))
        await carrier.until(lambda: carrier.sent[-1]["event"] == "mark")
    finally:
        task.cancel()


async def test_a_carrier_that_never_echoes_does_not_stall_the_reply(caplog):
    carrier = Carrier()
    playout = MarkedPlayout(
        codec=PCMU, messages=Messages(), send=carrier.send, lead_ms=40, grace_s=30 * MS
    )
    task = await running(playout)
    try:
        playout.start_response()
        await playout.write(audio(200))
        await asyncio.wait_for(playout.finish(), 2)
        await asyncio.wait_for(playout.wait_played(), 2)
        assert len(carrier.marks()) == 10 and playout.played_ms() == 0
        assert "does not echo marks" in caplog.text
    finally:
        task.cancel()


async def test_audio_is_held_to_fill_a_chunk_only_while_the_far_end_has_some_to_play():
    carrier = Carrier()
    playout = MarkedPlayout(
        codec=PCMU, messages=Messages(), send=carrier.send, lead_ms=300, chunk_ms=60
    )
    task = await running(playout)
    try:
        playout.start_response()
        # A reply's first speech: less than a chunk once resampled (the resampler keeps a
        # few samples back), yet it leaves at once, the line being silent.
        await playout.write(audio(60))
        assert [m["event"] for m in carrier.sent] == ["media", "mark"]
        first = carrier.sent[0]["n"]
        assert 400 < first < 480
        await playout.write(audio(90))  # 60 ms to a whole chunk, 30 ms over
        assert [m.get("n") for m in carrier.sent[2:]] == [480, None]
        await asyncio.sleep(20 * MS)
        assert len(carrier.sent) == 4  # the far end has audio to play: 30 ms wait for more
        for name in carrier.marks():  # ... until it has played everything
            await playout.on_mark(name)
        assert [m.get("n") for m in carrier.sent[4:]] == [240, None]
        await playout.finish()
        assert sum(m["n"] for m in carrier.sent if m["event"] == "media") == 150 * 8
    finally:
        task.cancel()
