"""The executed notebook series as a book (``python -m cfgutils site``): Jupyter Book 1.x, built offline.

``collect_pages`` finds the executed notebooks with their titles and descriptions; ``stage_book`` copies them,
ready for a page without a kernel, beside the book's configuration (``docs/book/_config.yml``, ``docs/book/_toc.yml``) and
an introduction taken from the README's opening; ``build_book`` runs Jupyter Book on that folder (nothing is
executed: the pages show the run's outputs) and puts the HTML in ``OUT/site/``. MathJax is served by the site
itself (the ``sphinx-mathjax-offline`` wheel), search is Sphinx's own, and notebook 04's slider is the
kernel-free one the notebook displays (:func:`cfgutils.presentation.explorer.static_slider_html`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserInputError
from ..plumbing import paths
from ..workflows.notebooks import NOTEBOOKS

BOOK_CONFIG_DIR = paths.REPO_ROOT / "docs" / "book"  # _config.yml and _toc.yml
SITE_DIR_NAME = "site"
SOURCE_DIR_NAME = "book-source"  # the staged book: notebooks, figures, intro.md and the configuration
FIGURES = "figures"
#: how a notebook's markdown embeds a committed figure (relative to notebooks/)
EMBEDDED_PREFIX = "](../figures/"
#: a committed figure the staged book shows (its file name), in the introduction or in a notebook's markdown
STAGED_FIGURE = re.compile(r"\]\(" + FIGURES + r"/([^)]+)\)")
#: what the build needs (the `site` extra): package -> module
BUILD_PACKAGES = {"jupyter-book": "jupyter_book", "sphinx-mathjax-offline": "sphinx-mathjax-offline"}
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = ('<p class="cfg-widget-note"><em>An interactive widget is here when the notebook runs in Jupyter; '
               "on this page it needs a kernel. Where the notebook offers a kernel-free copy (the guidance slider), "
               "it follows.</em></p>")


@dataclass(frozen=True)
class Page:
    """One executed notebook of the series and what the introduction says about it."""

    name: str
    notebook: Path
    title: str
    description: str


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


def book_notebook(page: Page):
    """A copy of the page's notebook ready for a page without a kernel: committed figures from the book's
    ``figures/``, every interactive widget replaced by a note (its kernel-free copy, where the notebook shows one,
    stays), no widget state (which would load a widget manager from the web), exercise solutions collapsed."""
    import nbformat

    notebook = nbformat.read(page.notebook, as_version=4)
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            cell.source = cell.source.replace(EMBEDDED_PREFIX, f"]({FIGURES}/")
        if "solution" in cell.metadata.get("tags", []):  # an exercise's solution starts collapsed
            cell.metadata["tags"] = [*cell.metadata["tags"], "hide-input"]
        for position, output in enumerate(cell.get("outputs", [])):
            if WIDGET_MIME in output.get("data", {}):
                cell.outputs[position] = nbformat.v4.new_output("display_data", data={"text/html": WIDGET_NOTE})
    return notebook


def intro_markdown(pages: list[Page], readme: Path = paths.REPO_ROOT / "README.md") -> str:
    """The book's first page: the README's opening (up to its first section), then the chapters with their
    descriptions. Links to repository files keep their text only (the book holds the notebooks, not the
    repository); the README's picture stays."""
    text = readme.read_text(encoding="utf-8")
    opening = text.split("\n## ", 1)[0]
    opening = re.sub(r'<img src="([^"]+)"[^>]*?alt="([^"]*)"[^>]*>', r"![\2](\1)", opening)
    opening = re.sub(r"(?<!!)\[([^\]]+)\]\((?!https?://)[^)]*\)", r"\1", opening)  # repository links: text only
    chapters = "\n".join(f"1. [{page.title}]({page.name}.ipynb): {page.description}" for page in pages)
    run = ("Every page is an executed notebook with its outputs, readable without running anything. To run them "
           "yourself: `pip install -e \".[notebooks]\"`, then `jupyter lab notebooks/`.")
    return f"{opening.rstrip()}\n\n## The chapters\n\n{run}\n\n{chapters}\n"


def stage_book(run_dir: Path, source_dir: Path) -> list[Page]:
    """Write the book's sources into ``source_dir`` (made afresh): configuration, introduction, notebooks and
    the committed figures they show."""
    import nbformat

    pages = collect_pages(run_dir)
    shutil.rmtree(source_dir, ignore_errors=True)
    (source_dir / FIGURES).mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copyfile(BOOK_CONFIG_DIR / name, source_dir / name)
    intro = intro_markdown(pages)
    (source_dir / "intro.md").write_text(intro, encoding="utf-8")
    shown = [intro]
    for page in pages:
        notebook = book_notebook(page)
        nbformat.write(notebook, source_dir / f"{page.name}.ipynb")
        shown += [cell.source for cell in notebook.cells if cell.cell_type == "markdown"]
    for name in sorted({name for text in shown for name in STAGED_FIGURE.findall(text)}):
        if (paths.FIGURES_DIR / name).is_file():
            shutil.copyfile(paths.FIGURES_DIR / name, source_dir / FIGURES / name)
    return pages


def require_build_tools() -> None:
    """A one-line error when the packages that build the book (the ``site`` extra) are not installed."""
    import importlib.util

    missing = [name for name, module in BUILD_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise UserInputError(f"the book needs {' and '.join(missing)}: pip install -e \".[site]\"")


def build_book(run_dir: str | Path, site_dir: str | Path | None = None) -> Path:
    """Build the book from the executed notebooks in ``run_dir`` into ``site_dir`` (default ``run_dir/site/``);
    returns the path of its first page, ``index.html``."""
    require_build_tools()
    run_dir = Path(run_dir).resolve()
    site_dir = Path(site_dir).resolve() if site_dir is not None else run_dir / SITE_DIR_NAME
    source_dir = run_dir / SOURCE_DIR_NAME
    start = time.perf_counter()
    pages = stage_book(run_dir, source_dir)
    print(f"== book from {len(pages)} executed notebooks in {run_dir}", flush=True)
    build = subprocess.run([sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build",
                            "--all", "--quiet", str(source_dir)], capture_output=True, text=True)
    html = source_dir / "_build" / "html"
    if build.returncode != 0 or not (html / "index.html").is_file():
        raise RuntimeError(f"jupyter-book build failed:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}")
    shutil.rmtree(site_dir, ignore_errors=True)
    shutil.copytree(html, site_dir)
    for page in pages:
        print(f"   {page.name}.html: {page.title}", flush=True)
    index = site_dir / "index.html"
    print(f"Book: {index} ({len(pages)} chapters and the introduction, built in {time.perf_counter() - start:.0f} s; "
          f"open it in a browser, or serve the folder: python -m http.server -d {site_dir})")
    return index
