"""The static site (``python -m cfgutils site``): built from the session's CI run of the series, opened in Chromium.

The site is built with ``--reuse`` from the series that ``ci_series`` (conftest.py) ran once for this session, then
served on 127.0.0.1 and opened in Debian's Chromium through Playwright: every link on the index and on every page
leads somewhere (HTTP 200), every image loads, and no page asks for anything but the local server. A screenshot
of the index goes to ``out/figures/site-index.png`` (docs/usage.md shows the copy in figures/). The browser test skips
without ``/usr/bin/chromium`` (``apt-get install -y chromium``) or the ``playwright`` package.
"""

from __future__ import annotations

import html

import io
import os
import re
import subprocess
import sys
import threading
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, git_status, missing_browser

from cfgutils.plumbing import paths
from cfgutils.presentation import site
from cfgutils.workflows.notebooks import available_notebooks

pytestmark = pytest.mark.slow

SCREENSHOT = paths.OUTPUT_FIGURES_DIR / "site-index.png"  # copy to figures/ to update docs/usage.md
SCREENSHOT_MAX_BYTES = 300_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PAGE_LOAD_S = 60
ENV = {**os.environ, "CFGUTILS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cfgutils", *args], capture_output=True, text=True,
                          cwd=paths.REPO_ROOT, timeout=timeout, env=ENV)


@pytest.fixture(scope="module")
def built(ci_series):
    """``python -m cfgutils site --reuse`` on the session's executed series; the result and the site folder."""
    assert ci_series["result"].returncode == 0, ci_series["result"].stderr[-3000:]
    before = git_status()
    result = cli("site", "--reuse", "--out", str(ci_series["out"]))
    return {"result": result, "site": ci_series["out"] / "site", "git_before": before, "git_after": git_status()}


def test_site_has_an_index_and_one_page_per_notebook(built):
    result, folder = built["result"], built["site"]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"Site: {folder / 'index.html'}" in result.stdout  # it says where the site is
    names = available_notebooks()
    assert sorted(path.name for path in folder.glob("*.html")) == sorted(["index.html", *(f"{n}.html" for n in names)])
    index = (folder / "index.html").read_text()
    for page in site.collect_pages(folder.parent):
        assert f'href="{page.filename}"' in index and html.escape(page.title) in index and page.description
    assert built["git_after"] == built["git_before"], "building the site must write under OUT/site/ only"


def test_exercise_solutions_start_collapsed(built):
    for page in sorted(built["site"].glob("[0-9][0-9]-*.html")):
        assert page.read_text().count('<details class="site-solution">') >= 2, f"{page.name}: solutions not collapsed"


def test_pages_need_nothing_from_the_web(built):
    """No page loads a script, style sheet or image from http(s): a CDN would be fetched at view time."""
    for page in built["site"].glob("*.html"):
        text = page.read_text()
        assert not re.findall(r'(?:src|href)="(?:https?:)?//[^"]*\.(?:js|mjs|css)[^"]*"', text), page.name
        assert not re.findall(r'src="(?:https?:)?//', text), page.name
        assert "application/vnd.jupyter.widget-view+json" not in text


def test_notebook_04_shows_the_slider_as_a_strip(built):
    strip = built["site"] / site.SITE_FIGURES / site.SLIDER_STRIP
    assert strip.read_bytes()[:8] == PNG_SIGNATURE
    recorded = site.recorded_slider_strip(built["site"].parent)
    assert recorded is not None and recorded.read_bytes() == strip.read_bytes()  # what notebook 04 recorded
    page = (built["site"] / f"{site.SLIDER_NOTEBOOK}.html").read_text()
    assert f'src="{site.SITE_FIGURES}/{site.SLIDER_STRIP}"' in page and "cached" in page


def test_the_library_draws_a_strip_when_none_was_recorded():
    from PIL import Image

    from cfgutils.presentation.explorer import SLIDER_SCALES, render_slider_strip

    picture = Image.open(io.BytesIO(render_slider_strip(n_samples=2, steps=2)))
    assert picture.height > 28 * 2 * len(SLIDER_SCALES) and picture.width > 2 * 28 * 2


def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    for args, message in ((("--preset", "nope"), "unknown preset 'nope'"),
                          (("--reuse",), "is not a folder of executed notebooks")):
        result = cli("site", "--out", str(out), *args, timeout=120)
        assert result.returncode == 2 and result.stderr.startswith("error: ") and message in result.stderr
        assert not out.exists()
    out.mkdir()
    result = cli("site", "--reuse", "--out", str(out), timeout=120)
    assert result.returncode == 2 and "no executed notebooks" in result.stderr and not any(out.iterdir())


@contextmanager
def serve(folder: Path):
    """A static file server for ``folder`` on 127.0.0.1 (a free port); yields its base URL."""
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()



def _open(page, url: str) -> None:
    """Go to ``url``; the answer is 200 and every image on the page has loaded with a width."""
    response = page.goto(url, wait_until="load")
    assert response is not None and response.status == 200, f"{url}: {response and response.status}"
    broken = page.evaluate("() => [...document.images].filter(i => !(i.complete && i.naturalWidth > 0))"
                           ".map(i => i.getAttribute('src').slice(0, 80))")
    assert not broken, f"{url}: images that did not load: {broken}"


def _local_links(page, base: str) -> set[str]:
    """The page's links to the site (fragments dropped); links elsewhere are left alone."""
    hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
    return {urldefrag(href).url for href in hrefs if href.startswith(base)}


def test_site_in_the_browser(built):
    reason = missing_browser()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    assert built["result"].returncode == 0, built["result"].stderr[-3000:]
    with serve(built["site"]) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.set_default_timeout(PAGE_LOAD_S * 1000)
            elsewhere: list[str] = []

            def local_only(route):  # the site must work offline: nothing but our server
                if route.request.url.startswith(base) or route.request.url.startswith("data:"):
                    route.continue_()
                else:
                    elsewhere.append(route.request.url)
                    route.abort()

            page.route("**/*", local_only)
            index = urljoin(base, "index.html")
            _open(page, index)
            assert page.evaluate("document.images.length") >= 3  # the headline figures
            pages = _local_links(page, base)
            assert {urlparse(url).path.lstrip("/") for url in pages} == {f"{n}.html" for n in available_notebooks()}
            shot = built["site"].parent / "site-index.png"
            page.screenshot(path=str(shot))
            seen = {index}
            for url in sorted(pages):
                _open(page, url)
                assert page.locator("nav.site-nav a[href='index.html']").count() == 2  # above and below
                for link in _local_links(page, base) - seen - pages:
                    assert page.request.get(link).status == 200, f"{url} links to {link}, which is missing"
                    seen.add(link)
            assert not elsewhere, f"the pages tried to reach other addresses: {elsewhere}"
        finally:
            browser.close()
    size = shot.stat().st_size
    assert 0 < size < SCREENSHOT_MAX_BYTES, f"screenshot of {size} bytes"
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.write_bytes(shot.read_bytes())
