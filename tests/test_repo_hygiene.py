"""What the repository must satisfy: notebooks without outputs, one parameters cell, a CI parameter file; the
library's layers."""

from __future__ import annotations

import ast

import nbformat
import pytest
import yaml

from cfgutils.plumbing import paths
from cfgutils.workflows import notebooks

NOTEBOOK_FILES = sorted(paths.NOTEBOOKS_DIR.glob("*.ipynb"))


def read(path):
    return nbformat.read(path, as_version=4)


def parameters_cells(nb):
    return [cell for cell in nb.cells if "parameters" in cell.get("metadata", {}).get("tags", [])]


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_notebook_has_no_outputs(path):
    dirty = [i for i, cell in enumerate(read(path).cells)
             if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs or execution counts; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_notebook_has_one_parameters_cell(path):
    cells = parameters_cells(read(path))
    assert len(cells) == 1, f"{path.name}: {len(cells)} cells tagged 'parameters', papermill needs exactly one"
    assert cells[0].cell_type == "code"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_every_code_cell_follows_a_sentence(path):
    """A reader is told what a cell will show before it runs: a markdown cell with prose, not only a heading."""
    cells = nbformat.read(path, as_version=4).cells
    for index, cell in enumerate(cells):
        if cell.cell_type != "code":
            continue
        previous = cells[index - 1] if index else None
        assert previous is not None and previous.cell_type == "markdown", f"code cell {index} has no prose before it"
        prose = [line for line in previous.source.splitlines() if line.strip() and not line.startswith("#")]
        assert prose, f"code cell {index} follows a bare heading: {previous.source.strip()!r}"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_notebook_shows_committed_figures_before_it_runs(path):
    """On a code host a notebook without outputs still shows pictures: its markdown embeds committed figures."""
    import re

    links = [link for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "markdown"
             for link in re.findall(r"!\[[^\]]*\]\((\.\./figures/[^)]+)\)", cell.source)]
    assert links, f"{path.name} embeds no figure from figures/"
    for link in links:
        assert (path.parent / link).resolve().is_file(), f"{path.name} links a missing figure: {link}"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_notebook_ends_with_exercises_and_checked_solutions(path):
    """2-4 exercises, each with a collapsed solution cell that asserts its answer (the notebook runs execute them)."""
    cells = nbformat.read(path, as_version=4).cells
    solutions = [cell for cell in cells if "solution" in cell.metadata.get("tags", [])]
    assert 2 <= len(solutions) <= 4, f"{path.name} has {len(solutions)} exercise solutions"
    for cell in solutions:
        assert cell.cell_type == "code" and "assert " in cell.source
        assert cell.metadata.get("jupyter", {}).get("source_hidden") is True, "solutions start collapsed"


@pytest.mark.parametrize("name", notebooks.available_notebooks())
def test_notebook_has_ci_parameters(name):
    params_file = paths.NOTEBOOKS_DIR / "params" / f"ci-{name.split('-')[0]}.yaml"
    assert params_file.is_file(), f"{name}: missing {params_file.relative_to(paths.REPO_ROOT)}"
    values = yaml.safe_load(params_file.read_text()) or {}
    assert isinstance(values, dict)
    # papermill injects unknown names silently, so a typo would go unnoticed: every key must be a parameter
    cell = parameters_cells(read(paths.NOTEBOOKS_DIR / f"{name}.ipynb"))[0]
    defined = {target.id for node in ast.walk(ast.parse(cell.source)) if isinstance(node, (ast.Assign, ast.AnnAssign))
               for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
               if isinstance(target, ast.Name)}
    unknown = sorted(set(values) - defined)
    assert not unknown, f"{params_file.name} sets {unknown}, which are not in {name}'s parameters cell"


def test_repository_root_holds_the_series():
    """Paths resolve from the repository root, wherever the library's modules sit inside cfgutils/."""
    assert (paths.REPO_ROOT / "cfgutils" / "__init__.py").is_file()
    assert (paths.NOTEBOOKS_DIR / "01-data.ipynb").is_file() and paths.PRETRAINED_MODEL.is_file()


def test_import_layers_are_kept():
    """The layer contracts in pyproject.toml hold (import-linter); an upward import fails this test."""
    import shutil
    import subprocess

    command = shutil.which("lint-imports")
    assert command, "import-linter is in the test extra: pip install -e '.[test]'"
    result = subprocess.run([command, "--no-cache"], capture_output=True, text=True, cwd=paths.REPO_ROOT, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "broken" in result.stdout and " 0 broken" in result.stdout


def test_functions_stay_short():
    """Every function of the library fits on a screen; the training step and loop stay readable."""
    lengths = {}
    for path in sorted((paths.REPO_ROOT / "cfgutils").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lengths[f"{path.relative_to(paths.REPO_ROOT)}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert {name: n for name, n in lengths.items() if n > 60} == {}
    assert lengths["cfgutils/workflows/train.py:training_step"] <= 15
    assert lengths["cfgutils/workflows/train.py:train"] <= 40


def shown_targets(source: str) -> tuple[dict, list]:
    """(name -> module of every ``from cfgutils... import`` in ``source``, the expressions passed to
    ``show_source``), read with ``ast`` so parenthesised and multi-line imports count; a loop variable that is
    passed (``for step in (a, b): show_source(step)``) is replaced by the names it loops over."""
    tree = ast.parse(source)
    imported = {alias.asname or alias.name: node.module for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cfgutils")
                for alias in node.names}
    loops = {node.target.id: [ast.unparse(e) for e in getattr(node.iter, "elts", [node.iter])]
             for node in ast.walk(tree) if isinstance(node, ast.For) and isinstance(node.target, ast.Name)}
    shown = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "show_source" and node.args:
            expression = ast.unparse(node.args[0])
            shown += loops.get(expression, [expression])
    return imported, shown


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_every_shown_function_exists_in_the_library(path):
    """``show_source(X)`` reads the library's own code: X must be imported from cfgutils and still exist there."""
    import importlib

    source = "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code")
    imported, shown = shown_targets(source)
    for expression in shown:
        head, *rest = expression.split(".")
        assert head in imported, f"show_source({expression}): {head} is not imported from cfgutils"
        target = getattr(importlib.import_module(imported[head]), head)
        for attribute in rest:
            target = getattr(target, attribute)
        assert callable(target), expression
    assert "show_source" not in source or imported.get("show_source") == "cfgutils.presentation.source"


def test_shown_targets_read_parenthesised_imports_and_loops():
    imported, shown = shown_targets("from cfgutils.a import (x,\n    y as z)\nfor f in (x, z.w):\n    show_source(f)\n"
                                    "show_source(q)\n")
    assert imported == {"x": "cfgutils.a", "z": "cfgutils.a"} and sorted(shown) == ["q", "x", "z.w"]


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and the site) gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    import re

    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def document_text(path) -> str:
    """A Markdown file's text, or the Markdown cells of a notebook."""
    if path.suffix == ".ipynb":
        return "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    return path.read_text()


README = paths.REPO_ROOT / "README.md"
DOCUMENTS = [paths.REPO_ROOT / name for name in ("README.md", "RESULTS.md", "benchmarks/README.md",
                                                 "data/pretrained/README.md")] \
    + sorted((paths.REPO_ROOT / "docs").glob("*.md")) + NOTEBOOK_FILES


def relative_links(text: str) -> list[str]:
    """The targets of a document's Markdown links and images, ``[text](target)``, and of its HTML ``<img src>``."""
    import re

    return re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"<img\b[^>]*\bsrc=\"([^\"]+)\"", text)


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(paths.REPO_ROOT)))
def test_every_relative_link_resolves(path):
    """Every relative link of the READMEs, RESULTS.md, docs/ and the notebooks names a file that exists, and its
    #anchor a heading there."""
    import re

    broken = []
    for target in relative_links(document_text(path)):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        name, _, anchor = target.partition("#")
        linked = (path.parent / name).resolve() if name else path
        if not linked.exists():
            broken.append(target)
        elif path.suffix == ".ipynb" and linked.parent.name not in ("figures", "notebooks"):
            broken.append(f"{target} (the site publishes only the notebooks and figures/)")
        elif anchor and anchor not in {github_anchor(h) for h in
                                       re.findall(r"^#+ (.+)$", document_text(linked), flags=re.M)}:
            broken.append(target)
    assert broken == []


def test_github_anchor():
    assert github_anchor("A second dataset: Fashion-MNIST") == "a-second-dataset-fashion-mnist"
    assert github_anchor("Why the reference study's accuracy collapsed (notebook 07)") == \
        "why-the-reference-studys-accuracy-collapsed-notebook-07"


def test_relative_links_include_html_images():
    assert relative_links('![a](x.png) [b](y.md#z) <img src="f.png" width="49%" alt="c">') == ["x.png", "y.md#z", "f.png"]


def test_readme_is_a_landing_page():
    """The README fits on one screen, opens the notebooks in JupyterLab before it mentions headless runs, and
    leaves the result tables to RESULTS.md and the reference to docs/usage.md."""
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 70, f"README.md has {len(text.splitlines())} lines; the rest goes to docs/usage.md"
    assert "jupyter lab" in text and "papermill" in text
    assert text.index("jupyter lab") < text.index("papermill"), "JupyterLab is the main way in: it comes first"
    assert "](RESULTS.md" in text


def test_readme_describes_every_notebook_for_the_book():
    """The book's introduction takes each notebook's one-line description from the README's notebook table."""
    from cfgutils.presentation.book import readme_descriptions
    from cfgutils.workflows.notebooks import NOTEBOOKS

    descriptions = readme_descriptions(README)
    assert sorted(descriptions) == sorted(NOTEBOOKS)
    assert all(descriptions.values())


def code_lines(source: str) -> list[str]:
    """The lines of a code cell that do something: not blank, not a comment."""
    return [line for line in source.splitlines() if line.strip() and not line.strip().startswith("#")]


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_plumbing_is_under_a_seventh_of_a_notebooks_code(path):
    """Imports, the setup cell, the hidden record and lines naming folders stay below 15% of a notebook's code
    lines (counted by benchmarks/plumbing_share.py, which prints the table for every notebook)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("plumbing_share", paths.BENCHMARKS_DIR / "plumbing_share.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found = module.count(read(path).cells)
    assert found["plumbing"] < 0.15 * found["code"], found


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_one_short_setup_call_and_a_hidden_record(path):
    """Plumbing stays off the page: one setup cell of at most six code lines, right after the parameters, and
    the record for the tests in the last cell, tagged and collapsed."""
    cells = read(path).cells
    code = [index for index, cell in enumerate(cells) if cell.cell_type == "code"]
    setups = [index for index in code if "setup(" in cells[index].source and "chapter" in cells[index].source]
    assert len(setups) == 1, f"{path.name}: {len(setups)} setup cells"
    assert len(code_lines(cells[setups[0]].source)) <= 6, f"{path.name}: the setup cell is longer than six lines"
    assert "parameters" in cells[code[code.index(setups[0]) - 1]].metadata.get("tags", [])
    last = cells[code[-1]]
    assert code[-1] == len(cells) - 1 and "write_summary(" in last.source
    assert {"recording", "remove-cell"} <= set(last.metadata.get("tags", []))
    assert last.metadata.get("jupyter", {}).get("source_hidden") is True
    assert not [index for index in code[:-1] if "write_summary(" in cells[index].source or
                "summary.json" in cells[index].source], f"{path.name} records outside its last cell"


#: numbers a chapter may write in its prose: recipe constants (label dropout, EMA decay, the toy's mixture)
PROSE_CONSTANTS = {"0.1", "0.3", "0.5", "0.9", "0.999"}


def typed_numbers(markdown: str) -> list[str]:
    """Decimal numbers in prose, outside code spans, math, link targets and arXiv identifiers."""
    import re

    text = re.sub(r"\]\([^)]*\)", "]", markdown)
    text = re.sub(r"`[^`]*`", "", text)
    text = re.sub(r"\$\$.*?\$\$|\$[^$]*\$", "", text, flags=re.S)
    text = re.sub(r"arXiv[: ]\d{4}\.\d{4,5}", "", text)
    return [number for number in re.findall(r"(?<![\w.])\d*\.\d+", text) if number not in PROSE_CONSTANTS]


def test_typed_numbers_are_found():
    assert typed_numbers("accuracy 0.985 [0.973, 0.992] with p = 0.1, `n = 0.25`, $w = 2.5$") == [
        "0.985", "0.973", "0.992"]
    assert typed_numbers("see [x](../figures/a-0.5.png) and arXiv:2207.12598; torch") == []


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.name)
def test_no_result_is_typed_into_the_prose(path):
    """A measured number reaches the prose through computed output (Markdown of the run's values), never typed."""
    typed = [(index, typed_numbers(cell.source)) for index, cell in enumerate(read(path).cells)
             if cell.cell_type == "markdown" and typed_numbers(cell.source)]
    assert not typed, f"{path.name}: numbers typed into markdown cells (index, numbers): {typed}"


DOCUMENTS = [paths.REPO_ROOT / name for name in ("README.md", "RESULTS.md", "benchmarks/README.md",
                                                 "data/pretrained/README.md")] + sorted((paths.REPO_ROOT / "docs").glob("*.md"))


def test_quoted_parameter_counts_are_those_of_a_shipped_network_or_a_preset():
    """Every "N parameters" in the documents and notebooks is the count of a shipped checkpoint or of a training
    preset's network, counted here from the code."""
    import re

    from cfgutils.core.unet import count_parameters
    from cfgutils.plumbing.checkpoint import load_model
    from cfgutils.plumbing.config import default_config
    from cfgutils.workflows.classifier import load_classifier
    from cfgutils.workflows.train import build_model

    texts = [path.read_text(encoding="utf-8") for path in DOCUMENTS + NOTEBOOK_FILES]
    quoted = {int(n.replace(",", "")) for text in texts for n in re.findall(r"(\d{1,3}(?:,\d{3})+) parameters", text)}
    counts = {count_parameters(build_model(default_config(preset), 0)) for preset in ("default", "reference",
                                                                                      "reference-recipe")}
    for path in sorted(paths.PRETRAINED_DIR.rglob("*.pt")):
        loaded = load_classifier(path, "cpu") if "classifier" in path.name else load_model(path, "cpu")
        counts.add(count_parameters(loaded.model))
    assert len(quoted) >= 5 and quoted <= counts, f"quoted but no network has them: {sorted(quoted - counts)}"
