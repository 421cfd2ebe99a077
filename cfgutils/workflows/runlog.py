"""What a training run reports while it runs: a progress bar, log rows, log.csv and TensorBoard (03-train).

Both trainers use :class:`RunLogger`: they hand it each step's numbers and it averages them over
``log_every`` steps into a history row (step, the averaged values, lr, images/s, elapsed seconds).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import yaml


class RunLogger:
    """Progress bar + history rows; with a ``run_dir`` also config.yaml, log.csv and TensorBoard events.

    Use as a context manager. ``previous_wall_s`` is the wall time of the run before a resume, so
    ``elapsed_s`` counts the whole run; log.csv keeps the rows up to the resumed step.
    """

    def __init__(self, start_step: int, end_step: int, log_every: int, values=("loss",), run_dir: Path | None = None,
                 config: dict | None = None, progress: bool = True, desc: str = "training", previous_wall_s: float = 0.0):
        self.end_step, self.log_every, self.values = end_step, log_every, tuple(values)
        self.columns = ["step", *self.values, "lr", "images_per_s", "elapsed_s"]
        self.history: list[dict] = []
        self._previous_wall, self._run_start = previous_wall_s, time.perf_counter()
        self._sums, self._count, self._window_images, self._window_start = {}, 0, 0, time.perf_counter()
        self._csv_file = self._csv = self._tensorboard = self._bar = None
        if run_dir is not None:
            self._open_run_dir(Path(run_dir), config or {}, start_step)
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=end_step, initial=start_step, desc=desc, unit="step", dynamic_ncols=True)

    def _open_run_dir(self, run_dir: Path, config: dict, start_step: int) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        log_path, kept = run_dir / "log.csv", []
        if start_step > 0 and log_path.exists():  # drop rows logged after the checkpoint we resume from
            with open(log_path, newline="") as handle:
                kept = [row for row in csv.DictReader(handle) if int(row["step"]) <= start_step]
        self._csv_file = open(log_path, "w", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=self.columns, extrasaction="ignore")
        self._csv.writeheader()
        self._csv.writerows(kept)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_step + 1)
        except ImportError:
            self._tensorboard = None

    def elapsed(self) -> float:
        """Wall-clock seconds of the whole run so far (before a resume included)."""
        return self._previous_wall + time.perf_counter() - self._run_start

    def pause(self) -> None:
        """Start a new throughput window (after work that is not training, such as a preview)."""
        self._window_start = time.perf_counter()

    def record(self, done: int, n_images: int, lr: float, **values: float) -> dict | None:
        """Add one step's values; every ``log_every`` steps (and at the end) return and write the averaged row."""
        for key in self.values:
            self._sums[key] = self._sums.get(key, 0.0) + float(values[key])
        self._count, self._window_images = self._count + 1, self._window_images + n_images
        if self._bar is not None:
            self._bar.update(1)
        if done % self.log_every and done != self.end_step:
            return None
        seconds = time.perf_counter() - self._window_start
        row = {"step": done, **{k: self._sums[k] / self._count for k in self.values}, "lr": lr,
               "images_per_s": self._window_images / seconds if seconds > 0 else float("nan"), "elapsed_s": self.elapsed()}
        self.history.append(row)
        self._write(row)
        self._sums, self._count, self._window_images, self._window_start = {}, 0, 0, time.perf_counter()
        return row

    def _write(self, row: dict) -> None:
        if self._bar is not None:
            self._bar.set_postfix({k: f"{row[k]:.4f}" for k in self.values} | {"img_s": f"{row['images_per_s']:.0f}"})
        if self._csv is not None:
            self._csv.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
            self._csv_file.flush()
        if self._tensorboard is not None:
            for key in (*self.values, "lr", "images_per_s"):
                self._tensorboard.add_scalar(f"train/{key}", row[key], row["step"])

    def close(self) -> None:
        """Close the progress bar and the files."""
        for handle in (self._bar, self._csv_file, self._tensorboard):
            if handle is not None:
                handle.close()
        self._bar = self._csv_file = self._csv = self._tensorboard = None

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
