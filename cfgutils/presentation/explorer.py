"""The guidance-scale slider of notebook 04: cached samples so that every slider move is instant.

:class:`GuidanceExplorer` samples a class at every scale of the slider in one go (the cache), then a
slider move only looks up a ready-made PNG. Anything that must compute (another class, sampler, step
count, seed or guidance variant) fills the cache for that setting first; those widgets use
``continuous_update=False``. The class works without a browser too (``render``, ``precompute``), which is
how the notebook's headless run and the tests measure its latency.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..core.guidance import Guidance, check_scale, w_from_s
from ..core.samplers import DEFAULT_STEPS, SAMPLERS, SamplerSettings, class_labels, generate
from ..errors import UserInputError
from ..plumbing.checkpoint import LoadedModel
from ..plumbing.data import dataset_info, to_uint8
from .plots import image_grid

#: the slider's discrete scales s (w = s - 1): unconditional, conditional, then guided up to w = 20
SLIDER_SCALES = (0.0, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 11.0, 16.0, 21.0)


@dataclass(frozen=True)
class ViewKey:
    """Everything that determines one cached picture except the scale."""

    label: int  # the class index
    sampler: str
    steps: int
    seed: int
    guidance: str = "cfg"


@dataclass
class GuidanceExplorer:
    """Samples per (setting, scale), cached as PNG bytes; ``guidances`` maps a name to a Guidance (04-cfg-sampling)."""

    loaded: LoadedModel
    scales: tuple[float, ...] = SLIDER_SCALES
    n_samples: int = 8
    guidances: dict[str, Guidance] = field(default_factory=lambda: {"cfg": Guidance()})
    cache: dict[tuple[ViewKey, float], bytes] = field(default_factory=dict)
    images: dict[tuple[ViewKey, float], np.ndarray] = field(default_factory=dict)
    timings: dict[str, list[float]] = field(default_factory=lambda: {"precompute_s": [], "move_ms": []})

    def __post_init__(self):
        self.scales = tuple(check_scale(s) for s in self.scales)
        if not self.scales:
            raise UserInputError("the slider needs at least one scale")

    def key(self, label: int | str, sampler: str = "dpmpp", steps: int | None = None, seed: int = 0,
            guidance: str = "cfg") -> ViewKey:
        """Validated cache key for a setting."""
        label_value = int(class_labels(label, 1)[0])
        if sampler not in SAMPLERS:
            raise UserInputError(f"unknown sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
        if guidance not in self.guidances:
            raise UserInputError(f"unknown guidance {guidance!r}: use one of {', '.join(self.guidances)}")
        steps = DEFAULT_STEPS[sampler] if steps is None else int(steps)
        return ViewKey(label_value, sampler, steps, int(seed), guidance)

    def precompute(self, key: ViewKey) -> float:
        """Sample ``n_samples`` of the class at every slider scale (same noise per column); returns seconds."""
        if all((key, s) in self.cache for s in self.scales):
            return 0.0
        start = time.perf_counter()
        settings = SamplerSettings(key.sampler, key.steps)
        labels = class_labels(key.label, self.n_samples)
        for scale in self.scales:
            samples = generate(self.loaded.model, self.loaded.diffusion, labels, self.rule_scale(key.guidance, scale),
                               settings, key.seed, batch_size=self.n_samples, guidance=self.guidances[key.guidance])
            pixels = to_uint8(samples.cpu()).squeeze(1).numpy()
            self.images[(key, scale)] = pixels
            self.cache[(key, scale)] = _png_row(pixels)
        elapsed = time.perf_counter() - start
        self.timings["precompute_s"].append(elapsed)
        return elapsed

    def render(self, key: ViewKey, scale: float) -> bytes:
        """PNG bytes of the samples at ``scale`` (computing the setting's cache first if needed)."""
        scale = self.nearest_scale(scale)
        if (key, scale) not in self.cache:
            self.precompute(key)
        return self.cache[(key, scale)]

    def rule_scale(self, guidance: str, scale: float) -> float:
        """The scale a slider position gives the rule: s itself, or, for a rule with a ``scale_range`` (CFG++'s
        lambda in [0, 1]), the slider's span mapped linearly onto that range."""
        bounds = self.guidances[guidance].scale_range
        if bounds is None:
            return scale
        lowest, highest = min(self.scales), max(self.scales)
        fraction = (scale - lowest) / (highest - lowest) if highest > lowest else 1.0
        return bounds[0] + fraction * (bounds[1] - bounds[0])

    def nearest_scale(self, scale: float) -> float:
        """The slider value closest to ``scale``."""
        scale = check_scale(scale)
        return min(self.scales, key=lambda s: abs(s - scale))

    def static_grid(self, key: ViewKey) -> np.ndarray:
        """All cached scales of a setting as a (len(scales), n, 28, 28) uint8 array, for a static figure."""
        self.precompute(key)
        return np.stack([self.images[(key, s)] for s in self.scales])

    def widget(self, label: int = 3, sampler: str = "dpmpp", steps: int | None = None, seed: int = 0):
        """The interactive UI: a scale slider (both conventions), class, sampler, steps, seed and guidance."""
        import ipywidgets as widgets

        initial = self.key(label, sampler, steps, seed)
        self.precompute(initial)
        options = [(f"s={s:g}  (w={w_from_s(s):g})", s) for s in self.scales]
        start_scale = 3.0 if 3.0 in self.scales else self.scales[len(self.scales) // 2]
        slider = widgets.SelectionSlider(options=options, value=start_scale, description="guidance",
                                         continuous_update=True, layout=widgets.Layout(width="520px"))
        info = dataset_info(self.loaded.dataset)  # MNIST: "0".."9"; Fashion-MNIST: "T-shirt/top".."Ankle boot"
        class_box = widgets.Dropdown(options=[(name, i) for i, name in enumerate(info.class_names)],
                                     value=initial.label, description="digit" if info.name == "mnist" else "class")
        sampler_box = widgets.Dropdown(options=list(SAMPLERS), value=initial.sampler, description="sampler")
        steps_box = widgets.BoundedIntText(value=initial.steps, min=1, max=1000, description="steps",
                                           continuous_update=False)
        seed_box = widgets.BoundedIntText(value=initial.seed, min=0, max=2 ** 31 - 1, description="seed",
                                          continuous_update=False)
        guidance_box = widgets.Dropdown(options=list(self.guidances), value=initial.guidance, description="variant")
        image = widgets.Image(value=self.render(initial, start_scale), format="png",
                              layout=widgets.Layout(width=f"{60 * self.n_samples}px"))
        status = widgets.HTML()

        def current_key() -> ViewKey:
            return self.key(class_box.value, sampler_box.value, steps_box.value, seed_box.value, guidance_box.value)

        def show(_change=None) -> None:
            started = time.perf_counter()
            key = current_key()
            cached = (key, slider.value) in self.cache
            if not cached:
                status.value = "<i>sampling every scale for this setting…</i>"
            image.value = self.render(key, slider.value)
            elapsed_ms = 1000 * (time.perf_counter() - started)
            if cached:
                self.timings["move_ms"].append(elapsed_ms)
            rule_scale = self.rule_scale(key.guidance, slider.value)
            shown = (f"s = {slider.value:g} (w = {w_from_s(slider.value):g})" if rule_scale == slider.value
                     else f"{key.guidance}: scale {rule_scale:.2f} at slider s = {slider.value:g}")
            status.value = f"{shown} · {'cached' if cached else 'computed'} in {elapsed_ms:.1f} ms"

        def sampler_changed(change) -> None:
            steps_box.value = DEFAULT_STEPS[change["new"]]  # triggers show via steps_box
            show()

        slider.observe(show, names="value")
        for box in (class_box, steps_box, seed_box, guidance_box):
            box.observe(show, names="value")
        sampler_box.observe(sampler_changed, names="value")
        show()
        controls = [class_box, sampler_box, steps_box, seed_box]
        if len(self.guidances) > 1:
            controls.append(guidance_box)
        ui = widgets.VBox([slider, widgets.HBox(controls[:2]), widgets.HBox(controls[2:]), image, status])
        ui.slider, ui.image, ui.status = slider, image, status  # handles for scripted use and tests
        ui.label, ui.sampler, ui.steps, ui.seed, ui.guidance = class_box, sampler_box, steps_box, seed_box, guidance_box
        return ui


def _png_row(pixels: np.ndarray) -> bytes:
    """uint8 (n, 28, 28) -> PNG bytes of one row, scaled 2x for the screen."""
    from PIL import Image

    row = image_grid(pixels, nrow=len(pixels), as_array=True)
    picture = Image.fromarray(row, mode="L").resize((row.shape[1] * 2, row.shape[0] * 2), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def measure_latency(explorer: GuidanceExplorer, key: ViewKey, moves: int = 20) -> dict[str, float]:
    """Time the first render (precompute) and ``moves`` cached slider moves; milliseconds and seconds (04-cfg-sampling)."""
    start = time.perf_counter()
    explorer.render(key, explorer.scales[0])
    first_render_s = time.perf_counter() - start
    move_ms = []
    for index in range(moves):
        started = time.perf_counter()
        explorer.render(key, explorer.scales[index % len(explorer.scales)])
        move_ms.append(1000 * (time.perf_counter() - started))
    return {"first_render_s": first_render_s, "move_ms_median": float(np.median(move_ms)),
            "move_ms_max": float(np.max(move_ms))}


def slider_strip(explorer: GuidanceExplorer, key: ViewKey) -> bytes:
    """PNG bytes of every cached slider frame of a setting, one row per scale labelled "s=3 (w=2)" (the site's 04 page)."""
    from PIL import Image, ImageDraw

    frames = [Image.open(io.BytesIO(explorer.render(key, scale))).convert("L") for scale in explorer.scales]
    label_width, gap = 100, 4
    width = label_width + max(frame.width for frame in frames)
    strip = Image.new("L", (width, sum(frame.height + gap for frame in frames) + gap), 255)
    draw = ImageDraw.Draw(strip)
    top = gap
    for scale, frame in zip(explorer.scales, frames):
        strip.paste(frame, (label_width, top))
        draw.text((6, top + frame.height // 2 - 6), f"s={scale:g}  (w={w_from_s(scale):g})", fill=0)
        top += frame.height + gap
    buffer = io.BytesIO()
    strip.save(buffer, format="PNG")
    return buffer.getvalue()


def save_slider_strip(explorer: GuidanceExplorer, key: ViewKey, path: str | Path) -> str:
    """Write :func:`slider_strip` to ``path`` (what the slider showed, for a page without a kernel); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(slider_strip(explorer, key))
    return str(path.resolve())


def static_slider_html(explorer: GuidanceExplorer, key: ViewKey, start: float = 3.0) -> str:
    """The slider without a kernel: one self-contained HTML block (a range input, the cached frames as inline
    PNGs, a caption "s = 3 (w = 2)" and a few lines of script) that any static page of the notebook can drag (04).

    Nothing is loaded from anywhere: the frames are data URIs. ``start`` is the scale shown first (the nearest
    slider scale). Each block gets its own id, so a page can hold several.
    """
    import base64
    import hashlib
    import html
    import json

    frames = [base64.b64encode(explorer.render(key, scale)).decode("ascii") for scale in explorer.scales]
    labels = [f"s = {scale:g} (w = {w_from_s(scale):g})" for scale in explorer.scales]
    first = explorer.scales.index(explorer.nearest_scale(start))
    uid = "cfg-slider-" + hashlib.sha1(repr((key, explorer.scales)).encode()).hexdigest()[:12]
    name = dataset_info(explorer.loaded.dataset).class_names[key.label]
    alt = html.escape(f"{explorer.n_samples} samples of class {name} ({key.sampler}, {key.steps} steps, seed "
                      f"{key.seed}, {key.guidance})")
    return (f'<div class="cfg-static-slider" id="{uid}" style="font-family: sans-serif">'
            f'<label>guidance <input type="range" min="0" max="{len(frames) - 1}" step="1" value="{first}" '
            f'aria-label="guidance scale" style="width: 320px; vertical-align: middle"></label> '
            f'<span class="cfg-static-slider-caption">{labels[first]}</span><br>'
            f'<img alt="{alt}" src="data:image/png;base64,{frames[first]}">'
            f'<script>(function () {{ var root = document.getElementById("{uid}");'
            f' var frames = {json.dumps(frames)}; var labels = {json.dumps(labels)};'
            f' var input = root.querySelector("input"), image = root.querySelector("img"),'
            f' caption = root.querySelector(".cfg-static-slider-caption");'
            f' input.addEventListener("input", function () {{'
            f' image.src = "data:image/png;base64," + frames[input.value]; caption.textContent = labels[input.value];'
            f' }}); }})();</script></div>')


def torch_threads() -> int:
    """Threads torch uses for CPU work (reported beside latency numbers)."""
    return torch.get_num_threads()
