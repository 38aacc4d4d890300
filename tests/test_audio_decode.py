"""Recordings from files in the formats people have, and a clear word on every file that is
not one: what `voice call` and `voice bench` read."""

import pytest

from tests.samples import SAMPLES, encode, recording
from voice.audio.decode import load_audio
from voice.bench.ear import Ear
from voice.errors import AudioFormatError

SAMPLE = "q01_what_time.wav"


def sound(frame):
    """Where sound starts and ends in ``frame``, in seconds (the bench's own detector)."""
    ear = Ear(frame.sample_rate)
    ear.receive(frame.pcm, 0.0)
    spans = ear.spans()
    return spans[0].start, spans[-1].end


@pytest.mark.parametrize("suffix", [".mp3", ".ogg", ".flac", ".m4a"])
def test_compressed_formats_decode_to_the_same_speech_at_the_same_place(tmp_path, suffix):
    original = recording(SAMPLE)
    decoded = load_audio(encode(original, tmp_path / f"q01{suffix}"))
    # The encoder's own rate (Opus is always 48 kHz), mono PCM16, as long as the original
    # give or take an encoder frame of padding.
    assert decoded.sample_rate in (16_000, 48_000)
    assert abs(decoded.duration_ms - original.duration_ms) < 80
    start, end = sound(decoded)
    assert start == pytest.approx(sound(original)[0], abs=0.03)
    assert end == pytest.approx(sound(original)[1], abs=0.03)


def test_a_wav_is_read_exactly_and_one_in_an_encoding_read_wav_lacks_goes_to_ffmpeg(tmp_path):
    assert load_audio(SAMPLES / SAMPLE) == recording(SAMPLE)
    adpcm = encode(recording(SAMPLE), tmp_path / "adpcm.wav", codec="adpcm_ima_wav")
    decoded = load_audio(adpcm)
    assert decoded.sample_rate == 16_000
    assert sound(decoded) == pytest.approx(sound(recording(SAMPLE)), abs=0.03)


def test_every_file_that_is_not_a_recording_is_named_with_what_is_wrong(tmp_path):
    (tmp_path / "notes.txt").write_text("not audio at all")
    (tmp_path / "empty.mp3").write_bytes(b"")
    (tmp_path / "torn.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")
    cases = {
        tmp_path / "missing.wav": "no such file",
        tmp_path: "is a folder, not an audio file",
        tmp_path / "notes.txt": "not an audio file voice can decode",
        tmp_path / "empty.mp3": "the file is empty",
        tmp_path / "torn.wav": "WAV has no fmt chunk",
    }
    for path, words in cases.items():
        with pytest.raises(AudioFormatError) as caught:
            load_audio(path)
        assert words in caught.value.message, path
        assert str(path) in caught.value.message
