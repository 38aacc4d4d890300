"""Where a turn's speech ends, with webrtcvad alone and behind the tail gate (voice/vad.py),
against where its sound ends; and whether the embedded ASR hears the turn as well.

Every recording in samples/, plus (unless ``--no-fricatives``) short phrases ending in soft
fricatives ("this", "both", "fifth", ...) rendered by the embedded TTS and levelled and
padded as the samples are, goes through a ``TurnDetector`` with the default turn settings,
at 16 kHz as recorded and at 8 kHz after a μ-law round trip (what Twilio delivers). For each:

- ``tail``: the detector's ``speech_end_ms`` minus the recording's audible end, which is the
  end of its sound as ``voice bench`` judges it (the ear: 10 ms windows over -45 dBFS, on
  the 16 kHz recording, speech being at -20 dBFS), or, in the ``-55`` columns, the end of
  anything over -55 dBFS (weak final fricatives and fading nasals, still audible in quiet).
  A negative tail cuts audible speech off the end;
- ``pause``: the longest unvoiced run inside the turn (what a shorter hangover or a
  speculative pause would have to wait out);
- ``WER``: word error rate of the embedded Whisper (faster-whisper base, int8) on the
  utterance the detector hands over (pre-roll + speech + hangover; at 8 kHz doubled to
  16 kHz as the session does), and, stricter, on that utterance cut at ``speech_end_ms``;
- ``turns``: how many turns the detector made of the recording (1 is right);

and the cost of classifying one 20 ms frame, webrtcvad alone and behind the gate.

    flock /work/notes/bench.lock .venv/bin/python -m benchmarks.vad_tail
    .venv/bin/python -m benchmarks.vad_tail --no-asr --gate-db 35   # tails only, another gate

Needs the `local` extra (the embedded engines) unless ``--no-asr --no-fricatives``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import timeit
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voice.audio.frames import PcmFrame
from voice.audio.g711 import mulaw_decode, mulaw_encode
from voice.audio.resample import resample
from voice.audio.upsample import Upsampler2x
from voice.audio.wav import load_wav, wav_bytes
from voice.bench.ear import THRESHOLD_DBFS, Ear
from voice.bench.stats import word_errors, words
from voice.config import TurnSettings
from voice.core.events import SpeechStopped
from voice.core.turns import TurnDetector
from voice.vad import SpeechClassifier, TailGate, WebRtcVad

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
RATES = (16_000, 8_000)
SOURCE_RATE = 16_000
LEVEL_DBFS = -20.0
LEAD_S, TRAIL_S = 0.4, 2.0
"""As samples/ is made (scripts/make_samples.py): speech at -20 dBFS, padded with zeros."""
EAR_DBFS = THRESHOLD_DBFS
"""Sound's end as `voice bench` takes it (voice/bench/ear.py): what voice-to-voice counts from."""
QUIET_DBFS = -55.0
"""A second, lower end: weak final fricatives and fading nasals are still audible there."""

FRICATIVE_ENDINGS = (
    "Can you tell me the price of this",
    "I think so, yes",
    "Please turn the lights off",
    "Read me the news",
    "What's the weather like at the beach",
    "I'd like to order fish",
    "Give me a quick summary of both",
    "We need about a half",
    "Tell me more about myself",
    "I was hoping for something else",
    "Book it for the fifth",
    "Add some milk and eggs",
)


@dataclass
class Clip:
    name: str
    text: str
    pcm: bytes
    """16 kHz PCM16, as recorded."""
    group: str


@dataclass
class Outcome:
    speech_end_ms: int
    turns: int
    longest_pause_ms: int
    handed_over: bytes
    cut_at_end: bytes
    heard: dict[str, str] = field(default_factory=dict)


def audible_end_ms(pcm: bytes, threshold_dbfs: float) -> int:
    ear = Ear(SOURCE_RATE, threshold_dbfs=threshold_dbfs)
    ear.receive(pcm, 0.0)
    return round(ear.spans()[-1].end * 1000)


def at_rate(pcm: bytes, rate: int) -> bytes:
    return pcm if rate == SOURCE_RATE else mulaw_decode(mulaw_encode(resample(pcm, 16_000, rate)))


def frames(pcm: bytes, rate: int) -> Iterator[bytes]:
    step = rate // 50 * 2
    for i in range(0, len(pcm) - step + 1, step):
        yield pcm[i : i + step]


def run_turns(pcm: bytes, rate: int, vad: SpeechClassifier, turn: TurnSettings) -> Outcome:
    detector = TurnDetector(
        start_ms=turn.start_ms,
        hangover_ms=turn.hangover_ms,
        preroll_ms=turn.preroll_ms,
        min_speech_ms=turn.min_speech_ms,
        max_turn_s=turn.max_turn_s,
    )
    stops: list[SpeechStopped] = []
    voiced: list[bool] = []
    for frame in frames(pcm, rate):
        speech = vad.is_speech(frame, rate)
        voiced.append(speech)
        stops += [e for e in detector.feed(frame, speech) if isinstance(e, SpeechStopped)]
    if not stops:
        raise SystemExit("a recording made no turn: is the VAD deaf?")
    first = voiced.index(True)
    last = len(voiced) - voiced[::-1].index(True)
    pause = longest = 0
    for v in voiced[first:last]:
        pause = 0 if v else pause + 1
        longest = max(longest, pause)
    bytes_per_ms = rate // 1000 * 2
    cut = b"".join(
        s.audio[: len(s.audio) - (s.at_ms - s.speech_end_ms) * bytes_per_ms] for s in stops
    )
    return Outcome(
        speech_end_ms=stops[-1].speech_end_ms,
        turns=len(stops),
        longest_pause_ms=longest * 20,
        handed_over=b"".join(s.audio for s in stops),
        cut_at_end=cut,
    )


def clips(engines: Any | None) -> list[Clip]:
    manifest = json.loads((SAMPLES / "manifest.json").read_text())["samples"]
    out = [
        Clip(Path(s["file"]).stem, s["text"], load_wav(SAMPLES / s["file"]).pcm, "samples")
        for s in manifest
    ]
    if engines is not None:
        for i, text in enumerate(FRICATIVE_ENDINGS):
            speech = b"".join(f.pcm for f in engines.speak(text))
            pcm = levelled(resample(speech, 24_000, SOURCE_RATE))
            out.append(Clip(f"f{i + 1:02d} …{text.split()[-1]}", text, pcm, "fricatives"))
    return out


def levelled(pcm: bytes) -> bytes:
    """Speech at -20 dBFS RMS over its 10 ms windows within 40 dB of the loudest, peak at
    most -1 dBFS, between 0.4 s and 2 s of zeros: as samples/ is made."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    rms = np.sqrt(np.mean(x[: x.size // 160 * 160].reshape(-1, 160) ** 2, axis=1))
    active = rms[rms > rms.max() * 10 ** (-40 / 20)]
    x *= 32768 * 10 ** (LEVEL_DBFS / 20) / np.sqrt(np.mean(active**2))
    x *= min(1.0, 32768 * 10 ** (-1 / 20) / np.abs(x).max())
    pad = (np.zeros(int(LEAD_S * SOURCE_RATE)), np.zeros(int(TRAIL_S * SOURCE_RATE)))
    return np.round(np.concatenate([pad[0], x, pad[1]])).astype("<i2").tobytes()


def transcribe(engines: Any, pcm: bytes, rate: int) -> str:
    if rate != SOURCE_RATE:
        pcm = Upsampler2x().process(pcm)  # as the session sends a phone turn to ASR
    text: str = engines.transcribe(wav_bytes(PcmFrame(pcm, SOURCE_RATE)))
    return text


def cost_us(make: Callable[[], SpeechClassifier], pcm: bytes, rate: int) -> tuple[float, float]:
    """µs per frame over the whole recording, and over the frames webrtcvad calls speech."""
    every = list(frames(pcm, rate))
    probe = WebRtcVad(2)
    speech = [f for f in every if probe.is_speech(f, rate)]
    out = []
    for subset in (every, speech):
        vad = make()

        def classify(vad: SpeechClassifier = vad, subset: list[bytes] = subset) -> None:
            for f in subset:
                vad.is_speech(f, rate)

        best = min(timeit.repeat(classify, number=20, repeat=5))
        out.append(best / 20 / len(subset) * 1e6)
    return out[0], out[1]


def wer(pairs: list[tuple[str, str]]) -> float:
    errors = sum(word_errors(ref, heard) for ref, heard in pairs)
    return 100.0 * errors / sum(len(words(ref)) for ref, _ in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gate-db", type=float, default=TurnSettings().vad_tail_gate_db)
    parser.add_argument("--aggressiveness", type=int, default=TurnSettings().vad_aggressiveness)
    parser.add_argument("--no-asr", action="store_true", help="tails only, no transcription")
    parser.add_argument("--no-fricatives", action="store_true", help="samples/ only")
    args = parser.parse_args()
    turn = TurnSettings(vad_aggressiveness=args.aggressiveness, vad_tail_gate_db=args.gate_db)
    engines = None
    if not (args.no_asr and args.no_fricatives):
        from voice.gateway.engines import shared_engines

        engines = shared_engines()
    makers: dict[str, Callable[[], SpeechClassifier]] = {
        "webrtcvad": lambda: WebRtcVad(args.aggressiveness),
        "gated": lambda: TailGate(WebRtcVad(args.aggressiveness), drop_db=args.gate_db),
    }
    recordings = clips(None if args.no_fricatives else engines)
    ends = {c.name: (audible_end_ms(c.pcm, EAR_DBFS), audible_end_ms(c.pcm, QUIET_DBFS))
            for c in recordings}  # fmt: skip
    results: dict[tuple[str, int, str], Outcome] = {}
    for clip in recordings:
        for rate in RATES:
            pcm = at_rate(clip.pcm, rate)
            for kind, make in makers.items():
                outcome = run_turns(pcm, rate, make(), turn)
                if engines is not None and not args.no_asr:
                    outcome.heard["handed"] = transcribe(engines, outcome.handed_over, rate)
                    outcome.heard["cut"] = transcribe(engines, outcome.cut_at_end, rate)
                results[clip.name, rate, kind] = outcome

    print(f"VAD tail: webrtcvad mode {args.aggressiveness} alone vs behind the tail gate at "
          f"{args.gate_db:g} dB; hangover {turn.hangover_ms} ms. Tails in ms past the audible "
          "end (-45 dBFS, as `voice bench` measures; -55 in brackets).")  # fmt: skip
    print(f"\n{'recording':28} {'end ms':>6} | " + " | ".join(
        f"{rate // 1000:>2} kHz webrtcvad → gated" for rate in RATES)
        + " | longest pause inside, 16 | 8 kHz")  # fmt: skip
    for clip in recordings:
        end45, end55 = ends[clip.name]
        cells = []
        for rate in RATES:
            plain, gated = (results[clip.name, rate, k] for k in makers)
            cells.append(
                f"{plain.speech_end_ms - end45:4} ({plain.speech_end_ms - end55:4}) → "
                f"{gated.speech_end_ms - end45:4} ({gated.speech_end_ms - end55:4})"
            )
        pauses = [
            "{} → {}".format(*(results[clip.name, rate, k].longest_pause_ms for k in makers))
            for rate in RATES
        ]
        print(f"{clip.name:28} {end45:6} | " + " | ".join(cells) + " | " + " | ".join(pauses))

    print(f"\n{'rate':>6} {'set':10} {'n':>2} {'classifier':10} {'tail mean':>9} {'min':>4} "
          f"{'max':>4} {'tail-55 mean':>12} {'min':>4} {'pause max':>9} {'turns':>5} "
          f"{'WER handed':>10} {'WER cut':>7}")  # fmt: skip
    groups = sorted({c.group for c in recordings}, reverse=True)
    for rate in RATES:
        for group in groups:
            members = [c for c in recordings if c.group == group]
            for kind in makers:
                outs = [(c, results[c.name, rate, kind]) for c in members]
                t45 = [o.speech_end_ms - ends[c.name][0] for c, o in outs]
                t55 = [o.speech_end_ms - ends[c.name][1] for c, o in outs]
                row = (f"{rate:6} {group:10} {len(outs):2} {kind:10} {statistics.mean(t45):9.0f} "
                       f"{min(t45):4} {max(t45):4} {statistics.mean(t55):12.0f} {min(t55):4} "
                       f"{max(o.longest_pause_ms for _, o in outs):9} "
                       f"{sum(o.turns for _, o in outs):5}")  # fmt: skip
                if outs[0][1].heard:
                    handed = wer([(c.text, o.heard["handed"]) for c, o in outs])
                    cut = wer([(c.text, o.heard["cut"]) for c, o in outs])
                    row += f" {handed:9.1f}% {cut:6.1f}%"
                print(row)

    if any(o.heard for o in results.values()):
        print("\nTranscripts that differ between the two (handed over / cut at speech end):")
        for clip in recordings:
            for rate in RATES:
                plain, gated = (results[clip.name, rate, k] for k in makers)
                for what in ("handed", "cut"):
                    if plain.heard[what] != gated.heard[what]:
                        print(f"  {clip.name} {rate // 1000} kHz {what}: "
                              f"{plain.heard[what]!r} → {gated.heard[what]!r}")  # fmt: skip

    print("\nCost per 20 ms frame, µs (best of 5): whole recording / frames webrtcvad calls speech")
    longest = max(recordings, key=lambda c: len(c.pcm))
    for rate in RATES:
        pcm = at_rate(longest.pcm, rate)
        cells = [f"{k} {a:.2f} / {s:.2f}" for k, (a, s) in
                 ((k, cost_us(m, pcm, rate)) for k, m in makers.items())]  # fmt: skip
        print(f"  {rate // 1000:2} kHz, {longest.name}: " + ", ".join(cells))


if __name__ == "__main__":
    main()
