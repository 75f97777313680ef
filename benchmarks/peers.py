"""Peers benchmark: yolo-opt's INT8 beside Ultralytics', NNCF's and OpenVINO's, for a baseline and a pruned model.

    PYTHONPATH=. YOLO_OFFLINE=1 python benchmarks/peers.py --out runs/peers
    python benchmarks/peers.py --out runs/peers-conv --imgsz 128 --base base.pt --pruned pruned.pt --data data.yaml

One run on the generated dataset (yolo_opt.data.make_dataset): a yolov8n trained from its yaml (cached), a copy
pruned with yolo-opt's default recipe (prune_target=0.5: per-layer ratios) and fine-tuned (cached),
or two given checkpoints; then per model: FP32 ONNX (ours, and Ultralytics' plain export), yolo-opt's INT8 QDQ
ONNX, Ultralytics' INT8 ONNX, NNCF's INT8 ONNX (all on ONNX Runtime), OpenVINO FP32 (Ultralytics' exporter),
OpenVINO INT8 (NNCF, as `yolo-opt export format=openvino int8=True`), OpenVINO INT8 with max_map_drop=0.01 (NNCF
accuracy control) and yolo-opt's QDQ ONNX read by OpenVINO. OpenVINO is timed twice: at its default precision
(bf16 on CPUs with AVX512-BF16 or AMX) and at f32 math. Every calibration uses the same train images (fewer
for the latency-only models at --lat-imgsz: their speed does not depend on it).

mAP50-95 from the Ultralytics validator at the train size (batch 1, fixed shapes); latency at --lat-imgsz, batch 1,
--threads threads, --rounds interleaved rounds of --runs calls per model, median; the models of each runtime are
timed in a process of that runtime alone (yolo_opt.bench.latency). Ratios only within one runtime. Every artefact
and mAP is cached in --out; latency is measured anew on each run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers_models import models  # noqa: E402


def ultralytics_onnx(pt: Path, out: Path, **export_args) -> Path:
    """Ultralytics' own ONNX export of `pt` to `out` (cached), made from a copy in a scratch folder: Ultralytics
    writes next to the checkpoint."""
    from ultralytics import YOLO

    if out.exists():
        return out
    work = out.parent / f".ul_{out.stem}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    local = work / pt.name
    shutil.copyfile(pt, local)
    os.replace(YOLO(str(local)).export(format="onnx", batch=1, **export_args), out)
    shutil.rmtree(work, ignore_errors=True)
    return out


def _head(pt: Path) -> dict:
    """The same head output as yolo-opt's exports: an end-to-end model's NMS-free one (Ultralytics: nms=False), so
    the peers' graphs and ours compute the same thing (Ultralytics' default nms=None is the one-to-many output)."""
    from yolo_opt.arch import adapter
    from yolo_opt.io.checkpoint import load_model

    return adapter(load_model(pt)).exporter_args()


def ultralytics_int8_onnx(pt: Path, data: Path, imgsz: int, out: Path, fraction: float = 1.0) -> Path:
    """Ultralytics' own INT8 ONNX (ONNX Runtime quantize_static), calibrated on (a fraction of) the train split."""
    return ultralytics_onnx(pt, out, quantize=8, data=str(data), imgsz=imgsz, split="train", fraction=fraction,
                            **_head(pt))


def ultralytics_fp32_onnx(pt: Path, imgsz: int, out: Path) -> Path:
    """Ultralytics' plain FP32 ONNX export (what `yolo export format=onnx` writes: no DFL rewrite)."""
    return ultralytics_onnx(pt, out, imgsz=imgsz, simplify=True, **_head(pt))


def nncf_int8_onnx(fp32: Path, data: Path, imgsz: int, n: int, out: Path) -> Path:
    """NNCF's post-training INT8 of the FP32 ONNX (its ONNX backend, default settings)."""
    import nncf
    import onnx

    from yolo_opt.data.calib import calibration_files, load_batches
    from yolo_opt.io.files import atomic_path

    if out.exists():
        return out
    model = onnx.load(str(fp32))
    name = model.graph.input[0].name
    batches = load_batches(calibration_files(data, n), imgsz, progress=False)
    q = nncf.quantize(model, nncf.Dataset(batches, lambda x: {name: x}), subset_size=len(batches))
    with atomic_path(out) as tmp:
        onnx.save(q, str(tmp))
    return out


def ours_in_openvino(qdq: Path, out: Path) -> Path:
    """yolo-opt's QDQ ONNX converted to an OpenVINO IR (OpenVINO reads the Q/DQ pairs as FakeQuantize)."""
    import openvino as ov

    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}")
    ov.save_model(ov.convert_model(str(qdq)), str(tmp), compress_to_fp16=False)
    os.replace(tmp.with_suffix(".bin"), out.with_suffix(".bin"))
    os.replace(tmp, out)
    return out


def artefacts(label: str, pt: Path, data: Path, imgsz: int, work: Path, n_calib: int) -> dict[str, Path]:
    """Every variant of one model at one input size (cached: each is written atomically)."""
    from yolo_opt.data.checks import dataset_images
    from yolo_opt.deploy import export_onnx
    from yolo_opt.deploy.openvino import export_openvino
    from yolo_opt.quant import quantize_onnx

    d = work / f"{label}_{imgsz}"
    d.mkdir(parents=True, exist_ok=True)
    fp32 = d / "fp32.onnx"
    if not fp32.exists():
        export_onnx(pt, fp32, imgsz=imgsz)
    ours = d / "ours_int8.onnx"
    if not ours.exists():
        quantize_onnx(fp32, data, ours, calib_images=n_calib, validate=False, progress=False)
    n_train = len(dataset_images(data, "train"))
    out = {"fp32": fp32, "ul_fp32": ultralytics_fp32_onnx(pt, imgsz, d / "ul_fp32.onnx"), "ours": ours,
           "ultralytics": ultralytics_int8_onnx(pt, data, imgsz, d / "ul_int8.onnx", min(1.0, n_calib / n_train)),
           "nncf_onnx": nncf_int8_onnx(fp32, data, imgsz, n_calib, d / "nncf_int8.onnx")}
    ov = d / "ov_fp32_openvino_model"
    if not ov.exists():
        export_openvino(pt, ov, imgsz, validate=False, progress=False)
    out["ov_fp32"] = ov
    for key, drop in (("ov_int8", None), ("ov_int8_ac", 0.01)):
        folder = d / f"{key}_openvino_model"
        if not folder.exists():
            export_openvino(pt, folder, imgsz, int8=True, data=data, calib_images=n_calib, max_map_drop=drop,
                            validate=False, progress=False, fp32=ov)
        out[key] = folder
    out["ours_ov"] = ours_in_openvino(ours, d / "ours_ov" / "ours_int8.xml")
    return out


ROWS = [  # (variant, runtime, label)
    ("fp32", "ONNX Runtime", "FP32 ONNX (yolo-opt export)"),
    ("ul_fp32", "ONNX Runtime", "FP32 ONNX (Ultralytics export)"),
    ("ours", "ONNX Runtime", "yolo-opt INT8 QDQ"),
    ("ultralytics", "ONNX Runtime", "Ultralytics INT8 ONNX"),
    ("nncf_onnx", "ONNX Runtime", "NNCF INT8 ONNX"),
    ("ov_fp32", "OpenVINO", "OpenVINO FP32 (Ultralytics export)"),
    ("ov_int8", "OpenVINO", "OpenVINO INT8 (NNCF)"),
    ("ov_int8_ac", "OpenVINO", "OpenVINO INT8 (NNCF, max_map_drop=0.01)"),
    ("ours_ov", "OpenVINO", "yolo-opt INT8 QDQ ONNX read by OpenVINO"),
]
F32_ROWS = [(v, "OpenVINO f32", f"{label}, f32 math") for v, runtime, label in ROWS if runtime == "OpenVINO"]


def selection(pts: dict[str, Path], data: Path, out: Path, args: argparse.Namespace) -> list[str]:
    """What `yolo-opt deploy` delivers for the pruned and the unpruned model here, and its table."""
    from yolo_opt.deploy.select import select_deployment
    from yolo_opt.errors import DeployError

    if out.exists():
        shutil.rmtree(out)  # deploy measures anew and refuses a non-empty folder
    try:
        result = select_deployment({"pruned": pts["pruned"], "unpruned": pts["baseline"]}, data, out, args.imgsz,
                                   reference=args.reference or pts["baseline"], calib_images=args.calib_images,
                                   lat_imgsz=args.lat_imgsz, rounds=args.rounds, runs=args.runs, threads=args.threads)
    except DeployError as e:  # no form within max_map_drop: a finding of the run, not a reason to lose the table
        return [f"Selection (`yolo-opt deploy`): refused: {e}"]
    return [f"Selection (`yolo-opt deploy`, accuracy held to {args.reference or 'the baseline'}): "
            f"**{result.get('selected_label')}**", "", (out / "selection.md").read_text()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/peers")
    ap.add_argument("--arch", default="yolov8n", help="model yaml stem trained as the baseline (yolov8n, yolo26n, ...)")
    ap.add_argument("--base-epochs", type=int, default=20)
    ap.add_argument("--ft-epochs", type=int, default=10)
    ap.add_argument("--prune-target", type=float, default=0.5, help="pruned model: yolo-opt's default recipe, "
                    "prune_target= (per-layer ratios)")
    ap.add_argument("--prune", type=float, default=None, help="one ratio everywhere instead of --prune-target")
    ap.add_argument("--base", help="use this trained baseline .pt (with --pruned and --data) instead of training")
    ap.add_argument("--pruned", help="its pruned + fine-tuned .pt")
    ap.add_argument("--data", help="their data.yaml")
    ap.add_argument("--prune-round", type=int, default=8)
    ap.add_argument("--imgsz", type=int, default=160, help="train size: mAP")
    ap.add_argument("--lat-imgsz", type=int, default=640, help="latency size")
    ap.add_argument("--calib-images", type=int, default=300, help="calibration of the models whose mAP is measured")
    ap.add_argument("--lat-calib-images", type=int, default=32,
                    help="calibration of the latency-only models (their speed does not depend on it)")
    ap.add_argument("--runs", type=int, default=20, help="timed calls per model per round")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--select", action="store_true", help="also run `yolo-opt deploy` on the two models and add what "
                    "it delivers (held to --reference, or to the baseline)")
    ap.add_argument("--reference", help="the reference .pt the selection's accuracy is held to")
    args = ap.parse_args()

    from yolo_opt.bench.latency import by_runtime
    from yolo_opt.bench.measure import model_stats, validate

    work = Path(args.out).resolve()
    if args.base:
        if not (args.pruned and args.data):
            ap.error("--base needs --pruned and --data")
        data, pts = Path(args.data).resolve(), {"baseline": Path(args.base).resolve(),
                                                  "pruned": Path(args.pruned).resolve()}
    else:
        data, pts = models(work, args.arch, base_epochs=args.base_epochs, ft_epochs=args.ft_epochs,
                           prune_target=args.prune_target, prune=args.prune, prune_round=args.prune_round,
                           imgsz=args.imgsz)
    acc = {m: artefacts(m, pt, data, args.imgsz, work, args.calib_images) for m, pt in pts.items()}
    lat = {m: artefacts(m, pt, data, args.lat_imgsz, work, args.lat_calib_images) for m, pt in pts.items()}

    cache_path = work / "maps.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    maps: dict[str, dict[str, float | None]] = {}
    for m, variants in acc.items():
        maps[m] = {}
        for v, path in variants.items():
            if v == "ours_ov":  # no Ultralytics metadata beside it: not validated (its latency is the point)
                maps[m][v] = None
                continue
            if str(path) not in cache:
                device = "intel:cpu" if v.startswith("ov_") else "cpu"
                cache[str(path)] = validate(path, data, args.imgsz, device=device)["map"]
                cache_path.write_text(json.dumps(cache, indent=1))
            maps[m][v] = cache[str(path)]

    paths = [str(lat[m][v]) for m in pts for v, _, _ in ROWS] + [str(pts[m]) for m in pts]
    timed = by_runtime(paths, imgsz=args.lat_imgsz, runs=args.runs, rounds=args.rounds, threads=args.threads)
    ms = {("default", p): t["ms"] for p, t in zip(paths, timed, strict=True)}
    ov_runtime = next(t["runtime"] for t in timed if t["runtime"].startswith("OpenVINO"))
    # OpenVINO again at f32 math: its default is bf16 on CPUs with AVX512-BF16/AMX, an FP32 baseline 2x faster
    # than f32; the ratios of each set are to the unpruned FP32 IR timed the same way
    f32_paths = [str(lat[m][v]) for m in pts for v, _, _ in F32_ROWS]
    for p, t in zip(f32_paths, by_runtime(f32_paths, imgsz=args.lat_imgsz, runs=args.runs, rounds=args.rounds,
                                          threads=args.threads, precision="f32"), strict=True):
        ms[("f32", p)] = t["ms"]
    gflops = {m: model_stats(pts[m], args.lat_imgsz)["gflops"] for m in pts}

    ref_map = maps["baseline"]["fp32"]
    rows = []
    for m in pts:
        for v, runtime, label in ROWS + F32_ROWS:
            ref_variant = "fp32" if runtime == "ONNX Runtime" else "ov_fp32"
            how = "f32" if runtime == "OpenVINO f32" else "default"
            t, t_ref = ms[(how, str(lat[m][v]))], ms[(how, str(lat["baseline"][ref_variant]))]
            got = maps[m][v] if how == "default" else None  # mAP: the validator runs OpenVINO's default
            rows.append({"model": m, "variant": v, "label": label,
                         "runtime": ov_runtime if runtime == "OpenVINO" else runtime,
                         "map50_95": got, "map_vs_fp32": got / ref_map if got is not None else None,
                         "map_vs_own_fp32": (got / maps[m]["fp32"]) if got is not None else None,
                         "latency_ms": t, "latency_vs_unpruned_fp32": t / t_ref, "gflops": gflops[m]})
        t_pt, t_pt_ref = ms[("default", str(pts[m]))], ms[("default", str(pts["baseline"]))]
        rows.append({"model": m, "variant": "pt", "label": "PyTorch FP32 (.pt)", "runtime": "PyTorch",
                     "map50_95": None, "map_vs_fp32": None, "map_vs_own_fp32": None, "latency_ms": t_pt,
                     "latency_vs_unpruned_fp32": t_pt / t_pt_ref, "gflops": gflops[m]})

    import onnxruntime
    import openvino

    g = gflops["pruned"] / gflops["baseline"]
    given = f"given models ({pts['baseline']}, {pts['pruned']})"
    trained = (f"{args.arch} on the generated dataset ({args.base_epochs} epochs at {args.imgsz} px); pruned = "
               + (f"prune={args.prune}" if args.prune is not None else f"prune_target={args.prune_target}")
               + f" prune_round={args.prune_round} + {args.ft_epochs} fine-tune epochs")
    from yolo_opt.bench.latency import machine

    header = (f"CPU: {machine()}\n\n{given if args.base else trained} ({g:.2f}x GFLOPs). mAP50-95 at {args.imgsz} px (Ultralytics validator, batch 1); latency at "
              f"{args.lat_imgsz} px, batch 1, {args.threads} threads, median of {args.rounds} interleaved rounds x "
              f"{args.runs} calls, each runtime in its own process (ONNX Runtime {onnxruntime.__version__}, OpenVINO "
              f"{openvino.__version__.split('-')[0]}, PyTorch). Calibration: {args.calib_images} train images "
              f"({args.lat_calib_images} for the latency-only {args.lat_imgsz} px models).")
    lines = [header, "", "| model | variant | runtime | mAP50-95 | mAP vs FP32 | mAP vs own FP32 | latency ms | "
             "latency vs the same runtime's unpruned FP32 |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = (lambda x, d=3: "—" if x is None else f"{x:.{d}f}")  # noqa: E731
        lines.append(f"| {r['model']} | {r['label']} | {r['runtime']} | {f(r['map50_95'], 4)} | {f(r['map_vs_fp32'])} "
                     f"| {f(r['map_vs_own_fp32'])} | {r['latency_ms']:.1f} | {r['latency_vs_unpruned_fp32']:.2f} |")
    ort_fp32 = ms[("default", str(lat["baseline"]["fp32"]))]
    ov_fp32, ov_f32 = (ms[(how, str(lat["baseline"]["ov_fp32"]))] for how in ("default", "f32"))
    lines += ["", f"OpenVINO FP32 IR / ONNX Runtime FP32 (baseline): {ov_fp32 / ort_fp32:.2f}x at OpenVINO's default "
              f"({ov_runtime}), {ov_f32 / ort_fp32:.2f}x at f32 math"]
    if args.select:
        lines += ["", *selection(pts, data, work / "selection", args)]
    table = "\n".join(lines)
    print(table)
    (work / "peers.md").write_text(table + "\n")
    (work / "peers.json").write_text(json.dumps({"settings": vars(args), "header": header, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
