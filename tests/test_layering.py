"""Imports point inward (docs/architecture.md), with no cycles; the public API is declared.

Every import counts, at any depth: inside functions and under ``if TYPE_CHECKING``.
"""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import voice

VOICE = Path(__file__).resolve().parent.parent / "voice"
IO_PACKAGES = {"asyncio", "httpx", "starlette", "uvicorn", "aiortc", "websockets", "socket"}

LAYERS = [
    ("core", ("voice.core",)),
    ("base", ("voice.errors", "voice.config", "voice.audio", "voice.vad")),
    ("gateway", ("voice.gateway",)),
    ("pipeline", ("voice.pipeline",)),
    ("transports", ("voice.transports",)),
    ("app", ("voice.app",)),
    ("edge", ("voice.bench", "voice.cli", "voice.web")),
]
"""Innermost first: a module may import its own layer and those before it, never after."""


def module_name(path: Path) -> str:
    parts = path.relative_to(VOICE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in VOICE.rglob("*.py")}


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it; ``from voice.x import y`` counts as
    ``voice.x.y`` when that is a module of ours."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES}
    return names


def ours(path: Path) -> set[str]:
    return {n for n in imports(path) if n in MODULES and n != module_name(path)}


def layer(module: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def test_every_module_is_in_a_layer_and_imports_only_inward():
    wrong = []
    for name, path in MODULES.items():
        if name == "voice":
            continue  # the public API re-exports from every layer, lazily
        for target in ours(path):
            if target != "voice" and layer(target) > layer(name):
                wrong.append(f"{name} ({LAYERS[layer(name)][0]}) imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_middle_imports_neither_transports_nor_the_app():
    for name, path in MODULES.items():
        if name.startswith(("voice.pipeline", "voice.gateway", "voice.core", "voice.audio")):
            for target in imports(path):
                assert not target.startswith(("voice.transports", "voice.app")), (name, target)


def test_no_import_cycles():
    graph = {name: ours(path) - {"voice"} for name, path in MODULES.items()}
    # A module that imports its own package's __init__ is a cycle only if that __init__
    # imports it back; the search below finds any cycle, of any length.
    visiting, done, cycles = [], set(), []

    def visit(node):
        if node in done:
            return
        if node in visiting:
            cycles.append(visiting[visiting.index(node) :] + [node])
            return
        visiting.append(node)
        for target in sorted(graph[node]):
            visit(target)
        visiting.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


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


PUBLIC = {
    "create_app",
    "Settings",
    "Gateway",
    "HttpGateway",
    "SimulatedGateway",
    "LocalGateway",
    "VoiceError",
    "ConfigError",
    "GatewayError",
    "CallRefused",
}


def test_the_public_api_is_declared_and_each_name_resolves():
    assert set(voice.__all__) >= PUBLIC
    for name in voice.__all__:
        assert getattr(voice, name) is not None, name
    assert voice.create_app is importlib.import_module("voice.app").create_app
    errors = importlib.import_module("voice.errors")
    for name in voice.__all__:
        obj = getattr(voice, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert obj is getattr(errors, name), name
            assert issubclass(obj, voice.VoiceError), name


def test_importing_voice_loads_no_server_stack():
    # The CLI's every command starts with `import voice`: it must stay cheap.
    heavy = ("aiortc", "starlette", "av")
    code = f"import sys, voice; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
