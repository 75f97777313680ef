"""The fastest deployable form of a model on this machine, chosen by measurement (`yolo-opt deploy`, the `select`
stage of `optimize`).

Which form is fastest depends on the CPU and the runtime: on an AVX512-BF16/AMX CPU OpenVINO runs an FP32 IR in bf16
by default and beat its own NNCF INT8 (1.08-1.18x); on an AVX2-only CPU the order was different again; pruning to
half the GFLOPs bought 0.91x on OpenVINO but 0.73x on ONNX Runtime. So every candidate form the target can run is
built, validated with the Ultralytics validator, timed on this machine, and the fastest one within `max_map_drop` of
the reference is delivered, with the table and the plot that justify the choice:

    onnx_fp32   yolo-opt's FP32 ONNX on ONNX Runtime          onnx_int8   yolo-opt's INT8 QDQ ONNX on ONNX Runtime
    ov          the FP32 IR on OpenVINO at its default        ov_f32      the same IR at f32 math
                precision (bf16 where the CPU has it)         ov_int8     NNCF INT8 IR (accuracy-controlled)

for each model given (the pruned one and the unpruned input, say). Timing: batch 1, each model in a process of
its own (OpenVINO's spinning thread pool slows others, and ONNX Runtime sessions sharing a process read up to 1.5x
slow), the models taking turns round after round so that load on the machine hits all of them alike; the median of
the rounds. Beside the model's time, each row has the time a user
feels: letterbox of a real image + the model + decode (and NMS where the model has none), and the throughput at batch
8 (images/s; ONNX forms are exported again at that batch, OpenVINO reshapes its IR). The plain Ultralytics
exports of the unpruned model (`yolo export format=onnx` / `format=openvino`) are timed too: the selection's speed-up
is stated against the fastest of them. A Jetson or GPU target cannot be measured here: it gets the TensorRT bundle.
"""

from __future__ import annotations

import json
import shutil
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yolo_opt.errors import ConfigError, DeployError

if TYPE_CHECKING:
    from yolo_opt.options import DeployOptions, PTQOptions

FORMS = {
    "onnx_fp32": ("onnx", None, "FP32 ONNX (yolo-opt export), ONNX Runtime"),
    "onnx_int8": ("onnx", None, "INT8 QDQ ONNX (yolo-opt), ONNX Runtime"),
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
    latency_ms: float | None = None  # the model alone, batch 1
    pipeline_ms: float | None = None  # letterbox + model + decode (+ NMS), batch 1
    throughput: float | None = None  # images/s at `batch_size` (None: not timed)
    batch_size: int = 0
    batch_path: str | None = None  # the file timed at `batch_size` (ONNX: its own export; None: `path`)
    runtime: str = ""
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


def build_candidates(label: str, pt: Path, data: str | Path, folder: Path, imgsz: int, runtimes: tuple[str, ...],
                     calib_images: int, max_map_drop: float, plain: bool, batch: int = 0) -> list[Candidate]:
    """Every form of `pt` the runtimes can run, written under `folder/<label>/` (kept: a rerun reuses them); with
    `batch` > 1, each ONNX form also exported at that batch for the throughput column (the same weights, the INT8
    one calibrated on the same images: the same ranges)."""
    from yolo_opt.deploy.onnx import export_onnx
    from yolo_opt.quant.ptq import quantize_onnx

    d = folder / label
    d.mkdir(parents=True, exist_ok=True)
    out = []
    if "onnx" in runtimes:
        fp32 = d / "model_fp32.onnx"
        if not fp32.exists():
            export_onnx(pt, fp32, imgsz=imgsz)
        int8 = d / "model_int8.onnx"
        if not int8.exists():
            quantize_onnx(fp32, data, int8, calib_images=calib_images, validate=False, progress=False)
        out += [Candidate(label, "onnx_fp32", str(fp32)), Candidate(label, "onnx_int8", str(int8))]
        if batch > 1:
            fp32_b, int8_b = d / f"model_fp32_b{batch}.onnx", d / f"model_int8_b{batch}.onnx"
            if not fp32_b.exists():
                export_onnx(pt, fp32_b, imgsz=imgsz, batch=batch)
            if not int8_b.exists():
                quantize_onnx(fp32_b, data, int8_b, calib_images=calib_images, validate=False, progress=False)
            out[-2].batch_path, out[-1].batch_path = str(fp32_b), str(int8_b)
    if "openvino" in runtimes:
        from yolo_opt.deploy.openvino import export_openvino

        ov = d / "model_openvino_model"
        if not ov.exists():
            export_openvino(pt, ov, imgsz, validate=False, progress=False)
        ov8 = d / "model_int8_openvino_model"
        if not ov8.exists():
            export_openvino(pt, ov8, imgsz, int8=True, data=data, calib_images=calib_images,
                            max_map_drop=max_map_drop, validate=False, progress=False, fp32=ov)
        out += [Candidate(label, "ov", str(ov)), Candidate(label, "ov_f32", str(ov)), Candidate(label, "ov_int8", str(ov8))]
    if plain:
        forms = tuple(f for f in PLAIN if FORMS[f][0] in runtimes)
        twins = _plain_exports(pt, d, imgsz, batch, ("ul_onnx",)) if batch > 1 and "ul_onnx" in forms else {}
        out += [Candidate(label, form, str(path), batch_path=str(twins[form]) if form in twins else None)
                for form, path in _plain_exports(pt, d, imgsz, formats=forms).items()]
    for c in out:
        c.batch_size = batch if batch > 1 else 0
    return out


def _validate(candidates: list[Candidate], data: str | Path, imgsz: int) -> None:
    """mAP of each candidate with the Ultralytics validator (batch 1, fixed shapes, as every exported model).

    OpenVINO at f32 math runs the FP32 IR exactly as ONNX Runtime runs the FP32 ONNX: it gets that model's figure
    (the validator has no precision switch)."""
    from yolo_opt.validation import validate

    seen: dict[str, dict[str, float]] = {}
    for c in candidates:
        twin = next((x for x in candidates if x.model == c.model and x.form == "onnx_fp32"), None)
        if c.form == "ov_f32" and twin is not None:
            figures = seen[twin.path]
        else:
            if c.path not in seen:
                device = "intel:cpu" if FORMS[c.form][0] == "openvino" else "cpu"
                seen[c.path] = validate(c.path, data, imgsz, device=device)
            figures = seen[c.path]
        c.map, c.mask_map = figures["map"], figures.get("mask_map")


def _time(candidates: list[Candidate], imgsz: int, rounds: int, runs: int, threads: int | None, image: Path) -> None:
    """Latency of each candidate alone and in the full pipeline (and its throughput at its `batch_size`), each
    model in a fresh process of its own (its batch-1 figures, then its throughput), the candidates taking turns
    round after round.

    One model per process: ONNX Runtime sessions sharing a process timed 1.5x slow here (YOLO26n FP32 at 640 px:
    48-50 ms beside two other sessions, 31.6 ms alone, spinning off or on), and a user runs one model."""
    from yolo_opt.bench.latency import phases_in_process

    model_ms: dict[int, list[float]] = {id(c): [] for c in candidates}
    pipe_ms: dict[int, list[float]] = {id(c): [] for c in candidates}
    per_s: dict[int, list[float]] = {id(c): [] for c in candidates}
    for _ in range(rounds):
        for c in candidates:
            one = {"paths": [c.path], "imgsz": imgsz, "runs": runs, "rounds": 1, "warmup": 3, "threads": threads,
                   "precision": FORMS[c.form][1], "image": image}
            phases = [one]
            if c.batch_size > 1:  # then its throughput, in the same process once the batch-1 session is gone
                phases.append({**one, "image": None, "warmup": 2, "batch": c.batch_size,
                               "batch_paths": [c.batch_path], "batch_only": True})
            timed = phases_in_process(phases)
            r = timed[0][0]
            model_ms[id(c)].append(r["ms"])
            pipe_ms[id(c)].append(r["pipeline_ms"])
            c.runtime = r["runtime"]
            if c.batch_size > 1:
                per_s[id(c)].append(timed[1][0]["throughput"])
    for c in candidates:
        c.latency_ms = statistics.median(model_ms[id(c)])
        c.pipeline_ms = statistics.median(pipe_ms[id(c)])
        c.throughput = statistics.median(per_s[id(c)]) if per_s[id(c)] else None


def select_with(models: dict[str, str | Path], data: str | Path, out: str | Path, imgsz: int,
                deploy: DeployOptions, ptq: PTQOptions,
                lat_imgsz: int | None, reference: str | Path | None = None) -> dict[str, Any]:
    """`select_deployment` with its settings from validated options (`DeployOptions`, `PTQOptions`): the one place
    the CLI's `deploy` and the pipeline's `select` stage turn options into a selection."""
    bound = {} if ptq.max_map_drop is None else {"max_map_drop": ptq.max_map_drop}  # unset: the selection's default
    return select_deployment(models, data, out, imgsz, deploy.target, reference=reference,
                             runtimes=deploy.runtime_list(), calib_images=ptq.calib_images, lat_imgsz=lat_imgsz,
                             rounds=deploy.rounds, throughput_batch=deploy.throughput_batch, **bound)


def select_deployment(models: dict[str, str | Path], data: str | Path, out: str | Path, imgsz: int = 640,
                      target: str = "cpu", max_map_drop: float = 0.01, reference: str | Path | None = None,
                      runtimes: tuple[str, ...] = ("onnx", "openvino"), calib_images: int = 256,
                      lat_imgsz: int | None = None, rounds: int = 3, runs: int = 20,
                      threads: int | None = None, throughput_batch: int = 8) -> dict[str, Any]:
    """Build every deployable form of `models`, measure them here and deliver the fastest within the bound.

    Args:
        models: {label: .pt}: e.g. {"pruned": pruned.pt, "unpruned": best.pt}. The plain Ultralytics exports of
            the last one (the unpruned input) are timed as the baseline of the speed-up.
        data: data.yaml (calibration: train split; accuracy: val split).
        out: Folder for the selected model (`model.onnx` or `model_openvino_model/`), `selection.json`,
            `selection.md`, `selection.png` and `candidates/`.
        imgsz: Export and validation size.
        target: "cpu" (measured here), or "jetson"/"gpu" (TensorRT: not measurable here, the bundle is written).
        max_map_drop: Largest accepted mAP50-95 drop (masks' too for segmentation) against the reference.
        reference: The model accuracy is held to (its FP32 ONNX, validated the same way); default: the last model.
        runtimes: Which CPU runtimes to consider ("onnx", "openvino").
        calib_images: INT8 calibration images (train split).
        lat_imgsz: Latency input size (default: `imgsz`); a separate export of each form is timed at it.
        rounds, runs, threads: Timing: rounds of turns across the models, calls per model per round, threads.
        throughput_batch: Batch of the throughput column (images/s); 0 or 1 skips it.

    Returns:
        The selection: the chosen candidate, every candidate's figures, the speed-up over the fastest plain export.
    """
    from yolo_opt.data.checks import check_dataset, dataset_images
    from yolo_opt.io.checkpoint import load_model
    from yolo_opt.io.files import atomic_folder, atomic_write_bytes, check_output

    if target not in TARGETS:
        raise ConfigError(f"target={target!r}: choose one of {', '.join(TARGETS)}")
    if not models:
        raise ConfigError("give at least one model to deploy, e.g. model=pruned.pt,best.pt")
    unknown = [r for r in runtimes if r not in ("onnx", "openvino")]
    if unknown or not runtimes:
        raise ConfigError(f"runtimes={','.join(runtimes)}: choose from onnx, openvino")
    pts = {label: Path(p) for label, p in models.items()}
    for pt in pts.values():
        check_dataset(data, getattr(load_model(pt), "names", None))  # a bad model or dataset: before any work
    out = check_output(out, list(pts.values()), folder=True)
    if target != "cpu":
        from yolo_opt.deploy.bundle import make_bundle

        pt = next(iter(pts.values()))
        make_bundle(pt, data, out, imgsz, True, calib_images=calib_images, max_map_drop=max_map_drop)
        return {"target": target, "bundle": str(out), "measured": False,
                "note": "TensorRT cannot run here: the bundle builds the engine on the device (build_engine.py)"}
    if "openvino" in runtimes:
        from yolo_opt.io.openvino import require

        require("openvino"), require("nncf")
    labels = list(pts)
    image = dataset_images(data, "val")[0]
    with atomic_folder(out, "deployment") as tmp:  # candidates included: a kill leaves nothing half-written
        work = tmp / "candidates"
        candidates: list[Candidate] = []
        separate = bool(lat_imgsz and lat_imgsz != imgsz)
        for label, pt in pts.items():
            candidates += build_candidates(label, pt, data, work, imgsz, runtimes, calib_images, max_map_drop,
                                           plain=label == labels[-1], batch=0 if separate else throughput_batch)
        _validate(candidates, data, imgsz)
        timed = candidates
        if separate:  # the same forms at the latency size (accuracy does not come from them)
            timed = []
            for label, pt in pts.items():
                timed += build_candidates(label, pt, data, work / f"lat{lat_imgsz}", lat_imgsz, runtimes,
                                          min(calib_images, 32), max_map_drop, plain=label == labels[-1],
                                          batch=throughput_batch)
        _time(timed, lat_imgsz or imgsz, rounds, runs, threads, image)
        for c, t in zip(candidates, timed, strict=True):
            c.latency_ms, c.pipeline_ms, c.runtime = t.latency_ms, t.pipeline_ms, t.runtime
            c.throughput, c.batch_size = t.throughput, t.batch_size

        ref = _reference_map(candidates, reference, pts, data, imgsz, work, labels[-1])
        best, plain = choose(candidates, ref, max_map_drop)
        result = {
            "target": target, "measured": True, "imgsz": imgsz, "lat_imgsz": lat_imgsz or imgsz,
            "max_map_drop": max_map_drop, "reference": ref, "selected": asdict(best), "selected_label": best.label,
            "fastest_plain_export": asdict(plain) if plain else None,
            "speedup_vs_plain": plain.latency_ms / best.latency_ms if plain else None,
            "pipeline_speedup_vs_plain": plain.pipeline_ms / best.pipeline_ms if plain else None,
            "candidates": [{**asdict(c), "label": c.label} for c in candidates],
        }
        src = Path(best.path)
        selected = tmp / ("model_openvino_model" if src.is_dir() else "model.onnx")
        (shutil.copytree if src.is_dir() else shutil.copyfile)(src, selected)
        result["model"] = str(out / selected.name)
        for c in [result["selected"], result["fastest_plain_export"] or {}, *result["candidates"]]:
            if c.get("path"):  # where the file is once the folder is in place
                c["path"] = str(out / Path(c["path"]).relative_to(tmp))
        atomic_write_bytes(tmp / "selection.json", json.dumps(result, indent=1).encode())
        atomic_write_bytes(tmp / "selection.md", (markdown(result) + "\n").encode())
        plot(result, tmp / "selection.png")
    result["out"] = str(out)
    return result


def _reference_map(candidates: list[Candidate], reference: str | Path | None, pts: dict[str, Path],
                   data: str | Path, imgsz: int, work: Path, unpruned: str) -> dict[str, float | None]:
    """The reference's mAP50-95 (and masks'), from its FP32 ONNX validated as the candidates were."""
    if reference is None:
        own = next((c for c in candidates if c.model == unpruned and c.form in ("onnx_fp32", "ov")), None)
        if own is not None:
            return {"model": unpruned, "map": own.map, "mask_map": own.mask_map}
    from yolo_opt.deploy.onnx import export_onnx
    from yolo_opt.validation import validate

    source = Path(reference) if reference is not None else pts[unpruned]
    onnx = work / "reference_fp32.onnx"
    if not onnx.exists():
        export_onnx(source, onnx, imgsz=imgsz)
    figures = validate(onnx, data, imgsz)
    return {"model": str(source), "map": figures["map"], "mask_map": figures.get("mask_map")}


def choose(candidates: list[Candidate], ref: dict[str, float | None],
           max_map_drop: float) -> tuple[Candidate, Candidate | None]:
    """(the fastest candidate within `max_map_drop` of the reference, the fastest plain Ultralytics export); marks
    each candidate `eligible`.

    Raises:
        DeployError: No candidate is within the bound.
    """
    for c in candidates:
        c.eligible = c.form not in PLAIN and c.map is not None and _within(c, ref, max_map_drop)
    eligible = [c for c in candidates if c.eligible]
    if not eligible:
        raise DeployError(f"no deployable form is within max_map_drop={max_map_drop} of the reference mAP50-95 "
                          f"{ref['map']:.4f}; raise max_map_drop or recover the pruned model longer")
    plain = min((c for c in candidates if c.form in PLAIN), key=lambda c: c.latency_ms, default=None)
    return min(eligible, key=lambda c: c.latency_ms), plain


def _within(c: Candidate, ref: dict[str, float | None], max_map_drop: float) -> bool:
    ok = ref["map"] - c.map <= max_map_drop + 1e-9
    if ref.get("mask_map") is not None and c.mask_map is not None:
        ok = ok and ref["mask_map"] - c.mask_map <= max_map_drop + 1e-9
    return ok


def markdown(result: dict[str, Any]) -> str:
    """The table behind the choice: every candidate, fastest first, ratios to the fastest plain export."""
    plain = result["fastest_plain_export"]
    rows = sorted(result["candidates"], key=lambda c: c["latency_ms"])
    masks = any(c.get("mask_map") is not None for c in rows)
    batch = max((c.get("batch_size") or 0 for c in rows), default=0)
    head = ["form", "runtime", "mAP50-95"] + ["mask mAP50-95"] * masks + ["within bound", "model ms", "vs plain",
                                                                         "pipeline ms", "vs plain"]
    head += [f"batch-{batch} img/s", "vs plain"] * bool(batch)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def fmt(v, d=4):
        return "—" if v is None else f"{v:.{d}f}"

    for c in rows:
        chosen = "**" if c["path"] == result["selected"]["path"] and c["form"] == result["selected"]["form"] else ""
        cells = [f"{chosen}{c['label']}{chosen}", c["runtime"], fmt(c["map"])] + [fmt(c.get("mask_map"))] * masks
        cells += ["yes" if c["eligible"] else ("(plain export)" if c["form"] in PLAIN else "no"),
                  f"{c['latency_ms']:.1f}", f"{c['latency_ms'] / plain['latency_ms']:.2f}x" if plain else "—",
                  f"{c['pipeline_ms']:.1f}", f"{c['pipeline_ms'] / plain['pipeline_ms']:.2f}x" if plain else "—"]
        if batch:
            per_s, base = c.get("throughput"), (plain or {}).get("throughput")
            cells += [fmt(per_s, 1), f"{per_s / base:.2f}x" if per_s and base else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    ref = result["reference"]
    lines += ["", f"Selected: **{result['selected_label']}**, {result['selected']['latency_ms']:.1f} ms"
              + (f" = {1 / result['speedup_vs_plain']:.2f}x the latency of the fastest plain Ultralytics export "
                 f"({FORMS[plain['form']][2]}, {plain['latency_ms']:.1f} ms)" if plain else "")
              + f"; mAP50-95 within {result['max_map_drop']} of the reference's {ref['map']:.4f}"
              + (f" (masks {ref['mask_map']:.4f})" if ref.get("mask_map") is not None else "") + ".",
              f"Latency: batch 1 at {result['lat_imgsz']} px, median of rounds in which the models took turns, each "
              "in a process of its own; 'pipeline' adds letterbox of a real image, decode and NMS (none for an "
              "NMS-free output)."
              + (f" Throughput: images/s of one call on {batch} images, timed in the same rounds (higher is better; "
                 "'vs plain' is the ratio to the fastest plain export's)." if batch else "")]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> Path:
    """mAP50-95 vs latency of every candidate, the bound drawn, the choice marked."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from yolo_opt.io.files import atomic_write_bytes

    key = "mask_map" if result["reference"].get("mask_map") is not None else "map"
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for c in result["candidates"]:
        if c.get(key) is None:
            continue
        marker = "*" if c["path"] == result["selected"]["path"] and c["form"] == result["selected"]["form"] else "o"
        ax.scatter(c["latency_ms"], c[key], marker=marker, s=160 if marker == "*" else 40,
                   c="tab:green" if c["eligible"] else "0.6", edgecolors="k", zorder=3)
        ax.annotate(c["label"], (c["latency_ms"], c[key]), textcoords="offset points", xytext=(5, 4), fontsize=6)
    bound = result["reference"][key] - result["max_map_drop"]
    ax.axhline(bound, ls="--", c="tab:red", lw=1, label=f"reference - max_map_drop ({bound:.3f})")
    ax.set(xlabel=f"latency, batch 1, {result['lat_imgsz']} px (ms)",
           ylabel="mask mAP50-95" if key == "mask_map" else "mAP50-95", title="yolo-opt deploy: candidates here")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path
