"""The call page: ``GET /`` is ``web/index.html``, and ``web/...`` its script and style.

The files live in the top-level ``web/`` folder, installed as the package ``voice.web``
(pyproject.toml maps it), so an editable install, a wheel and the Docker image all find them
through the import system; a bare checkout on ``sys.path`` finds them beside ``voice/``.
Plain HTML/CSS/JS: no build step, and the page fetches nothing but this server. It calls
``POST /v1/webrtc/offer``. The page's URLs are relative, so it works mounted under a prefix.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope


def _web_dir() -> Path:
    spec = importlib.util.find_spec("voice.web")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[2] / "web"  # a checkout, not installed


WEB_DIR = _web_dir()

# Browsers may cache a file with a Last-Modified and no Cache-Control for a while by their
# own guess; after an upgrade that would run an old app.js against a new server. no-cache
# keeps the cache but revalidates (a 304 through the ETag) on every load.
CACHE_CONTROL = "no-cache"


class _WebFiles(StaticFiles):
    def file_response(
        self,
        full_path: PathLike,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = CACHE_CONTROL
        return response


async def _index(request: Request) -> Response:
    return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": CACHE_CONTROL})


def page_routes() -> list[BaseRoute]:
    """``/`` and ``/web``. Raises at app creation if the files are missing (a broken install)."""
    return [
        Route("/", _index),
        Mount("/web", app=_WebFiles(directory=WEB_DIR), name="web"),
    ]
