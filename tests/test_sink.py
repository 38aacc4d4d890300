"""QueuedSink, the base of the transports' sinks: resampling, framing, the bounded
clearable queue. Its frames leave here when the test takes them."""

import asyncio

import numpy as np
import pytest

from voice.audio.frames import PcmFrame
from voice.pipeline.sink import QueuedSink

RATE = 24_000
FRAME = RATE * 20 // 1000 * 2
"""Bytes in a 20 ms frame at ``RATE``."""


class TakenSink(QueuedSink):
    """A sink whose frames leave one at a time, when :meth:`take` is called."""

    def __init__(self, *, max_queue_ms: int = 10_000) -> None:
        super().__init__(out_rate=RATE, frame_ms=20, max_queue_ms=max_queue_ms)
        self.sent: list[bytes] = []
        self.now = 0.0

    def take(self) -> bytes | None:
        if not self._queue:
            return None
        pcm = self._pop()
        if not self._queue:
            self._idle.set()
        self.sent.append(pcm)
        if self.first_sent_at is None:
            self.first_sent_at = self.now
        return pcm

    def take_all(self) -> None:
        while self.take() is not None:
            pass

    def queued(self) -> int:
        return len(self._queue)

    def played_ms(self) -> float:
        return 20.0 * len(self.sent)


def dc(ms: int, rate: int, value: int) -> PcmFrame:
    return PcmFrame(np.full(rate * ms // 1000, value, dtype="<i2").tobytes(), rate)


async def test_two_input_rates_are_resampled_to_whole_frames_and_finish_adds_the_tails():
    sink = TakenSink()
    sink.start_response()
    await sink.write(dc(100, 16_000, 1000))
    await sink.write(dc(100, 8_000, 3000))
    await sink.write(dc(30, RATE, 2000))  # the output rate: as it is
    finishing = asyncio.create_task(sink.finish())
    await asyncio.sleep(0)
    assert not finishing.done()  # it waits for the audio to leave
    sink.take_all()
    await asyncio.wait_for(finishing, 1)
    # 100 + 100 + 30 ms, each stream resampled to its exact length, the end padded.
    assert len(sink.sent) == 12 and all(len(pcm) == FRAME for pcm in sink.sent)
    levels = [int(np.median(np.frombuffer(pcm, "<i2"))) for pcm in sink.sent]
    assert levels[1:4] == [1000] * 3 and levels[6:9] == [3000] * 3
    assert levels[-2] == 2000  # the resamplers' tails come last, at finish
    assert sink.first_sent_at == 0.0


async def test_a_full_queue_makes_the_writer_wait_until_a_frame_leaves():
    sink = TakenSink(max_queue_ms=100)  # five frames
    sink.start_response()
    writer = asyncio.create_task(sink.write(dc(200, RATE, 1)))
    await asyncio.sleep(0)
    assert not writer.done() and sink.queued() == 5
    sink.take()
    await asyncio.sleep(0)
    assert not writer.done() and sink.queued() == 5  # it filled the space at once
    for _ in range(5):
        sink.take()
        await asyncio.sleep(0)
    await asyncio.wait_for(writer, 1)
    assert sink.queued() == 4 and len(sink.sent) == 6


async def test_clear_drops_queued_audio_and_later_writes_until_start_response():
    sink = TakenSink(max_queue_ms=100)
    sink.start_response()
    writer = asyncio.create_task(sink.write(dc(200, 16_000, 1)))
    await asyncio.sleep(0)
    sink.take()
    sink.clear()
    await asyncio.wait_for(writer, 1)  # a waiting writer is released, its audio dropped
    assert sink.queued() == 0 and sink.take() is None
    await sink.write(dc(100, 16_000, 1))  # a cancelled reply's late audio: dropped
    await asyncio.wait_for(sink.finish(), 1)
    await asyncio.wait_for(sink.wait_played(), 1)
    assert sink.queued() == 0 and sink.played_ms() == 20
    sink.start_response()
    assert sink.first_sent_at is None
    await sink.write(dc(30, 16_000, 1))
    await sink.write(dc(30, RATE, 1))
    assert sink.queued() == 2
    finishing = asyncio.create_task(sink.finish())
    await asyncio.sleep(0)
    sink.take_all()
    await asyncio.wait_for(finishing, 1)
    # Exactly 60 ms: nothing the cleared 16 kHz stream held back comes with it.
    assert len(sink.sent) == 1 + 3


def test_played_ms_is_the_subclass_s_to_say():
    class Silent(QueuedSink):
        pass

    with pytest.raises(TypeError):
        Silent(out_rate=RATE, frame_ms=20, max_queue_ms=100)  # type: ignore[abstract]
