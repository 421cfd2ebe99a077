"""Looking inside the UNet (notebook 02): the shape after every top-level block, and the architecture diagram.

:func:`record_block_shapes` runs one forward pass with a hook on every top-level block;
:func:`draw_unet_diagram` draws the network from those records (down path left, up path right, the
middle along the bottom, skip connections across).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..core.unet import ConditionalUNet, count_parameters

COLORS = {"res": "#fdd9a8", "conv": "#d6e4f0", "attn": "#e2d4f0", "io": "#eeeeee", "cond": "#cfe8cf"}
LEFT, RIGHT, WIDTH, HEIGHT = 0.0, 8.6, 3.1, 0.62  # x of the two paths, size of a box (data units)


def describe_block(name: str, module: nn.Module) -> str:
    """A short description of one top-level block of the UNet, for tables and the diagram (02-unet)."""
    if name == "time_mlp":
        return "MLP of the timestep embedding"
    if name == "label_embedding":
        return f"label embedding ({module.num_embeddings} rows)"
    if name == "mid_attention":
        return "self-attention" if count_parameters(module) else "identity (attention = False)"
    if isinstance(module, nn.GroupNorm):
        return f"GroupNorm ({module.num_groups} groups)"
    if hasattr(module, "conv1"):
        return f"ResBlock {module.conv1.in_channels}→{module.conv1.out_channels}"
    if name.startswith("upsamplers"):
        return f"conv 1×1 + pixel-shuffle {module[0].in_channels}→{module[0].out_channels // 4}"
    stride = f" stride {module.stride[0]}" if module.stride[0] > 1 else ""
    return f"conv 3×3{stride} {module.in_channels}→{module.out_channels}"


def record_block_shapes(model: ConditionalUNet, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> list[dict]:
    """One forward pass with a hook on every top-level block: name, description, output shape, parameters (02-unet).

    The input, the pixel-unshuffle and the final pixel-shuffle are functions, not modules: hooks on the
    stem's input and on the whole model catch them.
    """
    records, patch = [], model.config.patch_size

    def record(name, what, module=None, use_input=False):
        def hook(mod, args, output=None):
            tensor = args[0] if use_input else output
            records.append({"name": name, "what": what, "shape": list(tensor.shape),
                            "parameters": count_parameters(module) if module is not None else 0})
        return hook

    blocks = []  # (name, module) of every top-level block; lists of blocks are opened up
    for name, child in model.named_children():
        blocks += [(f"{name}.{i}", sub) for i, sub in enumerate(child)] if isinstance(child, nn.ModuleList) else [(name, child)]
    handles = [model.register_forward_pre_hook(record("input", "x_t", use_input=True)),
               model.stem.register_forward_pre_hook(record("pixel-unshuffle", f"{patch}×{patch} pixel-unshuffle",
                                                           use_input=True)),
               model.register_forward_hook(record("output", f"{patch}×{patch} pixel-shuffle: the prediction"))]
    handles += [module.register_forward_hook(record(name, describe_block(name, module), module)) for name, module in blocks]
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            model(x_t.to(device), t.to(device), y.to(device))
    finally:
        for handle in handles:
            handle.remove()
    return records


def diagram_layout(records: list[dict]) -> dict:
    """Where each block goes: the down, middle and up paths, the row of each block, which skip feeds which block."""
    by_name = {r["name"]: r for r in records}
    down = [r["name"] for r in records if r["name"].split(".")[0] in ("stem", "down_blocks", "downsamplers")]
    up = [r["name"] for r in records if r["name"].split(".")[0] in ("up_blocks", "upsamplers")]
    middle = [r["name"] for r in records if r["name"].startswith("mid") and r["parameters"] > 0]
    resolutions = sorted({by_name[n]["shape"][-1] for n in down}, reverse=True)
    level = {name: resolutions.index(by_name[name]["shape"][-1]) for name in down}
    row_y, y = {}, 0.0  # each down-path output is one row; a gap separates the levels
    for i, name in enumerate(down):
        if i and level[name] != level[down[i - 1]]:
            y -= 0.9
        row_y[name], y = y, y - 1.0
    # up blocks consume the saved activations in reverse order: each sits at the row of its skip
    skip_of = dict(zip([n for n in up if n.startswith("up_blocks")], reversed(down)))
    row_y.update({name: row_y[skip] for name, skip in skip_of.items()})
    for name in (n for n in up if n.startswith("upsamplers")):  # halfway between its neighbours
        i = up.index(name)
        row_y[name] = (row_y[up[i - 1]] + row_y[up[i + 1]]) / 2
    return {"by_name": by_name, "down": down, "up": up, "middle": middle, "resolutions": resolutions,
            "level": level, "row_y": row_y, "skip_of": skip_of, "bottom": min(row_y.values()) - 1.5}


def _size(record: dict) -> str:
    return "×".join(map(str, record["shape"][1:]))  # one image


def _box(ax, x, y, text, kind, width=WIDTH, height=HEIGHT):
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.02,rounding_size=0.1",
                                facecolor=COLORS[kind], edgecolor="#555555", lw=0.8))
    ax.text(x, y, text, ha="center", va="center", fontsize=7.5)


def _arrow(ax, start, end, color="#333333", ls="-", text=None):
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="-|>", color=color, lw=1, ls=ls, shrinkA=0, shrinkB=0))
    if text:
        ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.1, text, ha="center", va="bottom", fontsize=7,
                color=color)


def _draw_top(ax, layout: dict, base_channels: int, null_label: int) -> None:
    """Input and pixel-unshuffle (left), output convolution and pixel-shuffle (right), the conditioning between."""
    by_name, row_y, h = layout["by_name"], layout["row_y"], HEIGHT
    _box(ax, LEFT, 2.6, f"input $x_t$ · {_size(by_name['input'])}", "io")
    _box(ax, LEFT, 1.3, f"pixel-unshuffle · {_size(by_name['pixel-unshuffle'])}", "io")
    _arrow(ax, (LEFT, 2.6 - h / 2), (LEFT, 1.3 + h / 2))
    _arrow(ax, (LEFT, 1.3 - h / 2), (LEFT, row_y[layout["down"][0]] + h / 2))
    _box(ax, RIGHT, 2.6, f"output · {_size(by_name['output'])}\n(pixel-shuffle back)", "io")
    _box(ax, RIGHT, 1.3, f"out_norm + SiLU + out_conv\nzero-initialised · {_size(by_name['out_conv'])}", "conv")
    _arrow(ax, (RIGHT, row_y[layout["up"][-1]] + h / 2), (RIGHT, 1.3 - h / 2))
    _arrow(ax, (RIGHT, 1.3 + h / 2), (RIGHT, 2.6 - h / 2))
    emb = by_name["time_mlp"]["shape"][1]
    _box(ax, 3.05, 2.75, f"t → sinusoidal ({base_channels})\n→ MLP ({emb})", "cond", width=2.2)
    _box(ax, 5.55, 2.75, f"y ∈ {{0..9, null = {null_label}}}\n→ embedding ({null_label + 1} rows × {emb})", "cond", width=2.5)
    _box(ax, 4.3, 1.45, f"c(t, y) = SiLU(sum), {emb} values\n→ scale & shift in every ResBlock", "cond", width=3.0, height=0.7)
    _arrow(ax, (3.05, 2.75 - h / 2), (3.7, 1.45 + 0.35), color="#2e7d32")
    _arrow(ax, (5.55, 2.75 - h / 2), (4.9, 1.45 + 0.35), color="#2e7d32")


def _draw_paths(ax, layout: dict) -> None:
    """The down path, the middle along the bottom, the up path, and the skip connections across."""
    by_name, row_y, down, up, bottom = (layout[k] for k in ("by_name", "row_y", "down", "up", "bottom"))

    def kind(name):
        return "res" if "block" in name else "attn" if "attention" in name else "conv"

    def label(name):
        return f"{name} · {_size(by_name[name])}\n{by_name[name]['what']}"

    for path, x, sign in ((down, LEFT, -1), (up, RIGHT, 1)):
        for name in path:
            _box(ax, x, row_y[name], label(name), kind(name))
        for a, b in zip(path, path[1:]):
            _arrow(ax, (x, row_y[a] + sign * HEIGHT / 2), (x, row_y[b] - sign * HEIGHT / 2))
    mid_x = np.linspace(LEFT + 1.3, RIGHT - 1.3, len(layout["middle"]))
    for x, name in zip(mid_x, layout["middle"]):
        _box(ax, x, bottom, label(name), kind(name), width=2.5)
    _arrow(ax, (LEFT, row_y[down[-1]] - HEIGHT / 2), (mid_x[0] - 0.6, bottom + HEIGHT / 2))
    for x_a, x_b in zip(mid_x, mid_x[1:]):
        _arrow(ax, (x_a + 1.25, bottom), (x_b - 1.25, bottom))
    _arrow(ax, (mid_x[-1] + 0.6, bottom + HEIGHT / 2), (RIGHT, row_y[up[0]] - HEIGHT / 2))
    for up_name, down_name in layout["skip_of"].items():
        _arrow(ax, (LEFT + WIDTH / 2, row_y[down_name]), (RIGHT - WIDTH / 2, row_y[up_name]), color="#888888", ls="--",
               text=f"skip: concatenate {by_name[down_name]['shape'][1]} channels")


def draw_unet_diagram(records: list[dict], base_channels: int, null_label: int, title: str):
    """The UNet as a diagram from :func:`record_block_shapes` records; returns the figure (02-unet)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    layout = diagram_layout(records)
    bottom = layout["bottom"]
    fig, ax = plt.subplots(figsize=(12, 0.75 * (3.5 - bottom) + 0.5))
    _draw_top(ax, layout, base_channels, null_label)
    _draw_paths(ax, layout)
    for level, resolution in enumerate(layout["resolutions"]):  # level labels on the left
        names = [n for n in layout["down"] if layout["level"][n] == level]
        width = max(layout["by_name"][n]["shape"][1] for n in names)
        ax.text(LEFT - WIDTH / 2 - 0.25, np.mean([layout["row_y"][n] for n in names]),
                f"level {level}\n{resolution}×{resolution}\n{width} channels", ha="right", va="center", fontsize=8,
                fontweight="bold")
    ax.legend(handles=[Patch(facecolor=COLORS[k], edgecolor="#555555", label=t) for k, t in
                       [("res", "residual block, conditioned on c(t, y)"), ("attn", "self-attention"),
                        ("conv", "convolution"), ("cond", "conditioning"), ("io", "input / output")]],
              loc="lower center", bbox_to_anchor=(0.5, -0.02 - 0.35 / (3.5 - bottom)), ncol=5, fontsize=8, frameon=False)
    ax.set(xlim=(LEFT - WIDTH / 2 - 1.6, RIGHT + WIDTH / 2 + 0.2), ylim=(bottom - 0.6, 3.2))
    ax.set_axis_off()
    ax.set_title(title, fontsize=11)
    return fig
