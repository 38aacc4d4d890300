"""What a shorter speculative pause costs in hearing: the embedded Whisper on turns cut at
their pauses and joined, against the same turns heard whole.

With speculation, a pause of ``VOICE_TURN_PAUSE_MS`` inside a turn sends the words so far
to transcription. If the caller goes on, those words stand and only the audio after the
pause is transcribed next, prompted with them, and the parts are joined
(``voice/pipeline/transcription.py``). The shorter the pause, the more turns are cut, and
below ~150 ms some cuts would fall inside a phrase (a stop's closure, a breath) rather than
at a real pause, which ``VOICE_TURN_SPLIT_MS`` (200) prevents: after a shorter gap the
words are not kept, and the turn is heard from the last part kept. This runs every
recording in ``samples/`` and ``samples/pauses/`` (whose pauses of 300-700 ms are cut at
every setting), at 16 kHz and after an 8 kHz μ-law round trip, through the session's own
turn detector (the tail gate on webrtcvad, the default turn settings, the pause under
test, and a hangover of ``VOICE_TURN_HANGOVER_MAX_MS`` so a pause is never taken for the
turn's end), and transcribes the parts exactly as a session
does (``Transcription`` on the embedded gateway). Per pause setting it prints the cuts per
recording and the word error rate of the joined parts against the manifest's text, next to
the same turns transcribed whole.

    .venv/bin/python -m benchmarks.pause_split
    .venv/bin/python -m benchmarks.pause_split --pauses 60,80,100,150 --rates 16000
    .venv/bin/python -m benchmarks.pause_split --split-ms 0   # every gap cuts, as before

Needs the `local` extra (the embedded engines); about 75 s on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from benchmarks.vad_tail import SAMPLES, at_rate, frames
from voice.audio.frames import PcmFrame
from voice.audio.wav import load_wav
from voice.bench.stats import word_errors, words
from voice.config import TurnSettings
from voice.core.events import SpeechPaused, SpeechResumed, SpeechStopped
from voice.core.turns import TurnDetector
from voice.gateway.local import LocalGateway
from voice.pipeline.transcription import Transcription
from voice.vad import speech_classifier

RATES = (16_000, 8_000)


@dataclass
class Recording:
    name: str
    text: str
    pcm: bytes
    """16 kHz PCM16, as recorded."""


@dataclass
class Heard:
    cuts: int
    whole: str
    parts: str


def recordings() -> list[Recording]:
    out = []
    for folder in (SAMPLES, SAMPLES / "pauses"):
        for entry in json.loads((folder / "manifest.json").read_text())["samples"]:
            pcm = load_wav(folder / entry["file"]).pcm
            out.append(Recording(Path(entry["file"]).stem, entry["text"], pcm))
    return out


def turns(
    pcm: bytes, rate: int, pause_ms: int, split_ms: int | None = None
) -> list[tuple[list[int], bytes]]:
    """Each turn the session would make of ``pcm``: the byte offsets where it was cut (a
    pause of ``split_ms`` or more the caller went on after) and its audio."""
    setting = TurnSettings()
    split_ms = setting.split_ms if split_ms is None else split_ms
    vad = speech_classifier(setting)  # as the session builds it
    detector = TurnDetector(
        start_ms=setting.start_ms,
        hangover_ms=setting.hangover_max_ms,
        preroll_ms=setting.preroll_ms,
        min_speech_ms=setting.min_speech_ms,
        max_turn_s=setting.max_turn_s,
        pause_ms=pause_ms,
    )
    out: list[tuple[list[int], bytes]] = []
    cuts: list[int] = []
    paused_at: int | None = None
    speech_end_ms = 0
    # The pause set ends 0.3 s after the speech: the caller stays silent until the turn ends.
    silence = bytes((setting.hangover_max_ms + 100) * rate // 1000 * 2)
    for frame in frames(pcm + silence, rate):
        for event in detector.feed(frame, vad.is_speech(frame, rate)):
            match event:
                case SpeechPaused():
                    paused_at, speech_end_ms = len(event.audio), event.speech_end_ms
                case SpeechResumed():
                    assert paused_at is not None
                    if event.at_ms - speech_end_ms >= split_ms:
                        cuts.append(paused_at)
                    paused_at = None
                case SpeechStopped():
                    out.append((cuts, event.audio))
                    cuts, paused_at = [], None
    return out


async def hear(gateway: LocalGateway, audio: bytes, cuts: list[int], rate: int) -> str:
    """The turn's text as a session gets it: one part per stretch between cuts, each
    continuing the one before (a phone turn doubled to 16 kHz on the way, as there)."""
    item: Transcription | None = None
    for start, end in zip([0, *cuts], [*cuts, len(audio)], strict=True):
        part = audio[start:end]
        item = Transcription.start(gateway, PcmFrame(part, rate), before=item)
        await item.finished.wait()
    assert item is not None
    return item.task.result()


async def run(pauses: list[int], rates: list[int], split_ms: int) -> None:
    from voice.gateway.engines import shared_engines

    gateway = LocalGateway(engines=shared_engines())
    clips = recordings()
    print(f"{len(clips)} recordings; the turn detector as a session runs it, the pause under "
          f"test, hangover {TurnSettings().hangover_max_ms} ms; a turn is cut at a pause of "
          f"{split_ms} ms or more the caller went on after.\n")  # fmt: skip
    print(f"{'rate':>5} {'pause':>5} {'cut turns':>9} {'cuts':>4} {'WER whole':>9} "
          f"{'WER parts':>9}")  # fmt: skip
    changed: list[str] = []
    wholes: dict[bytes, str] = {}
    for rate in rates:
        for pause_ms in pauses:
            errors = {"whole": 0, "parts": 0}
            total = cut_turns = cuts_n = 0
            for clip in clips:
                pcm = at_rate(clip.pcm, rate)
                heard: list[Heard] = []
                for cuts, audio in turns(pcm, rate, pause_ms, split_ms):
                    if audio not in wholes:  # the turns' bounds do not depend on the pause
                        wholes[audio] = await hear(gateway, audio, [], rate)
                    whole = wholes[audio]
                    parts = await hear(gateway, audio, cuts, rate) if cuts else whole
                    heard.append(Heard(len(cuts), whole, parts))
                whole = " ".join(h.whole for h in heard)
                parts = " ".join(h.parts for h in heard)
                errors["whole"] += word_errors(clip.text, whole)
                errors["parts"] += word_errors(clip.text, parts)
                total += len(words(clip.text))
                cut_turns += sum(1 for h in heard if h.cuts)
                cuts_n += sum(h.cuts for h in heard)
                if parts != whole:
                    changed.append(f"  {rate // 1000:2} kHz {pause_ms:3} ms {clip.name}: "
                                   f"{whole!r} → {parts!r}")  # fmt: skip
            rates_ = {k: 100 * v / total for k, v in errors.items()}
            print(f"{rate:5} {pause_ms:5} {cut_turns:4}/{len(clips):<4} {cuts_n:4} "
                  f"{rates_['whole']:8.1f}% {rates_['parts']:8.1f}%")  # fmt: skip
    if changed:
        print("\nTurns heard differently in parts (whole → parts):")
        print("\n".join(changed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pauses", default="60,80,100,150", help="pause settings, ms")
    parser.add_argument("--rates", default=",".join(map(str, RATES)), help="input rates, Hz")
    parser.add_argument(
        "--split-ms",
        type=int,
        default=TurnSettings().split_ms,
        help="VOICE_TURN_SPLIT_MS: the shortest gap a turn is cut at (0: any)",
    )
    args = parser.parse_args()
    pauses = [int(p) for p in args.pauses.split(",")]
    rates = [int(r) for r in args.rates.split(",")]
    asyncio.run(run(pauses, rates, args.split_ms))


if __name__ == "__main__":
    main()
