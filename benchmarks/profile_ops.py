"""Where the time goes: per-op-type time of ONNX models on ONNX Runtime and of OpenVINO IRs, batch 1.

    PYTHONPATH=. python benchmarks/profile_ops.py runs/peers/pruned_640/ours_int8.onnx runs/peers/pruned_640/ov_int8_openvino_model

ONNX Runtime: its session profiler (kernel time per node, summed per op type). OpenVINO: PERF_COUNT profiling
info of the infer request (real time per executed node, summed per exec type, e.g. jit_avx512_I8 vs ref). Each
model runs in a process of its own runtime (this script is started once per model by `--all`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def profile_onnx(path: Path, runs: int, threads: int) -> dict[str, float]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.enable_profiling = True
    so.profile_file_prefix = str(Path("/tmp") / f"ortprof_{os.getpid()}")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(0).random([1, *inp.shape[1:]], dtype=np.float32)
    for _ in range(runs):
        sess.run(None, {inp.name: x})
    prof = Path(sess.end_profiling())
    per: dict[str, float] = defaultdict(float)
    for ev in json.loads(prof.read_text()):
        if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time"):
            per[ev["args"]["op_name"]] += ev["dur"] / 1000 / runs
    prof.unlink()
    return dict(per)


def profile_openvino(path: Path, runs: int, threads: int) -> dict[str, float]:
    import openvino as ov

    from yolo_opt.deploy.openvino import model_xml

    core = ov.Core()
    compiled = core.compile_model(str(model_xml(path)), "CPU", {"PERF_COUNT": True, "PERFORMANCE_HINT": "LATENCY",
                                                                 "INFERENCE_NUM_THREADS": threads})
    req = compiled.create_infer_request()
    x = np.random.default_rng(0).random(list(compiled.input(0).get_shape()), dtype=np.float32)
    per: dict[str, float] = defaultdict(float)
    for _ in range(runs):
        req.infer({0: x})
        for p in req.profiling_info:
            if p.status == p.Status.EXECUTED:
                per[f"{p.node_type}:{p.exec_type}"] += p.real_time.total_seconds() * 1000 / runs
    return dict(per)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", action="store_true", help="profile the single model here (internal)")
    args = ap.parse_args()
    if args.one:
        path = Path(args.models[0])
        fn = profile_onnx if path.suffix == ".onnx" else profile_openvino
        print("JSON" + json.dumps(fn(path, args.runs, args.threads)))
        return
    for m in args.models:
        r = subprocess.run([sys.executable, __file__, m, "--one", "--runs", str(args.runs), "--threads",
                            str(args.threads)], capture_output=True, text=True)
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("JSON")), None)
        if line is None:
            print(m, "failed:", r.stderr[-500:])
            continue
        per = json.loads(line[4:])
        total = sum(per.values())
        print(f"\n{m}: {total:.1f} ms of op time per call")
        for k, v in sorted(per.items(), key=lambda kv: -kv[1])[:12]:
            print(f"  {k:<40} {v:7.2f} ms  {100 * v / total:5.1f}%")


if __name__ == "__main__":
    main()
