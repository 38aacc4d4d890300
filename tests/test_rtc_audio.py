"""The reply track on a fake clock: pacing by pts, silence when empty, clear, played_ms; and
the caller's decoded frames turned into PCM16 mono."""

import asyncio

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from voice.audio.frames import PcmFrame
from voice.transports.rtc_audio import RATE, SAMPLES, SILENCE, ReplyTrack, caller_pcm


class FakeClock:
    """Time that passes only when the track sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def tone(ms: int, rate: int = RATE, value: int = 1000) -> PcmFrame:
    return PcmFrame(np.full(rate * ms // 1000, value, dtype="<i2").tobytes(), rate)


def pcm_of(frame: av.AudioFrame) -> bytes:
    return bytes(frame.planes[0])[: frame.samples * 2]


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def track(clock):
    return ReplyTrack(clock=clock, sleep=clock.sleep, max_queue_ms=200)


async def test_frames_are_paced_by_pts_and_silent_when_empty(track, clock):
    frames = [await track.recv() for _ in range(5)]
    assert [f.pts for f in frames] == [0, 960, 1920, 2880, 3840]
    assert all(f.samples == SAMPLES and f.sample_rate == RATE for f in frames)
    assert all(f.format.name == "s16" and f.layout.name == "mono" for f in frames)
    assert all(pcm_of(f) == SILENCE for f in frames)
    # The first frame goes at once; each next one when its pts is due, 20 ms apart.
    assert clock.sleeps == pytest.approx([0.02] * 4)
    assert clock.now == pytest.approx(1000.08)


async def test_a_late_sender_does_not_wait_and_a_stalled_one_does_not_burst(track, clock):
    await track.recv()
    clock.now += 0.05  # the encoder took a while: 2.5 frames late
    await track.recv()
    await track.recv()
    assert clock.sleeps == []  # frames 2 and 3 were due already: no waiting
    await track.recv()
    assert clock.sleeps == pytest.approx([0.01])  # back on the pts schedule
    clock.now += 5.0  # the event loop stalled: pacing restarts from now
    late = await track.recv()
    nxt = await track.recv()
    assert nxt.pts - late.pts == SAMPLES  # timestamps stay continuous
    assert clock.sleeps[-1] == pytest.approx(0.02)


async def test_reply_audio_goes_out_in_order_then_silence_and_counts_as_played(track, clock):
    track.start_response()
    await track.write(tone(20, value=1))
    await track.write(tone(40, rate=24_000, value=2))  # resampled to 48 kHz
    await track.write(tone(10, value=3))
    finished = asyncio.create_task(track.finish())
    await asyncio.sleep(0)
    assert not finished.done()
    assert track.played_ms() == 0 and track.first_sent_at is None
    first = pcm_of(await track.recv())
    assert np.all(np.frombuffer(first, "<i2") == 1)
    assert track.first_sent_at == clock.now and track.played_ms() == 20
    out = [pcm_of(await track.recv()) for _ in range(4)]
    assert track.played_ms() == 80  # 20 + 40 + 10 padded to a whole frame
    assert out[3] == SILENCE
    assert np.frombuffer(out[2], "<i2")[0] == 3 and np.frombuffer(out[2], "<i2")[-1] == 0
    await finished
    await track.wait_played()
    assert track.played_ms() == 80  # silence does not count


async def test_clear_drops_queued_audio_at_once_and_refuses_more_until_the_next_response(
    track,
):
    track.start_response()
    await track.write(tone(100))
    await track.recv()
    assert track.queued_ms == 80
    track.clear()
    assert track.queued_ms == 0
    assert pcm_of(await track.recv()) == SILENCE
    assert track.played_ms() == 20  # what left before the clear stays played
    await track.write(tone(40))  # a cancelled reply's last frame: dropped
    assert track.queued_ms == 0
    track.start_response()
    assert track.played_ms() == 0 and track.first_sent_at is None
    await track.write(tone(40))
    assert track.queued_ms == 40


async def test_a_full_queue_makes_the_writer_wait_and_clear_releases_it(track):
    track.start_response()
    writer = asyncio.create_task(track.write(tone(300)))  # the queue holds 200 ms
    await asyncio.sleep(0)
    assert not writer.done() and track.queued_ms == 200
    await track.recv()
    await asyncio.sleep(0)
    assert not writer.done()
    track.clear()
    await asyncio.wait_for(writer, 1)
    assert track.queued_ms == 0


async def test_a_stopped_track_ends_the_sender(track):
    await track.recv()
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()


def decoded(layout: str, fmt: str, rate: int, left: int, right: int = 0) -> av.AudioFrame:
    n = rate // 50
    if layout == "mono":
        data = np.full((1, n), left, dtype="<i2")
    elif fmt == "s16":
        data = np.tile(np.array([left, right], dtype="<i2"), n).reshape(1, -1)
    else:
        data = np.array([[left / 32768] * n, [right / 32768] * n], dtype=np.float32)
    frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=layout)
    frame.sample_rate = rate
    return frame


def test_caller_frames_become_pcm16_mono_at_their_own_rate():
    # Opus in aiortc: 48 kHz s16 stereo, interleaved; channels are averaged.
    stereo = caller_pcm(decoded("stereo", "s16", 48_000, 1000, 3000))
    assert np.all(np.frombuffer(stereo, "<i2") == 2000) and len(stereo) == 960 * 2
    mono = caller_pcm(decoded("mono", "s16", 8_000, 500))  # G.711
    assert np.all(np.frombuffer(mono, "<i2") == 500) and len(mono) == 160 * 2
    planar = caller_pcm(decoded("stereo", "fltp", 48_000, 1000, 3000))
    samples = np.frombuffer(planar, "<i2")
    assert 900 <= len(samples) <= 960 and np.all(np.abs(samples[-100:] - 2000) <= 2)
