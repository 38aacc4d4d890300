"""`voice serve | gateway | call | bench`: the one place that reads arguments and environment."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from voice.bench.call_command import add_parser as add_call
from voice.bench.command import add_parser as add_bench
from voice.config import Settings
from voice.errors import ConfigError, VoiceError

log = logging.getLogger("voice")


QUIET_LOGGERS = (
    # httpx logs every request at INFO: one line per sentence per session drowns the rest.
    "httpx",
    # faster-whisper logs every transcription's duration at INFO: one line per turn.
    "faster_whisper",
    # aioice logs every ICE check's state change at INFO: a dozen lines per WebRTC caller.
    "aioice",
)
"""Loggers heard only with ``--verbose``."""


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

LISTEN_BACKLOG = 4096
"""Connections the kernel queues before the server accepts them (as voice/app/workers.py)."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format=LOG_FORMAT)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        result: int = args.run(args)
        return result
    except VoiceError as exc:
        print(f"voice: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _workers_log_config(verbose: bool) -> dict[str, Any]:
    """:func:`main`'s logging, for ``logging.config.dictConfig`` in every process of
    ``voice serve --workers`` (uvicorn applies it in each worker), each line saying which
    process wrote it."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "voice": {"format": LOG_FORMAT.replace("%(name)s", "[%(process)d] %(name)s")}
        },
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "voice"}},
        "root": {"level": "DEBUG" if verbose else "INFO", "handlers": ["stderr"]},
        "loggers": {name: {"level": "DEBUG" if verbose else "WARNING"} for name in QUIET_LOGGERS},
    }


DESCRIPTION = """\
Realtime voice conversations on an OpenAI-compatible inference gateway. Callers stream audio
in (native WebSocket, WebRTC from a browser, Twilio or Telnyx media streams); voice finds
where each turn ends, has it transcribed, streams the chat model's answer and speaks it
sentence by sentence as it is written, and stops when the caller talks over it. With no
gateway URL it runs offline, on embedded engines (Whisper tiny.en, Qwen2.5-Coder-0.5B, hibari)."""

EPILOG = """\
Start with `voice serve`, then in another shell `voice call samples/q01_what_time.wav`, or
open http://127.0.0.1:8080/ and talk. `voice COMMAND --help` lists a command's options.
Settings are VOICE_* environment variables (README.md); flags override them."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help with each option's default, where it has one worth showing: not for flags, nor
    for options whose default comes from the environment (their help names it)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)


def _parser() -> argparse.ArgumentParser:
    from voice.config import GatewaySettings, ServerSettings
    from voice.gateway.simulated import SimulationSettings

    def default(model: Any, field: str) -> Any:
        return model.model_fields[field].default

    parser = argparse.ArgumentParser(
        prog="voice", description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the voice server",
        description="Serve callers: native WebSocket sessions at /v1/session, browsers over "
        "WebRTC and the call page at /, Twilio and Telnyx media streams, /health, /ready and "
        "/metrics. VOICE_* environment variables configure it (README.md); these flags "
        "override them. With no gateway URL the embedded local engines answer, offline, in "
        "this process.",
    )
    serve.add_argument(
        "--host",
        help=f"listen address (VOICE_HOST, default: {default(ServerSettings, 'host')}); any "
        "other than loopback needs VOICE_AUTH_SECRET or --no-auth",
    )
    serve.add_argument(
        "--port",
        type=int,
        help=f"listen port (VOICE_PORT, default: {default(ServerSettings, 'port')})",
    )
    serve.add_argument(
        "--gateway-url",
        metavar="URL",
        help="the gateway: an OpenAI-compatible base URL such as https://gateway.example/v1 "
        "(VOICE_GATEWAY_URL). Without one, the embedded local engines (Whisper tiny.en, "
        "Qwen2.5-Coder-0.5B, hibari; the `local` extra) run in this process, offline",
    )
    for field, what in (
        ("asr_model", "transcription model"),
        ("llm_model", "chat model"),
        ("tts_model", "speech model"),
        ("tts_voice", "speech voice"),
    ):
        variable = "VOICE_" + field.upper()
        serve.add_argument(
            "--" + field.replace("_", "-"),
            help=f"the gateway's {what} ({variable}, default: {default(GatewaySettings, field)})",
        )
    serve.add_argument(
        "--max-sessions",
        type=int,
        help="calls at once; past it callers are refused as busy (VOICE_MAX_SESSIONS, default: "
        f"{default(ServerSettings, 'max_sessions')})",
    )
    serve.add_argument(
        "--workers",
        type=int,
        help="server processes on the one port (VOICE_WORKERS, default: "
        f"{default(ServerSettings, 'workers')})",
    )
    serve.add_argument(
        "--no-auth",
        action="store_true",
        help="serve a network address without caller tokens (VOICE_NO_AUTH); without it, a "
        "non-loopback --host needs VOICE_AUTH_SECRET",
    )
    serve.set_defaults(run=_serve)

    gateway = commands.add_parser(
        "gateway",
        help="serve a gateway as OpenAI-compatible HTTP routes",
        description="Serve the embedded local engines (Whisper tiny.en, Qwen2.5-Coder-0.5B, "
        "hibari), or with --simulate scripted latencies and faults, as an OpenAI-compatible "
        "gateway: /v1/audio/transcriptions, /v1/chat/completions, /v1/audio/speech, /v1/models. "
        "Point a `voice serve` on another host at it, or any other OpenAI client.",
    )
    gateway.add_argument(
        "--simulate",
        action="store_true",
        help="scripted latencies instead of the embedded local engines (the default)",
    )
    gateway.add_argument("--host", default="127.0.0.1", help="listen address")
    gateway.add_argument("--port", type=int, default=8081, help="listen port")
    gateway.add_argument("--api-key", help="require this bearer token")
    for name, help_text in (
        ("asr_ms", "transcription latency, ms"),
        ("ttft_ms", "time to the first chat token, ms"),
        ("ms_per_token", "time between chat tokens, ms"),
        ("tts_ttfb_ms", "time to the first speech byte, ms"),
        ("tts_rtf", "speech synthesis time per second of audio"),
    ):
        gateway.add_argument(
            "--" + name.replace("_", "-"),
            type=float,
            help=f"with --simulate: {help_text} (default: {default(SimulationSettings, name):g})",
        )
    gateway.add_argument(
        "--segment-gap-ms",
        type=float,
        help="with --simulate: in a segmented transcript, quiet this long in an upload "
        f"separates two segments (default: {default(SimulationSettings, 'segment_gap_ms'):g})",
    )
    gateway.add_argument(
        "--transcript",
        action="append",
        metavar="TEXT",
        help="with --simulate: what transcription answers, in turn (repeat for more); '|' "
        "marks where the caller pauses, and an upload that stops at a pause gets the words "
        "before it (default: one weather question)",
    )
    gateway.add_argument(
        "--reply",
        action="append",
        metavar="TEXT",
        help="with --simulate: what chat streams, a word a token, in turn (repeat for more)",
    )
    gateway.add_argument(
        "--x402-price",
        type=int,
        help="with --simulate: chat asks this price (smallest units) by an x402 challenge "
        "until paid (docs/gateways.md)",
    )
    gateway.add_argument(
        "--x402-secret", help="with --simulate: the secret a payer proves payment with (HMAC)"
    )
    gateway.add_argument(
        "--receipts", action="store_true", help="with --simulate: a receipt on every answer"
    )
    gateway.set_defaults(run=_gateway)

    add_call(commands)
    add_bench(commands)

    token = commands.add_parser(
        "token",
        help="print a caller token signed with VOICE_AUTH_SECRET",
        description="Print a caller token (an HS256 JWT) signed with VOICE_AUTH_SECRET, for "
        "operators and tests; a backend mints its own the same way (docs/security.md).",
    )
    token.add_argument("--ttl", type=float, default=600.0, help="seconds until it expires")
    token.add_argument("--sub", help="the caller's id, logged with the session id")
    token.add_argument("--instructions", help="pin the session's instructions")
    token.add_argument("--voice", help="pin the session's TTS voice")
    token.add_argument("--max-session-s", type=float, help="lower the session's length limit")
    token.add_argument(
        "--no-update",
        action="store_true",
        help="the caller's session.update cannot change instructions or voice",
    )
    token.set_defaults(run=_token)
    # Subcommands do not inherit the formatter: every one shows its defaults the same way.
    for command in commands.choices.values():
        command.formatter_class = HelpFormatter
    return parser


def _env_overrides(args: argparse.Namespace) -> dict[str, str]:
    """The flags given, as the ``VOICE_*`` variables they override."""
    flags = {
        "VOICE_GATEWAY_URL": args.gateway_url,
        "VOICE_ASR_MODEL": args.asr_model,
        "VOICE_LLM_MODEL": args.llm_model,
        "VOICE_TTS_MODEL": args.tts_model,
        "VOICE_TTS_VOICE": args.tts_voice,
        "VOICE_HOST": args.host,
        "VOICE_PORT": args.port,
        "VOICE_MAX_SESSIONS": args.max_sessions,
        "VOICE_WORKERS": args.workers,
        "VOICE_NO_AUTH": "true" if args.no_auth else None,
    }
    return {name: str(value) for name, value in flags.items() if value is not None}


def _serve(args: argparse.Namespace) -> int:
    from voice.app.auth import check_exposure, is_loopback
    from voice.app.factory import create_app
    from voice.app.workers import serve_workers

    overrides = _env_overrides(args)
    settings = Settings.from_env(os.environ | overrides)
    server = settings.server
    check_exposure(settings)  # a network address needs VOICE_AUTH_SECRET or --no-auth
    if settings.auth.no_auth and not is_loopback(server.host):
        log.warning(
            "--no-auth: anyone who reaches %s:%d can call, and spend the gateway's budget",
            server.host,
            server.port,
        )
    # The port first, before anything slow (the models load as the app starts): a port in
    # use is a clear error at once, and "serving" is said only of a port that is ours.
    sock = listen(server.host, server.port)
    if server.workers > 1:
        sock.close()  # serve_workers binds it again itself: this was the check
    if settings.gateway.url is None:
        log.info(
            "no gateway URL (VOICE_GATEWAY_URL / --gateway-url): using the embedded local "
            "engines (Whisper tiny.en, Qwen2.5-Coder-0.5B, hibari); they load before the first "
            "caller%s",
            f", in each of the {server.workers} workers" if server.workers > 1 else "",
        )
    log.info(
        "voice serving ws://%s:%d/v1/session with gateway %s%s",
        server.host,
        server.port,
        settings.gateway.url or "local (embedded engines)",
        f" in {server.workers} worker processes" if server.workers > 1 else "",
    )
    if server.workers > 1:
        # Each worker builds its app from the environment (serve_app): the flags go there.
        os.environ.update(overrides)
        return serve_workers(
            f"{__name__}:serve_app",
            host=server.host,
            port=server.port,
            count=server.workers,
            log_config=_workers_log_config(args.verbose),
            server=server,
        )
    run_app(create_app(settings), host=server.host, port=server.port, sock=sock)
    return 0


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``; a port in use, or an address not this machine's,
    is a :class:`ConfigError` saying so."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serve_app() -> Any:
    """The app each worker of ``voice serve --workers`` serves, from the environment."""
    from voice.app.factory import create_app
    from voice.app.metrics import SharedMetrics

    return create_app(shared=SharedMetrics.from_env(os.environ))


def run_app(
    app: Any,
    *,
    host: str,
    port: int,
    log_level: str = "info",
    sock: socket.socket | None = None,
) -> None:
    """Serve the voice app on uvicorn until SIGINT/SIGTERM, tuned for many live sessions
    (as each worker of ``voice serve --workers`` is: voice/app/workers.py), on ``sock``
    if given (bound to ``host:port`` already, see :func:`listen`).

    ``benchmarks/`` calls this too, so capacity figures are those of ``voice serve``.
    """
    from voice.app.serving import DrainingServer, server_config, tune_gc

    tune_gc()
    state = getattr(getattr(app, "state", None), "voice", None)  # the voice app's AppState
    server_settings = state.settings.server if state is not None else None
    config = server_config(app, host=host, port=port, log_level=log_level, server=server_settings)
    server = DrainingServer(config, drain=state.drain if state is not None else None)
    server.run(sockets=None if sock is None else [sock])
    if not server.started:
        sys.exit(3)  # uvicorn's status for a server that could not start (port in use...)


def _gateway(args: argparse.Namespace) -> int:
    import uvicorn

    from voice.gateway.server import create_gateway_app

    if not args.simulate:
        return _serve_local_gateway(args)
    from pydantic import ValidationError

    from voice.gateway.simulated import PaywallSettings, SimulatedGateway, SimulationSettings

    knobs: dict[str, Any] = {
        "asr_ms": args.asr_ms,
        "ttft_ms": args.ttft_ms,
        "ms_per_token": args.ms_per_token,
        "tts_ttfb_ms": args.tts_ttfb_ms,
        "tts_rtf": args.tts_rtf,
        "segment_gap_ms": args.segment_gap_ms,
        "transcripts": args.transcript,
        "replies": args.reply,
        "receipts": args.receipts or None,
    }
    if args.x402_price is not None or args.x402_secret is not None:
        paywall = {"price": args.x402_price, "secret": args.x402_secret}
        knobs["x402"] = PaywallSettings(**{k: v for k, v in paywall.items() if v is not None})
    try:
        simulation = SimulationSettings(**{k: v for k, v in knobs.items() if v is not None})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where, what = (
                ".".join(map(str, error["loc"])),
                error["msg"].removeprefix("Value error, "),
            )
            problems.append(f"{where}: {what}" if where else what)
        raise ConfigError("invalid --simulate options: " + "; ".join(problems)) from None
    sock = listen(args.host, args.port)
    app = create_gateway_app(SimulatedGateway(simulation), api_key=args.api_key)
    log.info("simulated gateway on http://%s:%d/v1 (%s)", args.host, args.port, simulation)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    return 0


def _serve_local_gateway(args: argparse.Namespace) -> int:
    import uvicorn

    from voice.gateway.engines import MODEL_IDS, shared_engines
    from voice.gateway.local import LocalGateway
    from voice.gateway.server import create_gateway_app

    # VOICE_LLM_MAX_TOKENS, VOICE_ASR_LANGUAGE, ... apply; a VOICE_GATEWAY_URL does not.
    settings = Settings.from_env(os.environ)
    gateway = LocalGateway.from_settings(settings.gateway)  # names the extra if it is missing
    sock = listen(args.host, args.port)  # before the models load: a port in use fails at once
    shared_engines()  # load now: a broken install fails here, and no request waits for it
    app = create_gateway_app(gateway, api_key=args.api_key)
    log.info("local gateway on http://%s:%d/v1 (%s)", args.host, args.port, ", ".join(MODEL_IDS))
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    return 0


def _token(args: argparse.Namespace) -> int:
    from voice.app.auth import Pins, mint

    secret = Settings.from_env(os.environ).auth.secret
    if secret is None:
        raise ConfigError("set VOICE_AUTH_SECRET (the server's, at least 32 bytes) to sign tokens")
    pins = Pins(
        instructions=args.instructions,
        voice=args.voice,
        max_session_s=args.max_session_s,
        allow_update=not args.no_update,
    )
    try:
        token = mint(secret.get_secret_value(), ttl_s=args.ttl, sub=args.sub, pins=pins)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
