"""The call page in a real headless Chromium, against the real app on 127.0.0.1.

Chromium (its microphone a WAV built from samples/) → WebRTC → voice server → HttpGateway →
the simulated gateway over HTTP. One browser launch per microphone recording. What the
page shows is read from its DOM; what it heard, from WebRTC's own statistics and from an
AnalyserNode this test attaches to the remote stream the page's <audio> element plays.
"""

import asyncio
from contextlib import AsyncExitStack

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.browser import caller_wav, chromium, page_of, wait_state
from tests.samples import manifest, text, transcript_of
from tests.stack import REPLY, SIMULATION, app_stack
from tests.timing import MS
from voice.app.auth import mint
from voice.gateway.simulated import Fault

pytestmark = pytest.mark.browser

INBOUND_AUDIO = """async () => {
    const reports = await voiceApp.pc.getStats();
    const result = {};
    for (const report of reports.values()) {
        if (report.type === "inbound-rtp" && report.kind === "audio") {
            result.packets = report.packetsReceived;
            result.energy = report.totalAudioEnergy;
        }
        if (report.type === "transport" && report.selectedCandidatePairId) {
            const pair = reports.get(report.selectedCandidatePairId);
            result.server = reports.get(pair.remoteCandidateId).address;
        }
    }
    return result;
}"""
"""WebRTC's own count of reply audio received and its energy (getStats, inbound-rtp), and
the server's address on the candidate pair in use."""

EAR = """() => {
    const stream = document.getElementById("remote").srcObject;
    const context = new AudioContext();
    const analyser = context.createAnalyser();
    analyser.fftSize = 1024;
    context.createMediaStreamSource(stream).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const ear = (window.testEar = {maxDb: -Infinity, loudWindows: 0, windows: 0});
    setInterval(() => {
        analyser.getFloatTimeDomainData(samples);
        let sum = 0;
        for (const x of samples) sum += x * x;
        const db = 10 * Math.log10(sum / samples.length);
        ear.windows += 1;
        if (db > ear.maxDb) ear.maxDb = db;
        if (db > -45) ear.loudWindows += 1;
    }, 20);
}"""
"""An ear on the stream the <audio> element plays, independent of the page's own meters:
every 20 ms, the level of the last ~21 ms (1024 samples at 48 kHz)."""


def loopback_stack(simulation=SIMULATION, **sections):
    """The app and the simulated gateway; the server offers only 127.0.0.1 to the browser."""
    return app_stack(simulation, webrtc={"host_addresses": ["127.0.0.1"]}, **sections)


def events(page_events, kind):
    return [e for e in page_events if e["type"] == kind]


async def page_events(page):
    return await page.evaluate("voiceApp.events")


async def test_a_turn_in_the_browser(tmp_path):
    sample = "q03_weather_paris.wav"
    microphone = caller_wav(tmp_path / "caller.wav", sample)
    simulation = SIMULATION.model_copy(update={"transcripts": [text(sample)]})
    async with (
        loopback_stack(simulation) as (url, simulated),
        chromium(microphone) as browser,
        page_of(browser, url) as page,
    ):
        await page.click("#call")
        await wait_state(page, "listening")
        await page.evaluate(EAR)
        mic = await page.evaluate("voiceApp.call.mic.getAudioTracks()[0].getSettings()")
        assert not mic["echoCancellation"] and not mic["noiseSuppression"], mic  # ?raw=1

        # The caller's words and the whole reply, in the transcript.
        await page.locator(".turn.user .bubble").filter(has_text=text(sample)).wait_for()
        await page.wait_for_function("voiceApp.turns.length === 1")
        assert await page.locator(".turn.assistant .bubble").inner_text() == REPLY
        await wait_state(page, "listening")

        seen = await page_events(page)
        (turn,) = await page.evaluate("voiceApp.turns")
        stats = await page.evaluate(INBOUND_AUDIO)
        ear = await page.evaluate("window.testEar")
        shown = await page.locator("#v2v").inner_text()
        states = [s["state"] for s in await page.evaluate("voiceApp.states")]
        # On a phone-sized screen everything still fits: nothing scrolls sideways.
        await page.set_viewport_size({"width": 360, "height": 740})
        overflow = await page.evaluate("document.documentElement.scrollWidth")
        await page.click("#call")  # hang up
        await wait_state(page, "idle")
        # The server lets the session go once the page hangs up.
        await sessions_drop_to_zero(url)

    # The recording reached the server whole and in real time: the speech the server's VAD
    # found is as long as the one in the file.
    (started,) = events(seen, "input.speech_started")
    (stopped,) = events(seen, "input.speech_stopped")
    heard_s = (stopped["audio_end_ms"] - started["audio_start_ms"]) / 1000
    entry = manifest()[sample]
    assert heard_s == pytest.approx(entry["speech_end_s"] - entry["speech_start_s"], abs=0.3)
    assert [e["text"] for e in events(seen, "input.transcript")] == [text(sample)]

    # The reply was received and played in the browser.
    assert stats["packets"] > 100 and stats["energy"] > 0, stats
    assert stats["server"] == "127.0.0.1", stats
    assert ear["loudWindows"] * 0.020 > 1.0, ear  # the reply is ~3 s of speech
    assert ear["maxDb"] > -30, ear

    # The turn's latency: the page's own voice-to-voice, next to the server's stages.
    assert turn["status"] == "completed" and turn["text"] == REPLY
    timings = turn["timings"]
    assert None not in timings.values()
    v2v = turn["voice_to_voice_ms"]
    assert turn["speech_end"] == "mic"
    # The uplink (mic to the server's VAD), measured in the page: a short positive time.
    assert -50 < turn["uplink_ms"] < 1000
    # At the caller it is the server's first audio plus the way back (network, jitter
    # buffer, playout): not less (but for the 10-20 ms granularity of the two measures),
    # and loosely bounded so a wrong end of speech (the lead-in silence) would show.
    assert timings["first_audio_ms"] - 100 <= v2v <= timings["first_audio_ms"] + 1500
    assert shown == str(round(v2v))
    assert overflow <= 360
    assert await_order(states, "connecting", "listening", "thinking", "speaking", "listening")
    assert sum(simulated.in_flight.values()) == 0


async def sessions_drop_to_zero(url):
    async with httpx.AsyncClient(base_url=url) as client, asyncio.timeout(10 * 1000 * MS):
        while (await client.get("/ready")).json()["sessions"]:  # noqa: ASYNC110  # a server's count
            await asyncio.sleep(50 * MS)


def await_order(states, *expected):
    """``expected`` appear in ``states`` in this order (others may come between)."""
    rest = iter(states)
    return all(any(s == want for s in rest) for want in expected)


async def test_talking_over_the_reply_interrupts_it(tmp_path):
    # "Wait, stop." starts ~2.4 s after the question ends: the ~3 s reply is playing.
    microphone = caller_wav(tmp_path / "caller.wav", "q01_what_time.wav", "i01_wait_stop.wav")
    simulation = SIMULATION.model_copy(
        update={"transcripts": [text("q01_what_time.wav"), transcript_of("i01_wait_stop.wav")]}
    )
    async with (
        loopback_stack(simulation) as (url, _),
        chromium(microphone) as browser,
        page_of(browser, url) as page,
    ):
        await page.click("#call")
        await wait_state(page, "listening")
        await page.wait_for_function("voiceApp.turns.length === 2")
        seen = await page_events(page)
        turns = await page.evaluate("voiceApp.turns")
        states = [s["state"] for s in await page.evaluate("voiceApp.states")]
        first = page.locator(".turn.assistant").first
        bubble = await first.locator(".bubble").inner_text()
        unheard = await first.locator(".unheard").inner_text()
        tags = await first.locator(".tag").all_inner_texts()
        second = await page.locator(".turn.assistant").nth(1).locator(".bubble").inner_text()
        users = await page.locator(".turn.user .bubble").all_inner_texts()

    (interrupted,) = events(seen, "response.interrupted")
    heard = interrupted["heard_text"]
    assert heard and REPLY.startswith(heard) and len(heard) < len(REPLY)
    assert [t["status"] for t in turns] == ["interrupted", "completed"]
    assert turns[0]["text"] == heard
    # The page showed the interruption: state, and the unheard rest of the reply struck out.
    assert await_order(states, "listening", "speaking", "interrupted", "thinking", "speaking")
    assert bubble == REPLY
    assert unheard == REPLY[len(heard) :]
    assert tags == ["interrupted"]
    assert second == REPLY
    assert users == [text("q01_what_time.wav"), text("i01_wait_stop.wav")]
    # The interrupted turn had been heard: its voice-to-voice was measured.
    assert turns[0]["voice_to_voice_ms"] is not None


async def test_errors_the_caller_can_act_on(tmp_path):
    microphone = caller_wav(tmp_path / "caller.wav", "q01_what_time.wav")
    payment = SIMULATION.model_copy(
        update={"faults": [Fault(route="chat", kind="status", status=402)]}
    )
    async with chromium(microphone) as browser:
        async with loopback_stack(payment) as (url, _):
            # No microphone permission.
            async with page_of(browser, url, microphone=False) as page:
                await page.click("#call")
                await wait_state(page, "error")
                message = await page.locator("#error").inner_text()
                assert "Microphone access was denied" in message
                assert await page.locator("#call").inner_text() == "Connect"

            # A gateway error during a turn: shown, and the call goes on.
            async with page_of(browser, url) as page:
                await page.click("#call")
                await wait_state(page, "listening")
                await page.locator("#error").filter(has_text="payment").wait_for()
                message = await page.locator("#error").inner_text()
                await page.wait_for_function("voiceApp.turns.length === 1")
                await wait_state(page, "listening")
                assert "(payment_required)" in message
                assert (await page.evaluate("voiceApp.turns"))[0]["status"] == "failed"
                assert await page.locator(".turn.assistant .tag").inner_text() == "failed"

        # The server is full: the offer is refused with the server's own message.
        async with loopback_stack(server={"max_sessions": 1}) as (url, _):
            native = url.replace("http", "ws", 1) + "/v1/session"
            async with connect(native) as other, page_of(browser, url, raw=False) as page:
                await other.recv()  # session.created: the one place is taken
                await page.click("#call")
                await wait_state(page, "error")
                message = await page.locator("#error").inner_text()
                assert "The server is busy." in message
                assert "(server_busy, HTTP 503)" in message
                # Without ?raw=1, as for every real caller, the browser's voice processing
                # stays on (without echo cancellation the reply would interrupt itself).
                mic = await page.evaluate("voiceApp.call.mic.getAudioTracks()[0].getSettings()")
                assert mic["echoCancellation"] and mic["noiseSuppression"], mic
                assert mic["autoGainControl"], mic

        # The server went away after the page loaded.
        async with AsyncExitStack() as pages:
            async with loopback_stack() as (url, _):
                page = await pages.enter_async_context(page_of(browser, url))
            await page.click("#call")
            await wait_state(page, "error")
            message = await page.locator("#error").inner_text()
            assert "Cannot reach the server" in message


async def test_the_page_passes_its_token_on_and_a_call_without_one_is_refused(tmp_path):
    sample = "q01_what_time.wav"
    microphone = caller_wav(tmp_path / "caller.wav", sample)
    simulation = SIMULATION.model_copy(update={"transcripts": [text(sample)]})
    secret = "a-browser-test-secret-long-enough-0123456789"
    async with (
        loopback_stack(simulation, auth={"secret": secret}) as (url, _),
        chromium(microphone) as browser,
    ):
        # As a backend hands it out: the page's own URL carries the token.
        async with page_of(browser, url, token=mint(secret, sub="browser-user")) as page:
            await page.click("#call")
            await wait_state(page, "listening")
            await page.locator(".turn.user .bubble").filter(has_text=text(sample)).wait_for()
            await page.wait_for_function("voiceApp.turns.length === 1")
            await page.click("#call")
            await wait_state(page, "idle")
        async with page_of(browser, url) as page:
            await page.click("#call")
            await wait_state(page, "error")
            message = await page.locator("#error").inner_text()
            assert "This call needs a valid token." in message
            assert "(unauthorized, HTTP 401)" in message
