"""The cut-window Whisper decode (voice/gateway/whisper.py): which path each audio takes.

The real model's accuracy on the cut window is tested in test_gateway_local.py; here a
stand-in model records what it was asked, so the choice of path is checked exactly.
"""

from types import SimpleNamespace

import numpy as np
import pytest

from voice.gateway import whisper

pytest.importorskip("faster_whisper", reason="the `local` extra (faster-whisper) is needed")


class Tokenizer:
    timestamp_begin = 50_000

    def encode(self, text):
        return [1] * len(text.split())

    def decode(self, ids):
        return self.text


class Model:
    """Returns ``text`` from the cut window and "whole" from faster-whisper's own loop."""

    def __init__(self, text):
        self.frames = []
        self.whole = 0
        self.text = text
        self.model = SimpleNamespace(is_multilingual=False, generate=self._generate)
        self.hf_tokenizer = None

    def feature_extractor(self, audio):
        return np.ones((80, audio.size // 160 + 1), dtype=np.float32)

    def encode(self, features):
        self.frames.append(features.shape[-1])
        return features

    def get_prompt(self, tokenizer, previous, without_timestamps):
        return [0, *previous]

    def _generate(self, encoded, prompts, **options):
        self.options = options
        return [SimpleNamespace(sequences_ids=[[7, 8]])]

    def transcribe(self, audio, **options):
        self.whole += 1
        return [SimpleNamespace(text=" whole ")], None


@pytest.fixture(autouse=True)
def tokenizer(monkeypatch):
    monkeypatch.setattr(whisper, "_tokenizer", lambda model, language: _with_text(model))
    monkeypatch.setattr(whisper, "_suppressed", lambda tokenizer: [])


def _with_text(model):
    tokenizer = Tokenizer()
    tokenizer.text = model.text
    return tokenizer


def seconds(s):
    return np.zeros(round(s * whisper.RATE), dtype=np.float32)


def test_a_short_turn_is_encoded_in_a_window_of_its_own_length_plus_the_tail():
    model = Model("What time is it?")
    assert whisper.transcribe(model, seconds(2.0), language="en", prompt=None) == (
        "What time is it?"
    )
    assert model.frames == [round((2.0 + whisper.TAIL_S) * 100)]
    assert model.whole == 0
    assert model.options["max_length"] == 1 + 8 * 2 + 16  # the prompt's start token too


def test_the_words_before_count_in_the_decoders_length():
    model = Model("so could you help me move it")
    before = "I booked a table for Friday evening but something came up"
    whisper.transcribe(model, seconds(2.0), language="en", prompt=before)
    assert model.options["max_length"] == 1 + len(before.split()) + 8 * 2 + 16


def test_a_decode_that_loops_goes_to_the_full_window():
    model = Model("What time is it? " * 12)
    assert whisper.transcribe(model, seconds(2.0), language="en", prompt=None) == "whole"
    assert model.whole == 1


def test_more_words_than_anyone_says_in_the_time_is_a_loop_too():
    model = Model("But something came up. But something came up.")
    assert whisper.transcribe(model, seconds(1.2), language="en", prompt=None) == "whole"
    model = Model("But something came up.")
    assert whisper.transcribe(model, seconds(1.2), language="en", prompt=None) == (
        "But something came up."
    )


def test_audio_longer_than_a_window_goes_to_faster_whispers_loop():
    model = Model("unused")
    assert whisper.transcribe(model, seconds(27.0), language="en", prompt=None) == "whole"
    assert model.frames == []


def test_no_audio_is_no_text():
    model = Model("unused")
    assert whisper.transcribe(model, seconds(0), language="en", prompt=None) == ""
    assert model.frames == [] and model.whole == 0
