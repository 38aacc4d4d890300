"""Imports point inward (ARCHITECTURE.md): core is sans-I/O, only http.py speaks httpx."""

import ast
from pathlib import Path

VOICE = Path(__file__).resolve().parent.parent / "voice"
IO_PACKAGES = {"asyncio", "httpx", "starlette", "uvicorn", "aiortc", "websockets", "socket"}


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_core_imports_no_io_and_nothing_outside_core():
    for path in (VOICE / "core").glob("*.py"):
        for name in imports(path):
            top = name.split(".")[0]
            assert top not in IO_PACKAGES, f"{path.name} imports {name}"
            if top == "voice":
                assert name.startswith("voice.core"), f"{path.name} imports {name}"


def test_only_the_http_gateway_imports_httpx():
    users = {
        p.relative_to(VOICE).as_posix()
        for p in VOICE.rglob("*.py")
        if "httpx" in {n.split(".")[0] for n in imports(p)}
    }
    assert users == {"gateway/http.py"}


def test_audio_and_core_do_not_import_transports_or_gateways():
    for package in ("core", "audio"):
        for path in (VOICE / package).glob("*.py"):
            for name in imports(path):
                assert not name.startswith(
                    ("voice.transports", "voice.gateway", "voice.pipeline.session")
                )
