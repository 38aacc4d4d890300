"""A real headless Chromium for tests: Debian's build, driven by Playwright for Python.

The browser is ``/usr/bin/chromium`` (``apt-get install chromium``; ``scripts/install-chromium``
does it, and CI runs that). Never ``playwright install``: it downloads a browser. A missing
browser *fails* the test that needs it, with that hint: a skipped browser test would pass
a page nobody tried.

The microphone is a WAV file, played once from getUserMedia on. What the flags and the
helpers here take care of (established with Chromium 156 and aiortc 1.16):

- The fake microphone starts at getUserMedia, before the call is up, so its first few
  hundred milliseconds are lost: :func:`caller_wav` starts every file with silence.
- Chromium leaves out loopback ICE candidates unless ``--allow-loopback-in-peer-connection``;
  the server offers 127.0.0.1, so the call stays on this machine.
- No ``--disable-features``: it would replace Playwright's own list. Playwright makes a
  fresh profile per launch (it refuses ``--user-data-dir``).
- The microphone permission is granted per browser context (``permissions=["microphone"]``)
  rather than by ``--use-fake-ui-for-media-stream``, so a context without it is refused the
  microphone exactly as a user who clicked "Block" would be.
- The page gets ``?raw=1`` unless told otherwise: echo cancellation, noise suppression and
  gain control off, so the recording reaches the server unaltered.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlencode

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.samples import recording
from tests.timing import FACTOR
from voice.audio.frames import PIPELINE_RATE, PcmFrame
from voice.audio.wav import save_wav

CHROMIUM = Path(os.environ.get("VOICE_TEST_CHROMIUM", "/usr/bin/chromium"))

LEAD_S = 2.0
"""Silence before the first recording: covers the fake microphone's start before the call."""

TIMEOUT_MS = 30_000 * FACTOR
"""Default wait for anything the page should show; generous, the recordings set the pace."""

FLAGS = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
]


def caller_wav(path: Path, *names: str, gap_s: float = 0.0, tail_s: float = 1.0) -> Path:
    """Write ``names`` (files in samples/) one after another to ``path`` as the microphone.

    :data:`LEAD_S` of silence goes first, ``gap_s`` between recordings and ``tail_s`` last.
    """

    def silence(seconds: float) -> bytes:
        return bytes(2 * round(seconds * PIPELINE_RATE))

    parts = [silence(LEAD_S)]
    for i, name in enumerate(names):
        frame = recording(name)
        assert frame.sample_rate == PIPELINE_RATE
        if i:
            parts.append(silence(gap_s))
        parts.append(frame.pcm)
    parts.append(silence(tail_s))
    save_wav(path, PcmFrame(b"".join(parts), PIPELINE_RATE))
    return path


def _require_chromium() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Chromium is missing ({CHROMIUM}): the browser tests need Debian's build. "
            "Install it with `sudo scripts/install-chromium` (apt-get install chromium), "
            "or point VOICE_TEST_CHROMIUM at a Chromium binary.",
            pytrace=False,
        )


@asynccontextmanager
async def chromium(microphone: Path | None = None) -> AsyncIterator[Browser]:
    """One headless Chromium; ``microphone`` is the WAV its fake microphone plays once.

    Without one, the fake microphone is Chromium's own beep. The path must be absolute.
    """
    _require_chromium()
    args = list(FLAGS)
    if microphone is not None:
        assert microphone.is_absolute(), microphone
        args.append(f"--use-file-for-fake-audio-capture={microphone}%noloop")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def page_of(
    browser: Browser,
    url: str,
    *,
    microphone: bool = True,
    raw: bool = True,
    width: int = 1000,
    token: str | None = None,
) -> AsyncIterator[Page]:
    """The call page at ``url`` in a fresh context.

    ``microphone``: its permission is granted; ``raw``: the page opens the microphone with
    the browser's echo cancellation, noise suppression and gain control off (``?raw=1``);
    ``token``: the page is opened with ``?token=`` as a backend would hand it out.
    """
    context: BrowserContext = await browser.new_context(
        permissions=["microphone"] if microphone else [],
        viewport={"width": width, "height": 800},
    )
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = await context.new_page()
        errors: list[str] = []
        elsewhere: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        # The page may fetch from its own server only: no CDN, no font, no STUN lookup.
        page.on(
            "request",
            lambda request: (
                None if request.url.startswith((url, "data:")) else elsewhere.append(request.url)
            ),
        )
        query = urlencode({**({"raw": "1"} if raw else {}), **({"token": token} if token else {})})
        await page.goto(url.rstrip("/") + "/" + (f"?{query}" if query else ""))
        yield page
        assert not errors, f"the page raised: {errors}"
        assert not elsewhere, f"the page fetched from elsewhere: {elsewhere}"
    finally:
        await context.close()


async def wait_state(page: Page, state: str) -> None:
    """Until the page shows ``state`` (idle, connecting, listening, ... error)."""
    await page.wait_for_function("s => voiceApp.state === s", arg=state)
