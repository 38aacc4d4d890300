"""The offline default: the :class:`~voice.gateway.base.Gateway` protocol on embedded engines.

``voice serve`` uses it when no gateway URL is set, and ``voice gateway`` serves it as
OpenAI-compatible HTTP. It needs the ``local`` extra; without it, constructing a
:class:`LocalGateway` raises a :class:`~voice.errors.ConfigError` that names the extra.

Models load once per process (:func:`~voice.gateway.engines.shared_engines`) and every
gateway and session shares them. They load **at start**: the server's lifespan calls
:meth:`LocalGateway.warm` before it accepts a caller, so the first caller does not wait the
few seconds a load takes and a broken install fails at start, not mid-call. A host app that
never warms still works: the first request loads them.

Every engine call runs on the engines' bounded worker pools, never on the event loop, so a
transcription in one session does not stall the audio of another. Speech streams sentence by
sentence, in chunks, as each sentence is synthesized; a chat streams token by token, and
closing its stream stops the generation at the next token. A reference-audio voice is refused
(400): the embedded engine has one bundled voice and no cloning.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any, Final, TypeVar

from voice.audio.frames import SAMPLE_WIDTH, SPEECH_RATE, PcmFrame
from voice.config import GatewaySettings
from voice.core.dialog import ChatMessage
from voice.core.record import GatewayCall
from voice.errors import (
    AudioFormatError,
    ConfigError,
    GatewayBadRequest,
    GatewayError,
    GatewayUnavailable,
)
from voice.gateway.base import ReferenceVoice, Voice
from voice.gateway.engines import MODEL_IDS, LocalEngines, loaded, shared_engines
from voice.gateway.local_prompt import for_local_model
from voice.gateway.simulated import ROUTE_PATHS
from voice.gateway.weights import require_local_extra

log = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFAULT_MAX_TOKENS: Final = 80
"""A small model rambles and drifts; a short cap keeps its replies short enough to listen
to. An explicit ``VOICE_LLM_MAX_TOKENS`` wins."""
DEFAULT_TEMPERATURE: Final = 0.0
"""Greedy: llama.cpp's default (0.8) makes a 0.5B model wander off-topic, and at 0.2 it
passed the judged answer set no more often (benchmarks/answers.json) while giving a
different answer each time; greedy answers are the ones the set was judged on."""
CHUNK_MS: Final = 100
"""Speech is handed on in chunks this long, as streaming TTS engines do."""


class LocalGateway:
    """:class:`~voice.gateway.base.Gateway` on the embedded engines.

    ``engines`` defaults to this process's shared engines, loaded on :meth:`warm` or the first
    request. Closing the gateway leaves them loaded for the other sessions.
    """

    def __init__(
        self,
        *,
        engines: LocalEngines | None = None,
        language: str | None = "en",
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float = DEFAULT_TEMPERATURE,
    ) -> None:
        if engines is None:
            require_local_extra()  # fail here, at start, with the install command
        self._given = engines
        self._language = language
        self._max_tokens = max_tokens
        self._temperature = temperature

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> LocalGateway:
        """Honour the gateway settings that make sense without a remote gateway."""
        chosen = settings.model_fields_set
        if settings.asr_language not in (None, "en"):
            raise ConfigError(
                f"VOICE_ASR_LANGUAGE={settings.asr_language}: the embedded Whisper (tiny.en) "
                "hears English only; unset it, or set VOICE_GATEWAY_URL to a gateway whose "
                "ASR speaks that language"
            )
        return cls(
            language="en",
            max_tokens=(
                settings.llm_max_tokens
                if "llm_max_tokens" in chosen and settings.llm_max_tokens is not None
                else DEFAULT_MAX_TOKENS
            ),
            temperature=(
                settings.llm_temperature
                if settings.llm_temperature is not None
                else DEFAULT_TEMPERATURE
            ),
        )

    async def transcribe(
        self, wav: bytes, *, prompt: str | None = None, call: GatewayCall | None = None
    ) -> str:
        _attempt(call)
        engines = await self._engines()
        route = ROUTE_PATHS["transcribe"]
        try:
            return await _run(
                engines.asr_pool, engines.transcribe, wav, language=self._language, prompt=prompt
            )
        except AudioFormatError as exc:
            raise GatewayBadRequest(exc.message, status=400, route=route) from exc
        except Exception as exc:
            raise _engine_failure("transcription", exc, route) from exc

    async def chat(
        self, messages: Sequence[ChatMessage], *, call: GatewayCall | None = None
    ) -> AsyncGenerator[str, None]:
        _attempt(call)
        engines = await self._engines()
        route = ROUTE_PATHS["chat"]
        loop = asyncio.get_running_loop()
        # Unbounded, but never long: the generation is capped at max_tokens chunks.
        chunks: asyncio.Queue[Mapping[str, Any] | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def post(item: Mapping[str, Any] | BaseException | None) -> None:
            if stop.is_set():
                return
            try:
                loop.call_soon_threadsafe(chunks.put_nowait, item)
            except RuntimeError:  # the loop closed: nobody is listening any more
                stop.set()

        def sink(chunk: Mapping[str, Any]) -> bool:
            post(chunk)
            return stop.is_set()

        def generate() -> None:
            if stop.is_set():
                return  # the consumer left while this waited for a slot
            try:
                engines.chat(
                    for_local_model(messages),
                    sink,
                    max_tokens=self._max_tokens,
                    temperature=self._temperature,
                )
            except Exception as exc:
                post(exc)
            finally:
                post(None)

        job = loop.run_in_executor(engines.llm_pool, generate)
        try:
            while (item := await chunks.get()) is not None:
                if isinstance(item, BaseException):
                    raise _engine_failure("chat", item, route) from item
                delta = _delta(item, route)
                if delta:
                    yield delta
        finally:
            # Stops a running generation at its next token (the sink says so) and drops one
            # still waiting for a worker.
            stop.set()
            job.cancel()

    async def speak(
        self, text: str, *, voice: Voice = None, call: GatewayCall | None = None
    ) -> AsyncGenerator[PcmFrame, None]:
        # A named voice is ignored: only hibari's bundled voice is installed, and any other
        # would need a download. A cloned one cannot be made at all.
        _attempt(call)
        route = ROUTE_PATHS["speak"]
        if isinstance(voice, ReferenceVoice):
            raise GatewayBadRequest(
                "reference-audio voices (ref_audio, ref_text) are not supported by the "
                "embedded engines; ask for a named voice, or use a gateway that clones voices",
                status=400,
                route=route,
            )
        engines = await self._engines()
        try:
            sentences = await _run(engines.tts_pool, engines.sentences, text)
        except Exception as exc:
            raise _engine_failure("speech", exc, route) from exc
        step = TTS_CHUNK_BYTES
        for phonemes in sentences:
            try:
                speech = await _run(engines.tts_pool, engines.synthesize, phonemes)
            except Exception as exc:
                raise _engine_failure("speech", exc, route) from exc
            for start in range(0, len(speech.pcm), step):
                yield PcmFrame(speech.pcm[start : start + step], speech.sample_rate)

    async def models(self) -> list[str]:
        return list(MODEL_IDS)

    async def warm(self) -> None:
        """Load the engines if this process has not yet (off the event loop)."""
        await self._engines()

    async def aclose(self) -> None:
        """Nothing to release: the engines stay loaded for the rest of the process."""

    async def _engines(self) -> LocalEngines:
        if self._given is not None:
            return self._given
        if loaded():
            return shared_engines()
        return await asyncio.to_thread(shared_engines)


def _attempt(call: GatewayCall | None) -> None:
    if call is not None:
        call.attempts += 1


TTS_CHUNK_BYTES: Final = SPEECH_RATE * CHUNK_MS // 1000 * SAMPLE_WIDTH


async def _run(pool: Executor, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """``fn(*args, **kwargs)`` on ``pool``; cancelling the caller drops a job not yet started."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(pool, functools.partial(fn, *args, **kwargs))


def _delta(chunk: Mapping[str, Any], route: str) -> str:
    """The text in one streamed chunk; an error chunk raises."""
    error = chunk.get("error")
    if error is not None:
        detail = error if isinstance(error, Mapping) else {"message": str(error)}
        status = detail.get("code")
        message = f"local chat failed: {detail.get('message', 'unknown error')}"
        if isinstance(status, int) and 400 <= status < 500:
            raise GatewayBadRequest(message, status=status, route=route)
        raise GatewayUnavailable(message, route=route)
    choices = chunk.get("choices") or [{}]
    content = (choices[0].get("delta") or {}).get("content")
    return content if isinstance(content, str) else ""


def _engine_failure(what: str, exc: BaseException, route: str) -> GatewayError:
    if isinstance(exc, GatewayError):
        return exc
    log.error("local %s failed: %r", what, exc)
    return GatewayUnavailable(f"local {what} failed: {type(exc).__name__}: {exc}", route=route)
