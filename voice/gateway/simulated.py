"""A :class:`~voice.gateway.base.Gateway` that runs in-process on scripted latencies and faults.

It stands in for a real inference gateway in tests and capacity planning: transcripts and
replies come from scripts, latencies are real ``asyncio`` sleeps, and faults (HTTP error
statuses, hangs, streams that drop) are injected per route. Settings can be swapped while it
runs (:meth:`SimulatedGateway.update`), and counters show how many requests each route got and
how many are still open, so a test can prove that cancelling a consumer closed its streams.

Served over HTTP by :mod:`voice.gateway.server`, it is also the gateway the end-to-end tests and
``voice gateway --simulate`` talk to. Served so, it can also bill as the seeds' gateways do
(:mod:`voice.gateway.sim_billing`): an x402 challenge on chosen routes, paid by a proof it
can verify (``x402``), and a receipt on every answer (``receipts``). Speech takes a named
voice or a reference-audio one; the log says which, and ``voices`` keeps the last few.

A transcript may be cut into segments where the caller pauses (``"I'd like a table for|four
people."``): the gateway then answers an upload with the segments its audio holds, as a real
ASR answers speech cut at a pause with the words said so far (:func:`segments_heard`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import re
from collections import deque
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Literal, NoReturn

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from voice.audio.frames import SAMPLE_WIDTH, SPEECH_RATE, PcmFrame
from voice.audio.wav import read_wav
from voice.core.dialog import ChatMessage
from voice.core.record import GatewayCall
from voice.errors import (
    AudioFormatError,
    GatewayBadRequest,
    GatewayError,
    GatewayUnavailable,
    PaymentRequired,
    RateLimited,
    error_class_for_status,
)
from voice.gateway.base import ReferenceVoice, Voice

log = logging.getLogger(__name__)

Route = Literal["transcribe", "chat", "speak", "models"]
ROUTES: tuple[Route, ...] = ("transcribe", "chat", "speak", "models")

ROUTE_PATHS: Mapping[Route, str] = {
    "transcribe": "/v1/audio/transcriptions",
    "chat": "/v1/chat/completions",
    "speak": "/v1/audio/speech",
    "models": "/v1/models",
}
"""The OpenAI-compatible path each route stands for; errors carry it as their ``route``."""


CHUNK_MS = 60
"""Length of each synthesized chunk, inside the 40-100 ms real TTS engines stream."""

_CHUNK_SAMPLES = SPEECH_RATE * CHUNK_MS // 1000
_BUFFER_CHUNKS = 40
"""The speech buffer holds whole chunks (2.4 s), so a chunk slice never wraps around."""

_TOKEN = re.compile(r"\s*\S+")
"""A word with its leading space: the deltas concatenate back to the reply exactly."""

VOICES_KEPT = 16
"""Speech requests' voices kept in :attr:`SimulatedGateway.voices`, newest last."""

SEGMENT_MARK = "|"
"""Separates the segments of a transcript, where the caller pauses."""

LEVEL_WINDOW_MS = 10
"""Uploads are measured in windows this long to find where the caller spoke."""

MIN_SEGMENT_MS = 30
"""A stretch of sound shorter than this is a click, not a segment of speech."""


class Fault(BaseModel):
    """One injected failure, hitting the next ``count`` requests to ``route``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    route: Route
    kind: Literal["status", "hang", "drop"]
    """``status``: fail at once with ``status``; ``hang``: never answer (until cancelled);
    ``drop``: stream ``after_chunks`` chunks, then fail as a broken connection."""
    status: int = Field(default=500, ge=400, le=599)
    """HTTP status for ``kind="status"``; mapped to an error by ``error_class_for_status``."""
    retry_after: float | None = Field(default=None, ge=0)
    """Seconds the caller is told to wait, for a 429."""
    after_chunks: int = Field(default=0, ge=0)
    """For ``drop`` and ``hang`` on a streaming route: chunks delivered before the fault."""
    count: int = Field(default=1, ge=-1)
    """Requests this fault hits, oldest first; ``-1`` hits every request."""

    @model_validator(mode="after")
    def _check(self) -> Fault:
        if self.count == 0:
            raise ValueError("count must be -1 (every request) or at least 1")
        streaming = self.route in ("chat", "speak")
        if self.kind == "drop" and not streaming:
            raise ValueError("kind 'drop' needs a streaming route: 'chat' or 'speak'")
        if self.after_chunks and (self.kind == "status" or not streaming):
            raise ValueError("after_chunks applies to 'hang' and 'drop' on 'chat' or 'speak'")
        return self


def _chat_only() -> list[Route]:
    return ["chat"]


class PaywallSettings(BaseModel):
    """x402 on the simulated gateway's HTTP routes (:mod:`voice.gateway.sim_billing`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    routes: list[Route] = Field(default_factory=_chat_only, min_length=1)
    """Routes that answer 402 until paid."""
    price: int = Field(default=1000, ge=0)
    """Asked per request, in the asset's smallest unit (1000 = 0.001 USDC)."""
    secret: str = Field(default="simulated-x402", min_length=1, repr=False)
    """Shared with the payer: a proof is ``<nonce>.<hex HMAC-SHA256(secret, "nonce:price")>``
    (standing in for a payment on chain); each nonce pays for one request."""


DEFAULT_TRANSCRIPT = "What's the weather going to be like tomorrow afternoon?"
DEFAULT_REPLY = (
    "Tomorrow afternoon looks mostly sunny with a light breeze. "
    "Temperatures should reach about twenty two degrees. "
    "It's a good day to spend some time outside."
)


class SimulationSettings(BaseModel):
    """Latencies, scripts and faults of a :class:`SimulatedGateway`; durations in ms."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    asr_ms: float = Field(default=150, ge=0)
    """Time to transcribe one utterance."""
    ttft_ms: float = Field(default=250, ge=0)
    """Time to the first chat token."""
    ms_per_token: float = Field(default=15, ge=0)
    """Time between chat tokens after the first (a token here is one word)."""
    tts_ttfb_ms: float = Field(default=120, ge=0)
    """Time to the first chunk of speech."""
    tts_rtf: float = Field(default=0.2, ge=0)
    """Real-time factor: seconds of compute per second of audio after the first chunk, so
    below 1 speech streams faster than it plays."""
    speech_ms_per_char: float = Field(default=65, gt=0)
    """Duration of synthesized speech per character of text."""
    transcripts: list[str] = Field(default_factory=lambda: [DEFAULT_TRANSCRIPT], min_length=1)
    """Returned by successive ``transcribe`` calls, cycling. An entry cut into segments with
    ``|`` where the caller pauses (``"I'd like a table for|four people."``) is answered
    with the segments the upload holds (one per stretch of sound, see ``segment_gap_ms``),
    joined by a space, and stays the current entry until an upload holds all of them: a
    short upload of speech cut at a pause gets the words said so far, as from a real ASR."""
    segment_gap_ms: float = Field(default=250, gt=0)
    """In an upload answered from a segmented transcript, quiet at least this long
    separates two segments (words inside one are closer together than this)."""
    speech_dbfs: float = Field(default=-50, ge=-100, le=0)
    """In an upload answered from a segmented transcript, 10 ms windows louder than this
    are sound; the rest is quiet."""
    replies: list[str] = Field(default_factory=lambda: [DEFAULT_REPLY], min_length=1)
    """Streamed by successive ``chat`` calls, cycling."""
    faults: list[Fault] = Field(default_factory=list)
    """Checked in order; a request gets the first fault for its route with hits left."""
    models: list[str] = Field(default_factory=lambda: ["whisper-1", "gpt-4o-mini", "tts-1"])
    """Ids ``models()`` lists."""
    x402: PaywallSettings | None = None
    """Served over HTTP: payment asked on these routes (none by default)."""
    receipts: bool = False
    """Served over HTTP: every 2xx answer carries ``x-receipt``, and a JSON body a
    ``receipt`` field, signed for its request id."""

    @model_validator(mode="after")
    def _check_segments(self) -> SimulationSettings:
        for entry in self.transcripts:
            if SEGMENT_MARK in entry and not all(s.strip() for s in entry.split(SEGMENT_MARK)):
                raise ValueError(
                    f"transcript {entry!r} has an empty segment: put words on both sides "
                    f"of every {SEGMENT_MARK!r}"
                )
        return self


class SimulatedGateway:
    """The :class:`~voice.gateway.base.Gateway` protocol on scripted latencies and faults.

    ``requests`` counts calls per route; ``in_flight`` counts those still open (a stream is
    open from its first ``__anext__`` until it ends, fails, is cancelled or is closed).
    """

    def __init__(self, settings: SimulationSettings | None = None) -> None:
        self._settings = settings if settings is not None else SimulationSettings()
        self._requests = dict.fromkeys(ROUTES, 0)
        self._in_flight = dict.fromkeys(ROUTES, 0)
        self._script_turns: dict[str, int] = {}
        self._fault_hits_left: list[int] = []
        self._voices: deque[Voice] = deque(maxlen=VOICES_KEPT)
        self._reset_scripts()

    @property
    def settings(self) -> SimulationSettings:
        return self._settings

    def update(self, settings: SimulationSettings) -> None:
        """Use ``settings`` from the next request on: scripts restart, fault counts reset.

        Requests already running keep the settings they started with.
        """
        self._settings = settings
        self._reset_scripts()

    @property
    def requests(self) -> Mapping[Route, int]:
        """Requests received per route since creation (a snapshot)."""
        return dict(self._requests)

    @property
    def in_flight(self) -> Mapping[Route, int]:
        """Requests per route not yet finished (a snapshot)."""
        return dict(self._in_flight)

    @property
    def voices(self) -> list[Voice]:
        """The voices of the last :data:`VOICES_KEPT` speech requests, oldest first."""
        return list(self._voices)

    async def transcribe(
        self, wav: bytes, *, prompt: str | None = None, call: GatewayCall | None = None
    ) -> str:
        _attempt(call)
        with self._open("transcribe") as (settings, fault):
            await _trip_before_start(fault)
            if not wav.startswith(b"RIFF"):
                raise GatewayBadRequest(
                    "audio is not a WAV file", status=400, route=ROUTE_PATHS["transcribe"]
                )
            text = self._next_transcript(settings, wav, prompt)
            await asyncio.sleep(settings.asr_ms / 1000)
            return text

    async def chat(
        self, messages: Sequence[ChatMessage], *, call: GatewayCall | None = None
    ) -> AsyncGenerator[str, None]:
        _attempt(call)
        with self._open("chat") as (settings, fault):
            tokens = _TOKEN.findall(self._next_script("chat", settings.replies))
            start = asyncio.get_running_loop().time()
            for i, token in enumerate(tokens):
                await _trip_at(fault, i)
                await _sleep_until(start + (settings.ttft_ms + i * settings.ms_per_token) / 1000)
                yield token
            await _trip_at(fault, len(tokens), at_end=True)

    async def speak(
        self, text: str, *, voice: Voice = None, call: GatewayCall | None = None
    ) -> AsyncGenerator[PcmFrame, None]:
        # Every voice sounds the same here; which kind was asked for is logged and kept.
        _attempt(call)
        self._voices.append(voice)
        if isinstance(voice, ReferenceVoice):
            kind = "a URL" if voice.audio.startswith("http") else f"{len(voice.audio)} chars"
            log.info(
                "speech in a reference-audio voice: task_type %s, ref_audio %s, ref_text %r",
                voice.task_type,
                kind,
                voice.text[:60],
            )
        else:
            log.debug("speech in the named voice %r", voice)
        with self._open("speak") as (settings, fault):
            total = round(len(text) * settings.speech_ms_per_char * SPEECH_RATE / 1000)
            chunks = math.ceil(total / _CHUNK_SAMPLES)
            buffer = _speech_buffer()
            start = asyncio.get_running_loop().time()
            for i in range(chunks):
                await _trip_at(fault, i)
                compute_s = i * CHUNK_MS / 1000 * settings.tts_rtf
                await _sleep_until(start + settings.tts_ttfb_ms / 1000 + compute_s)
                first = i * _CHUNK_SAMPLES
                samples = min(_CHUNK_SAMPLES, total - first)
                offset = first % (_CHUNK_SAMPLES * _BUFFER_CHUNKS) * SAMPLE_WIDTH
                yield PcmFrame(buffer[offset : offset + samples * SAMPLE_WIDTH], SPEECH_RATE)
            await _trip_at(fault, chunks, at_end=True)

    async def models(self) -> list[str]:
        with self._open("models") as (settings, fault):
            await _trip_before_start(fault)
            return list(settings.models)

    async def warm(self) -> None:
        """Nothing to warm: there are no connections."""

    async def aclose(self) -> None:
        """Nothing to release."""

    @contextmanager
    def _open(self, route: Route) -> Iterator[tuple[SimulationSettings, _Trip | None]]:
        """Count one request on ``route``; yield the settings it runs on and its fault."""
        self._requests[route] += 1
        self._in_flight[route] += 1
        try:
            yield self._settings, self._take_fault(route)
        finally:
            self._in_flight[route] -= 1

    def _take_fault(self, route: Route) -> _Trip | None:
        for i, fault in enumerate(self._settings.faults):
            left = self._fault_hits_left[i]
            if fault.route == route and left != 0:
                if left > 0:  # -1 means every request: never used up
                    self._fault_hits_left[i] = left - 1
                return _Trip(fault)
        return None

    def _next_transcript(self, settings: SimulationSettings, wav: bytes, prompt: str | None) -> str:
        """The current transcript entry, or as many of its segments as ``wav`` holds; for
        an upload that continues ``prompt``, only what follows the words it says."""
        turn = self._script_turns["transcribe"]
        entry = settings.transcripts[turn % len(settings.transcripts)]
        if turn > 0 and not _continued(entry, prompt):
            previous = settings.transcripts[(turn - 1) % len(settings.transcripts)]
            if _continued(previous, prompt):
                # An upload thrown away (the caller went on after a short gap) already
                # finished the utterance these words begin: this one is of the same, and
                # gets the same words, as a real ASR would give them.
                turn, entry = turn - 1, previous
        if SEGMENT_MARK not in entry:
            self._script_turns["transcribe"] = turn + 1
            return continuing(entry, prompt)
        try:
            audio = read_wav(wav)
        except AudioFormatError as exc:
            raise GatewayBadRequest(
                f"audio is not a readable WAV file: {exc}",
                status=400,
                route=ROUTE_PATHS["transcribe"],
            ) from None
        segments = _segments(entry)
        said = segments_said(segments, prompt)
        heard = segments_heard(audio, gap_ms=settings.segment_gap_ms, dbfs=settings.speech_dbfs)
        if said + heard >= len(segments):
            self._script_turns["transcribe"] = turn + 1
        return " ".join(segments[said : said + heard])

    def _next_script(self, route: Literal["transcribe", "chat"], script: list[str]) -> str:
        turn = self._script_turns[route]
        self._script_turns[route] = turn + 1
        return script[turn % len(script)]

    def _reset_scripts(self) -> None:
        self._script_turns = {"transcribe": 0, "chat": 0}
        self._fault_hits_left = [fault.count for fault in self._settings.faults]


def continuing(transcript: str, prompt: str | None) -> str:
    """What a real ASR would hear in audio that continues ``prompt`` (the words said just
    before it, as a caller sends them): the rest of ``transcript``, if it starts with them
    (compared word by word, ignoring case and punctuation); else all of it."""
    if not prompt:
        return transcript
    said = _words(prompt)
    words = transcript.split()
    if [w for w in map(_word, words[: len(said)])] != said:
        return transcript
    return " ".join(words[len(said) :])


def _segments(entry: str) -> list[str]:
    """A segmented transcript entry's segments, in order."""
    return [segment.strip() for segment in entry.split(SEGMENT_MARK)]


def _continued(entry: str, prompt: str | None) -> bool:
    """Whether ``prompt`` says the first segments of the segmented ``entry``."""
    if SEGMENT_MARK not in entry or not prompt:
        return False
    return segments_said(_segments(entry), prompt) > 0


def segments_said(segments: list[str], prompt: str | None) -> int:
    """How many of ``segments``, from the first, ``prompt`` says (0 if it says none)."""
    said = _words(prompt or "")
    count, words = 0, 0
    for segment in segments:
        words += len(_words(segment))
        if words > len(said) or _words(" ".join(segments[: count + 1])) != said[:words]:
            break
        count += 1
    return count


def _word(token: str) -> str:
    return "".join(c for c in token.lower() if c.isalnum())


def _words(text: str) -> list[str]:
    return [w for w in map(_word, text.split()) if w]


def segments_heard(audio: PcmFrame, *, gap_ms: float, dbfs: float) -> int:
    """Stretches of sound in ``audio`` separated by at least ``gap_ms`` of quiet.

    Sound is a :data:`LEVEL_WINDOW_MS` window whose RMS level is over ``dbfs``; stretches
    shorter than :data:`MIN_SEGMENT_MS` are clicks and do not count. Only levels are used,
    so it reads the same upload alike at any rate, through μ-law and resampling: a caller's
    pause of silence stays far below any speech level.
    """
    window = audio.sample_rate * LEVEL_WINDOW_MS // 1000
    count = len(audio.pcm) // SAMPLE_WIDTH // window
    if count == 0:
        return 0
    samples = np.frombuffer(audio.pcm, dtype="<i2", count=count * window).astype(np.float64)
    power = np.mean(np.square(samples.reshape(count, window)), axis=1)
    loud = power > (32768.0 * 10 ** (dbfs / 20)) ** 2
    gap = max(1, math.ceil(gap_ms / LEVEL_WINDOW_MS))
    shortest = max(1, math.ceil(MIN_SEGMENT_MS / LEVEL_WINDOW_MS))
    segments = 0
    run = quiet = 0  # windows in the current stretch of sound, and of quiet since
    for is_loud in loud.tolist():
        if is_loud:
            if quiet >= gap:
                segments += run >= shortest
                run = 0
            run += 1
            quiet = 0
        elif run:
            quiet += 1
    return segments + (run >= shortest)


def _attempt(call: GatewayCall | None) -> None:
    """One in-process request: no HTTP, so no request id or receipt of its own."""
    if call is not None:
        call.attempts += 1


class _Trip:
    """A fault taken by one request: raises or hangs when the request reaches it."""

    def __init__(self, fault: Fault) -> None:
        self.fault = fault

    async def fire(self) -> NoReturn:
        fault = self.fault
        path = ROUTE_PATHS[fault.route]
        if fault.kind == "hang":
            # Never set: the request waits until its consumer cancels it, as a stalled
            # connection does; the caller's timeout is what is under test.
            await asyncio.Event().wait()
            raise AssertionError("unreachable")
        if fault.kind == "drop":
            raise GatewayUnavailable("stream dropped", route=path)
        raise _status_error(fault.status, fault.retry_after, path)


async def _trip_before_start(trip: _Trip | None) -> None:
    if trip is not None:
        await trip.fire()


async def _trip_at(trip: _Trip | None, chunk: int, *, at_end: bool = False) -> None:
    """Fire ``trip`` before chunk number ``chunk`` if that is where it sits.

    A fault set after more chunks than the stream has fires at the end, before the stream
    would have completed, so ``after_chunks`` never silently disables a fault.
    """
    if trip is None:
        return
    after = trip.fault.after_chunks
    if chunk == after or (at_end and after > chunk):
        await trip.fire()


def _status_error(status: int, retry_after: float | None, path: str) -> GatewayError:
    message = f"simulated {status} on {path}"
    cls = error_class_for_status(status)
    if cls is PaymentRequired:
        return PaymentRequired(message, challenge=_x402_challenge(path), route=path)
    if cls is RateLimited:
        return RateLimited(message, retry_after=retry_after, route=path)
    return cls(message, status=status, route=path)


def _x402_challenge(path: str) -> str:
    """A 402 body shaped as an x402 payment challenge (version 1, one accepted scheme)."""
    return json.dumps(
        {
            "x402Version": 1,
            "error": "X-PAYMENT header is required",
            "accepts": [
                {
                    "scheme": "exact",
                    "network": "base-sepolia",
                    "maxAmountRequired": "1000",
                    "resource": path,
                    "description": "simulated inference payment",
                    "mimeType": "application/json",
                    "payTo": "0x0000000000000000000000000000000000000000",
                    "maxTimeoutSeconds": 60,
                    "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
                }
            ],
        }
    )


async def _sleep_until(deadline: float) -> None:
    # Pacing against a deadline from the request's start keeps rounding in each sleep from
    # adding up over a long stream; a deadline already past still yields to the loop.
    await asyncio.sleep(max(0.0, deadline - asyncio.get_running_loop().time()))


@functools.cache
def _speech_buffer() -> bytes:
    """2.4 s of a voiced, speech-like signal (PCM16 at 24 kHz), computed once.

    A gliding fundamental (about 110-150 Hz) with falling harmonics, shaped by a 5 Hz
    syllable envelope that never drops below a third of the peak: it sounds like a hum of
    speech, and an energy-based onset detector finds it in the very first chunk.
    """
    n = _CHUNK_SAMPLES * _BUFFER_CHUNKS
    t = np.arange(n) / SPEECH_RATE
    seconds = n / SPEECH_RATE
    # Whole cycles of each modulation over the buffer, so slices line up when it repeats.
    f0 = 130 + 20 * np.sin(2 * np.pi * t / seconds)
    phase = 2 * np.pi * np.cumsum(f0) / SPEECH_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 9))
    syllables = 0.35 + 0.65 * (0.5 - 0.5 * np.cos(2 * np.pi * 5 * t))
    signal = voiced * syllables
    signal *= 0.5 / np.max(np.abs(signal))
    return (signal * 32767).astype("<i2").tobytes()
