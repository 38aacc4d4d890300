"""OpusStream: speech survives the encode, silence is one settled packet repeated without
encoding, and the stream decodes through pauses as if the encoder had run all along."""

import numpy as np
import pytest

from tests.opus_ear import heard, levels
from tests.samples import recording
from voice.audio.level import rms_dbfs
from voice.audio.opus import SAMPLES, SETTLE_MAX_FRAMES, TIME_BASE, ZEROS, OpusStream
from voice.audio.resample import resample
from voice.errors import AudioFormatError

SILENT_DBFS = -90.0
"""Decoded Opus silence is not all zeros: libopus leaves a least-significant-bit hiss."""


def speech_frames(name="q03_weather_paris.wav"):
    """A real recording's speech at 48 kHz, in 20 ms frames (its silent padding trimmed)."""
    pcm = resample(recording(name).pcm, 16_000, 48_000)
    frames = [pcm[i : i + 2 * SAMPLES] for i in range(0, len(pcm) - 2 * SAMPLES + 1, 2 * SAMPLES)]
    voiced = [i for i, f in enumerate(frames) if rms_dbfs(f) > -50]
    return frames[voiced[0] : voiced[-1] + 1]


def run(stream, frames):
    """``frames`` through ``stream`` (None for silence), stamped 960 apart from 0."""
    return [
        stream.silence(i * SAMPLES) if f is None else stream.speech(f, i * SAMPLES)
        for i, f in enumerate(frames)
    ]


def written(frames):
    return np.frombuffer(b"".join(ZEROS if f is None else f for f in frames), dtype="<i2")


def test_packets_are_mono_20_ms_and_carry_the_given_pts():
    packets = run(OpusStream(), [*speech_frames()[:5], None, None])
    assert [p.pts for p in packets] == [i * SAMPLES for i in range(7)]
    assert all(p.time_base == TIME_BASE for p in packets)
    tocs = [bytes(p)[0] for p in packets]
    assert all(toc & 0b100 == 0 for toc in tocs), tocs  # the stereo flag (RFC 6716 §3.1)
    assert all(toc & 0b11 == 0 for toc in tocs), tocs  # code 0: one frame per packet
    assert [frame_ms(toc) for toc in tocs] == [20] * len(tocs)


def frame_ms(toc: int) -> float:
    """A packet's frame duration from its TOC byte's config (RFC 6716 §3.1, Table 2)."""
    config = toc >> 3
    if config < 12:  # SILK-only: 10, 20, 40, 60 ms for each of NB, MB, WB
        return (10, 20, 40, 60)[config % 4]
    if config < 16:  # hybrid: 10, 20 ms for SWB and FB
        return (10, 20)[config % 2]
    return (2.5, 5, 10, 20)[config % 4]  # CELT-only


def test_speech_survives_the_encode():
    frames = speech_frames()
    out = heard(run(OpusStream(), [*frames, None, None]))
    inp = written(frames)
    # Loudness within half a dB overall, and the 20 ms envelope followed frame by frame.
    assert rms_dbfs(out[: len(inp)].tobytes()) == pytest.approx(rms_dbfs(inp.tobytes()), abs=0.5)
    pairs = [(a, b) for a, b in zip(levels(inp), levels(out), strict=False) if a > -45]
    assert len(pairs) > 50
    assert np.mean([abs(a - b) for a, b in pairs]) < 1.0
    assert max(abs(a - b) for a, b in pairs) < 4.0
    # And the waveform itself, with the look-ahead taken out: Opus codes speech closely.
    assert np.corrcoef(inp.astype(float), out[: len(inp)].astype(float))[0, 1] > 0.85


def test_silence_settles_on_one_packet_that_costs_no_encode_and_decodes_to_silence():
    stream = OpusStream()
    packets = run(stream, [None] * 30)
    settled = stream.encoded
    assert 2 <= settled <= SETTLE_MAX_FRAMES  # the fresh encoder settles within a few frames
    assert len({bytes(p) for p in packets[settled - 1 :]}) == 1
    more = [stream.silence(i * SAMPLES) for i in range(30, 60)]
    assert stream.encoded == settled  # from then on silence is the settled packet, free
    assert {bytes(p) for p in more} == {bytes(packets[-1])}
    assert len(bytes(more[0])) < 40
    assert max(levels(heard(packets + more))) < SILENT_DBFS


def test_after_speech_the_encoder_runs_until_its_tail_is_out():
    stream = OpusStream()
    speech = speech_frames()[:40]
    run(stream, [None] * 10 + speech)
    before = stream.encoded
    for i in range(20):
        stream.silence((50 + i) * SAMPLES)
    tail = stream.encoded - before
    # At least two: the last speech's look-ahead comes out in the first, and the encoder's
    # output for zeros has to repeat once before the stream trusts it.
    assert 2 <= tail <= SETTLE_MAX_FRAMES


def test_pauses_decode_as_if_the_encoder_had_run_all_along():
    speech = speech_frames()[:60]
    timeline = [None] * 20 + speech + [None] * 25 + speech + [None] * 25
    ours = run(OpusStream(), timeline)
    # The same timeline with every silent frame encoded: what aiortc's own encoder would do.
    always = OpusStream()
    reference = [always.speech(f or ZEROS, i * SAMPLES) for i, f in enumerate(timeline)]
    a, b = heard(ours), heard(reference)
    inp = written(timeline)
    # Pauses are silent, with no click going into or out of them.
    for la, lb, li in zip(levels(a), levels(b), levels(inp), strict=False):
        if li > -45:
            assert la == pytest.approx(lb, abs=3.0)
        assert la <= max(lb, li) + 3.0
    pause = slice((20 + 60 + 5) * SAMPLES, (20 + 60 + 25) * SAMPLES)
    assert rms_dbfs(a[pause].tobytes()) < SILENT_DBFS
    # The second reply starts as cleanly as the first: no burst at its first frames.
    onset = (20 + 60 + 25) * SAMPLES
    assert np.max(np.abs(a[onset - SAMPLES : onset + 2 * SAMPLES])) <= 1.2 * np.max(
        np.abs(inp[onset - SAMPLES : onset + 2 * SAMPLES])
    )


def test_a_frame_of_the_wrong_size_is_refused():
    with pytest.raises(AudioFormatError, match="1920 bytes"):
        OpusStream().speech(bytes(100), 0)
