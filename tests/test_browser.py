"""Notebook 04's guidance slider in a real browser: JupyterLab and Debian's Chromium, driven by Playwright.

The test starts a private JupyterLab on 127.0.0.1 (a free port, a random token, temporary root, config,
settings and workspaces), opens a copy of ``notebooks/04-cfg-sampling.ipynb`` with the CI parameters
injected, runs every cell from the Run menu, moves the guidance slider with the keyboard and checks that
the picture and the status line follow, with no error anywhere in the notebook. When all of that holds it
saves a screenshot of the widget to ``out/figures/04-slider-browser.png`` (docs/usage.md shows the copy in figures/).

It skips without ``/usr/bin/chromium`` (``apt-get install chromium``; Playwright cannot download its own
browsers here) or without the ``playwright`` package. Everything stays on this machine: the page may only
talk to the local server (any other request is aborted and reported), and the server is told not to fetch
news, update checks or extension listings.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, missing_browser

from cfgutils.plumbing import paths

pytestmark = pytest.mark.slow

NOTEBOOK = "04-cfg-sampling"
SCREENSHOT = paths.OUTPUT_FIGURES_DIR / "04-slider-browser.png"  # copy to figures/ to update docs/usage.md
SCREENSHOT_MAX_BYTES = 300_000
SLIDER_PRESSES = 3  # arrow-key presses on the slider handle, one option each

# Every wait is bounded (seconds). On a quiet 2-core machine the whole test takes about 25 s; the bounds leave
# room for a machine busy with other work (3-4 minutes were seen then).
SERVER_START_S = 60
PAGE_READY_S = 90      # JupyterLab loaded, notebook open, kernel started and idle
RUN_ALL_S = 420        # every cell executed (the CI preset takes ~10-20 s of compute on a quiet machine)
SLIDER_MOVE_S = 120    # picture and status line follow the slider (a busy 2-core machine needed more than 30 s)
SERVER_STOP_S = 15

# The CSS selectors the test relies on (JupyterLab 4, ipywidgets 8 through jupyterlab_widgets 3).
RUN_MENU = "li.lm-MenuBar-item:has(.lm-MenuBar-itemLabel:text-is('Run'))"
RUN_ALL_ITEM = "li.lm-Menu-item[data-command='runmenu:run-all']"
EXECUTION_INDICATOR = ".jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator"  # data-status: idle, busy, ...
KERNEL_NAME = ".jp-NotebookPanel-toolbar .jp-KernelName"  # "No Kernel" until the session has one
CODE_PROMPTS = ".jp-Notebook .jp-CodeCell .jp-InputArea-prompt"  # "[ ]:", "[*]:", "[12]:"
STDERR = ".jp-RenderedText[data-mime-type='application/vnd.jupyter.stderr']"  # stderr and error outputs
DIALOG = ".jp-Dialog"
EXPLORER = ".jp-OutputArea-output .widget-vbox:has(> .widget-hslider .widget-label:text-is('guidance'))"
SLIDER_HANDLE = ".widget-hslider .noUi-handle"  # role=slider, focusable, arrow keys move one option
SLIDER_READOUT = ".widget-hslider .widget-readout"  # "s=3  (w=2)"
IMAGE = "img.widget-image"  # src is a fresh blob: URL for every new picture
STATUS = ".widget-html .widget-html-content"  # "s = 3 (w = 2) · cached in 0.1 ms"



def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


@contextmanager
def jupyterlab(root: Path, state: Path):
    """A private JupyterLab serving ``root`` on 127.0.0.1; yields (base URL, token); always shut down."""
    port, token = _free_port(), secrets.token_hex(16)
    settings = state / "user-settings"
    for plugin, values in {
        # every cell stays in the DOM, so that the test sees all prompts and outputs
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
        # no news and no update check (both would contact a website), and no toast over the widget
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    for folder in ("config", "runtime", "notary", "workspaces"):
        (state / folder).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(state / "config"), "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
           "CFGUTILS_OFFLINE": "1"}
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.terminals_enabled=False",
        # a safety net should this process die without its cleanup: idle kernels, then the server, go away
        "--MappingKernelManager.cull_idle_timeout=600", "--MappingKernelManager.cull_interval=60",
        "--ServerApp.shutdown_no_activity_timeout=600",
        f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={state / 'workspaces'}",
        "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly", f"--NotebookNotary.data_dir={state / 'notary'}",
    ]
    log_path = state / "jupyterlab.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(command, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + SERVER_START_S
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"JupyterLab exited with status {server.returncode}:\n{_tail(log_path)}")
                try:
                    with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as response:
                        json.loads(response.read())
                    break
                except (OSError, ValueError):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"JupyterLab did not answer within {SERVER_START_S} s:\n"
                                           f"{_tail(log_path)}") from None
                    time.sleep(0.25)
            yield base, token
        finally:
            _stop(server, base, token)


def _stop(server: subprocess.Popen, base: str, token: str) -> None:
    """Ask the server to shut down (its kernels too), else SIGTERM, else SIGKILL; then clear its process group."""
    if server.poll() is None:
        try:
            request = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(request, timeout=5).close()
        except OSError:
            pass
        for stop in (None, server.terminate, server.kill):
            if stop is not None:
                stop()
            try:
                server.wait(timeout=SERVER_STOP_S)
                break
            except subprocess.TimeoutExpired:
                continue
    try:  # anything the server started in its own process group; kernels also exit when their parent does
        os.killpg(server.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _prepare_notebook(root: Path, work: Path) -> Path:
    """``notebooks/04`` with the CI preset and temporary output and figure folders injected (not executed)."""
    import papermill

    from cfgutils.workflows.notebooks import notebook_parameters

    target = root / f"{NOTEBOOK}.ipynb"
    parameters = {**notebook_parameters(NOTEBOOK, "ci"), "output_dir": str(work / "out"),
                  "figures_dir": str(work / "figures")}
    papermill.execute_notebook(str(paths.NOTEBOOKS_DIR / f"{NOTEBOOK}.ipynb"), str(target), parameters=parameters,
                               prepare_only=True, kernel_name="python3", progress_bar=False)
    return target


def _wait_for_idle_kernel(page, timeout_s: float) -> None:
    """The notebook's kernel exists, is connected and idle (the indicator also says idle before a kernel exists)."""
    page.wait_for_function(
        """([indicator, names, dialog]) => {
            if (document.querySelector(dialog)) return true;  // reported by the caller
            const status = document.querySelector(indicator);
            const kernels = [...document.querySelectorAll(names)].map(e => e.textContent.trim());
            return status !== null && status.dataset.status === 'idle'
                && kernels.length > 0 && kernels.every(name => name && name !== 'No Kernel');
        }""", arg=[EXECUTION_INDICATOR, KERNEL_NAME, DIALOG], timeout=timeout_s * 1000, polling=200)
    _fail_on_dialog(page)


def _fail_on_dialog(page) -> None:
    dialogs = page.locator(DIALOG)
    if dialogs.count():
        pytest.fail(f"JupyterLab shows a dialog: {dialogs.first.inner_text()!r}")


def _run_all_cells(page) -> None:
    """Run > Run All Cells; clicked again (at most twice more) if the kernel did not start on it within 10 s."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    started = """([prompts, indicator]) => document.querySelector(indicator)?.dataset.status === 'busy'
        || [...document.querySelectorAll(prompts)].some(e => /\\[\\d+\\]/.test(e.textContent))"""
    for _ in range(3):
        page.locator(RUN_MENU).click()
        page.locator(RUN_ALL_ITEM).click()
        try:
            page.wait_for_function(started, arg=[CODE_PROMPTS, EXECUTION_INDICATOR], timeout=10_000, polling=100)
            return
        except PlaywrightTimeout:
            _fail_on_dialog(page)
            page.keyboard.press("Escape")  # close a menu left open
    pytest.fail("Run > Run All Cells did not start the notebook (tried 3 times)")


def _wait_until_executed(page) -> list[str]:
    """Wait until no cell is queued or running; return the code cells' prompts."""
    page.wait_for_function(
        """([prompts, stderr, dialog]) => {
            if (document.querySelector(dialog)) return true;
            const texts = [...document.querySelectorAll(prompts)].map(e => e.textContent.trim());
            if (texts.length === 0 || texts.some(t => t.includes('*'))) return false;
            // all executed, or an error stopped the run (later cells fall back to "[ ]:")
            return texts.every(t => /^\\[\\d+\\]:$/.test(t)) || document.querySelector(stderr) !== null;
        }""", arg=[CODE_PROMPTS, STDERR, DIALOG], timeout=RUN_ALL_S * 1000, polling=250)
    _fail_on_dialog(page)
    return [text.strip() for text in page.locator(CODE_PROMPTS).all_inner_texts()]


def _notebook_errors(page) -> list[str]:
    """Error outputs (tracebacks) and widget rendering errors anywhere in the notebook."""
    errors = [text for text in page.locator(STDERR).all_inner_texts() if "Traceback" in text or "Error" in text]
    errors += page.locator(".jp-OutputArea-output:has-text('Error displaying widget')").all_inner_texts()
    return errors


def _scale(text: str, pattern: str) -> float:
    match = re.search(pattern, text)
    assert match, f"no scale in {text!r}"
    return float(match.group(1))


def test_guidance_slider_in_the_browser(tmp_path):
    reason = missing_browser()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright

    started = time.monotonic()
    phases: dict[str, float] = {}  # seconds since the start, printed at the end (pytest -rP or -s shows them)

    def phase(name: str) -> None:
        phases[name] = round(time.monotonic() - started, 1)

    root, state = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    notebook = _prepare_notebook(root, tmp_path)
    phase("notebook prepared")

    with jupyterlab(root, state) as (base, token), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = None
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            elsewhere: list[str] = []

            def local_only(route):  # the page may talk to our server and to nothing else
                if route.request.url.startswith(base + "/"):
                    route.continue_()
                else:
                    elsewhere.append(route.request.url)
                    route.abort()

            phase("server and browser started")
            page.route("**/*", local_only)
            page.set_default_timeout(PAGE_READY_S * 1000)
            page.goto(f"{base}/lab/tree/{notebook.name}?token={token}&reset")
            page.wait_for_selector(CODE_PROMPTS, state="attached")
            _wait_for_idle_kernel(page, PAGE_READY_S)

            phase("notebook open, kernel idle")
            _run_all_cells(page)
            prompts = _wait_until_executed(page)
            phase("all cells executed")
            _wait_for_idle_kernel(page, SLIDER_MOVE_S)
            errors = _notebook_errors(page)
            assert not errors, "the notebook shows errors:\n" + "\n---\n".join(errors)
            assert all(re.fullmatch(r"\[\d+\]:", prompt) for prompt in prompts), f"cells not executed: {prompts}"

            # the explorer: slider, picture and status line, wherever the notebook left them
            ui = page.locator(EXPLORER)
            expect(ui).to_have_count(1, timeout=SLIDER_MOVE_S * 1000)
            handle, readout = ui.locator(SLIDER_HANDLE), ui.locator(SLIDER_READOUT)
            image, status = ui.locator(IMAGE), ui.locator(STATUS)
            expect(image).to_have_attribute("src", re.compile(r"^blob:"))
            expect(status).to_contain_text(re.compile(r"cached in [\d.]+ ms"))
            src_before, status_before = image.get_attribute("src"), status.inner_text()
            scale_before = _scale(readout.inner_text(), r"s=([\d.]+)")
            assert _scale(status_before, r"s = ([\d.]+)") == scale_before
            # the handle's position is the option's index; go right unless the notebook left it near the end
            position = float(handle.get_attribute("aria-valuenow"))
            right = position + SLIDER_PRESSES <= float(handle.get_attribute("aria-valuemax"))
            key, target = (("ArrowRight", position + SLIDER_PRESSES) if right
                           else ("ArrowLeft", position - SLIDER_PRESSES))

            # move the slider as a person would with the keyboard: focus its handle, press an arrow key
            ui.scroll_into_view_if_needed()
            handle.focus()
            for _ in range(SLIDER_PRESSES):
                handle.press(key)
            page.wait_for_function("([handle, target]) => parseFloat(handle.getAttribute('aria-valuenow')) === target",
                                   arg=[handle.element_handle(), target], timeout=SLIDER_MOVE_S * 1000)
            scale_after = _scale(readout.inner_text(), r"s=([\d.]+)")
            assert scale_after != scale_before, f"the slider did not move: readout {readout.inner_text()!r}"
            # the kernel answers every move; the last answer names the scale the readout shows
            expect(status).to_contain_text(re.compile(rf"^s = {scale_after:g} \(w = [-\d.]+\) · cached in [\d.]+ ms"),
                                           timeout=SLIDER_MOVE_S * 1000)
            expect(image).not_to_have_attribute("src", src_before, timeout=SLIDER_MOVE_S * 1000)
            assert status.inner_text() != status_before
            page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle(),
                                   timeout=SLIDER_MOVE_S * 1000)
            phase("slider moved, picture and status updated")
            _wait_for_idle_kernel(page, SLIDER_MOVE_S)
            errors = _notebook_errors(page)
            assert not errors, "errors after moving the slider:\n" + "\n---\n".join(errors)
            assert not elsewhere, f"the page tried to reach other addresses: {elsewhere}"

            # all checks passed: the screenshot for docs/usage.md, the widget with a small margin (none below it:
            # the notebook's next figure starts right there)
            box = ui.bounding_box()
            margin = 4
            shot = tmp_path / SCREENSHOT.name
            page.mouse.move(0, 0)  # no hover effects in the picture
            page.screenshot(path=str(shot), clip={"x": box["x"] - margin, "y": box["y"] - margin,
                                                  "width": box["width"] + 2 * margin, "height": box["height"] + margin})
            size = shot.stat().st_size
            assert 0 < size < SCREENSHOT_MAX_BYTES, f"screenshot of {size} bytes"
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            SCREENSHOT.write_bytes(shot.read_bytes())
            phase("screenshot saved")
        except BaseException:
            if page is not None:  # for the failure report: the page as it was, and the server's last words
                try:
                    page.screenshot(path=str(tmp_path / "failure.png"))
                    print(f"page at failure: {tmp_path / 'failure.png'}")
                except Exception:
                    pass
            print(f"JupyterLab log ({state / 'jupyterlab.log'}):\n{_tail(state / 'jupyterlab.log')}")
            raise
        finally:
            browser.close()
            print("phases (s since start):", json.dumps(phases))
