#!/usr/bin/env python3
r"""Make the pause set in samples/pauses/: sentences with a silence inside, where people pause.

Each recording is one sentence a caller says with one or two pauses of 0.30-0.70 s in the
middle: after a preposition ("a table for | four people"), a conjunction ("and | book a new
one"), an article ("the | dry cleaning"), or a filler ("with, um, | my internet
connection"). A turn detector that ends the turn at such a pause cuts the caller off; a
reply heard before the caller's last word is a premature reply. `benchmarks/turn_taking.py`
counts both. A few recordings (role ``clause``) pause after words that read as a finished
sentence ("I need a taxi to the airport | tomorrow morning"): no rule on the words alone can
tell those from a finished turn, so the benchmark reports them apart.

Each segment between pauses is rendered on its own by hibari (the embedded TTS's bundled
voice, as in make_samples.py), trimmed and levelled as make_samples.py does, and the
segments are joined with digital silence of the stated length. So a pause is exact zeros,
the same on every transport, and the simulated gateway can find it (``transcript`` in the
manifest is the ``|``-segmented form its ``transcripts`` setting takes).

Setup: the venv of make_samples.py (only hibari-tts, numpy, scipy and webrtcvad-wheels are
used). Run from the repository root:

    /work/samples-venv/bin/python scripts/make_pause_set.py            # rewrites samples/pauses/
    /work/samples-venv/bin/python scripts/make_pause_set.py --out /tmp/p

It also rewrites samples/README.md (make_samples.py's text, from samples/manifest.json, with
a section on this set), without touching the other recordings.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from make_samples import (
    PEAK_MAX_DBFS,
    SR,
    VAD_FRAME_MS,
    VAD_MODE,
    Engines,
    dbfs,
    readme,
    to_16k,
    trim_and_level,
    write_wav,
)

VOICE = "hibari-heart"
LEAD_S = 0.30
TRAIL_S = 0.30
"""Short padding keeps the set small: a caller sends silence after the recording anyway."""
MIN_PAUSE_S, MAX_PAUSE_S = 0.30, 0.70

# The simulated gateway's segment finder (voice/gateway/simulated.py), repeated here so this
# script needs only the samples venv: 10 ms windows over this level are sound, and quiet of
# at least this long separates two segments. The tests check the gateway's own code.
GATE_DBFS = -50.0
SEGMENT_GAP_S = 0.25

# (file stem, role, speed, [(segment text, pause after it in s, what the pause follows)...]);
# the last segment has no pause. Digits are avoided, as in make_samples.py.
PAUSED: list[tuple[str, str, float, list[tuple[str, float | None, str | None]]]] = [
    ("p01_table_for", "pause", 1.0, [
        ("I'd like to book a table for", 0.45, "preposition"),
        ("four people tonight.", None, None)]),
    ("p02_way_to", "pause", 1.0, [
        ("Can you tell me the way to", 0.60, "preposition"),
        ("the nearest train station?", None, None)]),
    ("p03_cancel_and", "pause", 1.0, [
        ("I need to cancel my appointment and", 0.50, "conjunction"),
        ("book a new one next week.", None, None)]),
    ("p04_pick_up_the", "pause", 1.0, [
        ("Please remind me to pick up the", 0.40, "article"),
        ("dry cleaning tomorrow.", None, None)]),
    ("p05_help_me_with_um", "pause", 1.0, [
        ("I was wondering if you could help me with, um,", 0.65, "filler"),
        ("my internet connection.", None, None)]),
    ("p06_um_pharmacy", "pause", 0.9, [
        ("Um,", 0.55, "filler"),
        ("what time does the pharmacy close today?", None, None)]),
    ("p07_phone_in_a", "pause", 1.0, [
        ("I think I left my phone in a", 0.35, "article"),
        ("taxi this morning.", None, None)]),
    ("p08_report_to", "pause", 1.0, [
        ("Could you send the report to", 0.70, "preposition"),
        ("my manager before lunch?", None, None)]),
    ("p09_eggs_and", "pause", 1.0, [
        ("Can you add milk, eggs and", 0.30, "conjunction"),
        ("bread to my shopping list?", None, None)]),
    ("p10_money_to_but", "pause", 1.0, [
        ("I want to move some money to", 0.40, "preposition"),
        ("my savings account, but", 0.60, "conjunction"),
        ("I'm not sure how much.", None, None)]),
    ("p11_flight_on_or", "pause", 1.0, [
        ("Is there a flight to Boston on", 0.50, "preposition"),
        ("Friday afternoon or", 0.35, "conjunction"),
        ("Saturday morning?", None, None)]),
    ("p12_pizza_with_and", "pause", 1.0, [
        ("I'd like to order a large pizza with", 0.45, "preposition"),
        ("mushrooms and", 0.65, "conjunction"),
        ("extra cheese.", None, None)]),
    ("p13_meeting_to_uh", "pause", 1.0, [
        ("Can you move my meeting with Sarah to, uh,", 0.60, "filler"),
        ("Thursday at the same time?", None, None)]),
    ("p14_number_of_the", "pause", 1.0, [
        ("What's the phone number of the", 0.50, "article"),
        ("dentist on Elm Street?", None, None)]),
    ("p15_drive_to", "pause", 1.0, [
        ("How long does it take to drive from here to", 0.70, "preposition"),
        ("the airport?", None, None)]),
    ("p16_buy_a", "pause", 1.0, [
        ("Where can I buy a", 0.30, "article"),
        ("charger for my laptop?", None, None)]),
    ("c01_taxi_airport", "clause", 1.0, [
        ("I need a taxi to the airport", 0.50, "clause"),
        ("tomorrow morning at nine.", None, None)]),
    ("c02_weather", "clause", 1.0, [
        ("Tell me about the weather", 0.40, "clause"),
        ("in Paris this weekend.", None, None)]),
    ("c03_book_table", "clause", 1.0, [
        ("I'd like to book a table", 0.60, "clause"),
        ("for four people tonight.", None, None)]),
    ("c04_play_music", "clause", 1.0, [
        ("Can you play some music", 0.35, "clause"),
        ("by the Beatles?", None, None)]),
]  # fmt: skip

KINDS = {
    "preposition": "after a preposition",
    "conjunction": "after a conjunction",
    "article": "after an article",
    "filler": "after a filler (um, uh)",
    "clause": "after words that read as a finished sentence",
}


def voiced_frames(pcm: np.ndarray) -> list[bool]:
    import webrtcvad

    vad = webrtcvad.Vad(VAD_MODE)
    n = SR * VAD_FRAME_MS // 1000
    return [vad.is_speech(pcm[i : i + n].tobytes(), SR) for i in range(0, len(pcm) - n + 1, n)]


def bounds(voiced: list[bool], start_s: float, end_s: float) -> tuple[float, float, float]:
    """webrtcvad within [start_s, end_s): first voiced frame's start, last one's end, and the
    longest unvoiced run between them."""
    f = VAD_FRAME_MS / 1000
    idx = [i for i, v in enumerate(voiced) if v and start_s <= i * f < end_s]
    if not idx:
        raise SystemExit(f"webrtcvad found no speech in {start_s:.2f}-{end_s:.2f} s")
    gap = max((b - a - 1 for a, b in zip(idx, idx[1:], strict=False)), default=0)
    return idx[0] * f, (idx[-1] + 1) * f, gap * f


def segments_heard(pcm: np.ndarray) -> int:
    """Stretches of sound separated by at least SEGMENT_GAP_S of quiet (the gateway's rule)."""
    w = SR // 100
    n = len(pcm) // w
    x = pcm[: n * w].astype(np.float64).reshape(n, w)
    level = 10 * np.log10(np.mean(x**2, axis=1) + 1e-12) - 20 * np.log10(32768)
    loud = np.flatnonzero(level > GATE_DBFS)
    if loud.size == 0:
        return 0
    return 1 + int(np.sum(np.diff(loud) - 1 >= round(SEGMENT_GAP_S * 100)))


def render(engines: Engines, out: Path) -> tuple[list[dict], list[str]]:
    entries, problems = [], []
    for stem, role, speed, parts in PAUSED:
        pieces = [np.zeros(round(LEAD_S * SR), np.int16)]
        regions = []  # (start_s, end_s) of each segment's audio in the file
        at = LEAD_S
        for text, pause, _ in parts:
            raw, sr = engines.synth(VOICE, text, speed)
            speech, _ = trim_and_level(to_16k(raw, sr))
            pcm = np.round(np.clip(speech, -1.0, 1.0) * 32767.0).astype(np.int16)
            pieces.append(pcm)
            regions.append((at, at + len(pcm) / SR))
            at += len(pcm) / SR
            if pause is not None:
                pieces.append(np.zeros(round(pause * SR), np.int16))
                at += round(pause * SR) / SR
        pieces.append(np.zeros(round(TRAIL_S * SR), np.int16))
        pcm = np.concatenate(pieces)
        path = out / f"{stem}.wav"
        write_wav(path, pcm)

        voiced = voiced_frames(pcm)
        segments, pauses = [], []
        for (text, _, _), (lo, hi) in zip(parts, regions, strict=True):
            start, end, gap = bounds(voiced, lo - 0.02, hi + 0.02)
            segments.append({"text": text, "start_s": round(start, 3), "end_s": round(end, 3)})
            if gap > 0.3:
                problems.append(f"{stem}: a {gap:.2f} s pause inside {text!r}")
        for i, (text, pause, kind) in enumerate(parts[:-1]):
            assert pause is not None and kind is not None
            before, after = segments[i], segments[i + 1]
            pauses.append(
                {
                    "after": text.rstrip(",.?").split()[-1],
                    "kind": kind,
                    "silence_s": pause,
                    "start_s": before["end_s"],
                    "end_s": after["start_s"],
                    "unvoiced_s": round(after["start_s"] - before["end_s"], 3),
                }
            )
            if not MIN_PAUSE_S <= pause <= MAX_PAUSE_S:
                problems.append(f"{stem}: pause {pause} s outside {MIN_PAUSE_S}-{MAX_PAUSE_S}")
        heard = segments_heard(pcm)
        if heard != len(parts):
            problems.append(f"{stem}: the gateway's rule finds {heard} segments, not {len(parts)}")
        body = pcm[round(LEAD_S * SR) : len(pcm) - round(TRAIL_S * SR)]
        peak = float(np.abs(body.astype(np.float64)).max()) / 32768
        if peak > 10 ** (PEAK_MAX_DBFS / 20) + 1e-3:
            problems.append(f"{stem}: peak {dbfs(peak)} dBFS")
        entry = {
            "file": path.name,
            "role": role,
            "text": " ".join(text for text, _, _ in parts),
            "transcript": "|".join(text for text, _, _ in parts),
            "voice": VOICE,
            "speed": speed,
            "duration_s": round(len(pcm) / SR, 3),
            "speech_start_s": segments[0]["start_s"],
            "speech_end_s": segments[-1]["end_s"],
            "segments": segments,
            "pauses": pauses,
        }
        entries.append(entry)
        marks = " | ".join(f"{p['after']} {p['unvoiced_s']:.2f}s" for p in pauses)
        print(
            f"{path.name:26s} dur {entry['duration_s']:5.2f}s speech "
            f"{entry['speech_start_s']:.2f}-{entry['speech_end_s']:.2f}s pauses {marks}"
        )
    return entries, problems


def manifest(entries: list[dict], versions: dict) -> dict:
    return {
        "description": "Sentences with pauses inside, for the turn-taking benchmark; "
        "see ../README.md.",
        "format": {"sample_rate": SR, "channels": 1, "sample_format": "s16le", "container": "wav"},
        "padding_s": {"leading": LEAD_S, "trailing": TRAIL_S},
        "vad": {
            "engine": "webrtcvad",
            "mode": VAD_MODE,
            "frame_ms": VAD_FRAME_MS,
            "speech_start_s": "start of the first voiced frame",
            "speech_end_s": "end of the last voiced frame",
        },
        "pause_kinds": KINDS,
        "generator": {"script": "scripts/make_pause_set.py", "versions": versions},
        "samples": entries,
    }


def readme_section(pause_manifest: dict) -> str:
    """The pause set's part of samples/README.md (make_samples.py's readme() includes it)."""
    entries = pause_manifest["samples"]
    rows = "\n".join(
        f"| `pauses/{e['file']}` | {e['role']} | {e['duration_s']:.2f} | "
        f"{e['speech_start_s']:.2f}–{e['speech_end_s']:.2f} | "
        + ", ".join(f"{p['kind']} {p['silence_s'] * 1000:.0f}" for p in e["pauses"])
        + f" | {e['transcript'].replace('|', ' ‖ ')} |"
        for e in entries
    )
    mains = sum(e["role"] == "pause" for e in entries)
    clauses = len(entries) - mains
    return f"""## The pause set (`pauses/`)

{len(entries)} sentences a caller says with a pause inside, for `benchmarks/turn_taking.py`
(premature replies and cut-offs). **Generated by `scripts/make_pause_set.py`** (hibari, voice
{VOICE}; each segment between pauses rendered on its own, trimmed and levelled as above, then
joined with digital silence).

- 16 kHz, mono, PCM16 WAV; {LEAD_S:.2f} s of silence before the speech and {TRAIL_S:.2f} s after
  it (short, to keep the set small: play silence after a file, as a caller's line does).
- role `pause` ({mains} files): one or two pauses of {MIN_PAUSE_S:.2f}–{MAX_PAUSE_S:.2f} s after a
  preposition, a conjunction, an article or a filler: the words so far read unfinished.
  role `clause` ({clauses} files): the pause follows words that read as a finished sentence
  ("I need a taxi to the airport ‖ tomorrow morning at nine."); no rule on the words can tell
  it from the end of a turn, so the benchmark reports these apart.
- `pauses/manifest.json`, per file: `text`; `transcript`, the same with `|` at each pause
  (the form the simulated gateway's `transcripts` take, so a short upload is answered with
  the words said so far); `speech_start_s` / `speech_end_s` (webrtcvad as above: the
  caller still has words to say until `speech_end_s`); `segments` (each one's text and
  webrtcvad bounds); `pauses` (the word before it, its `kind`, the silence inserted, and the
  unvoiced stretch webrtcvad finds there, the silence to within a frame).
- The silences are exact zeros, on every transport: μ-law codes them as silence too.
- `make_pause_set.py` rewrites only `pauses/` and this file: rerun elsewhere, make_samples.py
  gave the hibari and piper files slightly different audio (VAD bounds up to 20 ms apart;
  onnxruntime's kernels differ between CPUs), and the tests are tuned to the committed ones.

| file | role | duration s | speech s (VAD) | pauses (ms of silence) | transcript (‖ = pause) |
|---|---|---|---|---|---|
{rows}
"""


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--out", type=Path, default=root / "samples" / "pauses")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    entries, problems = render(Engines(), args.out)
    from importlib import metadata

    used = {p: metadata.version(p) for p in ("hibari-tts", "numpy", "scipy", "webrtcvad-wheels")}
    pause_manifest = manifest(entries, used)
    (args.out / "manifest.json").write_text(
        json.dumps(pause_manifest, indent=2, ensure_ascii=False) + "\n"
    )
    total = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"total {total} bytes in {len(entries)} recordings + manifest.json")
    if args.out == root / "samples" / "pauses":
        samples = json.loads((root / "samples" / "manifest.json").read_text())
        text = readme(samples["samples"], samples["generator"]["versions"])
        (root / "samples" / "README.md").write_text(text)
    for p in problems:
        print("PROBLEM:", p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
