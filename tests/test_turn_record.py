"""A turn's gateway record in response.done and in the log, end to end over real sockets:
a caller on the native WebSocket, voice, and the simulated gateway over HTTP billing as the
seeds do (receipts, x402 on chat paid by the documented payer). Nothing secret reaches the
caller: not the API key, not a scoped key in the extra headers, not a payment proof.
"""

import asyncio
import base64
import json
import logging

import pytest

from tests import payers
from tests.samples import recording
from tests.stack import REPLY, SIMULATION, stack
from tests.test_gateway_voices import a_wav
from voice.bench.native import NativeCaller, call
from voice.gateway.base import ReferenceVoice
from voice.gateway.simulated import PaywallSettings

SECRET = "sim-x402-shared"
API_KEY = "sk-live-DO-NOT-LEAK-0001"
SCOPED_KEY = "pk-pipeline-DO-NOT-LEAK-0002"
BILLING = SIMULATION.model_copy(
    update={"receipts": True, "x402": PaywallSettings(routes=["chat"], price=1000, secret=SECRET)}
)
GATEWAY = {
    "api_key": API_KEY,
    "extra_headers": {"X-Pipeline-Key": SCOPED_KEY},
    "receipt_headers": ("x-receipt", "x-payment-response"),
    "x402_payer": "tests.payers:example",
    "x402_max_price": 1000,
}
VOICE_REF = {
    "ref_audio": "data:audio/wav;base64," + base64.b64encode(a_wav(0.1)).decode(),
    "ref_text": "This is how I sound.",
}


@pytest.fixture(autouse=True)
def payer_env(monkeypatch):
    payers.prepare(monkeypatch, SECRET)


async def test_response_done_records_every_gateway_call_of_the_turn(caplog):
    with caplog.at_level(logging.INFO, logger="voice.pipeline.session"):
        async with stack(BILLING, gateway=GATEWAY) as (url, simulated):
            result = await call(url, recording("q01_what_time.wav"), timeout_s=30)
    (done,) = result.of_type("response.done")
    assert done["status"] == "completed" and done["text"] == REPLY
    record = done["record"]
    (asr,), (llm,), tts = record["asr"], record["llm"], record["tts"]
    assert record["omitted"] == 0
    # One speech request per sentence (and, on a slow machine, one more if the caller's
    # short pause mid-question was speculated on long enough to ask for speech, counted).
    cancelled = done["speculation"]["cancelled"]["tts"]
    assert len(tts) == 3 == simulated.requests["speak"] - cancelled

    assert asr["attempts"] == 1 and asr["idempotency_key"] and asr["request_id"]
    assert [r["source"] for r in asr["receipts"]] == ["x-receipt", "body.receipt"]
    assert asr["receipts"][0]["value"].startswith("rcpt_")

    assert llm["attempts"] == 2 and llm["price"] == "1000"  # challenged, paid, resent once
    assert llm["idempotency_key"] is None and llm["completion_id"].startswith("chatcmpl-")
    assert {r["source"] for r in llm["receipts"]} == {"x-receipt", "x-payment-response"}

    keys = {call["idempotency_key"] for call in tts}
    assert None not in keys and len(keys) == 3  # one key per sentence, kept across attempts
    for speech in tts:
        assert speech["attempts"] == 1 and speech["price"] is None
        assert [r["source"] for r in speech["receipts"]] == ["x-receipt"]
    request_ids = [c["request_id"] for c in (asr, llm, *tts)]
    assert len(set(request_ids)) == 5

    # The operator's log line says the same, as one JSON object.
    (line,) = [r for r in caplog.records if "gateway record" in r.getMessage()]
    assert line.turn_record["response_id"] == done["response_id"]
    assert {k: line.turn_record[k] for k in ("asr", "llm", "tts")} == {
        k: record[k] for k in ("asr", "llm", "tts")
    }

    everything = json.dumps(result.events)
    (proof,) = [headers["X-Payment-Proof"] for headers in payers.given]
    for secret in (API_KEY, SCOPED_KEY, proof, SECRET):
        assert secret not in everything
        assert secret not in caplog.text


async def test_a_failed_turn_still_records_what_it_asked_for():
    unpaid = {**GATEWAY, "x402_payer": "tests.payers:refuse"}
    async with stack(BILLING, gateway=unpaid) as (url, _):
        result = await call(url, recording("q01_what_time.wav"), timeout_s=30)
    (error,) = result.of_type("error")
    assert error["code"] == "payment_required"
    (done,) = result.of_type("response.done")
    assert done["status"] == "failed"
    (llm,) = done["record"]["llm"]
    assert llm["attempts"] == 1 and llm["price"] is None and llm["request_id"]
    assert done["record"]["tts"] == []
    assert API_KEY not in json.dumps(result.events)


async def test_a_caller_sets_a_reference_voice_only_where_the_operator_allows():
    async with stack(gateway={"tts_ref_from_callers": True}) as (url, simulated):
        caller = NativeCaller(url, session={"voice_ref": VOICE_REF}, keep_audio=True)
        async with caller:
            async with asyncio.timeout(30):
                await caller.say(recording("q01_what_time.wav"))
                await caller.wait_for_events("response.done", 1, timeout_s=30)
    (updated,) = caller.of_type("session.updated")
    assert updated["session"]["voice"] is None
    assert updated["session"]["voice_ref"] == {
        "ref_text": VOICE_REF["ref_text"],
        "task_type": "Base",
    }
    assert VOICE_REF["ref_audio"] not in json.dumps(caller.events)
    assert caller.of_type("response.done")[0]["status"] == "completed"
    expected = ReferenceVoice(VOICE_REF["ref_audio"], VOICE_REF["ref_text"], "Base")
    assert simulated.voices and set(simulated.voices) == {expected}

    async with stack() as (url, simulated):
        caller = NativeCaller(url, session={"voice_ref": VOICE_REF})
        async with caller:
            await caller.wait_for_events("error", 1, timeout_s=10)
    (error,) = caller.of_type("error")
    assert error["code"] == "invalid_session_update"
    assert "reference-audio voice" in error["message"]
