"""Figures for the embedded offline default (the `local` extra): latency, memory, scaling.

``latency``: starts ``voice serve`` with no gateway URL (so on the local engines) as its own
process on 127.0.0.1, plays sample questions into it one session per turn with
:func:`voice.bench.native.call`, and reports the median voice-to-voice latency heard at the caller
(first non-silent reply audio - end of the caller's speech), the per-stage timings from each
``response.done``, and the server process's resident memory (RSS now and at its peak).

``answers``: loads the engines in this process and asks the chat model every question of the
judged answer set (``benchmarks/answers.json``, :mod:`voice.bench.answers`) under the default
instructions, as a session would; prints each reply with what is wrong with it, and how many
pass. ``latency`` judges the replies it hears too.

``asr``: loads Whisper and transcribes every recording of ``samples/`` and ``samples/pauses/``
(its speech, 200 ms before and 100 ms after) on the window cut to the turn and on the full
30 s window (:mod:`voice.gateway.whisper`): word error rate against the manifests' text,
and the median time of the better of two runs.

``scaling``: loads the engines in this process and times how ASR and TTS cost grows with the
length of what they handle: ASR on utterances of ~2-28 s (sample speech back to back; Whisper
reads 30 s windows), TTS on 1-8 sentences (time to the first chunk, and in total).

    .venv/bin/python -m benchmarks.local latency               # 10 turns over the samples
    .venv/bin/python -m benchmarks.local latency --sessions 2  # 2 callers at once
    .venv/bin/python -m benchmarks.local answers               # the judged answer set
    .venv/bin/python -m benchmarks.local asr                   # the cut window's WER, time
    .venv/bin/python -m benchmarks.local scaling

Traffic goes only to 127.0.0.1 and every run ends by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.overhead import free_port, percentile, wait_healthy
from voice.audio.frames import PcmFrame
from voice.audio.wav import load_wav, wav_bytes
from voice.bench import answers as judged
from voice.bench.native import call

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
STAGES = ("asr_ms", "llm_ttft_ms", "first_sentence_ms", "tts_ttfb_ms", "first_audio_ms")
ANSWERS = ROOT / "benchmarks" / "answers.json"
SENTENCE = "The train to the city leaves from platform four at half past nine."


def questions() -> list[tuple[str, PcmFrame]]:
    manifest = json.loads((SAMPLES / "manifest.json").read_text())["samples"]
    return [
        (s["file"], load_wav(SAMPLES / s["file"])) for s in manifest if s["role"] != "interrupt"
    ]


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MiB: resident memory now and at its peak."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def latency(args: argparse.Namespace) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "VOICE_GATEWAY_URL"}
    server = subprocess.Popen(
        [sys.executable, "-m", "voice.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        asyncio.run(measure(args, port, server.pid))
    finally:
        server.terminate()
        server.wait(timeout=30)


async def measure(args: argparse.Namespace, port: int, pid: int) -> None:
    started = time.monotonic()
    await wait_healthy(f"http://127.0.0.1:{port}/health", timeout_s=120)
    print(f"server up with models loaded in {time.monotonic() - started:.1f} s")
    print(f"server RSS after load: {rss_mb(pid)[0]:.0f} MiB")
    url = f"ws://127.0.0.1:{port}/v1/session"
    samples = questions()
    v2v: list[float] = []
    stages: dict[str, list[float]] = {k: [] for k in STAGES}
    expected = {e.sample: e for e in judged.load(ANSWERS) if e.sample}
    sensible = judged_turns = 0
    for turn in range(args.turns):
        batch = [samples[(turn * args.sessions + i) % len(samples)] for i in range(args.sessions)]
        results = await asyncio.gather(*(call(url, rec, timeout_s=60) for _, rec in batch))
        for (name, _), result in zip(batch, results, strict=True):
            done = result.of_type("response.done")
            timings = done[0]["timings"] if done else {}
            for k in STAGES:
                if timings.get(k) is not None:
                    stages[k].append(timings[k])
            ms = result.voice_to_voice_ms
            if ms is not None:
                v2v.append(ms)
            verdict = ""
            if name in expected:
                problems = expected[name].problems(result.reply_text)
                judged_turns += 1
                sensible += not problems
                verdict = "  ok" if not problems else "  WRONG: " + "; ".join(problems)
            print(
                f"{name:28s} v2v {ms or float('nan'):6.0f} ms  {result.transcript!r}"
                f" -> {result.reply_text!r}{verdict}"
            )
    now, peak = rss_mb(pid)
    print(f"\n{len(v2v)} turns, {args.sessions} session(s) at a time")
    print(
        f"voice-to-voice: median {statistics.median(v2v):.0f} ms, p90 {percentile(v2v, 90):.0f}"
        f" ms, min {min(v2v):.0f}, max {max(v2v):.0f}"
    )
    for k, values in stages.items():
        print(f"  {k:18s} median {statistics.median(values):6.0f} ms")
    print(f"server RSS: {now:.0f} MiB now, {peak:.0f} MiB peak")
    print(f"sensible replies (benchmarks/answers.json): {sensible}/{judged_turns}")


def answers(args: argparse.Namespace) -> None:
    from voice.config import PipelineSettings
    from voice.core.dialog import ChatMessage
    from voice.gateway.engines import LocalEngines
    from voice.gateway.local import LocalGateway

    engines = LocalEngines()
    gateway = LocalGateway(engines=engines)
    system = ChatMessage("system", PipelineSettings().instructions)

    async def ask(question: str) -> str:
        chunks = gateway.chat([system, ChatMessage("user", question)])
        return "".join([delta async for delta in chunks]).strip()

    passed = {False: 0, True: 0}
    asked = {False: 0, True: 0}
    for expected in judged.load(ANSWERS):
        for _ in range(args.runs):
            reply = asyncio.run(ask(expected.question))
            problems = expected.problems(reply)
            asked[expected.probe] += 1
            passed[expected.probe] += not problems
            mark = "ok   " if not problems else "WRONG"
            print(f"{mark} {expected.id:15s} {reply!r}")
            for problem in problems:
                print(f"      {problem}")
    print(f"\nanswer set: {passed[False]}/{asked[False]} sensible", end="; ")
    print(f"probes {passed[True]}/{asked[True]}")
    engines.close()


def asr(args: argparse.Namespace) -> None:
    import numpy as np

    from voice.audio.resample import resample
    from voice.bench.stats import word_errors, words
    from voice.gateway import whisper
    from voice.gateway.engines import load_whisper

    model = load_whisper(2)
    ways = {"cut window": whisper.transcribe, "full window": whisper.full_window}
    errors = dict.fromkeys(ways, 0)
    times: dict[str, list[float]] = {way: [] for way in ways}
    total = 0
    for folder in (SAMPLES, SAMPLES / "pauses"):
        for s in json.loads((folder / "manifest.json").read_text())["samples"]:
            frame = load_wav(folder / s["file"])
            rate = frame.sample_rate
            a = max(0, round(s["speech_start_s"] * rate) - rate // 5)
            b = round(s["speech_end_s"] * rate) + rate // 10
            pcm = resample(frame.pcm[a * 2 : b * 2], rate, whisper.RATE)
            audio = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
            total += len(words(s["text"]))
            for way, transcribe in ways.items():
                runs = []
                for _ in range(2):
                    began = time.perf_counter()
                    heard = transcribe(model, audio, language="en", prompt=None)
                    runs.append(time.perf_counter() - began)
                times[way].append(min(runs))
                errors[way] += word_errors(s["text"], heard)
                if word_errors(s["text"], heard):
                    print(f"{way:11s} {s['file']:28s} heard {heard!r}")
    for way in ways:
        print(
            f"{way}: WER {100 * errors[way] / total:.1f} % ({errors[way]}/{total} words), "
            f"median {1000 * statistics.median(times[way]):.0f} ms over {len(times[way])}"
        )


def scaling(args: argparse.Namespace) -> None:
    from voice.gateway.engines import LocalEngines

    began = time.perf_counter()
    engines = LocalEngines()
    print(f"engines loaded in {time.perf_counter() - began:.1f} s")
    manifest = json.loads((SAMPLES / "manifest.json").read_text())["samples"]
    speech = []
    for s in manifest:
        frame = load_wav(SAMPLES / s["file"])
        a, b = (round(s[k] * frame.sample_rate) * 2 for k in ("speech_start_s", "speech_end_s"))
        speech.append(frame.pcm[a:b] + bytes(frame.sample_rate // 5 * 2))  # 200 ms gap
    rate = 16_000
    print("\nASR (median of 3): utterance length -> wall time, real-time factor")
    for target_s in (2, 4, 8, 16, 28):
        pcm = b""
        i = 0
        while len(pcm) < target_s * rate * 2:
            pcm += speech[i % len(speech)]
            i += 1
        wav = wav_bytes(PcmFrame(pcm[: target_s * rate * 2], rate))
        times = []
        for _ in range(3):
            t = time.perf_counter()
            engines.transcribe(wav)
            times.append(time.perf_counter() - t)
        wall = statistics.median(times)
        print(f"  {target_s:3d} s -> {wall * 1000:6.0f} ms  (RTF {wall / target_s:.3f})")
    print("\nTTS (median of 3): sentences -> first chunk, total, audio, real-time factor")
    for n in (1, 2, 4, 8):
        text = " ".join([SENTENCE] * n)
        firsts, totals, audio_s = [], [], 0.0
        for _ in range(3):
            t = time.perf_counter()
            first = None
            samples = 0
            for frame in engines.speak(text):
                first = first if first is not None else time.perf_counter() - t
                samples += frame.num_samples
            totals.append(time.perf_counter() - t)
            firsts.append(first or 0.0)
            audio_s = samples / 24_000
        total = statistics.median(totals)
        print(
            f"  {n:2d} -> first {statistics.median(firsts) * 1000:5.0f} ms, total"
            f" {total * 1000:6.0f} ms, audio {audio_s:5.1f} s  (RTF {total / audio_s:.3f})"
        )
    engines.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(required=True, dest="command")
    lat = commands.add_parser("latency", help="voice-to-voice latency and memory per process")
    lat.add_argument("--turns", type=int, default=10, help="turns (one session each)")
    lat.add_argument("--sessions", type=int, default=1, help="callers at once per turn")
    ans = commands.add_parser("answers", help="the judged answer set on the chat model")
    ans.add_argument("--runs", type=int, default=1, help="times to ask each question")
    commands.add_parser("asr", help="Whisper on the cut window and the full one: WER, time")
    commands.add_parser("scaling", help="ASR and TTS cost against input length")
    args = parser.parse_args()
    if args.command == "latency":
        latency(args)
    elif args.command == "answers":
        answers(args)
    elif args.command == "asr":
        asr(args)
    else:
        scaling(args)


if __name__ == "__main__":
    main()
