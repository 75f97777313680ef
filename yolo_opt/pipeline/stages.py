"""The pipeline's stages, in one registry: what each needs from earlier stages, what it gives, and what it does.

A stage reads its input artefact from the run folder, writes its output atomically and records it in the run's
`state.json` (`Run.record`), so a killed run continues at the unfinished stage.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolo_opt.errors import ConfigError, ModelError, TensorRTMissing
from yolo_opt.io.files import atomic_write_bytes
from yolo_opt.options import TrainOptions
from yolo_opt.pipeline.recipe import Recipe
from yolo_opt.pipeline.state import Run


@dataclass(frozen=True)
class Stage:
    """A pipeline stage."""

    name: str
    needs: tuple[str, ...]  # artefact kinds an earlier stage must have made ("pt", "onnx")
    gives: tuple[str, ...]  # artefact kinds it makes available to later stages
    help: str
    fn: Callable[[Run, Recipe], Any]
    check: Callable[[Recipe], None] | None = None  # recipe rules of this stage, checked at load


STAGES: dict[str, Stage] = {}


def stage(name: str, needs: tuple[str, ...], gives: tuple[str, ...], help: str,  # noqa: A002
          check: Callable[[Recipe], None] | None = None):
    """Register a stage function under `name`."""

    def register(fn: Callable[[Run, Recipe], Any]) -> Callable[[Run, Recipe], Any]:
        STAGES[name] = Stage(name, needs, gives, help, fn=fn, check=check)
        return fn

    return register


def check_order(recipe: Recipe, source: str) -> None:
    """Each stage's needs are met by an earlier stage, and each stage's own rules hold."""
    have = {"pt"}
    for name in recipe.stages:
        s = STAGES[name]
        missing = [n for n in s.needs if n not in have]
        if missing:
            raise ConfigError(f"recipe {source}: stage '{name}' needs an {missing[0].upper()} model from an earlier "
                              "stage; add 'export' before it")
        if s.check is not None:
            try:
                s.check(recipe)
            except ConfigError as e:
                raise ConfigError(f"recipe {source}: {e}") from None
        have |= set(s.gives)


def _train_stage(run: Run, recipe: Recipe, name: str, model: Path, opts: TrainOptions | None = None,
                 **args: Any) -> Path:
    """A training stage in `run/<name>/`, resumed through Ultralytics when a previous attempt was killed."""
    from yolo_opt.training.phases import train_in

    trained = train_in(run.folder, name, model, opts, **{**recipe.ultralytics, "data": run.data, **args})
    out = run.folder / f"{name}.pt"
    atomic_write_bytes(out, trained.read_bytes())
    return out


@stage("baseline", ("pt",), (), "measure the input model")
def _baseline(run: Run, recipe: Recipe) -> None:
    run.record("baseline", {"baseline_pt": run.path("pt")})


@stage("reference", ("pt",), (), "the input trained as long as the prune stage recovers, unpruned: what the "
       "report's 'vs reference' compares with")
def _reference(run: Run, recipe: Recipe) -> None:
    # the same Ultralytics arguments (epochs, schedule, seed) as the prune stage, none of yolo-opt's keys: a pruned
    # model got that training too, so only this comparison isolates what pruning cost
    out = _train_stage(run, recipe, "reference", run.path("baseline_pt") or run.path("pt"))
    run.record("reference", {"reference_pt": out})


def _check_prune(recipe: Recipe) -> None:
    if not recipe.train.prune.active:
        raise ConfigError("stage 'prune' needs prune=, prune_target= or prune_latency= in the recipe or on the command "
                          "line")


@stage("prune", ("pt",), ("pt",), "prune + fine-tune inside the Ultralytics trainer (distill= for recovery)",
       check=_check_prune)
def _prune(run: Run, recipe: Recipe) -> None:
    opts = recipe.train
    distill = opts.distill
    if opts.distilling and distill.teacher is None:
        distill = distill.replace(teacher=str(run.path("baseline_pt") or run.path("pt")))
    first = opts.replace(distill=distill, qat=opts.qat.replace(qat=False))
    info = {}
    if recipe.deploy.round_for and opts.prune.prune_target is not None:  # measured on the runtime it will run on
        from yolo_opt.training.rounding import round_for

        prune, info = round_for(run.path("pt"), first.prune, recipe.deploy.round_for, imgsz=recipe.imgsz,
                                lat_imgsz=recipe.bench.lat_imgsz, data=run.data)
        first = first.replace(prune=prune)
    out = _train_stage(run, recipe, "prune", run.path("pt"), opts=first)
    extra = {"prune_round": info} if info else {}
    if first.prune.prune_latency is not None:  # the allocation's predicted and measured latency, for the report
        from yolo_opt.io.checkpoint import load_model, meta
        from yolo_opt.training.trainer import RUN_KEY

        extra["latency"] = (meta(load_model(out)).get(RUN_KEY) or {}).get("latency")
    run.record("prune", {"pt": out, "pruned_pt": out}, **extra)


@stage("qat", ("pt",), ("pt", "onnx"), "quantization-aware fine-tuning; QDQ ONNX with the QAT scales")
def _qat(run: Run, recipe: Recipe) -> None:
    from yolo_opt.quant.qat import export_qat_onnx

    out = _train_stage(run, recipe, "qat", run.path("pt"), **recipe.train.qat.phase_args())
    onnx = export_qat_onnx(out, imgsz=recipe.imgsz, out=run.folder / "qat_int8.onnx")
    run.record("qat", {"pt": out, "qat_pt": out, "int8_onnx": onnx, "qat_onnx": onnx})


@stage("export", ("pt",), ("onnx",), "FP32 ONNX of the latest model")
def _export(run: Run, recipe: Recipe) -> None:
    from yolo_opt.deploy.onnx import export_onnx

    src = run.path("pt")
    if src.name == "qat.pt":  # the QAT model's ONNX is the QDQ one; export the float model it started from
        src = run.path("pruned_pt") or run.path("baseline_pt") or src
    out = export_onnx(src, run.folder / "model_fp32.onnx", imgsz=recipe.imgsz)
    artefacts = {"onnx": out, "fp32_onnx": out}
    # the input and the reference on ONNX Runtime too: ratios compare models on the same runtime
    for kind, path in (("baseline", run.path("baseline_pt")), ("reference", run.path("reference_pt"))):
        if path is not None and path != src:
            artefacts[f"{kind}_onnx"] = export_onnx(path, run.folder / f"{kind}_fp32.onnx", imgsz=recipe.imgsz)
    run.record("export", artefacts)


@stage("ptq", ("onnx",), ("onnx",), "INT8 QDQ ONNX by post-training calibration")
def _ptq(run: Run, recipe: Recipe) -> None:
    from yolo_opt.quant.ptq import quantize_onnx

    opts = recipe.ptq.replace(symmetric=True) if "engine" in recipe.stages else recipe.ptq  # TensorRT's kind
    result = quantize_onnx(run.path("fp32_onnx") or run.path("onnx"), run.data, run.folder / "model_int8.onnx",
                           opts, validate=opts.max_map_drop is not None)
    run.record("ptq", {"int8_onnx": result.path, "ptq_onnx": result.path}, excluded_layers=result.excluded_layers)


@stage("bundle", ("pt",), (), "Jetson bundle folder (ONNX, metadata, build_engine, infer)")
def _bundle(run: Run, recipe: Recipe) -> None:
    from yolo_opt.deploy.bundle import make_bundle

    ptq = recipe.ptq
    src = run.path("pruned_pt") or run.path("pt")
    folder = make_bundle(src, run.data, run.folder / "jetson", ptq, imgsz=recipe.imgsz, int8=True,
                         validate=ptq.max_map_drop is not None)
    qat = run.path("qat_onnx")
    if qat is not None:  # the QAT scales travel too, in TensorRT form: build_engine.py --onnx model_int8_qat.onnx
        from yolo_opt.quant.tensorrt import to_tensorrt_qdq

        to_tensorrt_qdq(qat, folder / "model_int8_qat.onnx")
    run.record("bundle", {"bundle": folder})


@stage("openvino", ("pt",), (), "OpenVINO bundle: FP32 IR + NNCF INT8 IR (max_map_drop: accuracy control), infer.py")
def _openvino(run: Run, recipe: Recipe) -> None:
    from yolo_opt.deploy.bundle import make_openvino_bundle
    from yolo_opt.deploy.openvino import export_openvino

    ptq = recipe.ptq
    src = run.path("pruned_pt") or run.path("baseline_pt") or run.path("pt")  # the float model (not qat.pt)
    folder = make_openvino_bundle(src, run.data, run.folder / "openvino", ptq, imgsz=recipe.imgsz,
                                  validate=ptq.max_map_drop is not None)
    artefacts = {"openvino_bundle": folder, "openvino_fp32": folder / "model_fp32_openvino_model",
                 "openvino_int8": folder / "model_int8_openvino_model"}
    # the input and the reference on OpenVINO too: ratios compare models on the same runtime
    for kind in ("baseline", "reference"):
        path = run.path(f"{kind}_pt")
        if path is not None and path != src:
            artefacts[f"{kind}_openvino"] = export_openvino(path, run.folder / f"{kind}_openvino_model",
                                                            recipe.imgsz, validate=False).path
    run.record("openvino", artefacts)


@stage("engine", ("onnx",), (), "TensorRT engine (skipped with a note where TensorRT is absent)")
def _engine(run: Run, recipe: Recipe) -> None:
    from yolo_opt.deploy.tensorrt import build_engine

    src = run.path("int8_onnx") or run.path("onnx")
    try:
        engine = build_engine(src, run.folder / "model.engine", int8=src == run.path("int8_onnx"))
    except TensorRTMissing as e:  # only a missing TensorRT is a skip; a failed build is an error
        from ultralytics.utils import LOGGER

        LOGGER.warning(f"yolo-opt: stage 'engine' skipped: {e}")
        run.record("engine", {}, skipped=str(e))
        return
    run.record("engine", {"engine": engine})


@stage("select", ("pt",), (), "the fastest deployable form on this machine within max_map_drop of the best unpruned "
       "model (input or reference), chosen by measurement (ONNX Runtime FP32/INT8, OpenVINO default/f32/INT8; pruned "
       "and unpruned): deploy/")
def _select(run: Run, recipe: Recipe) -> None:
    from yolo_opt.deploy.select import REFERENCE, select_with

    models = {"pruned": run.path("pruned_pt") or run.path("pt")}
    unpruned = run.path("baseline_pt") or run.path("pt")
    if unpruned != models["pruned"]:
        models["unpruned"] = unpruned
    # the run's own ONNX files are candidates as they are: one file, one measurement, in every table of the report
    prebuilt = {key: run.path(kind) for key, kind in ((("pruned", "onnx_fp32"), "fp32_onnx"),
                                                      (("pruned", "onnx_int8"), "ptq_onnx"),
                                                      (("unpruned", "onnx_fp32"), "baseline_onnx"),
                                                      ((REFERENCE, "onnx_fp32"), "reference_onnx"))
                if run.path(kind) is not None and key[0] in (*models, REFERENCE)}
    result = select_with(models, run.data, run.folder / "deploy", recipe.imgsz, deploy=recipe.deploy, ptq=recipe.ptq,
                         lat_imgsz=recipe.bench.lat_imgsz, reference=run.path("reference_pt"), prebuilt=prebuilt)
    run.record("select", {"deploy": run.folder / "deploy"}, selected=result.get("selected_label"),
               speedup_vs_plain=result.get("speedup_vs_plain"), verdict=result.get("verdict"),
               bar=result["reference"]["model"])


@stage("benchmark", (), (), "measure every artefact: report.md, report.png, results.json")
def _benchmark(run: Run, recipe: Recipe) -> dict[str, Any]:
    from yolo_opt.bench.report import benchmark
    from yolo_opt.deploy.select import timings

    labels = {"baseline_pt": "baseline", "reference_pt": "reference", "pruned_pt": "pruned",
              "baseline_onnx": "baseline onnx", "reference_onnx": "reference onnx", "fp32_onnx": "fp32 onnx",
              "qat_onnx": "qat int8 onnx", "ptq_onnx": "ptq int8 onnx", "engine": "engine",
              "baseline_openvino": "baseline openvino", "reference_openvino": "reference openvino",
              "openvino_fp32": "openvino fp32", "openvino_int8": "openvino int8"}
    chosen = {label: run.path(kind) for kind, label in labels.items() if run.path(kind)}
    if not chosen:
        raise ModelError("stage 'benchmark' found no model artefact in the run; add stages before it")
    selection = run.path("deploy")
    result = json.loads((selection / "selection.json").read_text()) if selection is not None else None
    timed = timings(result) if result and recipe.bench.ov_precision is None else {}  # one figure per file
    rows = benchmark(chosen.values(), run.data, recipe.imgsz, out=run.folder, lat_imgsz=recipe.bench.lat_imgsz,
                     names=chosen.keys(), references=("reference", "reference onnx", "reference openvino"),
                     ov_precision=recipe.bench.ov_precision, timed=timed, rounds=recipe.deploy.rounds)
    report = run.folder / "report.md"
    latency = run.state["stages"].get("prune", {}).get("latency")
    if latency:  # prune_latency=: asked, predicted and measured
        from yolo_opt.bench.latency_target import latency_markdown

        atomic_write_bytes(report, (report.read_text() + "\n" + latency_markdown(latency) + "\n").encode())
    if result is not None:  # which form won here, and by how much
        text = (selection / "selection.md").read_text()
        atomic_write_bytes(report, (report.read_text() + "\n## Deployed form (chosen by measurement here)\n\n"
                                    + text).encode())
    run.record("benchmark", {"report": run.folder / "report.md", "plot": run.folder / "report.png",
                             "results": run.folder / "results.json"})
    return rows
