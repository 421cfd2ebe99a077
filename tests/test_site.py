"""The book (``python -m cfgutils site``): built from the session's CI run of the series, opened in Chromium.

The book is built with ``--reuse`` from the series that ``ci_series`` (conftest.py) ran once for this session, then
served on 127.0.0.1 and opened in Debian's Chromium through Playwright: every page loads with no failed request and
none off 127.0.0.1, the math is typeset, search finds the notebooks, the sidebar lists them all, and notebook 04's
slider can be dragged on its page. Screenshots of the introduction and of 04's page go to ``out/figures/``
(copy them to figures/ to update the README). The browser test skips without ``/usr/bin/chromium``
(``apt-get install -y chromium``) or the ``playwright`` package.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urljoin

import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, git_status, missing_browser

from cfgutils.plumbing import paths
from cfgutils.presentation import book
from cfgutils.workflows.notebooks import available_notebooks

pytestmark = pytest.mark.slow

SCREENSHOTS = {"intro": paths.OUTPUT_FIGURES_DIR / "book-index.png",  # copy to figures/ to update the README
               "04-cfg-sampling": paths.OUTPUT_FIGURES_DIR / "book-04-slider.png"}
PAGE_LOAD_S = 60
ENV = {**os.environ, "CFGUTILS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
MATH_PAGES = ("03-train", "04-cfg-sampling", "09-guidance-toy")
#: a script or style sheet from anywhere but the site: <script src="https://...">, <link href="//...">
FROM_THE_WEB = re.compile(r'<(?:script|link|img)\b[^>]*\b(?:src|href)="(?:https?:)?//[^"]*"', re.IGNORECASE)


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cfgutils", *args], capture_output=True, text=True,
                          cwd=paths.REPO_ROOT, timeout=timeout, env=ENV)


@pytest.fixture(scope="module")
def built(ci_series):
    """``python -m cfgutils site --reuse`` on the session's executed series; the result and the book's folder."""
    assert ci_series["result"].returncode == 0, ci_series["result"].stderr[-3000:]
    before = git_status()
    result = cli("site", "--reuse", "--out", str(ci_series["out"]))
    return {"result": result, "site": ci_series["out"] / "site", "git_before": before, "git_after": git_status()}


def test_the_book_has_an_introduction_and_a_page_per_notebook(built):
    result, folder = built["result"], built["site"]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"Book: {folder / 'index.html'}" in result.stdout  # it says where the book is
    names = available_notebooks()
    assert {path.stem for path in folder.glob("*.html")} >= {"index", "intro", "search", *names}
    intro = (folder / "intro.html").read_text()
    for page in book.collect_pages(folder.parent):
        assert f'href="{page.name}.html"' in intro  # the introduction lists every chapter
    assert "4,000 digits" in intro  # the README's opening, with its warning about the shipped models
    assert built["git_after"] == built["git_before"], "building the book must write under OUT/ only"


def test_pages_need_nothing_from_the_web(built):
    """No page loads a script, style sheet or image from the network; MathJax is the site's own copy."""
    for page in built["site"].glob("*.html"):
        text = page.read_text()
        assert not FROM_THE_WEB.findall(text), (page.name, FROM_THE_WEB.findall(text)[:3])
        assert not re.search(r"unpkg|jsdelivr|cdnjs|googleapis", text), page.name
        assert "application/vnd.jupyter.widget-view+json" not in text
    page = (built["site"] / "04-cfg-sampling.html").read_text()
    assert '_static/mathjax/tex-chtml.js' in page and (built["site"] / "_static/mathjax/tex-chtml.js").is_file()


def test_every_link_within_the_book_resolves(built):
    """Every relative link (a chapter, a section, a figure, a download) points at a file of the book."""
    for page in built["site"].glob("*.html"):
        for href in re.findall(r'\bhref="([^"]+)"', page.read_text()):
            target = href.split("#")[0].split("?")[0]
            if target and not re.match(r"[a-z]+:|//", target):
                assert (page.parent / target).is_file(), f"{page.name} links to {href}, which is missing"


def test_exercise_solutions_start_collapsed_and_the_record_is_left_out(built):
    for name in available_notebooks():
        text = (built["site"] / f"{name}.html").read_text()
        assert "chapter.write_summary(" not in text, f"{name}: the record cell is shown"
        if "Exercises" in text:
            assert text.count("tag_solution tag_hide-input") >= 2, f"{name}: solutions not collapsed"


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
    """Go to ``url``: the answer is 200, and every image on the page has loaded with a width."""
    response = page.goto(url, wait_until="load")
    assert response is not None and response.status == 200, f"{url}: {response and response.status}"
    broken = page.evaluate("() => [...document.images].filter(i => !(i.complete && i.naturalWidth > 0))"
                           ".map(i => (i.getAttribute('src') || '').slice(0, 80))")
    assert not broken, f"{url}: images that did not load: {broken}"


def _drag_slider(page) -> tuple[tuple[str, str], tuple[str, str]]:
    """Drag 04's kernel-free slider to its left end with the mouse; (caption, image) before and after."""
    root = page.locator(".cfg-static-slider").first
    root.scroll_into_view_if_needed()
    seen = lambda: (root.locator(".cfg-static-slider-caption").text_content(),  # noqa: E731
                    root.locator("img").get_attribute("src"))
    before = seen()
    box = root.locator("input[type=range]").bounding_box()
    value, top = float(root.locator("input[type=range]").input_value()), box["y"] + box["height"] / 2
    maximum = float(root.locator("input[type=range]").get_attribute("max"))
    page.mouse.move(box["x"] + 8 + (box["width"] - 16) * value / maximum, top)  # on the thumb
    page.mouse.down()
    page.mouse.move(box["x"] + 1, top, steps=8)
    page.mouse.up()
    return before, seen()


def test_the_book_in_the_browser(built):
    reason = missing_browser()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    assert built["result"].returncode == 0, built["result"].stderr[-3000:]
    names = available_notebooks()
    SCREENSHOTS["intro"].parent.mkdir(parents=True, exist_ok=True)
    with serve(built["site"]) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(PAGE_LOAD_S * 1000)
            elsewhere: list[str] = []
            failed: list[str] = []
            page.on("requestfailed", lambda request: failed.append(request.url))
            page.on("response", lambda response: failed.append(f"{response.status} {response.url}")
                    if response.status >= 400 else None)

            def local_only(route):  # the book must work offline: nothing but our server
                if route.request.url.startswith(base) or route.request.url.startswith("data:"):
                    route.continue_()
                else:
                    elsewhere.append(route.request.url)
                    route.abort()

            page.route("**/*", local_only)
            assert page.goto(urljoin(base, "index.html")).status == 200  # the first page forwards ...
            page.wait_for_url("**/intro.html")
            _open(page, urljoin(base, "intro.html"))  # ... to the introduction
            sidebar = page.eval_on_selector_all("nav.bd-links a", "links => links.map(a => a.getAttribute('href'))")
            assert [href for href in sidebar if href.split("#")[0][:-5] in names] == [f"{n}.html" for n in names]
            page.screenshot(path=str(SCREENSHOTS["intro"]))
            for name in names:
                _open(page, urljoin(base, f"{name}.html"))
                if name in MATH_PAGES or 'class="math' in (built["site"] / f"{name}.html").read_text():
                    page.wait_for_selector("mjx-container", state="attached")  # MathJax typeset the page's formulas
                    text = page.inner_text("article")
                    assert "$$" not in text and "\\(" not in text and "\\frac" not in text, f"{name}: raw TeX"
            _open(page, urljoin(base, "04-cfg-sampling.html"))
            before, after = _drag_slider(page)
            assert after[0] != before[0] and after[1] != before[1], (before[0], after[0])  # caption and image
            assert after[0].startswith("s = 0 ")  # the left end: unguided
            page.screenshot(path=str(SCREENSHOTS["04-cfg-sampling"]))  # the page, scrolled to the dragged slider
            page.goto(urljoin(base, "search.html?q=guidance"), wait_until="load")
            page.wait_for_selector("#search-results li a")
            found = page.eval_on_selector_all("#search-results li a", "links => links.map(a => a.getAttribute('href'))")
            assert {href.split("?")[0].split("#")[0][:-5] for href in found} >= {"04-cfg-sampling", "06-guidance-variants"}
            assert not elsewhere, f"the pages tried to reach other addresses: {elsewhere}"
            assert not failed, f"requests that failed: {failed[:5]}"
        finally:
            browser.close()
    for shot in SCREENSHOTS.values():
        assert shot.is_file() and shot.stat().st_size > 10_000


def test_a_missing_book_builder_is_named_before_anything_runs(tmp_path, monkeypatch):
    from cfgutils.errors import UserInputError

    monkeypatch.setitem(book.BUILD_PACKAGES, "no-such-package", "no_such_module_for_the_book")
    with pytest.raises(UserInputError, match=r'needs no-such-package: pip install -e "\.\[site\]"'):
        book.build_book(tmp_path / "out")
    assert not (tmp_path / "out").exists()
