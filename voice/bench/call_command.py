"""`voice call`: play one recording into a session, as a caller would, and show the reply."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from voice.audio.decode import load_audio
from voice.audio.wav import save_wav
from voice.bench.caller import CallRefused, with_token
from voice.bench.native import call


def add_parser(commands: Any) -> None:
    call = commands.add_parser(
        "call",
        help="play a recording into a session and show the reply",
        description="Play a recording into a session in real time, as a caller would, and "
        "show what the server heard, its reply as it streams, the turn's timings and the "
        "voice-to-voice latency heard here. It ends as soon as no reply can come (a gateway "
        "error, no speech heard, no words recognised) and says why. Exit status: 0 with a "
        "reply, 1 without one, 2 for a file it cannot play.",
    )
    call.add_argument(
        "recording",
        type=Path,
        metavar="FILE",
        help="recording to play: WAV, MP3, Ogg, FLAC, M4A, or anything else FFmpeg decodes",
    )
    call.add_argument(
        "--url", default="ws://127.0.0.1:8080/v1/session", help="the server's session URL"
    )
    call.add_argument(
        "--save", type=Path, metavar="WAV", help="write the reply audio to this WAV file"
    )
    call.add_argument("--instructions", help="system prompt for this session")
    call.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS", help="longest wait")
    call.add_argument(
        "--record",
        action="store_true",
        help="print each reply's gateway record (request ids, idempotency keys, attempts, "
        "receipts, price paid)",
    )
    call.add_argument(
        "--token",
        help="caller token, for a server with VOICE_AUTH_SECRET (`voice token`); default "
        "$VOICE_TOKEN",
    )
    call.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    recording = load_audio(args.recording)  # a file it cannot play: one line, status 2
    token = args.token or os.environ.get("VOICE_TOKEN")

    def show(event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "input.transcript":
            print(f"you:       {event['text']}")
        elif kind == "response.started":
            print("assistant: ", end="", flush=True)
        elif kind == "response.text.delta":
            print(event["delta"], end="", flush=True)
        elif kind == "response.done":
            print()
            if event["status"] != "completed":
                print(f"({event['status']}; kept: {event['text']!r})")
            timings = event["timings"]
            print(
                "timings:   "
                + "  ".join(f"{k}={v:.0f}" for k, v in timings.items() if v is not None)
            )
            if args.record:
                print("record:    " + json.dumps(event.get("record"), indent=2))
        elif kind == "error":
            print(f"\nerror [{event['code']}]: {event['message']}", file=sys.stderr)

    try:
        result = asyncio.run(
            call(
                with_token(args.url, token),
                recording,
                instructions=args.instructions,
                timeout_s=args.timeout,
                on_event=show,
            )
        )
    except CallRefused as refused:
        hint = " (pass --token, or set VOICE_TOKEN)" if "401" in str(refused) and not token else ""
        print(
            f"voice: the server refused the call: {refused}: {refused.message}{hint}",
            file=sys.stderr,
        )
        return 1
    if result.voice_to_voice_ms is not None:
        print(f"voice-to-voice (heard here): {result.voice_to_voice_ms:.0f} ms")
    why = result.unanswered  # an error that ended it was printed as it came
    if why is None and result.of_type("response.done")[-1]["status"] == "failed":
        errors = result.of_type("error")
        why = "the reply failed" + (f" ({errors[-1]['code']})" if errors else "")
    reply = result.reply_frame()
    if args.save is not None:
        if why is None and reply.pcm:
            save_wav(args.save, reply)
            print(f"reply audio: {args.save} ({reply.duration_ms / 1000:.1f} s)")
        else:
            print(f"voice: no reply audio; {args.save} not written", file=sys.stderr)
    if why is not None:
        print(f"voice: no reply: {why}", file=sys.stderr)
        return 1
    return 0
