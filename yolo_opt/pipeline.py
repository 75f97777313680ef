"""`yolo-opt optimize`: the stages a recipe names, into one resumable run folder `runs/opt/<name>/`.

Each stage reads its input artefact from disk, writes its output atomically and records itself in the run's
`state.json`; after a kill, the same command continues at the unfinished stage (training stages continue
through Ultralytics' resume), and a run folder made for another model or dataset is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from yolo_opt.errors import ConfigError, ModelError, TensorRTMissing
from yolo_opt.files import atomic_write_bytes

RECIPES_DIR = Path(__file__).parent / "recipes"
DEFAULT_RECIPE = "cpu-onnx"


@dataclass(frozen=True)
class Stage:
    """A pipeline stage: what it needs from earlier stages and what it does."""

    name: str
    needs: tuple[str, ...]
    help: str


STAGES = {
    s.name: s
    for s in (
        Stage("baseline", ("pt",), "measure the input model"),
        Stage("prune", ("pt",), "prune + fine-tune inside the Ultralytics trainer (distill= for recovery)"),
        Stage("qat", ("pt",), "quantization-aware fine-tuning; QDQ ONNX with the QAT scales"),
        Stage("export", ("pt",), "FP32 ONNX of the latest model"),
        Stage("ptq", ("onnx",), "INT8 QDQ ONNX by post-training calibration"),
        Stage("bundle", ("pt",), "Jetson bundle folder (ONNX, metadata, build_engine, infer)"),
        Stage("engine", ("onnx",), "TensorRT engine (skipped with a note where TensorRT is absent)"),
        Stage("benchmark", (), "measure every artefact: report.md, report.png, results.json"),
    )
}
PIPELINE_KEYS = {"stages", "recipe", "name", "project", "lat_imgsz"}


def available_recipes() -> list[str]:
    """Names of the recipes shipped with yolo-opt."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def _allowed_keys() -> set[str]:
    from ultralytics.cfg import DEFAULT_CFG_DICT

    from yolo_opt.config import ARG_BY_NAME

    return set(DEFAULT_CFG_DICT) | set(ARG_BY_NAME) | PIPELINE_KEYS


def load_recipe(recipe: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load a recipe by name (see `available_recipes`) or path, apply `overrides`, and validate it."""
    path = Path(str(recipe))
    if path.suffix not in {".yaml", ".yml"}:
        path = RECIPES_DIR / f"{recipe}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown recipe '{recipe}'; choose one of: {', '.join(available_recipes())} or a .yaml path")
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {path} is not valid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(cfg, dict):
        raise ConfigError(f"recipe {path} must be a mapping of key: value")
    cfg = {**cfg, **(overrides or {})}
    stages = cfg.get("stages")
    if isinstance(stages, str):
        stages = [s.strip() for s in stages.strip("[]").split(",") if s.strip()]
    if not stages or not isinstance(stages, list):
        raise ConfigError(f"recipe {path.name} needs a list of stages, e.g. stages: [baseline, prune, export]")
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"recipe {path.name}: unknown stage '{unknown[0]}'; stages are: {', '.join(STAGES)}")
    cfg["stages"] = stages
    allowed = _allowed_keys()
    bad = [k for k in cfg if k not in allowed]
    if bad:
        raise ConfigError(f"recipe {path.name}: unknown key '{bad[0]}'; see 'yolo-opt help' and 'yolo cfg'")
    have = {"pt"}
    for s in stages:
        missing = [n for n in STAGES[s].needs if n not in have]
        if missing:
            raise ConfigError(f"recipe {path.name}: stage '{s}' needs an {missing[0].upper()} model from an earlier "
                              f"stage; add 'export' before it")
        have |= {"onnx"} if s in {"export", "qat", "ptq"} else set()
    return cfg


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Run:
    """A run folder and its `state.json`."""

    def __init__(self, folder: Path, fingerprint: dict[str, str], recipe: dict[str, Any]):
        """Open (or start) the run; refuse a folder made for another model or dataset."""
        self.folder = folder
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


def _train_stage(run: Run, stage: str, model: Path, cfg: dict[str, Any], **opts: Any) -> Path:
    """A training stage in `run/<stage>/`, resumed through Ultralytics when a previous attempt was killed."""
    from yolo_opt.callbacks import train_in
    from yolo_opt.config import ARG_BY_NAME

    ultralytics_args = {k: v for k, v in cfg.items() if k not in ARG_BY_NAME and k not in PIPELINE_KEYS}
    ours = {k: v for k, v in cfg.items() if k in ARG_BY_NAME and "train" in ARG_BY_NAME[k].modes}
    trained = train_in(run.folder, stage, model, **{**ultralytics_args, **ours, **opts})
    out = run.folder / f"{stage}.pt"
    atomic_write_bytes(out, trained.read_bytes())
    return out


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
    from ultralytics.utils import TQDM as tqdm  # noqa: N812 (Ultralytics ships its own progress bar)

    from yolo_opt.cli import check_data
    from yolo_opt.prune.io import load_model

    model, data = Path(str(model)), Path(str(data))
    cfg = load_recipe(recipe, overrides)
    check_data(data)
    load_model(model)
    folder = (Path(project) / (name or Path(str(recipe)).stem)).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    fingerprint = {"model": _sha256(model), "data": str(data.resolve()), "data_yaml": _sha256(data)}
    run = Run(folder, fingerprint, cfg)
    if "pt" not in run.state["artefacts"]:
        src = folder / "input.pt"
        atomic_write_bytes(src, model.read_bytes())
        run.state["artefacts"]["pt"] = src.name
        run.save()
    cfg = {**cfg, "data": str(data.resolve())}
    imgsz = int(cfg.get("imgsz", 640))
    stages = cfg["stages"]
    bar = tqdm(stages, desc="optimize", unit="stage")
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
        rows = STAGE_FUNCS[stage](run, cfg, imgsz) or rows
    bar.close()
    return rows


def _stage_baseline(run: Run, cfg: dict[str, Any], imgsz: int) -> None:
    run.record("baseline", {"baseline_pt": run.path("pt")})


def _stage_prune(run: Run, cfg: dict[str, Any], imgsz: int) -> None:
    if not cfg.get("prune") and cfg.get("prune_target") is None:
        raise ConfigError("stage 'prune' needs prune= or prune_target= in the recipe or on the command line")
    distill = {"teacher": str(run.path("baseline_pt") or run.path("pt"))} if cfg.get("distill") else {}
    out = _train_stage(run, "prune", run.path("pt"), {**cfg, "qat": False}, **distill)
    run.record("prune", {"pt": out, "pruned_pt": out})


def _stage_qat(run: Run, cfg: dict[str, Any], imgsz: int) -> None:
    from yolo_opt.quant import export_qat_onnx

    plain = {k: v for k, v in cfg.items() if k not in {"prune", "prune_target", "sparsity", "distill", "teacher"}}
    plain.update(epochs=cfg.get("qat_epochs", 3), lr0=cfg.get("qat_lr0", 1e-4), optimizer="AdamW", warmup_epochs=0)
    out = _train_stage(run, "qat", run.path("pt"), plain, qat=True)
    onnx = export_qat_onnx(out, imgsz=imgsz, out=run.folder / "qat_int8.onnx")
    run.record("qat", {"pt": out, "qat_pt": out, "int8_onnx": onnx, "qat_onnx": onnx})


def _stage_export(run: Run, cfg: dict[str, Any], imgsz: int) -> None:
    from yolo_opt.deploy import export_onnx

    src = run.path("pt")
    if src.name == "qat.pt":  # the QAT model's ONNX is the QDQ one; export the float model it started from
        src = run.path("pruned_pt") or run.path("baseline_pt") or src
    out = export_onnx(src, run.folder / "model_fp32.onnx", imgsz=imgsz)
    artefacts = {"onnx": out, "fp32_onnx": out}
    base = run.path("baseline_pt")
    if base is not None and base != src:  # the ONNX Runtime reference for the compressed models
        artefacts["baseline_onnx"] = export_onnx(base, run.folder / "baseline_fp32.onnx", imgsz=imgsz)
    run.record("export", artefacts)


def _stage_ptq(run: Run, cfg: dict[str, Any], imgsz: int) -> None:
    from yolo_opt.deploy import quantize_onnx

    result = quantize_onnx(
        run.path("fp32_onnx") or run.path("onnx"), cfg["data"], run.folder / "model_int8.onnx",
        calib=cfg.get("calib", "minmax"), calib_images=int(cfg.get("calib_images", 256)),
        per_channel=bool(cfg.get("per_channel", True)), max_map_drop=cfg.get("max_map_drop"),
        validate=cfg.get("max_map_drop") is not None,
    )
    run.record("ptq", {"int8_onnx": result.path, "ptq_onnx": result.path}, excluded_layers=result.excluded_layers)


def _stage_bundle(run: Run, cfg: dict[str, Any], imgsz: int) -> None:
    from yolo_opt.deploy import make_bundle

    src = run.path("pruned_pt") or run.path("pt")
    folder = make_bundle(src, cfg["data"], run.folder / "jetson", imgsz, True, cfg.get("calib", "minmax"),
                         int(cfg.get("calib_images", 256)), bool(cfg.get("per_channel", True)),
                         cfg.get("max_map_drop"), validate=cfg.get("max_map_drop") is not None)
    qat = run.path("qat_onnx")
    if qat is not None:  # the QAT scales travel too: build_engine.py --onnx model_int8_qat.onnx
        atomic_write_bytes(folder / "model_int8_qat.onnx", qat.read_bytes())
    run.record("bundle", {"bundle": folder})


def _stage_engine(run: Run, cfg: dict[str, Any], imgsz: int) -> None:
    from yolo_opt.deploy import build_engine

    src = run.path("int8_onnx") or run.path("onnx")
    try:
        engine = build_engine(src, run.folder / "model.engine", int8=src == run.path("int8_onnx"))
    except TensorRTMissing as e:  # only a missing TensorRT is a skip; a failed build is an error
        print(f"yolo-opt: stage 'engine' skipped: {e}")
        run.record("engine", {}, skipped=str(e))
        return
    run.record("engine", {"engine": engine})


def _stage_benchmark(run: Run, cfg: dict[str, Any], imgsz: int) -> dict[str, Any]:
    from yolo_opt.bench.report import benchmark

    labels = {"baseline_pt": "baseline", "pruned_pt": "pruned", "baseline_onnx": "baseline onnx",
              "fp32_onnx": "fp32 onnx", "qat_onnx": "qat int8 onnx",
              "ptq_onnx": "ptq int8 onnx", "engine": "engine"}
    chosen = {label: run.path(kind) for kind, label in labels.items() if run.path(kind)}
    if not chosen:
        raise ModelError("stage 'benchmark' found no model artefact in the run; add stages before it")
    rows = benchmark(chosen.values(), cfg["data"], imgsz, out=run.folder, lat_imgsz=cfg.get("lat_imgsz"),
                     names=chosen.keys())
    run.record("benchmark", {"report": run.folder / "report.md", "plot": run.folder / "report.png",
                             "results": run.folder / "results.json"})
    return rows


STAGE_FUNCS: dict[str, Callable[[Run, dict[str, Any], int], Any]] = {
    "baseline": _stage_baseline,
    "prune": _stage_prune,
    "qat": _stage_qat,
    "export": _stage_export,
    "ptq": _stage_ptq,
    "bundle": _stage_bundle,
    "engine": _stage_engine,
    "benchmark": _stage_benchmark,
}
