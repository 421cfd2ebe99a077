"""The guidance slider of notebook 04: one cached PNG per scale, instant cached moves, a working widget."""

import io
import math

import numpy as np
import pytest
from PIL import Image
from test_sample_cli import small_split, tiny_checkpoint  # noqa: F401 - fixtures

from cfgutils.errors import UserInputError
from cfgutils.plumbing.checkpoint import load_model
from cfgutils.presentation.explorer import (
    SLIDER_SCALES,
    GuidanceExplorer,
    ViewKey,
    measure_latency,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SCALES = (0.0, 1.0, 3.0)
STEPS = 2  # sampler steps: enough to run every code path


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint):  # noqa: F811
    return load_model(tiny_checkpoint, "cpu")


@pytest.fixture
def explorer(loaded):
    return GuidanceExplorer(loaded, scales=SCALES, n_samples=2)


def test_precompute_fills_one_png_per_scale(explorer):
    key = explorer.key(7, "dpmpp", STEPS, seed=0)
    assert key == ViewKey(7, "dpmpp", STEPS, 0, "cfg")
    assert explorer.precompute(key) > 0
    assert set(explorer.cache) == {(key, s) for s in SCALES}
    for scale in SCALES:
        png = explorer.cache[(key, scale)]
        assert png[:8] == PNG_SIGNATURE
        picture = Image.open(io.BytesIO(png))
        assert picture.mode == "L" and picture.size == (2 * (2 * 30 + 2), 2 * 32)  # one row of 2, shown 2x
        pixels = explorer.images[(key, scale)]
        assert pixels.shape == (2, 28, 28) and pixels.dtype == np.uint8
    assert len(explorer.timings["precompute_s"]) == 1
    assert explorer.precompute(key) == 0.0 and len(explorer.timings["precompute_s"]) == 1  # already cached


def test_cached_render_is_identical_and_does_not_recompute(explorer, loaded):
    key = explorer.key(4, "ddim", STEPS, seed=1)
    first = explorer.render(key, 3.0)  # computes every scale of the setting
    assert len(explorer.timings["precompute_s"]) == 1
    assert explorer.render(key, 3.0) == first
    assert explorer.render(key, 2.6) == first  # snaps to the nearest slider scale
    assert explorer.render(key, 0.0) == explorer.cache[(key, 0.0)] != first
    assert len(explorer.timings["precompute_s"]) == 1  # nothing was sampled again
    again = GuidanceExplorer(loaded, scales=SCALES, n_samples=2)
    assert again.render(key, 3.0) == first  # same seed, same pixels, same PNG


def test_nearest_scale(loaded):
    explorer = GuidanceExplorer(loaded)
    assert explorer.scales == SLIDER_SCALES
    assert explorer.nearest_scale(2.2) == 2.0
    assert explorer.nearest_scale(3) == 3.0
    assert explorer.nearest_scale("7.2") == 8.0
    assert explorer.nearest_scale(-4) == 0.0
    assert explorer.nearest_scale(1e6) == 21.0


@pytest.mark.parametrize("call, message", [
    (lambda e: e.key(10), "class must be an index 0-9"),
    (lambda e: e.key("x"), "class must be an index 0-9"),
    (lambda e: e.key(3, sampler="euler"), "unknown sampler"),
    (lambda e: e.key(3, guidance="nope"), "unknown guidance"),
    (lambda e: e.nearest_scale(math.nan), "finite"),
    (lambda e: e.nearest_scale(math.inf), "finite"),
    (lambda e: e.render(e.key(3, steps=STEPS), math.nan), "finite"),
    (lambda e: e.nearest_scale("strong"), "must be a number"),
    (lambda e: GuidanceExplorer(e.loaded, scales=()), "at least one scale"),
    (lambda e: GuidanceExplorer(e.loaded, scales=(1.0, math.nan)), "finite"),
])
def test_bad_input_raises_user_input_error(explorer, call, message):
    with pytest.raises(UserInputError, match=message):
        call(explorer)
    assert not explorer.cache  # nothing was sampled


def test_widget_slider_shows_cached_pngs(explorer):
    ui = explorer.widget(label=7, sampler="dpmpp", steps=STEPS, seed=0)
    key = explorer.key(7, "dpmpp", STEPS, 0)
    assert ui.slider.value == 3.0 and ui.image.value == explorer.cache[(key, 3.0)]
    assert [value for _, value in ui.slider.options] == list(SCALES)
    assert ui.slider.options[0][0] == "s=0  (w=-1)"
    computed = len(explorer.timings["precompute_s"])
    for scale in (1.0, 0.0, 3.0):
        moves = len(explorer.timings["move_ms"])
        ui.slider.value = scale
        assert ui.image.value == explorer.cache[(key, scale)]
        assert "cached" in ui.status.value and f"s = {scale:g} (w = {scale - 1:g})" in ui.status.value
        assert len(explorer.timings["move_ms"]) == moves + 1
    assert len(explorer.timings["precompute_s"]) == computed  # slider moves never sample


def test_widget_new_class_or_steps_computes_a_new_setting(explorer):
    ui = explorer.widget(label=7, sampler="dpmpp", steps=STEPS, seed=0)
    ui.slider.value = 1.0
    computed = len(explorer.timings["precompute_s"])
    ui.label.value = 2
    assert len(explorer.timings["precompute_s"]) == computed + 1
    new_key = explorer.key(2, "dpmpp", STEPS, 0)
    assert all((new_key, s) in explorer.cache for s in SCALES)
    assert ui.image.value == explorer.cache[(new_key, 1.0)]
    assert "computed" in ui.status.value
    ui.steps.value = STEPS + 1
    assert len(explorer.timings["precompute_s"]) == computed + 2
    assert ui.image.value == explorer.cache[(explorer.key(2, "dpmpp", STEPS + 1, 0), 1.0)]
    ui.steps.value = STEPS  # back to a cached setting: no sampling
    assert len(explorer.timings["precompute_s"]) == computed + 2 and "cached" in ui.status.value
    assert ui.image.value == explorer.cache[(new_key, 1.0)]


def test_static_grid_and_measure_latency(explorer):
    key = explorer.key(5, "dpmpp", STEPS, 0)
    latency = measure_latency(explorer, key, moves=5)
    assert set(latency) == {"first_render_s", "move_ms_median", "move_ms_max"}
    assert latency["first_render_s"] > 0 and 0 <= latency["move_ms_median"] <= latency["move_ms_max"]
    grid = explorer.static_grid(key)
    assert grid.shape == (len(SCALES), 2, 28, 28) and grid.dtype == np.uint8
    assert np.array_equal(grid[2], explorer.images[(key, 3.0)])


def test_a_rule_with_a_scale_range_gets_the_slider_mapped_onto_it(loaded):
    from cfgutils.core.guidance import Guidance
    from cfgutils.core.rules import CFGPlusPlus

    explorer = GuidanceExplorer(loaded, scales=(0.0, 1.0, 5.0, 9.0), n_samples=2,
                                guidances={"cfg": Guidance(), "cfgpp": CFGPlusPlus()})
    assert [explorer.rule_scale("cfgpp", s) for s in explorer.scales] == pytest.approx([0.0, 1 / 9, 5 / 9, 1.0])
    assert [explorer.rule_scale("cfg", s) for s in explorer.scales] == [0.0, 1.0, 5.0, 9.0]
    key = explorer.key(3, "dpmpp", 2, 0, "cfgpp")
    explorer.precompute(key)  # every slider scale is a valid lambda
    assert len([k for k in explorer.cache if k[0] == key]) == 4


def test_static_slider_html_holds_every_frame_and_loads_nothing(explorer):
    import base64
    import re

    from cfgutils.presentation.explorer import static_slider_html

    key = explorer.key(3, "dpmpp", 2, 0)
    html = static_slider_html(explorer, key, start=3.0)
    frames = re.findall(r'"([A-Za-z0-9+/=]{40,})"', html.split("<script>")[1])
    assert len(frames) == len(explorer.scales)
    assert [base64.b64decode(f) for f in frames] == [explorer.render(key, s) for s in explorer.scales]
    first = explorer.scales.index(explorer.nearest_scale(3.0))
    assert f'max="{len(explorer.scales) - 1}"' in html and f'value="{first}"' in html
    assert "s = 3 (w = 2)" in html and "http" not in html and "src=\"data:image/png;base64," in html
    assert static_slider_html(explorer, key) == html  # deterministic; another setting gets another id
    other = static_slider_html(explorer, explorer.key(4, "dpmpp", 2, 0))
    assert re.search(r'id="([^"]+)"', other).group(1) != re.search(r'id="([^"]+)"', html).group(1)


@pytest.mark.slow
def test_static_slider_drags_in_a_browser(explorer):
    from conftest import CHROMIUM, CHROMIUM_ARGS, missing_browser

    reason = missing_browser()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    from cfgutils.presentation.explorer import static_slider_html

    key = explorer.key(3, "dpmpp", 2, 0)
    html = f"<!doctype html><html><body>{static_slider_html(explorer, key, start=1.0)}</body></html>"
    requests = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page()
        page.route("**/*", lambda route: (requests.append(route.request.url), route.abort()))
        page.set_content(html)
        caption, image = page.locator(".cfg-static-slider-caption"), page.locator(".cfg-static-slider img")
        assert caption.text_content() == "s = 1 (w = 0)"
        before = image.get_attribute("src")
        page.locator(".cfg-static-slider input").fill(str(len(explorer.scales) - 1))
        last = explorer.scales[-1]
        assert caption.text_content() == f"s = {last:g} (w = {last - 1:g})"
        assert image.get_attribute("src") != before
        browser.close()
    assert not [url for url in requests if not url.startswith("data:")], requests
