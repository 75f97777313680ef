"""`yolo-opt optimize`: the stages a recipe names, into one resumable run folder `runs/opt/<name>/`.

Each stage reads its input artefact from disk, writes its output atomically and records itself in the run's
`state.json`; after a kill, the same command continues at the unfinished stage (training stages continue
through Ultralytics' resume), and a run folder made for another model, dataset or recipe is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from yolo_opt.errors import ConfigError, ModelError
from yolo_opt.io.files import atomic_write_bytes, check_output
from yolo_opt.pipeline.recipes import DEFAULT_RECIPE, Recipe, load_recipe


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class RunLock:
    """An exclusive lock on a run folder (`.lock`, holding the owner's pid), so two runs never share one folder.

    An OS file lock (`flock`): the kernel drops it when its process ends however it ends, so the lock of a
    killed run is taken over by the next one, and a recycled pid cannot keep a folder locked.
    """

    def __init__(self, folder: Path):
        self.path = folder / ".lock"
        self.file = None

    def __enter__(self) -> RunLock:
        import fcntl

        f = open(self.path, "a+")  # noqa: SIM115 (held open for the whole run)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            owner = f.read().strip() or "unknown"
            f.close()
            raise ConfigError(f"run folder {self.path.parent} is in use by another yolo-opt run (pid {owner}); wait "
                              "for it to finish or pass another name=") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self.file = f
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()  # releases the lock; the file stays (removing it would race with a waiting run)


class Run:
    """A run folder and its `state.json`."""

    def __init__(self, folder: Path, fingerprint: dict[str, str], recipe: dict[str, Any], data: Path):
        """Open (or start) the run; refuse a folder made for another model, dataset or recipe."""
        self.folder = folder
        self.data = str(data)  # the dataset every stage trains, calibrates and validates on
        self.state_path = folder / "state.json"
        if self.state_path.exists():
            self.state = json.loads(self.state_path.read_text())
            if self.state.get("fingerprint") != fingerprint:
                raise ConfigError(
                    f"run folder {folder} was made for another model or dataset; pass a new name= or delete it"
                )
            if self.state.get("recipe") != json.loads(json.dumps(recipe, default=str)):
                raise ConfigError(
                    f"run folder {folder} was made with other recipe keys; pass a new name= or delete it"
                )
        else:
            self.state = {"fingerprint": fingerprint, "recipe": recipe, "stages": {}, "artefacts": {}}
        self.state["recipe"] = recipe
        self.save()

    def save(self) -> None:
        """Write state.json atomically."""
        atomic_write_bytes(self.state_path, json.dumps(self.state, indent=1, default=str).encode())

    def done(self, stage: str) -> bool:
        """Whether `stage` finished in an earlier invocation."""
        return self.state["stages"].get(stage, {}).get("status") == "done"

    def record(self, stage: str, artefacts: dict[str, str], **info: Any) -> None:
        """Mark `stage` done with its artefacts (relative to the run folder)."""
        rel = {k: str(Path(v).resolve().relative_to(self.folder.resolve())) for k, v in artefacts.items()}
        self.state["stages"][stage] = {"status": "done", "artefacts": rel, **info}
        self.state["artefacts"].update(rel)
        self.save()

    def path(self, kind: str) -> Path | None:
        """Latest artefact of a kind (pt, onnx, int8_onnx, ...)."""
        rel = self.state["artefacts"].get(kind)
        return self.folder / rel if rel else None


def optimize(model: str | Path, data: str | Path, recipe: str | Path = DEFAULT_RECIPE, name: str | None = None,
             project: str | Path = "runs/opt", **overrides: Any) -> dict[str, Any]:
    """Run the stages of `recipe` on `model`/`data` into `project/name`; resumable. Returns the benchmark rows.

    Args:
        model: Ultralytics `.pt` checkpoint.
        data: Ultralytics data.yaml.
        recipe: Name of a shipped recipe (`available_recipes()`) or a YAML path.
        name: Run folder name (default: the recipe's name).
        project: Parent folder of runs.
        **overrides: Any recipe key (yolo-opt or Ultralytics argument).
    """
    from yolo_opt.data.checks import check_dataset
    from yolo_opt.io.checkpoint import load_model

    recipe = load_recipe(recipe, overrides)  # the whole recipe is valid before anything is written
    model, data = Path(str(model)), Path(str(data))
    net = load_model(model)
    check_dataset(data, getattr(net, "names", None))
    folder = check_output((Path(project) / (name or recipe.name)).resolve(), folder=True, key="name").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    with RunLock(folder):
        return _run_stages(folder, model, data, recipe)


def _run_stages(folder: Path, model: Path, data: Path, recipe: Recipe) -> dict[str, Any]:
    from ultralytics.utils import TQDM as tqdm  # noqa: N812 (Ultralytics ships its own progress bar)

    from yolo_opt.pipeline.stages import STAGES

    fingerprint = {"model": _sha256(model), "data": str(data.resolve()), "data_yaml": _sha256(data)}
    run = Run(folder, fingerprint, recipe.raw, data.resolve())
    if "pt" not in run.state["artefacts"]:
        src = folder / "input.pt"
        atomic_write_bytes(src, model.read_bytes())
        run.state["artefacts"]["pt"] = src.name
        run.save()
    bar = tqdm(recipe.stages, desc="optimize", unit="stage")
    rows: dict[str, Any] = {}
    for stage in bar:
        bar.set_description(f"optimize: {stage}")
        if run.done(stage):
            bar.write(f"yolo-opt: stage '{stage}' already done, skipped")
            if stage == "benchmark":
                rows = json.loads((folder / "results.json").read_text())
            continue
        for need in STAGES[stage].needs:
            src = run.path(need)
            if src is None or not src.exists():
                raise ModelError(f"stage '{stage}' needs the {need.upper()} model of an earlier stage, but "
                                 f"{src or 'none'} is missing; delete {run.folder} to start over")
        rows = STAGES[stage].fn(run, recipe) or rows
    bar.close()
    return rows
