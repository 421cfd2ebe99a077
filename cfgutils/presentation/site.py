"""A static HTML site of the executed notebook series, readable without running anything (``python -m cfgutils site``).

``collect_pages`` finds the executed notebooks with their titles and descriptions; ``render_page`` turns one into
a page with nbconvert's ``lab`` template (no script fetched from the web, a navigation bar, notebook 04's slider
as a static strip of its cached frames); ``write_index`` writes the table of contents with headline figures;
``build_site`` does all of it. Every image a page shows is embedded in it or copied into the site folder.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserInputError
from ..plumbing import paths
from ..workflows.notebooks import NOTEBOOKS
from .explorer import render_slider_strip

SITE_DIR_NAME = "site"
SITE_FIGURES = "figures"
#: the committed figures the index shows (from figures/, else the run's figures/), with their captions
HEADLINE_FIGURES = (
    ("readme-digit3-guidance.png", "The digit 3 at increasing guidance scales (notebook 04)."),
    ("05-classifier-eval-accuracy.png", "Accuracy by guidance weight, beside the reference study (notebook 05)."),
    ("06-guidance-variants-frontier.png", "Four fixes for high guidance weights beside plain CFG, as curves: "
                                          "precision against recall, KID and Fréchet distance against the intended "
                                          "class's log-probability (notebook 06)."),
    ("07-ablations-reproduction.png", "The reference study rebuilt: accuracy by weight, its samples scored as "
                                      "published, clamped, and by our classifier (notebook 07)."),
    ("08-newer-guidance-frontier.png", "Autoguidance, CFG++, ICG, schedules and CFG-Zero* beside plain CFG, as "
                                       "curves with 95% bands (notebook 08)."),
    ("09-guidance-toy-cfg-vs-tilted.png", "With exact scores, CFG's samples beside the tilted distribution "
                                          "p(x|c)^s p(x)^(1-s) it is often said to sample (notebook 09)."),
)
#: how a notebook's markdown embeds a committed figure (relative to notebooks/)
EMBEDDED_PREFIX = "](../figures/"
SLIDER_NOTEBOOK = "04-cfg-sampling"
SLIDER_STRIP = "04-cfg-sampling-slider-strip.png"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

#: nbconvert's lab template without the scripts it would fetch from a CDN (require.js, MathJax, mermaid,
#: the widget manager), plus the navigation bar above and below each notebook; exercise solutions start collapsed
PAGE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}<style type="text/css">{{ resources.site_css }}</style>{%- endblock extra_css -%}
{%- block body_header -%}{{ super() }}{{ resources.site_nav }}{%- endblock body_header -%}
{%- block body_footer -%}{{ resources.site_nav }}{{ super() }}{%- endblock body_footer -%}
{%- block input_group -%}
{%- if 'solution' in cell.metadata.get('tags', []) -%}
<details class="site-solution"><summary>Solution: show the code</summary>{{ super() }}</details>
{%- else -%}{{ super() }}{%- endif -%}
{%- endblock input_group -%}
"""
NAV_CSS = """
nav.site-nav { display: flex; gap: 1.5em; flex-wrap: wrap; padding: 10px 16px; margin: 0 0 8px 0;
  font-family: var(--jp-ui-font-family, sans-serif); font-size: 14px; background: #f5f5f5;
  border-bottom: 1px solid #ddd; }
nav.site-nav a { text-decoration: none; color: #1565c0; }
nav.site-nav span.disabled { color: #999; }
.site-note { font-style: italic; color: #555; }
details.site-solution > summary { cursor: pointer; color: #1565c0; padding: 4px 16px; font-size: 14px; }
"""
INDEX_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 980px; margin: 0 auto;
  padding: 24px; color: #222; line-height: 1.5; }
h1 { font-size: 1.8em; margin-bottom: 0.2em; }
ol.toc li { margin: 0.6em 0; }
ol.toc a { font-weight: 600; color: #1565c0; text-decoration: none; }
code { background: #f2f2f2; padding: 0 3px; border-radius: 3px; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.95em; }
"""


@dataclass(frozen=True)
class Page:
    """One executed notebook of the series and what the index says about it."""

    name: str
    notebook: Path
    title: str
    description: str

    @property
    def filename(self) -> str:
        """The page's file name in the site, ``NN-name.html``."""
        return f"{self.name}.html"


def readme_descriptions(readme: Path = paths.REPO_ROOT / "README.md") -> dict[str, str]:
    """Each notebook's one-line description from the README's notebook table (``| `01-data` | ... |``)."""
    if not readme.is_file():
        return {}
    pattern = re.compile(r"^\|\s*`(\d\d-[\w-]+)`\s*\|\s*(.+?)\s*\|\s*$", re.MULTILINE)
    return {match.group(1): match.group(2) for match in pattern.finditer(readme.read_text(encoding="utf-8"))}


def title_and_intro(notebook) -> tuple[str, str]:
    """A notebook's first markdown heading and the first paragraph after it ("" where there is none)."""
    for cell in notebook.cells:
        if cell.cell_type != "markdown":
            continue
        lines = cell.source.splitlines()
        for index, line in enumerate(lines):
            if line.startswith("#"):
                paragraph = "\n".join(lines[index + 1:]).strip().split("\n\n")[0]
                return line.lstrip("#").strip(), " ".join(paragraph.split())
    return "", ""


def collect_pages(run_dir: str | Path) -> list[Page]:
    """The executed notebooks of the series in ``run_dir`` (``NN-name.ipynb``), in order, with title and description."""
    import nbformat

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserInputError(f"{run_dir} is not a folder of executed notebooks: run `python -m cfgutils notebooks` "
                             "first, or leave out --reuse")
    descriptions = readme_descriptions()
    pages = []
    for name in NOTEBOOKS:
        path = run_dir / f"{name}.ipynb"
        if path.is_file():
            title, intro = title_and_intro(nbformat.read(path, as_version=4))
            pages.append(Page(name, path, title or name, descriptions.get(name) or intro))
    if not pages:
        raise UserInputError(f"no executed notebooks ({NOTEBOOKS[0]}.ipynb, ...) in {run_dir}: run "
                             "`python -m cfgutils notebooks` first, or leave out --reuse")
    return pages


def inline_markdown(text: str) -> str:
    """HTML for one line of markdown: escaped, with `code` and **bold**; links keep their text only."""
    out = html.escape(text, quote=False)
    out = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", out)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def nav_bar(pages: list[Page], index: int) -> str:
    """The navigation bar of page ``index``: the index, the previous and the next notebook (relative links)."""
    def link(position: int, arrow: str) -> str:
        if not 0 <= position < len(pages):
            return f'<span class="disabled">{arrow}</span>'
        page = pages[position]
        text = f"← {page.title}" if arrow == "←" else f"{page.title} →"
        return f'<a href="{page.filename}" rel="{"prev" if arrow == "←" else "next"}">{html.escape(text)}</a>'

    return (f'<nav class="site-nav"><a href="index.html" rel="index">Index</a>{link(index - 1, "←")}'
            f'{link(index + 1, "→")}</nav>')


def static_widget_html(strip_src: str | None) -> str:
    """What a page shows in place of an interactive widget: a note, and the slider's strip if there is one."""
    if strip_src is None:
        return '<p class="site-note">An interactive widget was here; it needs a running kernel (jupyter lab).</p>'
    return ('<p class="site-note">The guidance slider needs a running kernel (jupyter lab). Here are its cached '
            'frames instead, one row per slider position:</p>'
            f'<img src="{html.escape(strip_src)}" alt="every slider position: the cached samples at each guidance '
            'scale">')


def site_notebook(page: Page, pages: list[Page], strip_src: str | None = None):
    """A copy of the page's notebook ready for a static page: links between notebooks go to their pages, widgets
    become static (notebook 04's slider becomes ``strip_src``), no widget state that would load a script."""
    import nbformat

    notebook = nbformat.read(page.notebook, as_version=4)
    notebook.metadata.pop("widgets", None)
    notebook.metadata["title"] = f"{page.title} · cfgutils"
    replaced = 0
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for other in pages:
                cell.source = cell.source.replace(f"]({other.name}.ipynb", f"]({other.filename}")
            cell.source = cell.source.replace(EMBEDDED_PREFIX, f"]({SITE_FIGURES}/")  # committed figures, copied
        for position, output in enumerate(cell.get("outputs", [])):
            if WIDGET_MIME in output.get("data", {}):
                cell.outputs[position] = nbformat.v4.new_output(
                    "display_data", data={"text/html": static_widget_html(strip_src)})
                replaced += 1
    if strip_src is not None and not replaced:
        notebook.cells.append(nbformat.v4.new_markdown_cell(static_widget_html(strip_src)))
    return notebook


def render_page(page: Page, pages: list[Page], strip_src: str | None = None) -> str:
    """The HTML of one notebook page (nbconvert's lab template, outputs embedded, navigation bar, works offline)."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", template_file="cfgutils-site.html.j2",
                            extra_loaders=[DictLoader({"cfgutils-site.html.j2": PAGE_TEMPLATE})])
    position = [other.name for other in pages].index(page.name)
    resources = {"site_nav": nav_bar(pages, position), "site_css": NAV_CSS}
    body, _ = exporter.from_notebook_node(site_notebook(page, pages, strip_src), resources=resources)
    return body


def copy_headline_figures(site_dir: Path, run_dir: Path) -> list[tuple[str, str]]:
    """Copy the index's figures into ``site_dir/figures/`` (the committed ones, else the run's); (src, caption) pairs."""
    copied = []
    for name, caption in HEADLINE_FIGURES:
        source = next((folder / name for folder in (paths.FIGURES_DIR, run_dir / "figures")
                       if (folder / name).is_file()), None)
        if source is not None:
            shutil.copyfile(source, site_dir / SITE_FIGURES / name)
            copied.append((f"{SITE_FIGURES}/{name}", caption))
    return copied


def copy_embedded_figures(site_dir: Path, pages: list[Page]) -> int:
    """Copy the committed figures that the notebooks' markdown embeds into ``site_dir/figures/``; how many."""
    import re

    import nbformat

    names = {name for page in pages for cell in nbformat.read(page.notebook, as_version=4).cells
             if cell.cell_type == "markdown" for name in re.findall(re.escape(EMBEDDED_PREFIX) + r"([^)]+)\)", cell.source)}
    for name in names:
        if (paths.FIGURES_DIR / name).is_file():
            shutil.copyfile(paths.FIGURES_DIR / name, site_dir / SITE_FIGURES / name)
    return len(names)


def recorded_slider_strip(run_dir: Path) -> Path | None:
    """The strip of slider frames notebook 04 recorded in its ``summary.json`` (``slider_strip``), if it exists."""
    summary = run_dir / SLIDER_NOTEBOOK / "summary.json"
    if not summary.is_file():
        return None
    recorded = json.loads(summary.read_text()).get("slider_strip")
    return Path(recorded) if recorded and Path(recorded).is_file() else None


def write_slider_strip(run_dir: Path, site_dir: Path) -> str:
    """Put notebook 04's slider strip into the site (the recorded one, else drawn with the library); its src."""
    strip_path = site_dir / SITE_FIGURES / SLIDER_STRIP
    recorded = recorded_slider_strip(run_dir)
    if recorded is not None:
        shutil.copyfile(recorded, strip_path)
        print(f"   slider strip: {recorded} (recorded by {SLIDER_NOTEBOOK})")
    else:
        print(f"   slider strip: none recorded in {run_dir / SLIDER_NOTEBOOK}, sampling one with the library ...")
        strip_path.write_bytes(render_slider_strip())
    return f"{SITE_FIGURES}/{SLIDER_STRIP}"


def index_html(pages: list[Page], figures: list[tuple[str, str]]) -> str:
    """The site's index page: the series' table of contents and the headline figures."""
    toc = "\n".join(f'<li><a href="{page.filename}">{html.escape(page.title)}</a><br>{inline_markdown(page.description)}'
                    f"</li>" for page in pages)
    gallery = "\n".join(f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}">'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>" for src, caption in figures)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>Classifier-free guidance on MNIST, hands-on · cfgutils</title>
<style>{INDEX_CSS}</style>
</head>
<body>
<h1>Classifier-free guidance on MNIST, hands-on</h1>
<p>A series of notebooks that builds classifier-free guidance on MNIST from the ground up: the data, a
class-conditional UNet, training, guided sampling, measuring what guidance does, and the fixes for high scales.
Every page below is an executed notebook with all its outputs, readable without running anything.</p>
<h2>The notebooks</h2>
<ol class="toc">
{toc}
</ol>
<h2>Headline figures</h2>
{gallery}
</body>
</html>
"""


def build_site(run_dir: str | Path, site_dir: str | Path | None = None) -> Path:
    """Build the site from the executed notebooks in ``run_dir`` into ``site_dir`` (default ``run_dir/site/``).

    Writes ``index.html``, one ``NN-name.html`` per notebook and ``figures/``; returns the index's path.
    """
    run_dir = Path(run_dir).resolve()
    pages = collect_pages(run_dir)
    site_dir = Path(site_dir).resolve() if site_dir is not None else run_dir / SITE_DIR_NAME
    (site_dir / SITE_FIGURES).mkdir(parents=True, exist_ok=True)
    print(f"== site from {len(pages)} executed notebooks in {run_dir}", flush=True)
    for page in pages:
        strip_src = write_slider_strip(run_dir, site_dir) if page.name == SLIDER_NOTEBOOK else None
        (site_dir / page.filename).write_text(render_page(page, pages, strip_src), encoding="utf-8")
        print(f"   {page.filename}: {page.title}", flush=True)
    copy_embedded_figures(site_dir, pages)
    figures = copy_headline_figures(site_dir, run_dir)
    index = site_dir / "index.html"
    index.write_text(index_html(pages, figures), encoding="utf-8")
    print(f"   index.html: table of contents and {len(figures)} headline figures")
    print(f"Site: {index} (open it in a browser; every page and image is in {site_dir})")
    return index
