"""The call page's files, served by the app over real HTTP, and shipped in the package."""

import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import httpx

from tests.stack import app_stack
from voice.page_routes import WEB_DIR

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


def test_every_page_file_is_package_data():
    # A wheel holds only what package-data names: `voice serve` from a wheel needs them all.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["voice"]
    files = [p.relative_to(WEB_DIR.parent).as_posix() for p in WEB_DIR.iterdir()]
    assert files
    for name in files:
        assert any(fnmatch(name, pattern) for pattern in patterns), name
