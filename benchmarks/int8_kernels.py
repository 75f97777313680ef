"""INT8 on this CPU: ONNX Runtime's integer kernels vs the exact result of the same Q/DQ graph, 8-bit vs 7-bit weights.

    python benchmarks/int8_kernels.py --pt best.pt --data data.yaml --imgsz 128 --out runs/int8-kernels

x86 CPUs without VNNI (AVX2 only: most AMD Zen 1-3 and pre-Ice Lake Intel CPUs) multiply U8 activations by S8
weights with vpmaddubsw, which sums two products into a saturating int16: 255 * 127 * 2 overflows it, 255 * 64 * 2
does not. yolo-opt's QDQ therefore quantizes weights to 7 bits (ONNX Runtime's `reduce_range`). This benchmark shows
what that buys and costs on the machine it runs on: for each weight width, mAP50-95 (Ultralytics validator, batch 1)
under ONNX Runtime's kernels and under the exact arithmetic of the same graph (ONNX Runtime with graph optimizations
off: every Q/DQ pair executed as float ops, the result an integer kernel without saturation, or TensorRT, computes),
the mean relative output error vs FP32 on 16 val images, and latency at --lat-imgsz (batch 1, interleaved, median).
One run; ratios within it.
"""

from __future__ import annotations

import argparse
import json
import os
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")


@contextmanager
def exact_arithmetic():
    """ONNX Runtime sessions made inside run the graph as written (no QLinear fusion): Q/DQ pairs as float ops."""
    import onnxruntime as ort

    real = ort.InferenceSession

    def session(path, sess_options=None, *args, **kwargs):
        so = sess_options or ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return real(path, so, *args, **kwargs)

    ort.InferenceSession = session
    try:
        yield
    finally:
        ort.InferenceSession = real


def outputs(path: Path, batches) -> list:
    """The raw output tensor of an ONNX model for each batch (ONNX Runtime, CPU)."""
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return [s.run(None, {name: x})[0] for x in batches]


def output_error(model: Path, reference: list, batches) -> float:
    """Mean over images of |INT8 - FP32| / mean |FP32| of the raw output tensor (`reference`: the FP32 outputs)."""
    import numpy as np

    return float(np.mean([np.abs(a - f).mean() / np.abs(f).mean()
                          for a, f in zip(outputs(model, batches), reference, strict=True)]))


def quantize(fp32: Path, data: Path, out: Path, weight_bits: int, calib_images: int) -> Path:
    import yolo_opt.quant.qdq as qdq
    from yolo_opt.quant import quantize_onnx

    if not out.exists():
        default, qdq.WEIGHT_REDUCE_RANGE = qdq.WEIGHT_REDUCE_RANGE, weight_bits == 7
        try:
            quantize_onnx(fp32, data, out, calib_images=calib_images, validate=False, progress=False)
        finally:
            qdq.WEIGHT_REDUCE_RANGE = default
    return out


def cpu_flags() -> str:
    try:
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    have = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return " ".join(have) or "no AVX2"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pt", required=True, help="trained checkpoint")
    ap.add_argument("--data", required=True, help="its data.yaml (train split calibrates, val split validates)")
    ap.add_argument("--imgsz", type=int, default=160, help="validation size")
    ap.add_argument("--lat-imgsz", type=int, default=640)
    ap.add_argument("--calib-images", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/int8-kernels")
    args = ap.parse_args()

    from yolo_opt.bench.latency import by_runtime
    from yolo_opt.bench.measure import validate_onnx
    from yolo_opt.data.calib import load_batches
    from yolo_opt.data.checks import dataset_images
    from yolo_opt.deploy import export_onnx

    out, data = Path(args.out), Path(args.data)
    out.mkdir(parents=True, exist_ok=True)
    models = {}
    for size in sorted({args.imgsz, args.lat_imgsz}):
        fp32 = out / f"fp32_{size}.onnx"
        if not fp32.exists():
            export_onnx(args.pt, fp32, imgsz=size)
        calib = args.calib_images if size == args.imgsz else min(args.calib_images, 32)  # latency-only: speed
        models[size] = {"FP32": fp32, **{f"INT8, {b}-bit weights": quantize(fp32, data, out / f"int8_w{b}_{size}.onnx",
                                                                            b, calib) for b in (8, 7)}}
    val = models[args.imgsz]
    batches = load_batches(dataset_images(data, "val")[:16], args.imgsz, progress=False)
    fp32_out = outputs(val["FP32"], batches)  # once, for every INT8 row
    rows = []
    for name, path in val.items():
        row = {"model": name, "map_kernels": validate_onnx(path, data, args.imgsz)["map"]}
        if name != "FP32":
            row["err_kernels"] = output_error(path, fp32_out, batches)
            with exact_arithmetic():
                row["map_exact"] = validate_onnx(path, data, args.imgsz)["map"]
                row["err_exact"] = output_error(path, fp32_out, batches)
        rows.append(row)
    lat = by_runtime(list(models[args.lat_imgsz].values()), imgsz=args.lat_imgsz, runs=args.runs, rounds=args.rounds,
                     threads=args.threads)
    for row, t in zip(rows, lat, strict=True):
        row["latency_ms"] = t["ms"]
    m32, t32 = rows[0]["map_kernels"], rows[0]["latency_ms"]
    f = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
    lines = [f"CPU flags: {cpu_flags()}. mAP50-95 at {args.imgsz} px, latency at {args.lat_imgsz} px ({args.threads} "
             f"threads, median of {args.rounds} interleaved rounds x {args.runs}); ONNX Runtime.", "",
             "| model | mAP, ORT kernels | mAP, exact | output error, kernels | output error, exact | ms | vs FP32 |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {f(r['map_kernels'])} ({r['map_kernels'] / m32:.3f}) | {f(r.get('map_exact'))} "
                     f"| {f(r.get('err_kernels'))} | {f(r.get('err_exact'))} | {r['latency_ms']:.1f} "
                     f"| {r['latency_ms'] / t32:.2f} |")
    (out / "int8_kernels.json").write_text(json.dumps(rows, indent=2))
    (out / "int8_kernels.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
