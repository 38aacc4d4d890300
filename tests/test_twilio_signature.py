"""X-Twilio-Signature on the TwiML request and the stream handshake, and the TwiML itself.

The expected signature is computed here from Twilio's documented algorithm (base64
HMAC-SHA1 of the URL followed by the POST parameters sorted by name), not with the server's
own helper.
"""

import base64
import hashlib
import hmac
import xml.etree.ElementTree as ET

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.telephony_stack import telephony_stack
from voice.bench.carrier import TWILIO, CarrierCaller

TOKEN = "12345678901234567890123456789012"


def sign(url, params=None, token=TOKEN):
    data = url + "".join(k + params[k] for k in sorted(params or {}))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def stream_of(twiml):
    root = ET.fromstring(twiml)
    stream = root.find("./Connect/Stream")
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    return stream.get("url"), params


async def test_twiml_connects_the_call_to_the_stream_with_the_query_as_parameters():
    async with telephony_stack() as stack, httpx.AsyncClient(base_url=stack.http) as http:
        response = await http.get("/v1/twilio/twiml", params={"voice": "nova", "lang": "en&fr"})
    assert response.status_code == 200 and "xml" in response.headers["content-type"]
    url, params = stream_of(response.text)
    assert url == stack.ws.replace("ws://", "wss://") + "/v1/twilio"
    assert params == {"voice": "nova", "lang": "en&fr"}


async def test_twiml_signatures_are_checked_when_a_token_is_set():
    form = {"CallSid": "CA" + "1" * 32, "From": "+15550100", "To": "+15550199"}
    async with (
        telephony_stack(telephony={"twilio_auth_token": TOKEN}) as stack,
        httpx.AsyncClient(base_url=stack.http) as http,
    ):
        url = stack.http + "/v1/twilio/twiml"
        ok_get = await http.get(url + "?a=1", headers={"X-Twilio-Signature": sign(url + "?a=1")})
        ok_post = await http.post(url, data=form, headers={"X-Twilio-Signature": sign(url, form)})
        tampered = {**form, "From": "+15550666"}
        bad_post = await http.post(
            url, data=tampered, headers={"X-Twilio-Signature": sign(url, form)}
        )
        wrong_key = await http.get(url, headers={"X-Twilio-Signature": sign(url, token="x" * 32)})
        missing = await http.get(url)
    assert ok_get.status_code == 200 and ok_post.status_code == 200
    assert stream_of(ok_post.text)[0].startswith("wss://")
    assert [r.status_code for r in (bad_post, wrong_key, missing)] == [403, 403, 403]


async def test_the_stream_handshake_is_signed_over_its_wss_url():
    async with telephony_stack(telephony={"twilio_auth_token": TOKEN}) as stack:
        url = stack.ws + "/v1/twilio"
        signed_for = url.replace("ws://", "wss://")
        good = CarrierCaller(url, TWILIO, headers={"X-Twilio-Signature": sign(signed_for)})
        async with good:
            await stack.until(lambda: stack.metrics.sessions_active == 1, 5)
        for headers in ({"X-Twilio-Signature": sign(url)}, {}):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, additional_headers=headers):
                    pass
            assert refused.value.response.status_code == 403
    assert stack.metrics.sessions_total == 1


async def test_behind_a_proxy_the_public_url_is_what_is_signed_and_advertised():
    public = "https://voice.example.com"
    settings = {"twilio_auth_token": TOKEN, "public_url": public}
    async with telephony_stack(telephony=settings) as stack:
        twiml_url = public + "/v1/twilio/twiml"
        async with httpx.AsyncClient(base_url=stack.http) as http:
            response = await http.get(
                "/v1/twilio/twiml", headers={"X-Twilio-Signature": sign(twiml_url)}
            )
        assert response.status_code == 200
        assert stream_of(response.text)[0] == "wss://voice.example.com/v1/twilio"
        headers = {"X-Twilio-Signature": sign("wss://voice.example.com/v1/twilio")}
        async with CarrierCaller(stack.ws + "/v1/twilio", TWILIO, headers=headers):
            await stack.until(lambda: stack.metrics.sessions_active == 1, 5)
