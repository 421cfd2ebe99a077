"""Run the notebook series headlessly with papermill (the README's main command and the notebook tests)."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from ..plumbing import paths
from ..errors import UserInputError

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
               figures_dir: str | Path | None = None) -> list[Path]:
    """Execute notebooks in order (all available ones by default), printing where results went.

    Figures go to ``output_dir/figures/`` unless ``figures_dir`` says otherwise (``paths.FIGURES_DIR`` rewrites
    the committed gallery), so a run leaves the repository's tracked files as they were.
    """
    names = names or available_notebooks()
    if not names:
        raise UserInputError(f"no notebooks of the series found in {paths.NOTEBOOKS_DIR}")
    for name in names:  # every parameter file is there before anything runs or is written
        notebook_parameters(name, preset)
    figures = Path(figures_dir if figures_dir is not None else Path(output_dir) / "figures").resolve()
    extra = {"figures_dir": str(figures)}
    executed = []
    for name in names:
        start = time.perf_counter()
        print(f"== {name} ({preset} parameters)", flush=True)
        executed.append(run_notebook(name, output_dir, preset, extra))
        print(f"   executed in {time.perf_counter() - start:.0f} s -> {executed[-1]}", flush=True)
    print(f"Executed notebooks and recorded results: {Path(output_dir).resolve()}")
    print(f"Figures: {figures}")
    return executed
