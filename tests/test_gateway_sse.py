"""The sans-I/O halves of the HTTP gateway: SSE decoding and the gateway's wire formats."""

import json
import struct
from datetime import UTC, datetime, timedelta

import pytest

from voice.audio.frames import SPEECH_RATE
from voice.errors import (
    AudioFormatError,
    GatewayAuthError,
    GatewayBadRequest,
    GatewayTimeout,
    GatewayUnavailable,
    RateLimited,
)
from voice.gateway import http_wire as wire
from voice.gateway.sse import SseDecoder, SseEvent


def decode(data: bytes, *, piece: int | None = None) -> list[SseEvent]:
    """Feed ``data`` whole, or ``piece`` bytes at a time, then end the stream."""
    decoder = SseDecoder()
    events: list[SseEvent] = []
    step = piece or max(len(data), 1)
    for i in range(0, len(data), step):
        events += decoder.feed(data[i : i + step])
    return events + decoder.end_of_stream()


def every_split(data: bytes):
    """``data`` cut in two at every byte offset: the chunk boundaries a network may choose."""
    for cut in range(len(data) + 1):
        yield [data[:cut], data[cut:]]


# -- SseDecoder -----------------------------------------------------------------------------


def test_events_are_dispatched_on_blank_lines():
    events = decode(b"data: one\n\ndata: two\n\n")
    assert [e.data for e in events] == ["one", "two"]


def test_multi_line_data_is_joined_with_lf():
    assert decode(b"data: a\ndata: b\ndata:\n\n") == [SseEvent("a\nb\n")]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending_is_accepted(eol):
    stream = eol.join([b"event: delta", b"data: x", b"", b"data: y", b"", b""])
    assert decode(stream) == [SseEvent("x", event="delta"), SseEvent("y")]


def test_comments_keep_alives_and_unknown_fields_are_ignored():
    stream = b": ping\n\n:\n\n\n\nretry: 3000\nfoo: bar\ndata: real\n\n"
    assert decode(stream) == [SseEvent("real")]


def test_only_one_space_after_the_colon_is_removed():
    assert decode(b"data:  two spaces\n\ndata:none\n\n") == [
        SseEvent(" two spaces"),
        SseEvent("none"),
    ]


def test_id_field_is_carried_to_later_events():
    events = decode(b"id: 7\ndata: a\n\ndata: b\n\n")
    assert [e.id for e in events] == ["7", "7"]


def test_a_split_at_any_byte_gives_the_same_events():
    stream = (
        "\ufeffdata: héllo 👋 wörld\r\n: comment\r\n\r\n"
        "data: 中文\rdata: second\r\r"
        "event: x\ndata: {}\n\n"
    ).encode()
    expected = decode(stream)
    assert [e.data for e in expected] == ["héllo 👋 wörld", "中文\nsecond", "{}"]
    for pieces in every_split(stream):
        decoder = SseDecoder()
        events = [e for p in pieces for e in decoder.feed(p)] + decoder.end_of_stream()
        assert events == expected, pieces
    assert decode(stream, piece=1) == expected


def test_cr_at_the_end_of_a_chunk_and_lf_at_the_start_of_the_next_are_one_break():
    decoder = SseDecoder()
    assert decoder.feed(b"data: a\r") == []
    # Were the LF a second line break, this would dispatch "a" alone.
    assert decoder.feed(b"\ndata: b\r\n\r\n") == [SseEvent("a\nb")]


def test_a_split_byte_order_mark_is_still_dropped():
    decoder = SseDecoder()
    assert decoder.feed(b"\xef") == []
    assert decoder.feed(b"\xbb\xbfdata: x\n\n") == [SseEvent("x")]


def test_end_of_stream_dispatches_an_unterminated_last_event():
    assert decode(b"data: a\n\ndata: [DONE]") == [SseEvent("a"), SseEvent("[DONE]")]
    assert decode(b"data: [DONE]\n") == [SseEvent("[DONE]")]
    assert decode(b"") == []


def test_a_line_that_never_ends_is_refused():
    decoder = SseDecoder(max_event_bytes=64)
    decoder.feed(b"data: " + b"x" * 50)
    with pytest.raises(ValueError, match="64 bytes"):
        decoder.feed(b"x" * 50)


def test_invalid_utf8_is_replaced_not_raised():
    assert decode(b"data: \xff\n\n") == [SseEvent("\ufffd")]


# -- ChatStream -----------------------------------------------------------------------------


def chunk(delta=None, *, choices=None, finish=None):
    if choices is None:
        choices = [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    body = {"id": "c1", "object": "chat.completion.chunk", "choices": choices}
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


OPENAI_STREAM = (
    chunk({"role": "assistant", "content": ""})
    + ": keep-alive\n\n"
    + chunk({"content": "Héllo"})
    + chunk({"content": " wörld 👋"})
    + chunk({"content": None})
    + chunk({}, finish="stop")
    + chunk(choices=[])  # the usage chunk of stream_options.include_usage
    + "data: [DONE]\n\n"
).encode()


def test_chat_stream_yields_content_deltas_only():
    stream = wire.ChatStream()
    assert stream.feed(OPENAI_STREAM) == ["Héllo", " wörld 👋"]
    assert stream.done and stream.failure is None


def test_chat_stream_split_at_any_byte_gives_the_same_text():
    for pieces in every_split(OPENAI_STREAM.replace(b"\n", b"\r\n")):
        stream = wire.ChatStream()
        text = "".join(d for p in pieces for d in stream.feed(p)) + "".join(stream.end_of_stream())
        assert text == "Héllo wörld 👋" and stream.done


def test_chat_stream_ignores_bytes_after_done():
    stream = wire.ChatStream()
    assert stream.feed(b"data: [DONE]\n\n" + chunk({"content": "late"}).encode()) == []
    assert stream.feed(chunk({"content": "later"}).encode()) == []


def test_chat_stream_delivers_deltas_ahead_of_an_error_then_holds_it():
    error = {"error": {"message": "upstream overloaded", "type": "server_error", "code": 503}}
    data = (chunk({"content": "Hi"}) + f"data: {json.dumps(error)}\n\n").encode()
    stream = wire.ChatStream()
    assert stream.feed(data) == ["Hi"]
    assert isinstance(stream.failure, wire.ChatStreamError)
    assert stream.failure.info == wire.ErrorInfo("server_error", "upstream overloaded", 503)
    assert stream.feed(chunk({"content": "more"}).encode()) == []


def test_chat_stream_reads_an_error_event():
    stream = wire.ChatStream()
    stream.feed(b'event: error\ndata: {"message": "boom"}\n\n')
    assert isinstance(stream.failure, wire.ChatStreamError)
    assert stream.failure.info.message == "boom"


def test_chat_stream_holds_a_malformed_event_as_value_error():
    stream = wire.ChatStream()
    assert stream.feed(chunk({"content": "ok"}).encode() + b"data: {not json\n\n") == ["ok"]
    assert isinstance(stream.failure, ValueError)
    assert "not a JSON object" in str(stream.failure)


def test_chat_stream_without_done_ends_cleanly():
    stream = wire.ChatStream()
    assert stream.feed(chunk({"content": "a"}).encode()[:-1]) == []
    assert stream.end_of_stream() == ["a"]
    assert not stream.done and stream.failure is None


def test_chunk_text_reads_completions_and_legacy_choices():
    assert wire.chunk_text({"choices": [{"message": {"content": "whole"}}]}) == "whole"
    assert wire.chunk_text({"choices": [{"text": "legacy"}]}) == "legacy"
    assert wire.chunk_text({"choices": "nonsense"}) is None
    assert wire.completion_text(b'{"choices": [{"message": {"content": "x"}}]}') == "x"
    with pytest.raises(wire.ChatStreamError):
        wire.completion_text(b'{"error": {"message": "no"}}')


# -- bodies, errors, Retry-After ------------------------------------------------------------


def test_transcript_reads_json_or_plain_text():
    assert wire.transcript(b'{"text": " hello "}', "application/json") == "hello"
    assert wire.transcript(b"  plain words\n", "text/plain") == "plain words"
    assert wire.transcript(b'{"text": "sniffed"}', "") == "sniffed"
    with pytest.raises(ValueError):
        wire.transcript(b'{"txt": 1}', "application/json")
    with pytest.raises(ValueError):
        wire.transcript(b"{broken", "application/json")


def test_model_ids():
    assert wire.model_ids(b'{"object": "list", "data": [{"id": "a"}, {"id": "b"}]}') == [
        "a",
        "b",
    ]
    with pytest.raises(ValueError):
        wire.model_ids(b'{"data": [{"name": "a"}]}')


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            '{"error": {"message": "bad key", "type": "invalid_request_error", "code": "k"}}',
            wire.ErrorInfo("invalid_request_error", "bad key"),
        ),
        (
            '{"error": {"message": "m", "code": "rate_limited"}}',
            wire.ErrorInfo("rate_limited", "m"),
        ),
        ('{"error": "just a string"}', wire.ErrorInfo(None, "just a string")),
        ('{"detail": "fastapi style"}', wire.ErrorInfo(None, "fastapi style")),
        ("<html>Bad Gateway</html>\n", wire.ErrorInfo(None, "<html>Bad Gateway</html>")),
        ("[1, 2]", wire.ErrorInfo(None, "[1, 2]")),
        ("", wire.ErrorInfo(None, None)),
    ],
)
def test_error_body(body, expected):
    assert wire.error_body(body) == expected


@pytest.mark.parametrize(
    ("error_type", "cls"),
    [
        ("rate_limit_exceeded", RateLimited),
        ("authentication_error", GatewayAuthError),
        ("timeout", GatewayTimeout),
        ("invalid_request_error", GatewayBadRequest),
        ("server_error", GatewayUnavailable),
        (None, GatewayUnavailable),
    ],
)
def test_error_class_for_type(error_type, cls):
    assert wire.error_class_for_type(error_type) is cls


def test_retry_after_reads_seconds_http_dates_and_milliseconds():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    later = now + timedelta(seconds=42)
    assert wire.retry_after({"retry-after": "2"}, now) == 2.0
    assert wire.retry_after({"retry-after": "1.5"}, now) == 1.5
    assert wire.retry_after({"retry-after-ms": "250", "retry-after": "9"}, now) == 0.25
    http_date = later.strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert wire.retry_after({"retry-after": http_date}, now) == 42.0
    past = (now - timedelta(hours=1)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert wire.retry_after({"retry-after": past}, now) == 0.0
    assert wire.retry_after({"retry-after": "soon"}, now) is None
    assert wire.retry_after({"retry-after": "nan"}, now) is None
    assert wire.retry_after({}, now) is None


# -- speech audio ---------------------------------------------------------------------------


def test_pcm_speech_carries_an_odd_byte_to_the_next_chunk():
    pcm = bytes(range(1, 12))  # 11 bytes: 5 samples and half of a sixth
    speech = wire.SpeechStream("pcm")
    fed = [speech.feed(pcm[i : i + 3]) for i in range(0, len(pcm), 3)]
    frames = [f for f in fed if f is not None]
    assert all(len(f.pcm) % 2 == 0 and f.sample_rate == SPEECH_RATE for f in frames)
    assert b"".join(f.pcm for f in frames) == pcm[:10]
    assert speech.end() is True  # the 11th byte was dropped, and said so


def streamed_wav(pcm: bytes, rate: int) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (
        b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"data" + struct.pack("<I", 0xFFFFFFFF) + pcm
    )  # fmt: skip


def test_wav_speech_takes_its_rate_from_the_header():
    pcm = bytes(range(200))
    data = streamed_wav(pcm, 22_050)
    speech = wire.SpeechStream("wav")
    fed = [speech.feed(data[i : i + 7]) for i in range(0, len(data), 7)]
    frames = [f for f in fed if f is not None]
    assert {f.sample_rate for f in frames} == {22_050}
    assert b"".join(f.pcm for f in frames) == pcm
    assert speech.end() is False


def test_wav_speech_refuses_a_stream_that_is_not_wav():
    speech = wire.SpeechStream("wav")
    with pytest.raises(AudioFormatError):
        speech.feed(b'{"error": "not audio"}')
    with pytest.raises(AudioFormatError):
        wire.SpeechStream("wav").end()
