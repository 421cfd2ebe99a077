"""Run the notebook series headlessly with papermill (the headless run and the notebook tests)."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from ..plumbing import paths
from ..plumbing.data import dataset_info
from ..errors import UserInputError, one_of

#: the series, in order
NOTEBOOKS = ("01-data", "02-unet", "03-train", "04-cfg-sampling", "05-classifier-eval", "06-guidance-variants",
             "07-ablations", "08-newer-guidance", "09-guidance-toy")
OUTPUT_DIR = paths.OUTPUT_DIR


def available_notebooks() -> list[str]:
    """The notebooks of the series that exist in ``notebooks/``, in order."""
    return [name for name in NOTEBOOKS if (paths.NOTEBOOKS_DIR / f"{name}.ipynb").exists()]


def available_presets() -> list[str]:
    """``default`` and every preset with parameter files ``notebooks/params/<preset>-NN.yaml`` (e.g. ``ci``)."""
    found = {path.name.rsplit("-", 1)[0] for path in (paths.NOTEBOOKS_DIR / "params").glob("*-[0-9][0-9].yaml")}
    return ["default", *sorted(found - {"default"})]


def takes_dataset(name: str) -> bool:
    """Whether notebook ``name`` has a ``dataset`` parameter (mnist or fashion-mnist) in its parameters cell."""
    import json

    source = paths.NOTEBOOKS_DIR / f"{name}.ipynb"
    if not source.exists():
        return False
    cells = json.loads(source.read_text())["cells"]
    return any("parameters" in cell.get("metadata", {}).get("tags", []) and
               any(line.startswith("dataset = ") for line in "".join(cell["source"]).splitlines())
               for cell in cells)


def preset_notebooks(preset: str) -> list[str]:
    """The notebooks a preset runs: all available ones for ``default``, else those with a parameter file."""
    names = available_notebooks()
    if preset == "default":
        return names
    return [name for name in names
            if (paths.NOTEBOOKS_DIR / "params" / f"{preset}-{name.split('-')[0]}.yaml").exists()]


def notebook_parameters(name: str, preset: str = "default") -> dict:
    """Parameters for one notebook: ``{}`` for the notebook's own defaults, else ``notebooks/params/<preset>-NN.yaml``."""
    if preset == "default":
        return {}
    number = name.split("-")[0]
    params_file = paths.NOTEBOOKS_DIR / "params" / f"{preset}-{number}.yaml"
    if not params_file.exists():
        raise UserInputError(f"no parameter file {params_file} for preset {preset!r}.")
    return yaml.safe_load(params_file.read_text()) or {}


def run_notebook(name: str, output_dir: str | Path = OUTPUT_DIR, preset: str = "default",
                 extra_parameters: dict | None = None, progress: bool = True) -> Path:
    """Execute ``notebooks/<name>.ipynb`` with papermill into ``output_dir/<name>.ipynb``; return that path.

    The notebook's ``output_dir`` parameter is set to ``output_dir/<name>/`` so that what it records
    (``summary.json``, tables) lands beside the executed notebook.
    """
    import papermill

    if name not in NOTEBOOKS:
        raise UserInputError(f"unknown notebook {name!r}: choose from {', '.join(NOTEBOOKS)}.")
    source = paths.NOTEBOOKS_DIR / f"{name}.ipynb"
    if not source.exists():
        raise UserInputError(f"{source} does not exist.")
    output_dir = Path(output_dir).resolve()
    (output_dir / name).mkdir(parents=True, exist_ok=True)
    parameters = {**notebook_parameters(name, preset), "output_dir": str(output_dir / name), **(extra_parameters or {})}
    executed = output_dir / f"{name}.ipynb"
    papermill.execute_notebook(str(source), str(executed), parameters=parameters, cwd=str(paths.NOTEBOOKS_DIR),
                               progress_bar=progress, kernel_name="python3")
    return executed


def run_series(names: list[str] | None = None, output_dir: str | Path = OUTPUT_DIR, preset: str = "default",
               figures_dir: str | Path | None = None, dataset: str | None = None) -> list[Path]:
    """Execute notebooks in order (by default every one the preset has parameters for), printing where results went.

    Figures go to ``output_dir/figures/`` unless ``figures_dir`` says otherwise (``paths.FIGURES_DIR`` rewrites
    the committed gallery), so a run leaves the repository's tracked files as they were. ``dataset`` sets the
    ``dataset`` parameter of every notebook (each must have one; without names, those that do run).
    """
    one_of(preset, available_presets(), "preset")
    names = names or [n for n in preset_notebooks(preset) if dataset is None or takes_dataset(n)]
    if not names:
        raise UserInputError(f"no notebooks of the series found in {paths.NOTEBOOKS_DIR} for preset {preset!r}")
    for name in names:  # every parameter file is there before anything runs or is written
        notebook_parameters(name, preset)
    if dataset is not None:
        dataset_info(dataset)
        lacking = [name for name in names if not takes_dataset(name)]
        if lacking:
            raise UserInputError(f"{', '.join(lacking)} take no dataset parameter; the notebooks that do: "
                                 + ", ".join(n for n in available_notebooks() if takes_dataset(n)))
    figures = Path(figures_dir if figures_dir is not None else Path(output_dir) / "figures").resolve()
    extra = {"figures_dir": str(figures), **({"dataset": dataset} if dataset is not None else {})}
    executed = []
    for name in names:
        start = time.perf_counter()
        print(f"== {name} ({preset} parameters)", flush=True)
        executed.append(run_notebook(name, output_dir, preset, extra))
        print(f"   executed in {time.perf_counter() - start:.0f} s -> {executed[-1]}", flush=True)
    print(f"Executed notebooks and recorded results: {Path(output_dir).resolve()}")
    print(f"Figures: {figures}")
    return executed
