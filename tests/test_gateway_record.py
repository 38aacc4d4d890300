"""The record HttpGateway keeps of each call, over real HTTP against the simulated gateway:
request ids, idempotency keys, attempts, and receipts from headers and JSON bodies.
"""

import json
from contextlib import asynccontextmanager

import httpx
import pytest

from tests.servers import serve_app
from tests.test_gateway_e2e import FAST, MESSAGES, REPLY, wav_bytes
from tests.timing import MS
from voice.config import GatewaySettings
from voice.core.record import GatewayCall, Receipt, TurnRecord
from voice.gateway.http import HttpGateway
from voice.gateway.server import create_gateway_app
from voice.gateway.simulated import Fault, SimulatedGateway

API_KEY = "sk-record-test-key-123"
RECEIPTING = FAST.model_copy(update={"receipts": True})


@asynccontextmanager
async def recording_gateway(simulation=RECEIPTING, **settings):
    simulated = SimulatedGateway(simulation)
    async with serve_app(create_gateway_app(simulated, api_key=API_KEY)) as url:
        options = {"api_key": API_KEY, "max_retries": 0, "receipt_headers": "x-receipt"}
        async with HttpGateway(GatewaySettings(url=url, **options | settings)) as gateway:
            yield gateway, simulated


async def test_a_transcription_records_its_key_request_id_and_both_receipts():
    async with recording_gateway() as (gateway, _):
        call = GatewayCall()
        assert await gateway.transcribe(wav_bytes(), call=call) == "what time is it"
    assert call.attempts == 1 and call.idempotency_key and call.request_id
    header, body = call.receipts
    assert header == Receipt("x-receipt", header.value) and header.value.startswith("rcpt_")
    assert body == Receipt("body.receipt", header.value)  # the same receipt, in the JSON too


async def test_chat_and_speech_record_the_receipt_header():
    async with recording_gateway() as (gateway, _):
        chat, speech = GatewayCall(), GatewayCall()
        assert "".join([d async for d in gateway.chat(MESSAGES, call=chat)]) == REPLY
        assert [f async for f in gateway.speak(REPLY, call=speech)]
    assert chat.idempotency_key is None and speech.idempotency_key
    assert chat.completion_id and chat.completion_id.startswith("chatcmpl-")
    for call in (chat, speech):
        assert call.attempts == 1 and [r.source for r in call.receipts] == ["x-receipt"]
    assert chat.receipts != speech.receipts  # one per request: each signs its request id


async def test_a_retried_transcription_counts_its_attempts_under_one_key():
    faulty = RECEIPTING.model_copy(
        update={"faults": [Fault(route="transcribe", kind="status", status=503)]}
    )
    async with recording_gateway(faulty, max_retries=1, retry_backoff_s=10 * MS) as (gw, _):
        call = GatewayCall()
        await gw.transcribe(wav_bytes(), call=call)
    assert call.attempts == 2 and call.idempotency_key
    assert len(call.receipts) == 2  # the success's header and body; the 503 had none


async def test_the_gateways_own_request_id_is_recorded():
    def answer(request: httpx.Request) -> httpx.Response:
        body = {"text": "hi", "lucid": {"receipt_id": f"rcpt-{API_KEY}"}}
        return httpx.Response(200, json=body, headers={"x-request-id": "gw-req-42"})

    settings = GatewaySettings(url="http://gw.test/v1", api_key=API_KEY, max_retries=0)
    async with HttpGateway(settings, transport=httpx.MockTransport(answer)) as gateway:
        call = GatewayCall()
        await gateway.transcribe(wav_bytes(), call=call)
    assert call.request_id == "gw-req-42"
    # LucidLayer's receipt id sits one level down; a key echoed in it is masked.
    assert call.receipts == [Receipt("body.lucid.receipt_id", "rcpt-***")]


def test_a_record_lists_calls_per_stage_and_bounds_them():
    record = TurnRecord()
    record.add("llm").attempts = 1
    for _ in range(70):
        record.add("tts")
    as_dict = record.as_dict()
    assert [len(as_dict[s]) for s in ("asr", "llm", "tts")] == [0, 1, 64]
    assert as_dict["omitted"] == 6
    assert json.loads(json.dumps(as_dict)) == as_dict


@pytest.mark.parametrize("names", ["none", ""])
def test_receipt_headers_can_be_turned_off(names):
    settings = GatewaySettings(receipt_headers=names)
    assert settings.receipt_headers == ()
