"""One call that prepares a notebook: dataset, device, models, output folders and figure saving.

Every notebook of the series starts with ``chapter = setup("04-cfg-sampling", dataset, model=checkpoint)``
and then uses ``chapter.loaded``, ``chapter.names`` and ``chapter.save(fig, "grid")``. What the notebook
measured for its tests goes to ``chapter.write_summary(...)`` in a hidden last cell, so the pages carry the
idea and none of the plumbing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..plumbing import paths
from ..core.samplers import SamplerSettings
from ..plumbing.checkpoint import LoadedModel, check_model_dataset, find_classifier, find_model, load_model
from ..plumbing.data import DatasetInfo, class_index, dataset_info, load_dataset
from ..plumbing.device import pick_device
from ..workflows.classifier import LoadedClassifier, load_classifier
from ..workflows.classifier_training import save_classifier, train_classifier
from .plots import save_figure


@dataclass
class Chapter:
    """What a notebook resolved in its setup call, and where it writes."""

    name: str  # the notebook, e.g. "04-cfg-sampling"
    dataset: str
    info: DatasetInfo
    device: torch.device
    output_dir: Path  # summary.json and anything the notebook writes besides figures
    figures_dir: Path | None  # None: out/figures/
    loaded: LoadedModel | None = None  # the diffusion model (EMA weights), when the setup asked for one
    classifier: LoadedClassifier | None = None  # the classifier, when the setup asked for one
    settings: SamplerSettings | None = None  # the sampler and its steps, when the setup named a sampler
    figures: list[Path] = field(default_factory=list)  # every figure written, in order

    @property
    def names(self) -> list[str]:
        """The class names as figures show them: "0".."9", or "T-shirt/top".."Ankle boot"."""
        return list(self.info.class_names)

    @property
    def item(self) -> str:
        """One example of the dataset in prose: "digit" or "garment"."""
        return self.info.item

    @property
    def steps(self) -> int | None:
        """The sampler's steps, its default resolved (dpmpp 12, ddim 50, ddpm 1000)."""
        return self.settings.resolved_steps() if self.settings is not None else None

    def class_index(self, label: int | str) -> int:
        """A class given by index or name ("Sneaker") as its index."""
        return class_index(label, self.dataset)

    @property
    def prefix(self) -> str:
        """The file-name prefix of this notebook's figures: the notebook, plus the dataset unless MNIST."""
        return self.name if self.dataset == "mnist" else f"{self.name}-{self.dataset}"

    def model(self, checkpoint: str | Path, *, raw_weights: bool = False) -> LoadedModel:
        """A further diffusion model on this chapter's device: a checkpoint path, or the name of one shipped in
        data/pretrained/ ("no-dropout", "reference-recipe"); EMA weights unless ``raw_weights``."""
        path = Path(checkpoint)
        if path.suffix != ".pt" and len(path.parts) == 1:
            path = paths.PRETRAINED_DIR / f"{checkpoint}.pt"
        return load_model(path, self.device, raw_weights=raw_weights)

    def save(self, figure, stem: str) -> Path:
        """Write ``figure`` (a matplotlib figure or axes) as ``<prefix>-<stem>.png`` and remember it."""
        figure = getattr(figure, "figure", figure)
        path = save_figure(figure, f"{self.prefix}-{stem}.png", self.figures_dir)
        self.figures.append(path)
        return path

    def figure_path(self, stem: str, suffix: str) -> Path:
        """Where a figure of another format (a GIF) goes; remembered like a saved figure."""
        path = paths.figure_path(f"{self.prefix}-{stem}{suffix}", self.figures_dir).resolve()
        self.figures.append(path)
        return path

    def _resolved(self) -> dict:
        """The dataset, the models this chapter loaded and the data they were trained on."""
        found = {"dataset": self.dataset}
        if self.loaded is not None:
            found.update(model=str(self.loaded.path), model_data_source=self.loaded.metadata["data_source"],
                         model_step=int(self.loaded.metadata["step"]))
        if self.classifier is not None:
            found.update(classifier=str(self.classifier.path),
                         classifier_data_source=self.classifier.metadata["data_source"])
        return found

    def provenance(self) -> dict:
        """What this chapter's results come from: the dataset, the models and their training data, the sampler
        settings (flat: "sampler", "steps", ...), for the records a notebook writes beside its results."""
        return self._resolved() | (self.settings.describe() if self.settings is not None else {})

    def write_summary(self, **values) -> Path:
        """Write ``summary.json``: the setup (models, sampler settings under "sampler"), every figure, and
        ``values`` (what the notebook's tests check; tables as lists of rows)."""
        summary = {"notebook": self.name, **self._resolved()}
        if self.settings is not None:
            summary["sampler"] = self.settings.describe()
        if self.loaded is not None:
            summary["checkpoint"] = str(self.loaded.path)
        summary.update(values)
        summary["figures"] = [str(path) for path in self.figures]
        path = self.output_dir / "summary.json"
        path.write_text(json.dumps(summary, indent=2, default=_plain) + "\n")
        return path


def setup(name: str, dataset: str = "mnist", *, model: bool | str | Path | None = False,
          classifier: bool | str | Path | None = False, output_dir: str | Path | None = None,
          figures_dir: str | Path | None = None, seed: int | None = 0, device: str | None = "auto",
          sampler: str | None = None, steps: int | None = None, train_missing_classifier: bool = False,
          classifier_steps: int | None = None, theme: str | None = None) -> Chapter:
    """Resolve a notebook's dataset, device, models and folders; print one line saying what was resolved.

    ``model`` / ``classifier``: False for none, None (or True) for the default one (notebook 03's, else the
    shipped one), or a path, which must exist. ``seed`` seeds torch's global generator (None: leave it).
    ``sampler`` / ``steps``: the notebook's sampler settings, validated (``chapter.settings``).
    ``train_missing_classifier``: where no classifier exists, train one with the default recipe (``classifier_steps``
    steps if given) and save it where the notebooks look first. ``theme``: a seaborn style ("whitegrid") for
    every figure the notebook draws (None: matplotlib's own).
    """
    info = dataset_info(dataset)
    chapter = Chapter(name, dataset, info, pick_device(device), Path(), None)
    chapter.output_dir = Path(output_dir) if output_dir is not None else paths.OUTPUT_DIR / chapter.prefix
    chapter.figures_dir = Path(figures_dir) if figures_dir is not None else None
    said = [info.title, f"device {chapter.device}"]
    if sampler is not None:
        chapter.settings = SamplerSettings(sampler, steps).validate()
        said.append(f"{sampler}, {chapter.steps} steps")
    if model is not False:
        chapter.loaded = load_model(_checkpoint(model, dataset, find_model, "diffusion model"), chapter.device)
        check_model_dataset(chapter.loaded, dataset)
        said.append(f"model {_shown(chapter.loaded.path)} (step {chapter.loaded.metadata['step']})")
    if classifier is not False:
        missing = train_missing_classifier and classifier in (None, True) and find_classifier(None, dataset) is None
        path = (_train_classifier(dataset, classifier_steps, chapter.device) if missing else
                _checkpoint(classifier, dataset, find_classifier, "classifier"))
        chapter.classifier = load_classifier(path, chapter.device)
        said.append(f"classifier {_shown(path)}")
    chapter.output_dir.mkdir(parents=True, exist_ok=True)  # only once everything above was found
    if seed is not None:
        torch.manual_seed(seed)
    if theme is not None:
        import seaborn as sns

        sns.set_theme(style=theme, context="notebook")
    said.append(f"writing to {_shown(chapter.output_dir)}")
    print(" · ".join(said))
    return chapter


#: how to make the default checkpoint a setup call looks for, by what it is
MAKE_CHECKPOINT = {"diffusion model": (paths.TRAINED_MODEL, "run notebook 03 (or `python -m cfgutils train {path}{flag}`)"),
                   "classifier": (paths.TRAINED_CLASSIFIER, "run `python -m cfgutils train-classifier {path}{flag}`")}


def _checkpoint(requested, dataset: str, find, what: str) -> Path:
    """The checkpoint a setup call names, or the default one; a one-line error saying how to make one."""
    requested = None if requested is True else requested
    if requested is not None and not Path(requested).is_absolute():
        requested = paths.REPO_ROOT / requested
    found = find(requested, dataset)
    if found is None:
        default, how = MAKE_CHECKPOINT[what]
        make = how.format(path=_shown(paths.for_dataset(default, dataset)),
                          flag="" if dataset == "mnist" else f" --dataset {dataset}")
        raise FileNotFoundError(f"no {dataset_info(dataset).title} {what}: {make} first, or name a checkpoint")
    return Path(found)


def _train_classifier(dataset: str, steps: int | None, device) -> Path:
    """Train the default classifier of ``dataset`` (no rotations or shears for garments) and save it (05)."""
    path = paths.for_dataset(paths.TRAINED_CLASSIFIER, dataset)
    print(f"no {dataset_info(dataset).title} classifier yet: training one into {_shown(path)}")
    trained = train_classifier(load_dataset(dataset, "train"), eval_split=load_dataset(dataset, "test"),
                               augment=dataset == "mnist", device=device, **({"steps": steps} if steps else {}))
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_classifier(path, trained)


def _shown(path) -> str:
    """A path relative to the repository when it is inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(paths.REPO_ROOT)) if path.is_relative_to(paths.REPO_ROOT) else str(path)


def _plain(value):
    """JSON for the values notebooks record: tensors and numpy numbers as plain numbers, tables (DataFrames) as
    lists of rows, paths as text."""
    if hasattr(value, "to_json") and hasattr(value, "columns"):
        named_index = any(name is not None for name in value.index.names)
        return json.loads((value.reset_index() if named_index else value).to_json(orient="records"))
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
