"""Batch-1 CPU latency per runtime (PyTorch, ONNX Runtime, OpenVINO), interleaved, each runtime in its own process,
and throughput at a larger batch (images/s) where asked.

Interleaved rounds (every model once per round, the median over rounds) let load elsewhere on the machine hit
every model alike. Each runtime is timed in a fresh process of its own: OpenVINO's CPU thread pool keeps spinning
after a call, and ONNX Runtime sessions sharing its process read up to 1.5x slow here.

    python -m yolo_opt.bench.latency < request.json   # what `latency_in_process` runs
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RUNTIMES = {"pt": "PyTorch CPU", "onnx": "ONNX Runtime CPU", "openvino": "OpenVINO CPU"}


def runtime_label(kind: str, precision: str | None = None) -> str:
    """The runtime column of a report: OpenVINO names its math when it is not f32 (on CPUs with AVX512-BF16 or AMX
    it runs an FP32 IR in bf16 by default, 2x faster than f32 here, so "FP32" rows would be something else)."""
    label = RUNTIMES[kind]
    return f"{label} ({precision})" if kind == "openvino" and precision and precision != "f32" else label


def kind_of(path: str | Path) -> str:
    """pt, onnx, openvino (an .xml or a folder holding one) or engine."""
    path = Path(path)
    if path.suffix == ".xml" or path.is_dir():
        return "openvino"
    return path.suffix.lstrip(".")


def _decode_meta(path: Path, kind: str, shape: list[int], outputs: list[list[int]]) -> dict[str, Any]:
    """What `yolo_decode` needs of an exported model: classes, input size, output format, mask coefficients."""
    if kind == "onnx":
        from yolo_opt.io.onnx import load_onnx, onnx_metadata

        meta = onnx_metadata(load_onnx(path, check=False))
    else:
        import yaml

        from yolo_opt.io.openvino import model_xml

        file = model_xml(path).parent / "metadata.yaml"
        meta = (yaml.safe_load(file.read_text()) or {}) if file.exists() else {}
    nm = outputs[1][1] if len(outputs) > 1 else 0  # a segmentation model's prototypes: (1, nm, h/4, w/4)
    return {"names": meta.get("names", {}), "end2end": bool(meta.get("end2end", False)), "nm": nm,
            "imgsz": list(shape[-2:])}


def runner(path: str | Path, imgsz: int | None = None, threads: int | None = None, device: str = "CPU",
           precision: str | None = None, batch: int = 1) -> tuple[Callable[[np.ndarray], Any], np.ndarray, dict[str, Any]]:
    """(infer(batch) -> outputs, a random input of `batch` images, {imgsz, threads, runtime, decode}) for a .pt,
    .onnx or OpenVINO model; `decode` is what `yolo_decode` needs to post-process an exported model's outputs.

    `precision` sets OpenVINO's CPU inference precision (f32, bf16, f16; None: OpenVINO's default); the runtime
    label names the precision the compiled model runs at when it is not f32. An OpenVINO IR is reshaped to `batch`;
    an ONNX model must have that batch (or a dynamic one): a static-shape export bakes its batch into reshapes."""
    threads = threads or os.cpu_count() or 1
    kind = kind_of(path)
    rng = np.random.default_rng(0)
    if kind == "pt":
        import torch

        from yolo_opt.io.checkpoint import load_model

        size = imgsz or 640
        model = load_model(path).fuse(verbose=False).eval()
        torch.set_num_threads(threads)

        def infer(x: np.ndarray) -> Any:
            with torch.inference_mode():
                return model(torch.from_numpy(x))

        x = rng.random((batch, 3, size, size), dtype=np.float32)
        return infer, x, {"imgsz": size, "threads": threads, "runtime": runtime_label(kind), "decode": None}
    if kind == "onnx":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inp = session.get_inputs()[0]
        shape = [d if isinstance(d, int) else (imgsz or 640) for d in inp.shape]
        if isinstance(inp.shape[0], int) and inp.shape[0] != batch:
            raise ValueError(f"{path} has a static batch of {inp.shape[0]}; export it at batch={batch}")
        shape[0] = batch
        outputs = [list(o.shape) for o in session.get_outputs()]
        return (lambda x: session.run(None, {inp.name: x})), rng.random(shape, dtype=np.float32), {
            "imgsz": shape[-1], "threads": threads, "runtime": runtime_label(kind),
            "decode": _decode_meta(Path(path), kind, shape, outputs)}
    if kind == "openvino":
        from yolo_opt.io.openvino import model_xml, openvino_device, require

        ov = require("openvino")
        core = ov.Core()
        model = core.read_model(str(model_xml(path)))
        partial = model.input(0).get_partial_shape()
        if partial.is_dynamic:
            model.reshape([batch, 3, imgsz or 640, imgsz or 640])
        elif partial[0].get_length() != batch:
            model.reshape([batch, *list(model.input(0).get_shape())[1:]])
        shape = list(model.input(0).get_shape())
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        name = openvino_device(device)
        compiled = core.compile_model(model, name, config if name == "CPU" else {"PERFORMANCE_HINT": "LATENCY"})
        ran = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() if name == "CPU" else None
        request = compiled.create_infer_request()
        ports = list(compiled.outputs)

        def infer(x: np.ndarray) -> list[np.ndarray]:
            result = request.infer({0: x})
            return [result[p] for p in ports]

        outputs = [list(p.get_shape()) for p in ports]
        return infer, rng.random(shape, dtype=np.float32), {
            "imgsz": shape[-1], "threads": threads, "runtime": runtime_label(kind, ran),
            "decode": _decode_meta(Path(path), kind, shape, outputs)}
    raise ValueError(f"no CPU latency for '{path}'")


def pipeline(infer: Callable[[np.ndarray], Any], meta: dict[str, Any], image: str | Path) -> Callable[[], Any]:
    """What a user's loop does per frame: letterbox a real image, run the model, decode (and NMS where the model has
    none), with the bundles' own post-processing (`yolo_decode`)."""
    import cv2

    from yolo_opt.deploy.templates import yolo_decode

    frame = cv2.imread(str(image))

    def run() -> Any:
        x, gain, pad = yolo_decode.preprocess(frame, meta["imgsz"])
        return yolo_decode.postprocess(infer(x), meta, gain, pad, frame.shape[:2])

    return run


def interleaved(paths: list[str | Path], imgsz: int | None = None, runs: int = 30, rounds: int = 3,
                warmup: int = 5, threads: int | None = None, precision: str | None = None,
                image: str | Path | None = None, batch: int = 0,
                batch_paths: list[str | Path | None] | None = None, batch_only: bool = False) -> list[dict[str, Any]]:
    """Median ms of each model over `rounds` interleaved rounds of `runs` timed calls (in this process); with an
    `image`, also `pipeline_ms`: the same for letterbox + model + decode of that image (exported models).

    With `batch` > 1, also `throughput`: images/s of one call on `batch` images, timed in the same rounds, of
    `batch_paths[i]` (the model exported at that batch; default: the model itself, which OpenVINO and PyTorch
    reshape), `max(3, runs // 4)` calls a round (each does `batch` images' work); `batch_only`: that alone."""
    if batch_only and batch <= 1:
        raise ValueError("batch_only times the batch: give batch > 1")
    calls = []
    for i, p in enumerate(paths):
        fns: dict[str, Callable[[], Any]] = {}
        if not batch_only:
            infer, x, info = runner(p, imgsz, threads, precision=precision)
            fns["ms"] = lambda infer=infer, x=x: infer(x)
            if image is not None and info["decode"] is not None:
                fns["pipeline_ms"] = pipeline(infer, info["decode"], image)
        if batch > 1:
            twin = (batch_paths or [None] * len(paths))[i] or p
            infer_b, x_b, info_b = runner(twin, imgsz, threads, precision=precision, batch=batch)
            fns["batch_ms"] = lambda infer=infer_b, x=x_b: infer(x)
            info = info if not batch_only else info_b
        calls.append((fns, info))
    for fns, _ in calls:
        for fn in fns.values():
            for _ in range(warmup):
                fn()
    times: list[dict[str, list[float]]] = [{k: [] for k in fns} for fns, _ in calls]
    for _ in range(rounds):
        for i, (fns, _) in enumerate(calls):
            for key, fn in fns.items():
                for _ in range(max(3, runs // 4) if key == "batch_ms" else runs):
                    t0 = time.perf_counter()
                    fn()
                    times[i][key].append((time.perf_counter() - t0) * 1000)
    results = []
    for t, (_, info) in zip(times, calls, strict=True):
        r = {**{k: statistics.median(v) for k, v in t.items()}, **{k: v for k, v in info.items() if k != "decode"},
             "rounds": rounds, "runs": runs}
        if "batch_ms" in r:
            r.update(batch=batch, throughput=batch * 1000 / r["batch_ms"])
        results.append(r)
    return results


def latency_in_process(paths: list[str | Path], imgsz: int | None = None, runs: int = 30, rounds: int = 3,
                       warmup: int = 5, threads: int | None = None, timeout: float = 3600,
                       precision: str | None = None, pipeline: str | None = None, batch: int = 0,
                       batch_paths: list[str | Path | None] | None = None,
                       batch_only: bool = False) -> list[dict[str, Any]]:
    """`interleaved` for models of one runtime, in a fresh Python process (nothing else loaded there)."""
    request = {"paths": paths, "imgsz": imgsz, "runs": runs, "rounds": rounds, "warmup": warmup, "threads": threads,
               "precision": precision, "image": pipeline, "batch": batch, "batch_paths": batch_paths,
               "batch_only": batch_only}
    return phases_in_process([request], timeout)[0]


def phases_in_process(requests: list[dict[str, Any]], timeout: float = 3600) -> list[list[dict[str, Any]]]:
    """Each request (keyword arguments of `interleaved`, models of one runtime) timed in turn in one fresh Python
    process, a request's sessions dropped before the next one's are built: one start-up for, say, a model's batch-1
    latency and then its batch-8 throughput, never two sessions alive at once."""
    from yolo_opt.errors import DeployError

    paths = [p for r in requests for p in r["paths"]]
    kinds = {kind_of(p) for p in paths}
    if len(kinds) != 1:
        raise ValueError(f"one runtime per process, got {sorted(kinds)}")
    phases = [{**r, "paths": [str(p) for p in r["paths"]],
               "image": str(r["image"]) if r.get("image") else None,
               "batch_paths": [str(p) if p else None for p in r["batch_paths"]] if r.get("batch_paths") else None}
              for r in requests]
    r = subprocess.run([sys.executable, "-m", "yolo_opt.bench.latency"], input=json.dumps({"phases": phases}),
                       capture_output=True, text=True, timeout=timeout, env={**os.environ, "YOLO_OFFLINE": "1"})
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise DeployError(f"latency of {', '.join(map(str, paths))} failed: {tail}")
    return json.loads(lines[-1])["phases"]


def by_runtime(paths: list[str | Path], **kwargs: Any) -> list[dict[str, Any] | None]:
    """Latency of each model, the models of each runtime interleaved in one process of their own (None: untimed);
    `kwargs` as `latency_in_process` (`pipeline=image` adds the letterbox + model + decode time)."""
    out: list[dict[str, Any] | None] = [None] * len(paths)
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(paths):
        if kind_of(p) in RUNTIMES:
            groups.setdefault(kind_of(p), []).append(i)
    for idx in groups.values():
        for i, res in zip(idx, latency_in_process([paths[i] for i in idx], **kwargs), strict=True):
            out[i] = res
    return out


def _main() -> None:
    import gc

    results = []
    for request in json.loads(sys.stdin.read())["phases"]:
        results.append(interleaved(**request))
        gc.collect()  # the phase's sessions go before the next phase builds its own
    print(json.dumps({"phases": results}))


if __name__ == "__main__":
    _main()
