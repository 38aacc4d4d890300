"""Paced playout: real-time pacing with a bounded lead, clearing, resampling."""

import asyncio
import time

from tests.timing import MS
from voice.audio.frames import PcmFrame
from voice.transports.playout import PacedPlayout

SECOND_24K = PcmFrame(bytes(48_000), 24_000)


class Player:
    def __init__(self, **kw):
        self.sent = []
        self.playout = PacedPlayout(out_rate=24_000, send=self.send, lead_ms=100, **kw)

    async def send(self, chunk):
        self.sent.append((time.monotonic(), chunk))

    async def __aenter__(self):
        self.task = asyncio.create_task(self.playout.run())
        return self

    async def __aexit__(self, *exc):
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_audio_leaves_at_real_time_pace_never_more_than_the_lead_ahead():
    async with Player() as p:
        p.playout.start_response()
        began = time.monotonic()
        await p.playout.write(SECOND_24K)
        await p.playout.finish()
        took = time.monotonic() - began
    assert len(p.sent) == 50  # 1 s in 20 ms frames
    assert all(len(chunk) == 960 for _, chunk in p.sent)
    # Each frame leaves no earlier than its play time minus the lead.
    for i, (at, _) in enumerate(p.sent):
        assert at - began >= i * 0.020 - 0.100 - 2 * MS
    assert took >= 0.9 - 0.1 - 2 * MS


async def test_clear_drops_queued_audio_and_refuses_more_until_the_next_response():
    async with Player() as p:
        p.playout.start_response()
        await p.playout.write(SECOND_24K)
        await asyncio.sleep(50 * MS)
        p.playout.clear()
        count = len(p.sent)
        await p.playout.write(SECOND_24K)  # a cancelled reply's last frame
        await asyncio.sleep(100 * MS)
        assert len(p.sent) == count
        assert p.playout.played_ms() <= count * 20
        p.playout.start_response()
        await p.playout.write(PcmFrame(bytes(960), 24_000))
        await p.playout.finish()
        assert len(p.sent) == count + 1
        assert p.playout.first_sent_at is not None


async def test_other_rates_are_resampled_and_a_partial_frame_is_padded_at_the_end():
    async with Player() as p:
        p.playout.start_response()
        await p.playout.write(PcmFrame(bytes(2 * 16_000 * 210 // 1000), 16_000))  # 210 ms
        await p.playout.finish()
    assert len(p.sent) == 11  # 10 whole frames and the padded last 10 ms
