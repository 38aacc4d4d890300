"""The dialects' parsers alone, text in → shared vocabulary out: the shared wire models read
both carriers alike, and each dialect keeps its own spelling of ``start``."""

import json

import pytest

from voice.errors import AudioFormatError, ProtocolError
from voice.transports.telephony import (
    CarrierError,
    Connected,
    Dtmf,
    MarkEcho,
    Media,
    Start,
    Stop,
)
from voice.transports.telnyx import TelnyxDialect
from voice.transports.twilio import TwilioDialect

DIALECTS = [TwilioDialect(), TelnyxDialect()]


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_the_shared_messages_read_alike_in_both_dialects(dialect):
    def parse(message):
        return dialect.parse(json.dumps(message))

    assert parse({"event": "connected", "version": "1"}) == Connected()
    media = {"track": "inbound", "chunk": "3", "payload": "AAAA", "timestamp": "5"}
    assert parse({"event": "media", "media": media}) == Media(3, "AAAA")
    outbound = {"track": "outbound", "chunk": 4, "payload": "AA"}
    assert parse({"event": "media", "media": outbound}) == Media(4, "AA", inbound=False)
    assert parse({"event": "dtmf", "dtmf": {"digit": "5"}}) == Dtmf("5")
    assert parse({"event": "mark", "mark": {"name": "m1"}}) == MarkEcho("m1")
    assert parse({"event": "stop"}) == Stop()
    with pytest.raises(ProtocolError, match="media.chunk") as caught:
        parse({"event": "media", "media": {"chunk": "x", "payload": ""}})
    assert caught.value.code == "bad_message"


def test_twilio_spells_start_in_camel_case_and_takes_only_mulaw():
    start = {
        "event": "start",
        "streamSid": "MZ1",
        "start": {
            "callSid": "CA1",
            "customParameters": {"n": 1},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }
    parsed = TwilioDialect().parse(json.dumps(start))
    assert isinstance(parsed, Start)
    assert (parsed.stream_id, parsed.call_id, parsed.codec.name) == ("MZ1", "CA1", "PCMU")
    assert parsed.parameters == {"n": "1"}
    with pytest.raises(ProtocolError, match="start.mediaFormat.sampleRate"):
        TwilioDialect().parse(json.dumps({**start, "start": {"mediaFormat": {"encoding": "x"}}}))
    start["start"]["mediaFormat"]["sampleRate"] = 16000
    with pytest.raises(AudioFormatError, match="only audio/x-mulaw 8000 Hz mono"):
        TwilioDialect().parse(json.dumps(start))


def test_telnyx_spells_start_in_snake_case_and_reports_errors():
    start = {
        "event": "start",
        "stream_id": "s1",
        "start": {
            "call_control_id": "v3:1",
            "media_format": {"encoding": "L16", "sample_rate": 16000, "channels": 1},
        },
    }
    parsed = TelnyxDialect().parse(json.dumps(start))
    assert isinstance(parsed, Start)
    assert (parsed.stream_id, parsed.call_id, parsed.codec.rate) == ("s1", "v3:1", 16000)
    with pytest.raises(ProtocolError, match="streamSid"):
        TwilioDialect().parse(json.dumps(start))
    error = {"event": "error", "payload": {"code": 100002, "title": "Unknown error"}}
    assert TelnyxDialect().parse(json.dumps(error)) == CarrierError(json.dumps(error["payload"]))
    with pytest.raises(ProtocolError) as caught:
        TwilioDialect().parse(json.dumps(error))
    assert caught.value.code == "unknown_event"
