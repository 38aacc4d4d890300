"""A native-protocol caller: plays a recording into a session in real time and records
what comes back. `voice call` prints it; tests and the benchmark reuse it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from voice.audio.frames import FRAME_MS, SPEECH_RATE, PcmFrame, frame_bytes
from voice.audio.level import rms_dbfs
from voice.audio.resample import resample
from voice.config import PCM_RATES

ONSET_DBFS = -45.0
"""Reply audio louder than this counts as the assistant speaking (caller-side onset)."""


@dataclass
class CallResult:
    """What one call heard: events in order, reply audio, and caller-side latency."""

    events: list[dict[str, Any]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    output_rate: int = SPEECH_RATE
    speech_end_at: float | None = None
    """Client clock time at which the caller's speech ended (from the server's VAD)."""
    first_audio_at: float | None = None
    """Client clock time of the first non-silent reply audio received."""
    close_code: int | None = None

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind]

    @property
    def transcript(self) -> str:
        return " ".join(e["text"] for e in self.of_type("input.transcript"))

    @property
    def reply_text(self) -> str:
        return "".join(e["delta"] for e in self.of_type("response.text.delta"))

    @property
    def voice_to_voice_ms(self) -> float | None:
        if self.speech_end_at is None or self.first_audio_at is None:
            return None
        return (self.first_audio_at - self.speech_end_at) * 1000.0

    def reply_frame(self) -> PcmFrame:
        return PcmFrame(bytes(self.audio), self.output_rate)


def _send_rate(rate: int) -> int:
    return rate if rate in PCM_RATES else 16_000


async def call(
    url: str,
    recording: PcmFrame,
    *,
    instructions: str | None = None,
    output_rate: int = SPEECH_RATE,
    responses: int = 1,
    timeout_s: float = 60.0,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> CallResult:
    """Stream ``recording`` in real time, then silence, until ``responses`` replies end.

    Reply audio is collected at ``output_rate``. Returns when enough ``response.done`` events
    arrived, the server closed, or ``timeout_s`` passed.
    """
    rate = _send_rate(recording.sample_rate)
    pcm = recording.pcm
    if rate != recording.sample_rate:
        pcm = resample(pcm, recording.sample_rate, rate)
    result = CallResult(output_rate=output_rate)
    done = asyncio.Event()
    session: dict[str, Any] = {
        "input_audio": {"format": "pcm16", "sample_rate": rate},
        "output_audio": {"format": "pcm16", "sample_rate": output_rate},
    }
    if instructions is not None:
        session["instructions"] = instructions

    async with connect(url, max_size=2**22) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": session}))
        started = time.monotonic()

        async def send_audio() -> None:
            step = frame_bytes(rate, FRAME_MS)
            silence = bytes(step)
            n = 0
            while not done.is_set():
                chunk = pcm[n * step : (n + 1) * step] if n * step < len(pcm) else silence
                if len(chunk) < step:
                    chunk += bytes(step - len(chunk))
                n += 1
                # A frame leaves once its audio has been spoken, as from a live microphone;
                # an absolute schedule keeps real time without drift.
                delay = started + n * FRAME_MS / 1000.0 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await ws.send(chunk)

        async def receive() -> None:
            finished = 0
            async for message in ws:
                now = time.monotonic()
                if isinstance(message, bytes):
                    if result.first_audio_at is None and rms_dbfs(message) > ONSET_DBFS:
                        result.first_audio_at = now
                    result.audio += message
                    continue
                event = json.loads(message)
                result.events.append(event)
                if on_event is not None:
                    on_event(event)
                kind = event.get("type")
                if kind == "input.speech_stopped" and not event.get("discarded"):
                    if result.speech_end_at is None:
                        result.speech_end_at = started + event["audio_end_ms"] / 1000.0
                elif kind == "response.done":
                    finished += 1
                    if finished >= responses:
                        return

        sender = asyncio.create_task(send_audio())
        try:
            async with asyncio.timeout(timeout_s):
                await receive()
        except TimeoutError:
            pass
        except ConnectionClosed:
            pass
        finally:
            done.set()
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        result.close_code = ws.close_code
    return result
