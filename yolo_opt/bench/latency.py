"""Batch-1 CPU latency (PyTorch, ONNX Runtime, OpenVINO), the pipeline a user runs per frame, and throughput at a
larger batch (images/s) where asked.

Reports time every file by one protocol (`time_apart`): each model in a fresh process of its own, the models taking
turns round after round so that load elsewhere on the machine hits every model alike, the median of the rounds and
their spread. OpenVINO's CPU thread pool keeps spinning after a call, and ONNX Runtime sessions sharing a process
read slow (docs/benchmarks.md#deployed-forms): one model per process.

    python -m yolo_opt.bench.latency < request.json   # what `latency_in_process` runs
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from yolo_opt.options import DEFAULT_IMGSZ

RUNTIMES = {"pt": "PyTorch CPU", "onnx": "ONNX Runtime CPU", "openvino": "OpenVINO CPU"}


def machine() -> str:
    """The CPU, as far as timings depend on it: its model name and the vector extensions it has."""
    name, flags = platform.processor() or platform.machine(), ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), name)
        flags = next((ln.split(":", 1)[1] for ln in info.splitlines() if ln.startswith("flags")), "")
    except OSError:
        pass
    wanted = sorted(f for f in flags.split() if f.startswith(("avx", "amx")) or f in ("fma", "f16c"))
    return f"{name} [{' '.join(wanted)}] x{os.cpu_count()}"


def runtime_label(kind: str, precision: str | None = None) -> str:
    """The runtime column of a report: OpenVINO names its math when it is not f32 (on CPUs with AVX512-BF16 or AMX
    it runs an FP32 IR in bf16 by default, much faster than f32, so "FP32" rows would be something else)."""
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

        size = imgsz or DEFAULT_IMGSZ
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
        shape = [d if isinstance(d, int) else (imgsz or DEFAULT_IMGSZ) for d in inp.shape]
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
            model.reshape([batch, 3, imgsz or DEFAULT_IMGSZ, imgsz or DEFAULT_IMGSZ])
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


def pipeline(infer: Callable[[np.ndarray], Any], meta: dict[str, Any], image: str | Path) -> Callable[[], dict[str, float]]:
    """What a user's loop does per frame: letterbox a real image, run the model, decode (and NMS where the model has
    none), with the bundles' own post-processing (`yolo_decode`). Each call returns the model's ms and the whole
    frame's ms of that one call: the model is timed inside the pipeline, so a frame can never read faster than it."""
    import cv2

    from yolo_opt.deploy.templates import yolo_decode

    frame = cv2.imread(str(image))

    def run() -> dict[str, float]:
        t0 = time.perf_counter()
        x, gain, pad = yolo_decode.preprocess(frame, meta["imgsz"])
        t1 = time.perf_counter()
        out = infer(x)
        t2 = time.perf_counter()
        yolo_decode.postprocess(out, meta, gain, pad, image_shape=frame.shape[:2])
        t3 = time.perf_counter()
        return {"ms": (t2 - t1) * 1000, "pipeline_ms": (t3 - t0) * 1000}

    return run


def _timed(fn: Callable[[], Any], key: str) -> Callable[[], dict[str, float]]:
    """`fn` as a call that returns {key: its ms}."""

    def run() -> dict[str, float]:
        t0 = time.perf_counter()
        fn()
        return {key: (time.perf_counter() - t0) * 1000}

    return run


def interleaved(paths: list[str | Path], imgsz: int | None = None, *, runs: int = 30, rounds: int = 3,
                warmup: int = 5, threads: int | None = None, precision: str | None = None,
                image: str | Path | None = None, batch: int = 0,
                batch_paths: list[str | Path | None] | None = None, batch_only: bool = False) -> list[dict[str, Any]]:
    """Median ms of each model over `rounds` interleaved rounds of `runs` timed calls (in this process); with an
    `image`, also `pipeline_ms`: letterbox + model + decode of that image (exported models), the model's `ms` then
    timed inside those same calls (each call's frame time holds its model time, so the median frame >= the median
    model); `ms_rounds`: the median of each round.

    With `batch` > 1, also `throughput`: images/s of one call on `batch` images, timed in the same rounds, of
    `batch_paths[i]` (the model exported at that batch; default: the model itself, which OpenVINO and PyTorch
    reshape), `max(3, runs // 4)` calls a round (each does `batch` images' work); `batch_only`: that alone."""
    if batch_only and batch <= 1:
        raise ValueError("batch_only times the batch: give batch > 1")
    calls = []
    for i, p in enumerate(paths):
        fns: list[tuple[Callable[[], dict[str, float]], int]] = []  # (a timed call, calls per round)
        if not batch_only:
            infer, x, info = runner(p, imgsz, threads, precision=precision)
            if image is not None and info["decode"] is not None:
                fns.append((pipeline(infer, info["decode"], image), runs))
            else:
                fns.append((_timed(lambda infer=infer, x=x: infer(x), "ms"), runs))
        if batch > 1:
            twin = (batch_paths or [None] * len(paths))[i] or p
            infer_b, x_b, info_b = runner(twin, imgsz, threads, precision=precision, batch=batch)
            fns.append((_timed(lambda infer=infer_b, x=x_b: infer(x), "batch_ms"), max(3, runs // 4)))
            info = info if not batch_only else info_b
        calls.append((fns, info))
    for fns, _ in calls:
        for fn, _ in fns:
            for _ in range(warmup):
                fn()
    times: list[dict[str, list[list[float]]]] = [{} for _ in calls]
    for _ in range(rounds):
        for i, (fns, _) in enumerate(calls):
            for fn, n in fns:
                samples: dict[str, list[float]] = {}
                for _ in range(n):
                    for key, ms in fn().items():
                        samples.setdefault(key, []).append(ms)
                for key, v in samples.items():
                    times[i].setdefault(key, []).append(v)
    results = []
    for t, (_, info) in zip(times, calls, strict=True):
        r = {**{k: statistics.median([x for rnd in v for x in rnd]) for k, v in t.items()},
             **{f"{k}_rounds": [statistics.median(rnd) for rnd in v] for k, v in t.items()},
             **{k: v for k, v in info.items() if k != "decode"}, "rounds": rounds, "runs": runs}
        if "batch_ms" in r:
            r.update(batch=batch, throughput=batch * 1000 / r["batch_ms"])
        results.append(r)
    return results


def time_apart(items: list[dict[str, Any]], imgsz: int | None = None, *, rounds: int = 3, runs: int = 20,
               warmup: int = 3, threads: int | None = None, image: str | Path | None = None,
               timeout: float = 3600) -> list[dict[str, Any]]:
    """The one timing protocol of reports: each model in a fresh process of its own, the models taking turns round
    after round (load elsewhere on the machine hits all of them alike), the median of the rounds kept and their
    spread reported.

    One model per process: ONNX Runtime sessions sharing a process time slow, OpenVINO's thread pool spins after a
    call, and a user runs one model.

    Args:
        items: {"path", and optionally "precision" (OpenVINO), "batch" > 1 and "batch_path" (throughput)}.
        imgsz: Input size of models with a dynamic one (an exported model runs at its own).
        image: A real image: adds `pipeline_ms` (letterbox + model + decode) to exported models.

    Returns:
        Per item: `ms`, `pipeline_ms` (where timed) and `throughput` (where asked): medians over the rounds;
        `ms_spread`, `pipeline_ms_spread`: (fastest, slowest) round; `runtime`, `threads`, `imgsz`, `rounds`.
    """
    per: list[list[list[dict[str, Any]]]] = [[] for _ in items]
    for _ in range(rounds):
        for i, item in enumerate(items):
            one = {"paths": [item["path"]], "imgsz": imgsz, "runs": runs, "rounds": 1, "warmup": warmup,
                   "threads": threads, "precision": item.get("precision"), "image": image}
            phases = [one]
            if (item.get("batch") or 0) > 1:  # then its throughput, in the same process once that session is gone
                phases.append({**one, "image": None, "warmup": 2, "batch": item["batch"],
                               "batch_paths": [item.get("batch_path")], "batch_only": True})
            per[i].append([phase[0] for phase in phases_in_process(phases, timeout)])
    out = []
    for rounds_of in per:
        first = rounds_of[-1][0]
        r: dict[str, Any] = {k: first[k] for k in ("runtime", "threads", "imgsz")}
        r["rounds"] = rounds
        for key in ("ms", "pipeline_ms"):
            values = [rnd[0][key] for rnd in rounds_of if key in rnd[0]]
            if values:
                r[key], r[f"{key}_spread"] = statistics.median(values), (min(values), max(values))
        per_s = [rnd[1]["throughput"] for rnd in rounds_of if len(rnd) > 1]
        if per_s:
            r.update(throughput=statistics.median(per_s), batch=rounds_of[0][1]["batch"])
        out.append(r)
    return out


def with_spread(ms: float | None, spread: Any = None) -> str:
    """'12.3 (11.9-12.8)': the median and the fastest and slowest round, as every report shows a latency."""
    if ms is None:
        return "-"
    if not spread or spread[0] == spread[1]:
        return f"{ms:.1f}"
    return f"{ms:.1f} ({spread[0]:.1f}-{spread[1]:.1f})"


def noisy_copies(entries: list[tuple[str, Any, float | None, Any]]) -> str | None:
    """A line for copies of one architecture on one runtime whose timings disagree beyond their spread over rounds
    (then this machine was too noisy to rank models that close), else None.

    Args:
        entries: (label, what makes two entries copies: architecture and runtime, ms, (fastest, slowest) round);
            an entry timed in one round (no spread) cannot be judged and is left out.
    """
    groups: dict[Any, list[tuple[str, float, Any]]] = {}
    for label, key, ms, spread in entries:
        if ms is not None and key is not None and spread and spread[0] < spread[1]:  # one round shows no spread
            groups.setdefault(key, []).append((label, ms, spread))
    worst = None
    for copies in groups.values():
        for i, (a, ms_a, sa) in enumerate(copies):
            for b, ms_b, sb in copies[i + 1:]:
                if sa[1] < sb[0] or sb[1] < sa[0]:  # the rounds' ranges do not overlap
                    gap = abs(ms_a - ms_b) / min(ms_a, ms_b)
                    if worst is None or gap > worst[0]:
                        worst = (gap, a, ms_a, b, ms_b)
    if worst is None:
        return None
    gap, a, ms_a, b, ms_b = worst
    return (f"{a} and {b} are copies of one architecture on one runtime, yet timed {ms_a:.1f} and {ms_b:.1f} ms, "
            f"beyond their spread over rounds: this machine was too noisy to rank models less than {gap:.0%} apart "
            "(more rounds=, or an idle machine)")


def latency_in_process(paths: list[str | Path], imgsz: int | None = None, *, runs: int = 30, rounds: int = 3,
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


def by_runtime(paths: list[str | Path], imgsz: int | None = None, *, runs: int = 30, rounds: int = 3,
               threads: int | None = None, precision: str | None = None, pipeline: str | None = None,
               **kwargs: Any) -> list[dict[str, Any] | None]:
    """Latency of each model by the one protocol of reports (`time_apart`), None for a file no CPU runtime runs;
    `pipeline=image` adds the letterbox + model + decode time."""
    out: list[dict[str, Any] | None] = [None] * len(paths)
    idx = [i for i, p in enumerate(paths) if kind_of(p) in RUNTIMES]
    items = [{"path": str(paths[i]), "precision": precision} for i in idx]
    for i, res in zip(idx, time_apart(items, imgsz, rounds=rounds, runs=runs, threads=threads, image=pipeline,
                                      **kwargs), strict=True):
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
