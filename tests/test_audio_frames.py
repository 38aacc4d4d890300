"""Reframer: arbitrary chunks in, exact frames out, nothing lost or reordered."""

import random

import pytest

from voice.audio.frames import FRAME_MS, PIPELINE_RATE, PcmFrame, Reframer, frame_bytes
from voice.errors import AudioFormatError


def ramp(n_bytes: int) -> bytes:
    return bytes(i % 251 for i in range(n_bytes))


def test_frame_bytes_at_pipeline_rate():
    assert frame_bytes(PIPELINE_RATE) == 640
    assert frame_bytes(8000, 10) == 160


def test_exact_frames_pass_straight_through():
    r = Reframer(PIPELINE_RATE)
    pcm = ramp(640 * 3)
    frames = r.push(pcm)
    assert [f.pcm for f in frames] == [pcm[:640], pcm[640:1280], pcm[1280:]]
    assert all(f.sample_rate == PIPELINE_RATE and f.duration_ms == FRAME_MS for f in frames)
    assert r.pending == 0
    assert r.flush() is None


def test_random_chunks_reassemble_in_order():
    rng = random.Random(7)
    r = Reframer(8000, frame_ms=20)
    pcm = ramp(320 * 50 + 123)
    out, pos = [], 0
    while pos < len(pcm):
        n = rng.randint(0, 700)  # includes empty and odd-sized chunks
        out += r.push(pcm[pos : pos + n])
        pos += n
    assert all(len(f.pcm) == 320 for f in out)
    assert b"".join(f.pcm for f in out) == pcm[: 320 * 50]
    assert r.pending == 123


def test_odd_byte_is_carried_across_pushes():
    r = Reframer(8000, frame_ms=10)
    assert r.push(ramp(159)) == []
    assert r.pending == 159
    (frame,) = r.push(ramp(161)[159:])  # completes the frame with the same bytes
    assert frame.pcm == ramp(160)
    assert r.pending == 1


def test_flush_pads_with_silence_then_empties():
    r = Reframer(16000, frame_ms=10)
    r.push(b"\x01\x02\x03")
    frame = r.flush()
    assert frame == PcmFrame(b"\x01\x02\x03" + bytes(317), 16000)
    assert r.flush() is None
    assert r.push(ramp(320)) == [PcmFrame(ramp(320), 16000)]


@pytest.mark.parametrize(("rate", "ms"), [(0, 20), (16000, 0), (-8000, 20), (10, 20)])
def test_unusable_frame_size_is_refused(rate, ms):
    with pytest.raises(AudioFormatError):
        Reframer(rate, frame_ms=ms)


def test_cut_frames_follow_the_stream_whether_chunks_are_whole_frames_or_not():
    reframer = Reframer(8000)  # 320-byte frames
    size = reframer.frame_size
    stream = bytes(range(256)) * 40
    # Whole-frame chunks pass straight through, but not while a part frame is held back.
    steps = [size, size, 100, size, size - 100, size, 7, 1, size, size]
    frames, pos = [], 0
    for step in steps:
        frames += reframer.cut(stream[pos : pos + step])
        pos += step
    assert all(len(frame) == size for frame in frames)
    assert b"".join(frames) == stream[: len(frames) * size]
    assert reframer.pending == pos - len(frames) * size


def test_take_returns_whole_frames_as_one_run_and_the_rest_on_request():
    r = Reframer(8000, frame_ms=10)
    assert r.take(ramp(100)) == b""
    assert r.take(ramp(450)[100:]) == ramp(320)  # two frames, 130 bytes held back
    assert r.pending == 130
    assert r.take(ramp(451)[450:], partial=True) == ramp(451)[320:450]  # whole samples
    assert r.pending == 1  # the odd byte waits for its other half
    r.clear()
    assert r.pending == 0
    whole = ramp(480)
    assert r.take(whole) is whole  # nothing held and nothing to hold: passed through
