"""The WebRTC transport end to end: an aiortc peer (as the browser page) against the real app
served by uvicorn on 127.0.0.1, with the simulated gateway behind it over HTTP. Media, the
events channel and ICE all stay on loopback.
"""

import asyncio

import httpx

from tests.samples import recording, text, transcript_of
from tests.stack import REPLY, SIMULATION
from tests.timing import MS
from tests.webrtc_stack import events, rtc_call, voiced_ms, wait_until, webrtc_stack
from voice.audio.frames import PcmFrame
from voice.config import TurnSettings

PAUSE_MS = TurnSettings().pause_ms
"""Speculation sends the turn's requests at this pause: the earliest they start."""


def joined(*names):
    frames = [recording(n) for n in names]
    return PcmFrame(b"".join(f.pcm for f in frames), frames[0].sample_rate)


async def test_a_sample_turn_over_webrtc():
    sample = "q03_weather_paris.wav"
    simulation = SIMULATION.model_copy(update={"transcripts": [text(sample)]})
    async with webrtc_stack(simulation) as (url, app, simulated):
        registry = app.state.voice.webrtc
        async with rtc_call(url, recording(sample)) as call:
            assert call.session_id in registry
            await events(call, "response.done")
            # The last reply frames are still on their way when response.done is sent.
            await asyncio.sleep(200 * MS)
        kinds = [e["type"] for e in call.events]
        # Sent before the channel opened, so from the backlog, first.
        assert kinds[0] == "session.created"
        created = call.events[0]["session"]
        assert created["id"] == call.session_id
        assert created["input_audio"] == {"format": "opus", "sample_rate": 48000}
        assert kinds.index("input.speech_started") < kinds.index("input.speech_stopped")
        assert call.transcript == text(sample)
        assert call.reply_text == REPLY
        (done,) = call.of_type("response.done")
        assert done["status"] == "completed" and done["text"] == REPLY
        assert None not in done["timings"].values()
        # The reply is ~len(REPLY) * 40 ms of speech; it arrived, and it is not silence.
        assert abs(voiced_ms(call) - len(REPLY) * 40) < 500
        (stopped,) = call.of_type("input.speech_stopped")
        speech_end = call.mic_started + stopped["audio_end_ms"] / 1000
        assert (call.first_sound_at - speech_end) * 1000 >= PAUSE_MS + 50 + 80 + 40
        await wait_until(lambda: len(registry) == 0)
        assert app.state.voice.metrics.sessions_active == 0
        assert sum(simulated.in_flight.values()) == 0


async def test_a_caller_offering_only_g711_hears_the_reply_encoded_by_aiortc():
    sample = "q03_weather_paris.wav"
    simulation = SIMULATION.model_copy(update={"transcripts": [text(sample)]})
    async with webrtc_stack(simulation) as (url, _, _):
        async with rtc_call(url, recording(sample), codec="audio/PCMU") as call:
            await events(call, "response.done")
            await asyncio.sleep(200 * MS)
        created = call.events[0]["session"]
        assert created["output_audio"] == {"format": "pcmu", "sample_rate": 8000}
        assert call.transcript == text(sample)
        # The track sent PCM frames, not Opus packets, and aiortc encoded them to G.711:
        # silence until the reply, then the reply.
        (stopped,) = call.of_type("input.speech_stopped")
        speech_end = call.mic_started + stopped["audio_end_ms"] / 1000
        assert (call.first_sound_at - speech_end) * 1000 >= PAUSE_MS + 50 + 80 + 40
        assert abs(voiced_ms(call) - len(REPLY) * 40) < 500


async def test_barge_in_over_webrtc_keeps_only_what_was_played():
    # The interruption starts 2 s after the question ends: mid-reply (the reply is ~3 s).
    transcripts = [SIMULATION.transcripts[0], transcript_of("i01_wait_stop.wav")]
    simulation = SIMULATION.model_copy(update={"transcripts": transcripts})
    async with webrtc_stack(simulation) as (url, app, simulated):
        registry = app.state.voice.webrtc
        async with rtc_call(url, joined("q01_what_time.wav", "i01_wait_stop.wav")) as call:
            await events(call, "response.interrupted")
            received_ms = voiced_ms(call)
            await events(call, "response.done", 2)
            dialog = registry.get(call.session_id).session.dialog
            said = [m.content for m in dialog.messages() if m.role == "assistant"]
        (interrupted,) = call.of_type("response.interrupted")
        heard = interrupted["heard_text"]
        assert heard and REPLY.startswith(heard) and len(heard) < len(REPLY)
        first, second = call.of_type("response.done")
        assert first["status"] == "interrupted" and first["text"] == heard
        assert second["status"] == "completed"
        assert said == [heard, REPLY]
        kinds = [e["type"] for e in call.events]
        started = [i for i, k in enumerate(kinds) if k == "input.speech_started"]
        assert kinds.index("response.interrupted") == started[1] + 1
        # What the dialog kept is what reached the caller before the interruption: the reply
        # speaks 40 ms a character, and only words whose end was sent count as heard.
        heard_ms = len(heard) * 40
        assert heard_ms - 100 <= received_ms <= heard_ms + 600
        await wait_until(lambda: len(registry) == 0)
        assert sum(simulated.in_flight.values()) == 0


async def test_the_events_channel_takes_the_native_control_messages():
    async with webrtc_stack() as (url, _, _), rtc_call(url, session={"voice": "nova"}) as call:
        await events(call, "session.created")
        assert call.events[0]["session"]["voice"] == "nova"
        call.send({"type": "session.update", "session": {"instructions": "Be brief."}})
        await events(call, "session.updated")
        updated = call.of_type("session.updated")[0]["session"]
        assert updated["instructions"] == "Be brief." and updated["voice"] == "nova"
        call.send({"type": "session.update", "session": {"output_audio": {"sample_rate": 8000}}})
        await events(call, "error")
        call.send("{not json")
        await events(call, "error", 2)
        call.send(b"\x00\x01")
        await events(call, "error", 3)
        call.send({"type": "response.cancel"})  # nothing playing: nothing to say
        call.send({"type": "dance"})
        await events(call, "error", 4)
        errors = call.of_type("error")
        assert [e["code"] for e in errors] == [
            "invalid_session_update",
            "invalid_message",
            "invalid_message",
            "unknown_event",
        ]
        assert "fixed for WebRTC" in errors[0]["message"]
        assert "audio track" in errors[2]["message"]
        assert len(call.of_type("session.updated")) == 1


async def test_response_cancel_over_the_channel_stops_the_reply():
    slow = SIMULATION.model_copy(update={"speech_ms_per_char": 80})
    async with webrtc_stack(slow) as (url, _, simulated):
        async with rtc_call(url, recording("q01_what_time.wav")) as call:
            await events(call, "response.started")
            await wait_until(lambda: voiced_ms(call) > 500)
            call.send({"type": "response.cancel"})
            await events(call, "response.done")
            (interrupted,) = call.of_type("response.interrupted")
            assert REPLY.startswith(interrupted["heard_text"])
            assert len(interrupted["heard_text"]) < len(REPLY)
            # The reply track goes silent at once: nothing queued is played after the cancel.
            received = voiced_ms(call)
            await asyncio.sleep(300 * MS)
            assert voiced_ms(call) - received < 150
        await wait_until(lambda: sum(simulated.in_flight.values()) == 0)


async def test_closing_the_browser_side_forgets_the_session():
    async with webrtc_stack() as (url, app, _):
        state = app.state.voice
        async with rtc_call(url) as call:
            await events(call, "session.created")
            assert len(state.webrtc) == 1 and state.metrics.sessions_active == 1
        await wait_until(lambda: len(state.webrtc) == 0)
        assert state.metrics.sessions_active == 0
        assert state.metrics.sessions_total == 1


async def test_a_peer_that_never_connects_is_dropped():
    async with webrtc_stack(webrtc={"connect_timeout_s": 0.5 * MS * 1000}) as (url, app, _):
        from aiortc import RTCConfiguration, RTCPeerConnection
        from aiortc.mediastreams import AudioStreamTrack

        from tests.webrtc_stack import make_offer

        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.createDataChannel("events")
        pc.addTransceiver(AudioStreamTrack(), direction="sendrecv")
        sdp = await make_offer(pc)
        await pc.close()  # gone before it could connect: the answer is never applied
        async with httpx.AsyncClient(base_url=url) as client:
            response = await client.post("/v1/webrtc/offer", json={"sdp": sdp, "type": "offer"})
        assert response.status_code == 200
        assert len(app.state.voice.webrtc) == 1
        await wait_until(lambda: len(app.state.voice.webrtc) == 0)
        assert app.state.voice.metrics.sessions_active == 0


async def test_sessions_past_the_limit_get_503_and_others_go_on():
    async with webrtc_stack(server={"max_sessions": 1}) as (url, app, _):
        async with rtc_call(url) as first:
            await events(first, "session.created")
            async with httpx.AsyncClient(base_url=url) as client:
                from aiortc import RTCConfiguration, RTCPeerConnection
                from aiortc.mediastreams import AudioStreamTrack

                from tests.webrtc_stack import make_offer

                pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                pc.addTransceiver(AudioStreamTrack(), direction="sendrecv")
                sdp = await make_offer(pc)
                await pc.close()
                response = await client.post("/v1/webrtc/offer", json={"sdp": sdp, "type": "offer"})
                assert response.status_code == 503
                assert response.json()["error"]["code"] == "server_busy"
                metrics = (await client.get("/metrics")).text
            assert "voice_sessions_rejected_total 1" in metrics
            first.send({"type": "session.update", "session": {"voice": "x"}})
            await events(first, "session.updated")
            assert len(app.state.voice.webrtc) == 1


async def test_shutting_the_app_down_closes_live_peer_connections():
    async with webrtc_stack() as (url, app, _):
        registry = app.state.voice.webrtc
        call_cm = rtc_call(url)
        call = await call_cm.__aenter__()
        try:
            await events(call, "session.created")
            await wait_until(lambda: call.connection_state == "connected")
        except BaseException:
            await call_cm.__aexit__(None, None, None)
            raise
    # serve_app ran the lifespan's shutdown: every peer connection was closed.
    assert len(registry) == 0
    assert app.state.voice.metrics.sessions_active == 0
    await wait_until(lambda: call.connection_state == "closed")
    await call_cm.__aexit__(None, None, None)


async def test_hanging_up_mid_reply_cancels_the_gateway_requests():
    slow = SIMULATION.model_copy(update={"ms_per_token": 300})
    async with webrtc_stack(slow) as (url, app, simulated):
        async with rtc_call(url, recording("q01_what_time.wav")) as call:
            await events(call, "response.started")
            await wait_until(lambda: simulated.in_flight["chat"] > 0)
        await wait_until(lambda: sum(simulated.in_flight.values()) == 0, timeout_s=5)
        await wait_until(lambda: len(app.state.voice.webrtc) == 0)
        assert not call.of_type("response.done")
