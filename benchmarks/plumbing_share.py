"""How much of each notebook's code is plumbing: ``python benchmarks/plumbing_share.py [GIT_REVISION]``.

Counts the code lines of every notebook in notebooks/ (not blank, not a comment; the parameters cell left out of
the plumbing) and, of them, the plumbing: import lines, the setup cell (the one that calls ``setup(``), the
hidden record cell (tagged ``recording``; in older notebooks the cell that built ``summary = {...}`` and the
one that made the output folders), and the lines that name folders or paths (``output_dir``, ``paths.``,
``figure_path(``, ``summary.json``, ``figures_dir``). Figure saving (one ``chapter.save`` line per figure) is
reported apart. With a git revision, the notebooks as they were at that commit. tests/test_repo_hygiene.py keeps
every notebook's share below 15%.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PATH_WORDS = ("output_dir", "paths.", "figure_path(", "summary.json", "figures_dir")
SAVE_WORDS = ("chapter.save(", "save_figure(", "figures.append")


def count(cells: list[dict]) -> dict[str, int]:
    """Code lines and, of them, imports, setup, record, path and figure-saving lines of a notebook's cells."""
    found = dict.fromkeys(("code", "imports", "setup", "record", "paths", "saves"), 0)
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        lines = [(n, line) for n, line in enumerate(source.splitlines(), 1)
                 if line.strip() and not line.strip().startswith("#")]
        found["code"] += len(lines)
        tags = cell.get("metadata", {}).get("tags", [])
        if "parameters" in tags:
            continue
        if "recording" in tags or "write_summary" in source or "summary = {" in source:  # (the last: older notebooks)
            found["record"] += len(lines)
            continue
        if "setup(" in source and "chapter" in source or "output_dir.mkdir" in source:
            found["setup"] += len(lines)
            continue
        try:
            imported = {n for node in ast.parse(source).body if isinstance(node, (ast.Import, ast.ImportFrom))
                        for n in range(node.lineno, node.end_lineno + 1)}
        except SyntaxError:
            imported = set()
        for n, line in lines:
            if n in imported:
                found["imports"] += 1
            elif any(word in line for word in SAVE_WORDS):
                found["saves"] += 1
            elif any(word in line for word in PATH_WORDS):
                found["paths"] += 1
    found["plumbing"] = found["imports"] + found["setup"] + found["record"] + found["paths"]
    return found


def notebooks(revision: str | None = None) -> dict[str, list[dict]]:
    """Each notebook's cells, from the working tree or from a git revision."""
    names = sorted(path.name for path in (REPO / "notebooks").glob("[0-9][0-9]-*.ipynb"))
    read = (lambda name: (REPO / "notebooks" / name).read_text()) if revision is None else (
        lambda name: subprocess.run(["git", "-C", str(REPO), "show", f"{revision}:notebooks/{name}"],
                                    capture_output=True, text=True, check=True).stdout)
    return {name: json.loads(read(name))["cells"] for name in names}


def main(revision: str | None = None) -> None:
    totals = dict.fromkeys(("code", "plumbing"), 0)
    print("| notebook | code lines | plumbing (imports + setup + record + paths) | share | figure saves |")
    print("|---|---|---|---|---|")
    for name, cells in notebooks(revision).items():
        found = count(cells)
        totals["code"] += found["code"]
        totals["plumbing"] += found["plumbing"]
        print(f"| {name[:-6]} | {found['code']} | {found['plumbing']} ({found['imports']} + {found['setup']} + "
              f"{found['record']} + {found['paths']}) | {found['plumbing'] / found['code']:.1%} | {found['saves']} |")
    print(f"| all | {totals['code']} | {totals['plumbing']} | {totals['plumbing'] / totals['code']:.1%} | |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
