"""WAV: reading what people have, writing what players read, and parsing TTS streams."""

import io
import random
import struct
import wave

import numpy as np
import pytest

from voice.audio.frames import PcmFrame
from voice.audio.g711 import mulaw_decode
from voice.audio.wav import WavStreamParser, load_wav, read_wav, save_wav, wav_bytes
from voice.errors import AudioFormatError

PCM, FLOAT, MULAW, ADPCM, EXTENSIBLE = 0x0001, 0x0003, 0x0007, 0x0011, 0xFFFE
PCM_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")  # KSDATAFORMAT_SUBTYPE_*


def chunk(chunk_id: bytes, body: bytes, size: int | None = None) -> bytes:
    pad = b"\x00" if len(body) % 2 else b""
    return struct.pack("<4sI", chunk_id, len(body) if size is None else size) + body + pad


def fmt_body(tag=PCM, channels=1, rate=16000, bits=16, extensible=False) -> bytes:
    block = channels * bits // 8
    if not extensible:
        return struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    head = struct.pack("<HHIIHH", EXTENSIBLE, channels, rate, rate * block, block, bits)
    return head + struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", tag) + PCM_GUID_TAIL


def make_wav(payload, *, before=(), after=b"", riff_size=None, data_size=None, **fmt):
    body = b"WAVE" + chunk(b"fmt ", fmt_body(**fmt)) + b"".join(before)
    body += chunk(b"data", payload, data_size) + after
    return struct.pack("<4sI", b"RIFF", len(body) if riff_size is None else riff_size) + body


def pcm(values) -> bytes:
    return np.asarray(values, dtype="<i2").tobytes()


def values(data: bytes) -> list[int]:
    return [int(v) for v in np.frombuffer(data, dtype="<i2")]


LIST_CHUNK = chunk(b"LIST", b"INFOISFT\x05\x00\x00\x00Lavf\x00")  # odd size: padded
PAYLOAD = pcm(np.arange(-1000, 1000, 7))


# --- read_wav / wav_bytes -----------------------------------------------------------


def test_wav_bytes_round_trip_and_stdlib_reads_it(tmp_path):
    frame = PcmFrame(PAYLOAD, 24000)
    assert read_wav(wav_bytes(frame)) == frame
    path = tmp_path / "a.wav"
    save_wav(path, frame)
    assert load_wav(str(path)) == frame
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 24000)
        assert w.readframes(w.getnframes()) == PAYLOAD


def test_reads_stdlib_stereo_and_averages_the_channels():
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(pcm([1000, 3000, -32768, -32768, 32767, 32767, 100, -101]))
    assert read_wav(buf.getvalue()) == PcmFrame(pcm([2000, -32768, 32767, 0]), 44100)


@pytest.mark.parametrize(
    ("raw", "fmt", "expected"),
    [
        (bytes([0, 128, 255, 129]), {"bits": 8}, [-32768, 0, 32512, 256]),
        (
            b"\xff\xff\x7f" + b"\x00\x00\x80" + b"\x00\x01\x00" + b"\x00\xff\xff",
            {"bits": 24},
            [32767, -32768, 1, -1],
        ),
        (
            np.array([2**31 - 1, -(2**31), 65536, -65536], "<i4").tobytes(),
            {"bits": 32},
            [32767, -32768, 1, -1],
        ),
        (
            np.array([1.0, -1.0, 0.5, 2.0, -2.0, 0.0], "<f4").tobytes(),
            {"tag": FLOAT, "bits": 32},
            [32767, -32768, 16384, 32767, -32768, 0],
        ),
        (
            b"\x00\x00\x7f" + b"\x00\x00\x80",
            {"tag": PCM, "bits": 24, "extensible": True},
            [32512, -32768],
        ),
        (
            np.array([0.25], "<f4").tobytes(),
            {"tag": FLOAT, "bits": 32, "extensible": True},
            [8192],
        ),
    ],
    ids=["u8", "s24", "s32", "f32", "extensible-s24", "extensible-f32"],
)
def test_converts_other_sample_formats_to_pcm16(raw, fmt, expected):
    assert read_wav(make_wav(raw, rate=8000, **fmt)) == PcmFrame(pcm(expected), 8000)


def test_float_stereo_downmix():
    raw = np.array([0.5, -0.5, 0.5, 0.5], "<f4").tobytes()
    assert values(read_wav(make_wav(raw, tag=FLOAT, bits=32, channels=2)).pcm) == [0, 16384]


def test_mulaw_wav_is_decoded():
    raw = bytes([0x00, 0x80, 0xFF])
    assert read_wav(make_wav(raw, tag=MULAW, bits=8)).pcm == mulaw_decode(raw)


def test_skips_extra_chunks_and_stops_at_the_data_size():
    data = make_wav(PAYLOAD, before=[LIST_CHUNK, chunk(b"fact", b"\x00" * 4)], after=LIST_CHUNK)
    assert read_wav(data) == PcmFrame(PAYLOAD, 16000)


@pytest.mark.parametrize("size", [0, 0xFFFFFFFF])
def test_streaming_sizes_mean_until_the_end(size):
    data = make_wav(PAYLOAD, riff_size=size, data_size=size)
    assert read_wav(data).pcm == PAYLOAD


def test_truncated_file_keeps_the_whole_samples_it_has():
    data = make_wav(PAYLOAD)[:-3]
    assert read_wav(data).pcm == PAYLOAD[:-4]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"ID3\x04" + bytes(40), "not a WAV file"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", "not a WAV file"),
        (b"RIFF", "only 4 bytes"),
        (b"RF64" + bytes(40), "RF64"),
        (make_wav(bytes(8), tag=ADPCM, bits=4), "WAV is 4-bit IMA ADPCM mono at 16000 Hz"),
        (make_wav(bytes(8), bits=12), "WAV is 12-bit integer PCM"),
        (make_wav(bytes(16), tag=FLOAT, bits=64, channels=2), "WAV is 64-bit float stereo"),
        (b"RIFF\x04\x00\x00\x00WAVE" + chunk(b"fmt ", fmt_body()), "no data chunk"),
        (b"RIFF\x04\x00\x00\x00WAVE" + chunk(b"data", PAYLOAD), "data chunk before the fmt"),
        (b"RIFF\x04\x00\x00\x00WAVE" + chunk(b"fmt ", b"\x01\x00"), "fmt chunk is 2 bytes"),
        (make_wav(PAYLOAD, channels=0), "header is broken"),
    ],
)
def test_unreadable_files_say_why(data, message):
    with pytest.raises(AudioFormatError, match=message):
        read_wav(data)


def test_unsupported_format_message_says_what_to_do():
    with pytest.raises(AudioFormatError) as info:
        read_wav(make_wav(bytes(8), tag=ADPCM, bits=4))
    assert "ffmpeg" in info.value.message and "pcm_s16le" in info.value.message


def test_wav_bytes_refuses_a_torn_sample():
    with pytest.raises(AudioFormatError, match="even"):
        wav_bytes(PcmFrame(b"\x00\x01\x02", 16000))


# --- WavStreamParser ----------------------------------------------------------------

STREAM = make_wav(PAYLOAD, before=[LIST_CHUNK], rate=24000)
FMT_END = 12 + 8 + 16  # byte offset where the fmt chunk is complete


def feed_all(parser: WavStreamParser, pieces) -> bytes:
    out = []
    for piece in pieces:
        got = parser.feed(piece)
        assert len(got) % 2 == 0
        out.append(got)
    return b"".join(out)


def test_header_split_at_every_offset():
    for split in range(len(STREAM) + 1):
        parser = WavStreamParser()
        first = parser.feed(STREAM[:split])
        assert parser.sample_rate == (24000 if split >= FMT_END else None), split
        assert len(first) % 2 == 0, split
        assert first + parser.feed(STREAM[split:]) == PAYLOAD, split
        assert parser.sample_rate == 24000
        parser.close()


def test_one_byte_at_a_time():
    parser = WavStreamParser()
    assert feed_all(parser, [STREAM[i : i + 1] for i in range(len(STREAM))]) == PAYLOAD


def test_random_splits_with_empty_pieces():
    rng = random.Random(5)
    for _ in range(200):
        cuts = sorted(rng.randint(0, len(STREAM)) for _ in range(rng.randint(1, 6)))
        pieces = [STREAM[a:b] for a, b in zip([0, *cuts], [*cuts, len(STREAM)], strict=True)]
        assert feed_all(WavStreamParser(), pieces) == PAYLOAD


@pytest.mark.parametrize("size", [0, 0xFFFFFFFF])
def test_streaming_sizes_pass_everything_through(size):
    parser = WavStreamParser()
    data = make_wav(PAYLOAD, riff_size=size, data_size=size)
    assert parser.feed(data[:50]) + parser.feed(data[50:]) + parser.feed(b"\x01\x02") == (
        PAYLOAD + b"\x01\x02"
    )


def test_sized_data_chunk_ends_the_samples():
    parser = WavStreamParser()
    data = make_wav(PAYLOAD, after=LIST_CHUNK)
    assert feed_all(parser, [data[:100], data[100:], b"more junk"]) == PAYLOAD


def test_odd_byte_waits_for_its_partner():
    parser = WavStreamParser()
    head = len(STREAM) - len(PAYLOAD)
    assert parser.feed(STREAM[: head + 3]) == PAYLOAD[:2]
    assert parser.feed(STREAM[head + 3 : head + 4]) == PAYLOAD[2:4]


def test_extensible_pcm16_mono_is_accepted():
    parser = WavStreamParser()
    assert parser.feed(make_wav(PAYLOAD, extensible=True)) == PAYLOAD
    assert parser.sample_rate == 16000


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        ({"channels": 2}, "16-bit integer PCM stereo"),
        ({"tag": FLOAT, "bits": 32}, "32-bit float mono"),
        ({"bits": 8}, "8-bit integer PCM mono"),
        ({"tag": MULAW, "bits": 8, "rate": 8000}, "8-bit mu-law mono at 8000 Hz"),
    ],
)
def test_stream_refuses_anything_but_pcm16_mono(fmt, message):
    with pytest.raises(AudioFormatError, match=f"streamed WAV is {message}"):
        WavStreamParser().feed(make_wav(bytes(64), **fmt))


def test_stream_refuses_a_non_wav_body_early():
    parser = WavStreamParser()
    with pytest.raises(AudioFormatError, match="not a WAV file"):
        parser.feed(b'{"e')  # a JSON error body is caught on its first bytes


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"RIFF\x00\x00\x00\x00WAVE" + chunk(b"data", PAYLOAD), "data chunk before the fmt"),
        (b"RIFF\x00\x00\x00\x00WAVE" + struct.pack("<4sI", b"fmt ", 1 << 20), "not a WAV"),
    ],
)
def test_stream_refuses_broken_headers(data, message):
    with pytest.raises(AudioFormatError, match=message):
        WavStreamParser().feed(data)


def test_close_before_any_sample_raises():
    parser = WavStreamParser()
    parser.feed(STREAM[:30])
    with pytest.raises(AudioFormatError, match="ended after 30 bytes, before its data chunk"):
        parser.close()


def test_close_with_an_empty_data_chunk_is_fine():
    parser = WavStreamParser()
    assert parser.feed(make_wav(b"")) == b""
    parser.close()
