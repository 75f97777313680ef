"""`yolo-opt optimize`: the stages a recipe names, into one resumable run folder `runs/opt/<name>/`.

Each stage reads its input artefact from disk, writes its output atomically and records itself in the run's
`state.json`; after a kill, the same command continues at the unfinished stage (training stages continue
through Ultralytics' resume), and a run folder made for another model, dataset or recipe is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

from yolo_opt.errors import DeployError, ModelError
from yolo_opt.io.files import atomic_write_bytes, check_output, made_folder
from yolo_opt.options import DEFAULT_RECIPE
from yolo_opt.pipeline.recipe import Recipe
from yolo_opt.pipeline.recipes import load_recipe
from yolo_opt.pipeline.stages import STAGES
from yolo_opt.pipeline.state import Run, RunLock, check_run_folder


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    fingerprint = {"model": _sha256(model), "data": str(data.resolve()), "data_yaml": _sha256(data)}
    check_run_folder(folder, fingerprint, recipe.raw)  # a folder that is not this run's is refused untouched
    with contextlib.ExitStack() as held:  # the lock is held from before the state is read to the last stage
        with made_folder(folder):  # a refusal here removes the folder this call made; a stage's failure does not
            held.enter_context(RunLock(folder))
            run = Run(folder, fingerprint, recipe.raw, data.resolve())
        return _run_stages(folder, model, recipe, run)


def _run_stages(folder: Path, model: Path, recipe: Recipe, run: Run) -> dict[str, Any]:
    from ultralytics.utils import TQDM as tqdm  # noqa: N812 (Ultralytics ships its own progress bar)

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
    select = run.state["stages"].get("select")
    if select is not None and select.get("selected") is None:  # the report is written: now say what would pass
        report = folder / "report.md" if run.done("benchmark") else folder / "deploy" / "selection.md"
        raise DeployError(f"nothing deployed: {select.get('verdict') or 'no form is within the bound'} (report: "
                          f"{report})")
    return rows
