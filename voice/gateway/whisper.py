"""Whisper on a window cut to the utterance, not the 30 s it was trained on.

Whisper's encoder reads a 30 s window whatever the audio's length, and its cost grows with the
window, not with the speech: on this 2-core box, tiny.en takes ~440 ms to encode 30 s and
~45 ms to encode 6 s. A caller's turn is a few seconds long, so faster-whisper (which always
pads to 30 s) spends nine tenths of a transcription encoding silence.

:func:`transcribe` encodes only the utterance plus :data:`TAIL_S` of silence (zero
features, as faster-whisper pads; with a shorter tail tiny.en loops more often), then decodes
greedily from that, as faster-whisper would with ``beam_size=1``, ``temperature=0`` and no
timestamps. Audio longer than one window goes to faster-whisper's own loop unchanged.
``python -m benchmarks.local asr`` measures both ways on ``samples/`` and ``samples/pauses/``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Final

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

RATE: Final = 16_000
TAIL_S: Final = 5.0
"""Silence after the speech inside the window: with less, tiny.en repeats itself more often
(measured on samples/ and samples/pauses/: with 1 s, 4 of 31 recordings looped; with 3 s, 2;
with 5 s, none)."""
WINDOW_S: Final = 30
"""The longest window Whisper reads; longer audio goes through faster-whisper's loop."""
_HOP: Final = 160  # samples per mel frame (10 ms)
_POSITIONS: Final = 448  # Whisper's decoder: prompt and text together
_MAX_TOKENS: Final = 224  # half of them for the text
_TOKENS_PER_S: Final = 8  # fast speech is ~4 words (~5 tokens) a second; more is a loop
_COMPRESSION_RATIO: Final = 2.4  # faster-whisper's own threshold for a repetitive decode
_WORDS_PER_S: Final = 4  # brisk speech; "But something came up." twice in 1.2 s is a loop


def transcribe(
    model: Any, audio: npt.NDArray[np.float32], *, language: str | None, prompt: str | None
) -> str:
    """The text of ``audio`` (16 kHz mono float32) by faster-whisper's ``model``.

    ``prompt``: the words just before this audio, which Whisper continues.
    """
    if audio.size == 0:
        return ""
    seconds = audio.size / RATE
    if seconds + TAIL_S > WINDOW_S:
        return full_window(model, audio, language=language, prompt=prompt)
    features = model.feature_extractor(audio)
    # As faster-whisper pads a 30 s window: zeros after the speech. The encoder halves the
    # frames (a stride-2 convolution), so the window stays even.
    frames = 2 * math.ceil((seconds + TAIL_S) * RATE / _HOP / 2)
    features = np.pad(features[:, :frames], ((0, 0), (0, max(0, frames - features.shape[-1]))))
    tokenizer = _tokenizer(model, language)
    previous = tokenizer.encode(" " + prompt.strip()) if prompt and prompt.strip() else []
    previous = previous[-(_POSITIONS // 2 - 1) :]  # as faster-whisper keeps a prompt's end
    start = model.get_prompt(tokenizer, previous, without_timestamps=True)
    new_tokens = min(_MAX_TOKENS, round(_TOKENS_PER_S * seconds) + 16)
    result = model.model.generate(
        model.encode(features),
        [start],
        beam_size=1,
        # Counts the prompt too, as in faster-whisper; the decoder holds 448 positions.
        max_length=min(_POSITIONS, len(start) + new_tokens),
        suppress_blank=True,
        suppress_tokens=_suppressed(tokenizer),
    )[0]
    text: str = tokenizer.decode(result.sequences_ids[0]).strip()
    if _looping(text, seconds):
        # A short window can send the decoder round a loop: more words than anyone says in
        # that time, or text that compresses too well (Whisper's own test). That audio goes
        # to the full window instead.
        log.info("cut-window transcription looped; transcribing with the full window")
        return full_window(model, audio, language=language, prompt=prompt)
    return text


def _looping(text: str, seconds: float) -> bool:
    from faster_whisper.transcribe import get_compression_ratio

    if len(text.split()) > _WORDS_PER_S * seconds + 2:
        return True
    return bool(text) and get_compression_ratio(text) > _COMPRESSION_RATIO


def full_window(
    model: Any, audio: npt.NDArray[np.float32], *, language: str | None, prompt: str | None
) -> str:
    """The text of ``audio`` as faster-whisper transcribes it: 30 s windows, greedy."""
    segments, _info = model.transcribe(
        audio,
        language=language,
        beam_size=1,
        # One temperature: a fallback re-decode would double the latency of a bad turn.
        temperature=0.0,
        condition_on_previous_text=False,
        without_timestamps=True,
        vad_filter=False,  # turns arrive already cut by our own VAD
        initial_prompt=prompt or None,
    )
    return " ".join(s.text.strip() for s in segments).strip()


def _tokenizer(model: Any, language: str | None) -> Any:
    from faster_whisper.tokenizer import Tokenizer

    multilingual = bool(model.model.is_multilingual)
    return Tokenizer(
        model.hf_tokenizer,
        multilingual,
        task="transcribe",
        language=(language or "en") if multilingual else None,
    )


def _suppressed(tokenizer: Any) -> list[int]:
    from faster_whisper.transcribe import get_suppressed_tokens

    return list(get_suppressed_tokens(tokenizer, [-1]))
