"""The call page's files, served by the app over real HTTP, and shipped in the package."""

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx

from tests.stack import app_stack
from voice.app.page_routes import WEB_DIR

ROOT = Path(__file__).resolve().parent.parent


async def test_the_page_and_its_files_are_served():
    async with app_stack() as (url, _), httpx.AsyncClient(base_url=url) as client:
        index = await client.get("/")
        assert index.status_code == 200
        assert index.headers["content-type"].startswith("text/html")
        # Every file the page names is there, with a type the browser accepts for it.
        names = re.findall(r'(?:src|href)="(web/[^"]+)"', index.text)
        assert sorted(names) == ["web/app.js", "web/style.css"]
        types = {}
        for name in [*names, "web/level-worklet.js"]:
            response = await client.get("/" + name)
            assert response.status_code == 200, name
            assert response.headers["cache-control"] == "no-cache"
            types[name] = response.headers["content-type"].split(";")[0]
        assert types == {
            "web/app.js": "text/javascript",
            "web/style.css": "text/css",
            "web/level-worklet.js": "text/javascript",
        }
        assert (await client.get("/web/missing.js")).status_code == 404
        # no-cache revalidates: the ETag answers 304.
        etag = (await client.get("/web/app.js")).headers["etag"]
        assert (await client.get("/web/app.js", headers={"if-none-match": etag})).status_code == 304


def test_the_wheel_carries_every_package_page_file_and_sound(tmp_path):
    # pyproject.toml lists the packages (web/ installs as voice.web): a wheel built from it
    # must hold every module under voice/ and every file of the page, or an installed
    # `voice serve` breaks where a checkout works.
    # Built from a copy: setuptools leaves build/ in the source tree, and a stale one there
    # would put modules in the wheel that the tree no longer has.
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("voice", "web"):
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
         "-w", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
        text=True,
    )  # fmt: skip
    # pyproject.toml is read without a deprecation warning (each install printed ~30 lines
    # of them when project.license was a table rather than an SPDX string).
    assert "DeprecationWarning" not in built.stdout + built.stderr
    assert "BuildBackendWarning" not in built.stdout + built.stderr
    (wheel,) = tmp_path.glob("voice-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "voice").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    page = {
        "voice/web/" + p.name
        for p in WEB_DIR.iterdir()
        if p.is_file() and not p.name.endswith(".pyc")
    }
    assert {"voice/web/index.html", "voice/web/app.js"} <= page
    assert page <= names, sorted(page - names)
    sounds = {p.relative_to(ROOT).as_posix() for p in (ROOT / "voice").rglob("*.wav")}
    assert {"voice/pipeline/sounds/failure.wav", "voice/pipeline/sounds/closing.wav"} <= sounds
    assert sounds <= names, sorted(sounds - names)
