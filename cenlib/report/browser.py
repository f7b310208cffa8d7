"""A report as a person sees it: rendered by headless Chromium, checked, saved as a full-page
PNG (``cen report RUN --screenshot PNG``; ``docs/report.png`` is one).

Uses playwright (a dev dependency) with the system's Chromium (``make chromium`` installs
Debian's): ``playwright install`` downloads browsers, which does not work offline. The page is
opened from a ``file://`` URL with every other request blocked, so a page that needs anything
from outside shows it as a failed request here.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from cenlib.errors import CenError


class ScreenshotError(CenError, RuntimeError):
    """No browser to render with, or the page did not render; says what to install."""


@dataclass(frozen=True)
class PageCheck:
    """What the browser saw: each image's natural width (0 = not decoded), the requests
    the page made beyond its own file (there should be none), and the page's size."""

    images: list[int]
    blocked: list[str] = field(default_factory=list)
    width: int = 0
    height: int = 0


def screenshot(page: Path, png: Path | None = None, width: int = 1200) -> PageCheck:
    """Render ``page`` (an HTML file) at ``width`` CSS pixels; save a full-page ``png``."""
    try:
        from playwright.sync_api import Route, sync_playwright
    except ImportError as e:
        raise ScreenshotError(
            "screenshots need playwright (cenlib's dev extra: pip install -e '.[dev]')"
        ) from e
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise ScreenshotError("no chromium on PATH; `make chromium` installs Debian's package")
    url = Path(page).resolve().as_uri()
    blocked: list[str] = []

    def gate(route: Route) -> None:
        if route.request.url == url:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": width, "height": 900})
            view = context.new_page()
            view.route("**/*", gate)
            view.goto(url, wait_until="load")
            images = view.eval_on_selector_all(
                "img", "els => els.map(e => e.complete ? e.naturalWidth : 0)"
            )
            size = view.evaluate(
                "() => [document.documentElement.scrollWidth,"
                " document.documentElement.scrollHeight]"
            )
            if png is not None:
                Path(png).parent.mkdir(parents=True, exist_ok=True)
                view.screenshot(path=str(png), full_page=True)
        finally:
            browser.close()
    return PageCheck([int(w) for w in images], blocked, int(size[0]), int(size[1]))
