"""The reply track on a fake clock: pacing by pts, Opus packets that decode to what was
written, canned silence when empty, clear, played_ms; and the caller's decoded frames turned
into PCM16 mono."""

import asyncio

import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket

from tests.opus_ear import heard, levels
from tests.samples import recording
from voice.audio.frames import PcmFrame
from voice.audio.level import rms_dbfs
from voice.audio.resample import resample
from voice.transports.rtc_audio import (
    RATE,
    SAMPLES,
    SILENCE,
    TIME_BASE,
    ReplyTrack,
    caller_pcm,
    shorten_inbound_buffer,
)

SILENT_DBFS = -90.0
"""Decoded Opus silence is not all zeros: libopus leaves a least-significant-bit hiss."""


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
    """A 440 Hz sine of amplitude ``value``: about ``sine_dbfs(value)`` loud."""
    t = np.arange(rate * ms // 1000) / rate
    return PcmFrame((value * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes(), rate)


def sine_dbfs(value: int) -> float:
    return 20 * np.log10(value / np.sqrt(2) / 32768)


def dc(ms: int, rate: int = RATE, value: int = 1000) -> PcmFrame:
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
    # Opus packets, stamped as aiortc's OpusEncoder.pack reads them: pts in 1/48000.
    assert all(isinstance(f, av.Packet) and f.time_base == TIME_BASE for f in frames)
    assert [f.pts for f in frames] == [0, 960, 1920, 2880, 3840]
    assert max(levels(heard(frames))) < SILENT_DBFS
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
    await track.write(tone(20, value=8000))
    await track.write(tone(40, rate=24_000, value=2000))  # resampled to 48 kHz
    await track.write(tone(10, value=16000))
    finished = asyncio.create_task(track.finish())
    await asyncio.sleep(0)
    assert not finished.done()
    assert track.played_ms() == 0 and track.first_sent_at is None
    first = await track.recv()
    assert track.first_sent_at == clock.now and track.played_ms() == 20
    out = [await track.recv() for _ in range(4)]
    assert track.played_ms() == 80  # 20 + 40 + 10 padded to a whole frame
    await finished
    await track.wait_played()
    assert track.played_ms() == 80  # silence does not count
    # Decoded, each 20 ms is as loud as what was written, in order; then silence. (The
    # third frame ends with the 48 kHz tone: the 24 kHz resampler holds its last 5 ms back
    # until finish(); the fourth is the 10 ms tone padded with 10 ms of silence.)
    got = levels(heard([first, *out, *[await track.recv() for _ in range(2)]]))
    assert got[:2] == pytest.approx([sine_dbfs(8000), sine_dbfs(2000)], abs=1.5)
    assert sine_dbfs(2000) + 3 < got[2] < sine_dbfs(16000)
    assert got[3] == pytest.approx(sine_dbfs(16000) - 3, abs=1.5)
    assert got[4] < -40 and max(got[5:]) < -60  # the codec's ring after the cut, then none


async def test_reply_speech_survives_the_encode(clock):
    track = ReplyTrack(clock=clock, sleep=clock.sleep)
    speech = recording("q03_weather_paris.wav")  # 16 kHz: the track resamples it
    track.start_response()
    await track.write(speech)
    finished = asyncio.create_task(track.finish())
    packets = []
    while not finished.done():
        packets.append(await track.recv())
        await asyncio.sleep(0)
    packets += [await track.recv() for _ in range(3)]
    assert track.played_ms() == pytest.approx(speech.duration_ms, abs=20)
    written = np.frombuffer(resample(speech.pcm, speech.sample_rate, RATE), dtype="<i2")
    got = heard(packets)[: len(written)]
    assert rms_dbfs(got.tobytes()) == pytest.approx(rms_dbfs(written.tobytes()), abs=0.5)
    pairs = [(a, b) for a, b in zip(levels(written), levels(got), strict=False) if a > -45]
    assert len(pairs) > 50
    assert np.mean([abs(a - b) for a, b in pairs]) < 1.0
    assert max(abs(a - b) for a, b in pairs) < 4.0
    # The padding around the speech (exact zeros in the file) stays silent.
    assert max(b for a, b in zip(levels(written), levels(got), strict=False) if a < -100) < -80


async def test_silence_is_one_canned_packet_that_decodes_to_silence(track):
    idle = [bytes(await track.recv()) for _ in range(20)]
    # The encoder settles on its packet for 20 ms of zeros within a few frames; from then
    # on that packet is sent as it is, not encoded again.
    assert len(set(idle[10:])) == 1 and len(idle[-1]) < 40
    track.start_response()
    await track.write(tone(100, value=8000))
    finished = asyncio.create_task(track.finish())
    for _ in range(5):
        await track.recv()
    await finished
    after = [await track.recv() for _ in range(20)]
    assert len({bytes(p) for p in after[10:]}) == 1 and len(bytes(after[-1])) < 40
    assert max(levels(heard(after)[2 * SAMPLES :])) < SILENT_DBFS


async def test_clear_mid_reply_goes_silent_at_once(track):
    track.start_response()
    writer = asyncio.create_task(track.write(tone(1000, value=8000)))
    await asyncio.sleep(0)
    packets = [await track.recv() for _ in range(10)]
    track.clear()
    await asyncio.wait_for(writer, 1)
    packets += [await track.recv() for _ in range(15)]
    assert track.played_ms() == 200
    out = heard(packets)
    got = levels(out)
    assert got[:10] == pytest.approx([sine_dbfs(8000)] * 10, abs=1.5)
    # Silent at the cut, but for the codec ringing as any codec does at a hard cut: about
    # -31 dBFS over the first 2.5 ms (CELT's overlap), under -45 dBFS 5 ms on; nothing of
    # the reply's queued rest comes after it.
    cut = 10 * SAMPLES
    assert rms_dbfs(out[cut + SAMPLES // 4 : cut + SAMPLES].tobytes()) < -45
    assert max(got[11:]) < -60
    assert len({bytes(p) for p in packets[-5:]}) == 1


async def test_a_peer_that_chose_another_codec_gets_pcm_frames_for_aiortc(track):
    track.negotiated("pcmu")
    track.start_response()
    await track.write(dc(20, value=1))
    await track.write(dc(10, value=3))
    finished = asyncio.create_task(track.finish())
    frames = [await track.recv() for _ in range(3)]
    await finished
    assert all(isinstance(f, av.AudioFrame) for f in frames)
    assert all(f.samples == SAMPLES and f.sample_rate == RATE for f in frames)
    assert all(f.format.name == "s16" and f.layout.name == "mono" for f in frames)
    assert [f.pts for f in frames] == [0, 960, 1920]
    assert np.all(np.frombuffer(pcm_of(frames[0]), "<i2") == 1)
    assert np.frombuffer(pcm_of(frames[1]), "<i2")[0] == 3
    assert np.frombuffer(pcm_of(frames[1]), "<i2")[-1] == 0
    assert pcm_of(frames[2]) == SILENCE
    assert track.played_ms() == 40


async def test_clear_drops_queued_audio_at_once_and_refuses_more_until_the_next_response(
    track,
):
    track.start_response()
    await track.write(tone(100))
    await track.recv()
    assert track.queued_ms == 80
    track.clear()
    assert track.queued_ms == 0
    await track.recv()
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


async def test_the_callers_audio_leaves_the_receive_buffer_when_the_next_packet_arrives():
    """One packet of prefetch instead of aiortc's four (80 ms sooner to the VAD), and a
    packet that arrives out of order still comes out in order."""
    pc = RTCPeerConnection()
    try:
        receiver = pc.addTransceiver("audio").receiver
        assert shorten_inbound_buffer(receiver)  # fails if aiortc moved its buffer
        buffer = receiver._RTCRtpReceiver__jitter_buffer

        def add(n):
            packet = RtpPacket(payload_type=111, sequence_number=n, timestamp=960 * n)
            packet._data = bytes([n])
            frame = buffer.add(packet)[1]
            return None if frame is None else frame.data

        assert [add(0), add(1), add(2)] == [None, b"\x00", b"\x01"]
        assert [add(4), add(3), add(5)] == [None, b"\x02", b"\x03"]  # 3 was late
    finally:
        await pc.close()
