"""Offers are checked before any peer connection exists: each bad one gets 400 with a message
that says what to change, over real HTTP, and leaves nothing behind.
"""

import json
import re

import httpx
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack

from tests.webrtc_stack import make_offer, webrtc_stack
from voice.errors import InvalidOffer
from voice.transports.offer import parse_offer


async def browser_offer(*, channel=True, direction="sendrecv", video=False) -> str:
    """A real offer, as the page makes it (aiortc standing in for the browser)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    if channel:
        pc.createDataChannel("events")
    pc.addTransceiver(AudioStreamTrack(), direction=direction)
    if video:
        pc.addTransceiver("video", direction="recvonly")
    try:
        return await make_offer(pc)
    finally:
        await pc.close()


def without(sdp: str, prefix: str) -> str:
    return "".join(line for line in sdp.splitlines(keepends=True) if not line.startswith(prefix))


@pytest.fixture
async def offer():
    return await browser_offer()


JSON = {"content-type": "application/json"}
"""What a browser's offer carries (the route refuses anything else with 415)."""


def body(sdp: str, **extra) -> bytes:
    return json.dumps({"sdp": sdp, "type": "offer", **extra}).encode()


def refusal(data: bytes) -> InvalidOffer:
    with pytest.raises(InvalidOffer) as info:
        parse_offer(data)
    return info.value


async def test_a_browser_offer_with_session_settings_passes(offer):
    parsed = parse_offer(body(offer, session={"instructions": "Be brief.", "voice": "nova"}))
    assert parsed.sdp == offer
    assert parsed.session.instructions == "Be brief." and parsed.session.voice == "nova"
    # No data channel is allowed (events are then lost, audio still works).
    assert parse_offer(body(await browser_offer(channel=False))).session is None


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "JSON object"),
        (json.dumps({"sdp": "v=0", "type": "answer"}).encode(), 'type must be "offer"'),
        (json.dumps({"sdp": "v=0"}).encode(), 'type must be "offer"'),
        (json.dumps({"sdp": 3, "type": "offer"}).encode(), "sdp must be"),
        (json.dumps({"sdp": "v=0", "type": "offer", "x": 1}).encode(), "unknown field(s) x"),
        (json.dumps({"sdp": "v=0\r\nm=audio\r\n", "type": "offer"}).encode(), "not be parsed"),
        (json.dumps({"sdp": "v=0\r\n", "type": "offer"}).encode(), "no audio m-line"),
    ],
    ids=["garbage", "not-utf8", "list", "answer", "no-type", "sdp-int", "extra", "bad", "empty"],
)
def test_malformed_bodies_are_refused_with_a_reason(data, needle):
    error = refusal(data)
    assert error.code == "invalid_offer" and needle in error.message


async def test_sdp_that_cannot_connect_is_refused_with_a_reason(offer):
    cases = {
        "could not be parsed ('holdconn')": offer.replace("a=setup:actpass", "a=setup:holdconn"),
        "no DTLS fingerprint": without(offer, "a=fingerprint:"),
        "ICE ufrag/pwd": without(offer, "a=ice-pwd:"),
        "RTCP multiplexing": without(offer, "a=rtcp-mux"),
        "no audio m-line": re.sub(r"m=audio[\s\S]*?(?=m=application)", "", offer),
        "no audio codec": re.sub(r"a=rtpmap:\d+ \S+\r\n", "", offer),
        "must be sendrecv": await browser_offer(direction="sendonly"),
        "not video": await browser_offer(video=True),
        "no m-line has": offer.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 5 0 1"),
        "its own a=mid": offer.replace("a=mid:1", "a=mid:0"),
        "fingerprint uses md9": re.sub(r"a=fingerprint:sha-\d+", "a=fingerprint:md9", offer),
        "opus/48000": re.sub(
            "opus/48000", "opus/44100", re.sub(r"a=rtpmap:[089] .*\r\n", "", offer)
        ),
    }
    for needle, sdp in cases.items():
        assert needle in refusal(body(sdp)).message, needle


async def test_session_settings_in_the_offer_are_checked(offer):
    error = refusal(body(offer, session={"output_audio": {"sample_rate": 24000}}))
    assert "fixed for WebRTC" in error.message
    error = refusal(body(offer, session={"voice": 3}))
    assert error.message.startswith("session.voice")
    error = refusal(body(offer, session={"tempo": 2}))
    assert "session.tempo" in error.message


async def test_bad_offers_over_http_get_400_and_leave_nothing_behind(offer):
    async with (
        webrtc_stack(webrtc={"max_offer_bytes": 16 * 1024}) as (url, app, _),
        httpx.AsyncClient(base_url=url) as client,
    ):
        cases = [
            (b"{not json", "invalid_offer"),
            (body(offer).replace(b'"offer"', b'"answer"'), "invalid_offer"),
            (body(without(offer, "a=fingerprint:")), "invalid_offer"),
            (body(re.sub(r"m=audio[\s\S]*?(?=m=application)", "", offer)), "invalid_offer"),
            (body(offer + "a=x-padding:" + "x" * 20_000 + "\r\n"), "offer_too_large"),
        ]
        for data, code in cases:
            response = await client.post(
                "/v1/webrtc/offer", content=data, headers={"content-type": "application/json"}
            )
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["code"] == code and error["message"]
        # Streamed without a length: the cap holds while reading.
        chunks = [body(offer + "a=x-padding:" + "x" * 20_000 + "\r\n")]

        async def stream():
            for chunk in chunks:
                yield chunk

        response = await client.post(
            "/v1/webrtc/offer", content=stream(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "offer_too_large"
        assert (await client.get("/v1/webrtc/offer")).status_code == 405
        state = app.state.voice
        assert len(state.webrtc) == 0
        assert state.metrics.sessions_total == 0 and state.metrics.sessions_active == 0


async def test_an_offer_aiortc_refuses_after_the_checks_is_a_400_and_closed(offer, monkeypatch):
    # Defence in depth: whatever aiortc raises on an offer is the offer's fault, and the
    # peer connection made for it is closed and forgotten.
    async def refuse(self):
        raise ValueError("no way")

    monkeypatch.setattr(RTCPeerConnection, "createAnswer", refuse)
    async with webrtc_stack() as (url, app, _), httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/v1/webrtc/offer", content=body(offer), headers=JSON)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error == {
            "code": "invalid_offer",
            "message": "the offer could not be applied: no way",
        }
        assert len(app.state.voice.webrtc) == 0
        assert app.state.voice.metrics.sessions_active == 0


async def test_a_server_with_no_address_to_offer_says_so(offer):
    # TEST-NET-3: not on this machine, so binding fails and no candidate can be offered.
    async with (
        webrtc_stack(webrtc={"host_addresses": ["203.0.113.7"]}) as (url, app, _),
        httpx.AsyncClient(base_url=url) as client,
    ):
        response = await client.post("/v1/webrtc/offer", content=body(offer), headers=JSON)
        assert response.status_code == 500
        assert "VOICE_WEBRTC_HOST_ADDRESSES" in response.json()["error"]["message"]
        assert len(app.state.voice.webrtc) == 0
        assert app.state.voice.metrics.sessions_active == 0


async def test_offers_are_rate_limited_per_address():
    async with (
        webrtc_stack(limits={"offers_per_min": 2}) as (url, app, _),
        httpx.AsyncClient(base_url=url) as client,
    ):
        statuses = []
        for _ in range(3):
            response = await client.post("/v1/webrtc/offer", content=b"{}", headers=JSON)
            statuses.append(response.status_code)
        assert statuses == [400, 400, 429]
        assert response.json()["error"]["code"] == "rate_limited"
        assert response.headers["retry-after"] == "60"
        assert len(app.state.voice.webrtc) == 0


async def test_calls_still_connecting_hold_only_a_share_of_the_server():
    # max_sessions 4 at a share of 0.25: one call may be connecting at a time. An offer
    # answered but never connected (a junk offer) holds that place until it times out.
    first, second = await browser_offer(), await browser_offer()
    sections = {"server": {"max_sessions": 4}, "limits": {"connecting_share": 0.25}}
    async with (
        webrtc_stack(**sections) as (url, app, _),
        httpx.AsyncClient(base_url=url) as client,
    ):
        answered = await client.post("/v1/webrtc/offer", content=body(first), headers=JSON)
        assert answered.status_code == 200
        refused = await client.post("/v1/webrtc/offer", content=body(second), headers=JSON)
        assert refused.status_code == 503
        assert "still connecting" in refused.json()["error"]["message"]
        assert len(app.state.voice.webrtc) == 1
