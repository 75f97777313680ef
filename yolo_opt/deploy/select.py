"""The fastest deployable form of a model on this machine, chosen by measurement (`yolo-opt deploy`, the `select`
stage of `optimize`).

Which form is fastest depends on the CPU and the runtime (docs/benchmarks.md#deployed-forms), so every candidate
form the target can run is built, validated with the Ultralytics validator on the head it ships with, timed on this
machine, and the fastest one within `max_map_drop` of the bar is delivered, with the table and the plot that justify
the choice:

    onnx_fp32   yolo-opt's FP32 ONNX on ONNX Runtime          onnx_int8   yolo-opt's INT8 QDQ ONNX on ONNX Runtime
    onnx_e2e    the NMS-free head's FP32 ONNX (YOLO26,        onnx_e2e_int8  its INT8 QDQ ONNX
                YOLOv10), where the default export is not it
    ov          the FP32 IR on OpenVINO at its default        ov_f32      the same IR at f32 math
                precision (bf16 where the CPU has it)         ov_int8     NNCF INT8 IR (accuracy-controlled)

for each model given (the pruned one, the unpruned input, and the reference). The bar is the best unpruned model
(input or reference, on its FP32 ONNX): a reference that scores below its input is flagged, never the bar. Timing is
the one protocol of reports (`yolo_opt.bench.latency.time_apart`): batch 1, each model in a process of its own, the
models taking turns round after round, the median and the rounds' spread; beside the model's time, the pipeline a
user runs per frame (letterbox of a real image, the model, decode and NMS where the model has none) and the
throughput at batch 8 (images/s; ONNX forms are exported again at that batch, OpenVINO reshapes its IR). The plain
Ultralytics exports of the unpruned input (`yolo export format=onnx` / `format=openvino`) are timed too: the
selection's speed-up is stated against the fastest of them. A Jetson or GPU target cannot be measured here: it gets
the TensorRT bundle.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yolo_opt.errors import ConfigError

if TYPE_CHECKING:
    from yolo_opt.options import DeployOptions, PTQOptions

FORMS = {
    "onnx_fp32": ("onnx", None, "FP32 ONNX (yolo-opt export), ONNX Runtime"),
    "onnx_int8": ("onnx", None, "INT8 QDQ ONNX (yolo-opt), ONNX Runtime"),
    "onnx_e2e": ("onnx", None, "FP32 ONNX of the NMS-free head, ONNX Runtime"),
    "onnx_e2e_int8": ("onnx", None, "INT8 QDQ ONNX of the NMS-free head, ONNX Runtime"),
    "ov": ("openvino", None, "FP32 IR, OpenVINO at its default precision"),
    "ov_f32": ("openvino", "f32", "FP32 IR, OpenVINO at f32 math"),
    "ov_int8": ("openvino", None, "INT8 IR (NNCF, accuracy-controlled), OpenVINO"),
    "ul_onnx": ("onnx", None, "Ultralytics' plain ONNX export, ONNX Runtime"),
    "ul_ov": ("openvino", None, "Ultralytics' plain OpenVINO export, default precision"),
}
PLAIN = ("ul_onnx", "ul_ov")  # what a user gets from `yolo export`: the speed-up is stated against these
TARGETS = ("cpu", "jetson", "gpu")


@dataclass
class Candidate:
    """One deployable form of one model, with what was measured of it."""

    model: str  # the label of the model it came from ("pruned", "unpruned", ...)
    form: str  # a key of FORMS
    path: str
    map: float | None = None
    mask_map: float | None = None
    latency_ms: float | None = None  # the model alone, batch 1 (median of the rounds)
    pipeline_ms: float | None = None  # letterbox + model + decode (+ NMS), batch 1; never below latency_ms
    latency_spread: tuple[float, float] | None = None  # (fastest, slowest) round
    pipeline_spread: tuple[float, float] | None = None
    throughput: float | None = None  # images/s at `batch_size` (None: not timed)
    batch_size: int = 0
    batch_path: str | None = None  # the file timed at `batch_size` (ONNX: its own export; None: `path`)
    runtime: str = ""
    threads: int | None = None
    eligible: bool = False  # within max_map_drop of the reference

    @property
    def label(self) -> str:
        return f"{self.model}: {FORMS[self.form][2]}"


def model_labels(paths: list[str | Path]) -> dict[str, str | Path]:
    """{label: path}: each model named by its file's stem; files of the same name (two runs' best.pt) by their run
    folder (runs/prune/weights/best.pt -> prune-best), else by their position."""
    labels = [Path(p).stem for p in paths]
    if len(set(labels)) != len(labels):
        runs = [Path(p).parent.parent if Path(p).parent.name == "weights" else Path(p).parent for p in paths]
        labels = [f"{r.resolve().name}-{label}" for r, label in zip(runs, labels, strict=True)]
    if len(set(labels)) != len(labels):
        labels = [f"{i}-{Path(p).stem}" for i, p in enumerate(paths)]
    return dict(zip(labels, paths, strict=True))


def _plain_exports(pt: Path, folder: Path, imgsz: int, batch: int = 1,
                   formats: tuple[str, ...] = ("ul_onnx", "ul_ov")) -> dict[str, Path]:
    """Ultralytics' own FP32 exports with its defaults (what `yolo export` gives), from a copy in `folder`."""
    from ultralytics import YOLO

    from yolo_opt.io.files import atomic_folder

    out = {}
    for form, fmt in (("ul_onnx", "onnx"), ("ul_ov", "openvino")):
        if form not in formats:
            continue
        dest = folder / (form if batch == 1 else f"{form}_b{batch}")
        if not dest.exists():
            with atomic_folder(dest, "plain export") as tmp:
                local = tmp / pt.name
                shutil.copyfile(pt, local)
                written = Path(YOLO(str(local)).export(format=fmt, imgsz=imgsz, batch=batch, verbose=False))
                local.unlink()
                if written.is_dir():
                    written.rename(tmp / f"model_{form}_openvino_model")
                else:
                    written.rename(tmp / "model.onnx")
        found = next(p for p in dest.iterdir() if p.name.endswith((".onnx", "_openvino_model")))
        out[form] = found
    return out


def build_candidates(label: str, pt: Path, data: str | Path, folder: Path, *, imgsz: int, runtimes: tuple[str, ...],
                     calib_images: int, max_map_drop: float, plain: bool, batch: int = 0,
                     prebuilt: dict[tuple[str, str], Path] | None = None,
                     forms: tuple[str, ...] | None = None) -> list[Candidate]:
    """Every form of `pt` the runtimes can run (`forms`: only those), written under `folder/<label>/` unless
    `prebuilt` has it ({(label, form): file}); with `batch` > 1, each ONNX form also exported at that batch for the
    throughput column (the same weights, the INT8 one calibrated on the same images: the same ranges)."""
    from yolo_opt.arch import adapter
    from yolo_opt.deploy.onnx import export_onnx, exported_end2end
    from yolo_opt.io.checkpoint import load_model
    from yolo_opt.quant.ptq import quantize_onnx

    prebuilt = prebuilt or {}
    d = folder / label
    d.mkdir(parents=True, exist_ok=True)
    out = []

    def wanted(form: str) -> bool:
        return forms is None or form in forms

    def made(form: str, path: Path, make) -> Path:  # the prebuilt file, else `path` made once (a rerun reuses it)
        if (label, form) in prebuilt:
            return Path(prebuilt[(label, form)])
        if not path.exists():
            make(path)
        return path

    if "onnx" in runtimes:
        heads = [("onnx_fp32", "onnx_int8", "", None)]
        fp32 = made("onnx_fp32", d / "model_fp32.onnx", lambda p: export_onnx(pt, p, imgsz=imgsz))
        if adapter(load_model(pt)).end2end and not exported_end2end(fp32):  # its NMS-free head: a form of its own
            heads.append(("onnx_e2e", "onnx_e2e_int8", "_e2e", True))
        for f32_form, int8_form, tag, end2end in heads:
            f32 = made(f32_form, d / f"model{tag}_fp32.onnx",
                       lambda p, e=end2end: export_onnx(pt, p, imgsz=imgsz, end2end=e))
            int8 = made(int8_form, d / f"model{tag}_int8.onnx",
                        lambda p, f=f32: quantize_onnx(f, data, p, calib_images=calib_images, validate=False,
                                                       progress=False)) if wanted(int8_form) else None
            pair = [Candidate(label, f32_form, str(f32))] * wanted(f32_form)
            pair += [Candidate(label, int8_form, str(int8))] * (int8 is not None)
            if batch > 1 and pair:  # the same forms exported at that batch, the INT8 one calibrated on the same images
                f32_b = d / f"model{tag}_fp32_b{batch}.onnx"
                if not f32_b.exists():
                    export_onnx(pt, f32_b, imgsz=imgsz, batch=batch, end2end=end2end)
                for c in pair:
                    c.batch_path = str(f32_b)
                    if c.form == int8_form:
                        c.batch_path = str(d / f"model{tag}_int8_b{batch}.onnx")
                        if not Path(c.batch_path).exists():
                            quantize_onnx(f32_b, data, c.batch_path, calib_images=calib_images, validate=False,
                                          progress=False)
            out += pair
    if "openvino" in runtimes and any(wanted(f) for f in ("ov", "ov_f32", "ov_int8")):
        from yolo_opt.deploy.openvino import export_openvino

        ov = made("ov", d / "model_openvino_model",
                  lambda p: export_openvino(pt, p, imgsz=imgsz, validate=False, progress=False))
        ov8 = made("ov_int8", d / "model_int8_openvino_model",
                   lambda p: export_openvino(pt, p, imgsz=imgsz, int8=True, data=data, calib_images=calib_images,
                                             max_map_drop=max_map_drop, validate=False, progress=False, fp32=ov))
        out += [Candidate(label, f, str(path)) for f, path in (("ov", ov), ("ov_f32", ov), ("ov_int8", ov8))
                if wanted(f)]
    if plain:
        kinds = tuple(f for f in PLAIN if FORMS[f][0] in runtimes)
        twins = _plain_exports(pt, d, imgsz, batch=batch, formats=("ul_onnx",)) if batch > 1 and "ul_onnx" in kinds else {}
        out += [Candidate(label, form, str(path), batch_path=str(twins[form]) if form in twins else None)
                for form, path in _plain_exports(pt, d, imgsz, formats=kinds).items()]
    for c in out:
        c.batch_size = batch if batch > 1 else 0
    return out


def _validate(candidates: list[Candidate], data: str | Path, imgsz: int,
              known: dict[str, dict[str, float]] | None = None) -> None:
    """mAP of each candidate with the Ultralytics validator (batch 1, fixed shapes, as every exported model), each on
    the head it ships with (the file's own output); `known`: figures already measured, by path.

    OpenVINO at f32 math runs the FP32 IR exactly as ONNX Runtime runs the FP32 ONNX: it gets that model's figure
    (the validator has no precision switch)."""
    from yolo_opt.validation import validate

    seen: dict[str, dict[str, float]] = dict(known or {})
    for c in candidates:
        twin = next((x for x in candidates if x.model == c.model and x.form == "onnx_fp32"), None)
        if c.form == "ov_f32" and twin is not None and twin.path in seen:
            figures = seen[twin.path]
        else:
            if c.path not in seen:
                device = "intel:cpu" if FORMS[c.form][0] == "openvino" else "cpu"
                seen[c.path] = validate(c.path, data, imgsz, device=device)
            figures = seen[c.path]
        c.map, c.mask_map = figures["map"], figures.get("mask_map")


def _time(candidates: list[Candidate], imgsz: int, *, rounds: int, runs: int, threads: int | None, image: Path) -> None:
    """Latency of each candidate alone and in the full pipeline (and its throughput at its `batch_size`), by the one
    protocol of reports (`yolo_opt.bench.latency.time_apart`)."""
    from yolo_opt.bench.latency import time_apart

    items = [{"path": c.path, "precision": FORMS[c.form][1], "batch": c.batch_size, "batch_path": c.batch_path}
             for c in candidates]
    for c, t in zip(candidates, time_apart(items, imgsz, rounds=rounds, runs=runs, threads=threads, image=image),
                    strict=True):
        c.latency_ms, c.latency_spread = t["ms"], t["ms_spread"]
        c.pipeline_ms, c.pipeline_spread = t.get("pipeline_ms"), t.get("pipeline_ms_spread")
        c.runtime, c.threads, c.throughput = t["runtime"], t["threads"], t.get("throughput")


def select_with(models: dict[str, str | Path], data: str | Path, out: str | Path, imgsz: int | None, *,
                deploy: DeployOptions, ptq: PTQOptions, lat_imgsz: int | None = None,
                reference: str | Path | None = None,
                prebuilt: dict[tuple[str, str], Path] | None = None) -> dict[str, Any]:
    """`select_deployment` with its settings from validated options (`DeployOptions`, `PTQOptions`): the one place
    the CLI's `deploy` and the pipeline's `select` stage turn options into a selection."""
    bound = {} if ptq.max_map_drop is None else {"max_map_drop": ptq.max_map_drop}  # unset: the selection's default
    return select_deployment(models, data, out, imgsz, target=deploy.target, reference=reference,
                             runtimes=deploy.runtime_list(), calib_images=ptq.calib_images, lat_imgsz=lat_imgsz,
                             rounds=deploy.rounds, throughput_batch=deploy.throughput_batch, prebuilt=prebuilt,
                             keep_candidates=deploy.keep_candidates, **bound)


REFERENCE = "reference"  # the label of `reference=` among the candidates


def select_deployment(models: dict[str, str | Path], data: str | Path, out: str | Path, imgsz: int | None = None, *,
                      target: str = "cpu", max_map_drop: float = 0.01, reference: str | Path | None = None,
                      runtimes: tuple[str, ...] = ("onnx", "openvino"), calib_images: int = 256,
                      lat_imgsz: int | None = None, rounds: int = 3, runs: int = 20,
                      threads: int | None = None, throughput_batch: int = 8,
                      prebuilt: dict[tuple[str, str], Path] | None = None,
                      keep_candidates: bool = False) -> dict[str, Any]:
    """Build every deployable form of `models`, measure them here and deliver the fastest within the bound.

    The bar is the best unpruned model here: the last model given (the unpruned input) or `reference`, whichever
    scores the higher FP32 mAP50-95; both are candidates too. A reference that scores below the input is flagged
    and never the bar (a short fine-tune can collapse a trained model).

    Args:
        models: {label: .pt}: e.g. {"pruned": pruned.pt, "unpruned": best.pt}; the last one is the unpruned input,
            whose plain Ultralytics exports are timed as the baseline of the speed-up.
        data: data.yaml (calibration: train split; accuracy: val split).
        out: Folder for the selected model (`model.onnx` or `model_openvino_model/`), `selection.json`,
            `selection.md` and `selection.png` (and `candidates/` with `keep_candidates`).
        imgsz: Export and validation size (default: the size the unpruned input was trained at, as `yolo export`).
        target: "cpu" (measured here), or "jetson"/"gpu" (TensorRT: not measurable here, the bundle is written).
        max_map_drop: Largest accepted mAP50-95 drop (masks' too for segmentation) below the bar.
        reference: The input trained as long as the pruned model (unpruned): a candidate, and the bar if it beats
            the input.
        runtimes: Which CPU runtimes to consider ("onnx", "openvino").
        calib_images: INT8 calibration images (train split).
        lat_imgsz: Latency input size (default: `imgsz`); a separate export of each form is timed at it.
        rounds, runs, threads: Timing: rounds of turns across the models, calls per model per round, threads.
        throughput_batch: Batch of the throughput column (images/s); 0 or 1 skips it.
        prebuilt: {(label, form): file} already made at `imgsz` (a pipeline's ONNX files): used, not rebuilt.
        keep_candidates: Keep every candidate's files under `out/candidates/`.

    Returns:
        The selection: the chosen candidate (None when nothing is within the bound: `verdict` says what would
        pass), every candidate's figures, the bar, the speed-up over the fastest plain export.
    """
    from ultralytics.utils import LOGGER

    from yolo_opt.data.checks import check_dataset, dataset_images
    from yolo_opt.io.checkpoint import load_model, trained_imgsz
    from yolo_opt.io.files import atomic_folder, atomic_write_bytes, check_output

    if target not in TARGETS:
        raise ConfigError(f"target={target!r}: choose one of {', '.join(TARGETS)}")
    if not models:
        raise ConfigError("give at least one model to deploy, e.g. model=pruned.pt,best.pt")
    unknown = [r for r in runtimes if r not in ("onnx", "openvino")]
    if unknown or not runtimes:
        raise ConfigError(f"runtimes={','.join(runtimes)}: choose from onnx, openvino")
    pts = {label: Path(p) for label, p in models.items()}
    labels = list(pts)
    unpruned = [labels[-1]]
    if reference is not None:
        if REFERENCE in pts:
            raise ConfigError(f"a model is labelled '{REFERENCE}' and reference= is given too: rename the file")
        pts[REFERENCE] = Path(reference)
        unpruned.append(REFERENCE)
    for pt in pts.values():
        check_dataset(data, getattr(load_model(pt), "names", None))  # a bad model or dataset: before any work
    imgsz = imgsz or trained_imgsz(pts[labels[-1]])
    out = check_output(out, list(pts.values()), folder=True)
    if target != "cpu":
        from yolo_opt.deploy.bundle import make_bundle

        pt = next(iter(pts.values()))
        make_bundle(pt, data, out, imgsz=imgsz, int8=True, calib_images=calib_images, max_map_drop=max_map_drop)
        return {"target": target, "bundle": str(out), "measured": False,
                "note": "TensorRT cannot run here: the bundle builds the engine on the device (build_engine.py)"}
    if "openvino" in runtimes:
        from yolo_opt.io.openvino import require

        require("openvino"), require("nncf")
    image = dataset_images(data, "val")[0]
    prebuilt = dict(prebuilt or {})
    with atomic_folder(out, "deployment") as tmp:  # candidates included: a kill leaves nothing half-written
        work = tmp / "candidates"
        separate = bool(lat_imgsz and lat_imgsz != imgsz)
        ref, known = _bar(pts, unpruned, data, imgsz=imgsz, work=work, prebuilt=prebuilt)
        LOGGER.info(f"yolo-opt deploy: candidates are held to {ref['model']}'s FP32 mAP50-95 {ref['map']:.4f} "
                    f"({ref['why']}), max_map_drop={max_map_drop}")

        def forms_of(label: str) -> tuple[str, ...] | None:  # an unpruned model below the bar: its FP32 row alone
            return ("onnx_fp32",) if label in unpruned and label != ref["model"] else None

        def build(size: int, folder: Path, *, n_calib: int, batch: int, given: dict) -> list[Candidate]:
            made: list[Candidate] = []
            for label, pt in pts.items():
                made += build_candidates(label, pt, data, folder, imgsz=size, runtimes=runtimes, calib_images=n_calib,
                                         max_map_drop=max_map_drop, plain=label == labels[-1], batch=batch,
                                         prebuilt=given, forms=forms_of(label))
            return made

        candidates = build(imgsz, work, n_calib=calib_images, batch=0 if separate else throughput_batch, given=prebuilt)
        _validate(candidates, data, imgsz, known)
        timed = candidates
        if separate:  # the same forms at the latency size (accuracy does not come from them)
            timed = build(lat_imgsz, work / f"lat{lat_imgsz}", n_calib=min(calib_images, 32), batch=throughput_batch, given={})
        _time(timed, lat_imgsz or imgsz, rounds=rounds, runs=runs, threads=threads, image=image)
        for c, t in zip(candidates, timed, strict=True):
            c.latency_ms, c.pipeline_ms, c.runtime, c.threads = t.latency_ms, t.pipeline_ms, t.runtime, t.threads
            c.latency_spread, c.pipeline_spread = t.latency_spread, t.pipeline_spread
            c.throughput, c.batch_size = t.throughput, t.batch_size

        best, plain = choose(candidates, ref, max_map_drop)
        result = {
            "target": target, "measured": True, "imgsz": imgsz, "lat_imgsz": lat_imgsz or imgsz,
            "max_map_drop": max_map_drop, "reference": ref, "rounds": rounds,
            "selected": asdict(best) if best else None, "selected_label": best.label if best else None,
            "fastest_plain_export": asdict(plain) if plain else None,
            "speedup_vs_plain": plain.latency_ms / best.latency_ms if plain and best else None,
            "pipeline_speedup_vs_plain": (plain.pipeline_ms / best.pipeline_ms
                                          if plain and best and plain.pipeline_ms and best.pipeline_ms else None),
            "candidates": [{**asdict(c), "label": c.label} for c in candidates],
            "verdict": verdict(candidates, ref, max_map_drop, unpruned),
            "candidates_kept": keep_candidates,
        }
        if best is not None:
            src = Path(best.path)
            selected = tmp / ("model_openvino_model" if src.is_dir() else "model.onnx")
            (shutil.copytree if src.is_dir() else shutil.copyfile)(src, selected)
            result["model"] = str(out / selected.name)
        for c in [result["selected"] or {}, result["fastest_plain_export"] or {}, *result["candidates"]]:
            if c.get("path") and Path(c["path"]).is_relative_to(tmp):  # where the file is once the folder is in place
                c["path"] = str(out / Path(c["path"]).relative_to(tmp))
        atomic_write_bytes(tmp / "selection.json", json.dumps(result, indent=1).encode())
        atomic_write_bytes(tmp / "selection.md", (markdown(result) + "\n").encode())
        plot(result, tmp / "selection.png")
        if not keep_candidates:  # intermediates: the table keeps their figures, keep_candidates=True their files
            shutil.rmtree(work, ignore_errors=True)
    result["out"] = str(out)
    return result


def _bar(pts: dict[str, Path], unpruned: list[str], data: str | Path, *, imgsz: int, work: Path,
         prebuilt: dict[tuple[str, str], Path]) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """The bar of the selection: the unpruned model with the best FP32 mAP50-95 (its FP32 ONNX validated as every
    candidate is), and the figures measured on the way, by path (each unpruned FP32 ONNX becomes a candidate)."""
    from yolo_opt.deploy.onnx import export_onnx
    from yolo_opt.validation import validate

    scores: dict[str, dict[str, float]] = {}
    known: dict[str, dict[str, float]] = {}
    for label in unpruned:
        onnx = prebuilt.get((label, "onnx_fp32"))
        if onnx is None:
            onnx = work / label / "model_fp32.onnx"
            onnx.parent.mkdir(parents=True, exist_ok=True)
            export_onnx(pts[label], onnx, imgsz=imgsz)
            prebuilt[(label, "onnx_fp32")] = onnx
        known[str(onnx)] = scores[label] = validate(onnx, data, imgsz)
    return bar_of(scores, unpruned), known


def bar_of(scores: dict[str, dict[str, float]], unpruned: list[str]) -> dict[str, Any]:
    """The bar of a selection from the unpruned models' FP32 figures (`unpruned`: the input first, then the
    reference where there is one): the higher-scoring one, and why; a reference below its input is flagged."""
    best = max(unpruned, key=lambda k: scores[k]["map"])
    ref = {"model": best, "map": scores[best]["map"], "mask_map": scores[best].get("mask_map"),
           "scores": {k: scores[k]["map"] for k in unpruned}, "flag": None}
    if len(unpruned) == 1:
        ref["why"] = "the unpruned input, the last model given; reference= adds the input trained as long as the " \
                     "pruned model, held as a candidate and as the bar where it scores higher"
    elif best == unpruned[0]:
        ref["why"] = f"the unpruned input scores at or above the reference ({scores[unpruned[1]]['map']:.4f})"
        if scores[unpruned[1]]["map"] < scores[best]["map"]:
            ref["flag"] = (f"the reference scores below its input ({scores[unpruned[1]]['map']:.4f} < "
                           f"{scores[best]['map']:.4f}): its fine-tune lost accuracy, so it is not the bar")
    else:
        ref["why"] = (f"the reference, the input trained as long as the pruned model, scores above the input "
                      f"({scores[unpruned[0]]['map']:.4f})")
    return ref


def choose(candidates: list[Candidate], ref: dict[str, Any],
           max_map_drop: float) -> tuple[Candidate | None, Candidate | None]:
    """(the fastest candidate within `max_map_drop` of the bar, or None; the fastest plain Ultralytics export); marks
    each candidate `eligible`."""
    for c in candidates:
        c.eligible = c.form not in PLAIN and c.map is not None and _within(c, ref, max_map_drop)
    eligible = [c for c in candidates if c.eligible]
    plain = min((c for c in candidates if c.form in PLAIN), key=lambda c: c.latency_ms, default=None)
    return min(eligible, key=lambda c: c.latency_ms, default=None), plain


def _shortfall(c: Candidate, ref: dict[str, Any]) -> float:
    """How far `c` is below the bar (boxes, and masks where both are measured)."""
    gaps = [ref["map"] - c.map]
    if ref.get("mask_map") is not None and c.mask_map is not None:
        gaps.append(ref["mask_map"] - c.mask_map)
    return max(gaps)


def _within(c: Candidate, ref: dict[str, Any], max_map_drop: float) -> bool:
    return _shortfall(c, ref) <= max_map_drop + 1e-9


def verdict(candidates: list[Candidate], ref: dict[str, Any], max_map_drop: float, unpruned: list[str]) -> str | None:
    """One line for each compressed model none of whose forms is within the bound: its most accurate form, by how
    much it misses, and what would let it pass; None when every model has a form within the bound."""
    lines = []
    for label in dict.fromkeys(c.model for c in candidates):
        mine = [c for c in candidates if c.model == label and c.form not in PLAIN and c.map is not None]
        if label in unpruned or not mine or any(c.eligible for c in mine):
            continue
        closest = min(mine, key=lambda c: _shortfall(c, ref))
        gap = _shortfall(closest, ref)
        lines.append(f"{label} misses the bar: its most accurate form ({FORMS[closest.form][2]}) scores "
                     f"{closest.map:.4f}, {gap:.4f} below {ref['model']}'s {ref['map']:.4f}; max_map_drop="
                     f"{math.ceil(gap * 1000) / 1000:g} would admit it, or recover it longer (more epochs)")
    return "; ".join(lines) or None


def timings(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{resolved path: latency figures} of the files a selection timed at their own size (not the OpenVINO f32 rows:
    another precision of the same IR), in `time_apart`'s keys: what a report of the same run reuses."""
    if not result.get("measured") or result["lat_imgsz"] != result["imgsz"]:
        return {}
    return {str(Path(c["path"]).resolve()): {"ms": c["latency_ms"], "ms_spread": c.get("latency_spread"),
                                             "pipeline_ms": c.get("pipeline_ms"),
                                             "pipeline_ms_spread": c.get("pipeline_spread"), "runtime": c["runtime"],
                                             "threads": c.get("threads"), "imgsz": result["lat_imgsz"],
                                             "rounds": result.get("rounds")}
            for c in result["candidates"] if FORMS[c["form"]][1] is None and Path(c["path"]).exists()}


def markdown(result: dict[str, Any]) -> str:
    """The table behind the choice: every candidate, fastest first, ratios to the fastest plain export."""
    from yolo_opt.bench.latency import noisy_copies, with_spread

    plain = result["fastest_plain_export"]
    rows = sorted(result["candidates"], key=lambda c: c["latency_ms"])
    masks = any(c.get("mask_map") is not None for c in rows)
    batch = max((c.get("batch_size") or 0 for c in rows), default=0)
    head = ["form", "runtime", "mAP50-95"] + ["mask mAP50-95"] * masks + ["within bound", "model ms", "vs plain",
                                                                         "pipeline ms", "vs plain"]
    head += [f"batch-{batch} img/s", "vs plain"] * bool(batch)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    selected = result["selected"] or {}

    def fmt(v, d=4):
        return "—" if v is None else f"{v:.{d}f}"

    def ratio(v, base):
        return f"{v / base:.2f}x" if v and base else "—"

    for c in rows:
        chosen = "**" if c["path"] == selected.get("path") and c["form"] == selected.get("form") else ""
        cells = [f"{chosen}{c['label']}{chosen}", c["runtime"], fmt(c["map"])] + [fmt(c.get("mask_map"))] * masks
        cells += ["yes" if c["eligible"] else ("(plain export)" if c["form"] in PLAIN else "no"),
                  with_spread(c["latency_ms"], c.get("latency_spread")), ratio(c["latency_ms"], (plain or {}).get(
                      "latency_ms")),
                  with_spread(c.get("pipeline_ms"), c.get("pipeline_spread")),
                  ratio(c.get("pipeline_ms"), (plain or {}).get("pipeline_ms"))]
        if batch:
            cells += [fmt(c.get("throughput"), 1), ratio(c.get("throughput"), (plain or {}).get("throughput"))]
        lines.append("| " + " | ".join(cells) + " |")
    ref = result["reference"]
    bar = (f"The bar: {ref['model']}'s FP32 mAP50-95 {ref['map']:.4f}"
           + (f" (masks {ref['mask_map']:.4f})" if ref.get("mask_map") is not None else "")
           + f" less max_map_drop={result['max_map_drop']}: {ref['why']}.")
    lines += ["", bar]
    if ref.get("flag"):
        lines.append(f"**Flagged:** {ref['flag']}.")
    if selected:
        lines.append(f"Selected: **{result['selected_label']}**, {selected['latency_ms']:.1f} ms"
                     + (f" = {1 / result['speedup_vs_plain']:.2f}x the latency of the fastest plain Ultralytics export "
                        f"({FORMS[plain['form']][2]}, {plain['latency_ms']:.1f} ms)" if plain else "") + ".")
    else:
        lines.append("**Nothing selected:** no form is within the bound.")
    if result.get("verdict"):
        lines.append(f"**{result['verdict']}.**")
    noise = noisy_copies([(c["label"], c["runtime"] if c["model"] in ref["scores"] and c["form"] == "onnx_fp32"
                           else None, c["latency_ms"], c.get("latency_spread")) for c in rows])
    if noise:
        lines.append(f"**Noise:** {noise}.")
    lines.append(f"Latency: batch 1 at {result['lat_imgsz']} px; each model in a process of its own, the models "
                 f"taking turns over {result.get('rounds', 1)} round(s): the median, and in brackets the fastest and "
                 "slowest round. 'pipeline' is one frame of a real image: letterbox, the model (the 'model ms' is "
                 "timed inside those same frames), decode and NMS (none for an NMS-free output)."
                 + (f" Throughput: images/s of one call on {batch} images, timed in the same rounds (higher is "
                    "better; 'vs plain' is the ratio to the fastest plain export's)." if batch else "")
                 + ("" if result.get("candidates_kept") else " The candidates' files were removed once measured "
                    "(keep_candidates=True keeps them)."))
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> Path:
    """mAP50-95 vs latency of every candidate, numbered, the numbers' legend beside the axes; the bar drawn, the
    choice marked."""
    from yolo_opt.bench.report import numbered_plot

    key = "mask_map" if result["reference"].get("mask_map") is not None else "map"
    selected = result["selected"] or {}
    points = [{"label": c["label"], "x": c["latency_ms"], "y": c[key],
               "marker": "*" if c["path"] == selected.get("path") and c["form"] == selected.get("form") else "o",
               "color": "tab:green" if c["eligible"] else "0.6"}
              for c in result["candidates"] if c.get(key) is not None]
    bound = result["reference"][key] - result["max_map_drop"]
    return numbered_plot(points, path, xlabel=f"latency, batch 1, {result['lat_imgsz']} px (ms)",
                         ylabel="mask mAP50-95" if key == "mask_map" else "mAP50-95",
                         title="yolo-opt deploy: candidates here (green: within the bound, star: delivered)",
                         hline=(bound, f"the bar less max_map_drop ({bound:.3f})"))
