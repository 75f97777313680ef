"""Channel rounding chosen by measuring the runtime that will run the model (`round_for=onnx|openvino`).

Kernels are fast at some channel counts and not others: OpenVINO and ONNX Runtime's FP32 convolutions block
channels by 16 on AVX-512 (8 on AVX2), AMX tiles take 32 bf16 / 64 int8 channels, TensorRT 8/32. Which multiple
turns half the GFLOPs into the most time saved depends on the CPU and the runtime, so it is measured: the model is
pruned (uniformly, no fine-tuning: latency does not depend on the weights' values) to the run's GFLOPs target with
each candidate rounding, exported for the runtime, and timed here, batch 1, interleaved in one process of that
runtime. Given the run's data, the copies get the per-layer ratios the run will get (a sensitivity analysis, then the
allocation to the GFLOPs target at that rounding): they land on the target at every rounding, so the roundings are
compared at the GFLOPs the run will have (docs/benchmarks.md#channel-rounding). Uniform copies (no data) can
overshoot, so roundings are compared by latency per GFLOPs kept: the lowest wins; a coarser
rounding must beat a finer one by 3% (finer lands closer to the target and keeps more accuracy). Results are cached
per model, target, runtime, allocation and CPU (`$XDG_CACHE_HOME/yolo-opt/`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yolo_opt.bench.latency import machine
from yolo_opt.errors import ConfigError
from yolo_opt.options import DEFAULT_IMGSZ

if TYPE_CHECKING:
    from yolo_opt.options import PruneOptions

CANDIDATES = (8, 16, 32)
MARGIN = 0.03  # a coarser rounding must be this much faster to be chosen


def cache_file() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "yolo-opt" / "rounding.json"


def _key(model: Path, target: float, runtime: str, imgsz: int, *, per_layer: bool) -> str:
    digest = hashlib.sha256(model.read_bytes()).hexdigest()[:16]
    # per-layer copies follow the allocation, so its score's version is part of their key ("err2": output_change)
    extra = ["per-layer", "err2"] if per_layer else []
    return json.dumps([digest, round(target, 4), runtime, imgsz, machine(), *extra])


def measured_round(model: str | Path, target: float, runtime: str, imgsz: int = DEFAULT_IMGSZ, *,
                   candidates: tuple[int, ...] = CANDIDATES, runs: int = 20, rounds: int = 3,
                   threads: int | None = None, use_cache: bool = True,
                   data: str | Path | None = None) -> tuple[int, dict[str, Any]]:
    """The `prune_round` whose pruned model runs fastest per GFLOPs kept on `runtime` here, at the ratio `target`;
    with `data`, the copies are pruned with per-layer ratios from its val images, as the run prunes.

    Returns:
        (the rounding, {"ms": {rounding: median ms}, "gflops": {rounding: ratio}, "ms_per_gflops_ratio", "machine",
        "runtime", ...}).
    """
    from ultralytics.utils import LOGGER

    from yolo_opt.bench.latency import latency_in_process
    from yolo_opt.deploy.onnx import export_onnx
    from yolo_opt.io.files import atomic_write_bytes
    from yolo_opt.training import prune_checkpoint

    if runtime not in ("onnx", "openvino"):
        raise ConfigError(f"round_for={runtime!r}: choose onnx or openvino")
    if not 0 < target < 1:
        raise ConfigError(f"choosing a rounding needs a GFLOPs target below 1 (got {target}); give prune_target=")
    model = Path(model)
    key = _key(model, target, runtime, imgsz, per_layer=data is not None)
    cache = cache_file()
    table = json.loads(cache.read_text()) if cache.exists() else {}
    if use_cache and key in table:
        return int(table[key]["round"]), table[key]
    with tempfile.TemporaryDirectory(prefix="yolo-opt-round.") as tmp:
        files, gflops = [], {}
        for r in candidates:
            pt = Path(tmp) / f"round{r}.pt"
            summary = prune_checkpoint(model, pt, prune_target=target, prune_round=r, imgsz=imgsz, data=data,
                                       prune_ratios="auto" if data is not None else "uniform")
            gflops[r] = summary["gflops_ratio"]
            if runtime == "onnx":
                files.append(export_onnx(pt, pt.with_suffix(".onnx"), imgsz=imgsz))
            else:
                from yolo_opt.deploy.openvino import export_openvino

                files.append(export_openvino(pt, Path(tmp) / f"round{r}_openvino_model", imgsz=imgsz, validate=False,
                                             progress=False).path)
        timed = latency_in_process(files, imgsz, runs=runs, rounds=rounds, threads=threads)
    ms = {r: t["ms"] for r, t in zip(candidates, timed, strict=True)}
    per_gflops = {r: ms[r] / gflops[r] for r in candidates}  # what each rounding buys, at the GFLOPs it landed on
    best = candidates[0]
    for r in candidates[1:]:
        if per_gflops[r] < per_gflops[best] * (1 - MARGIN):
            best = r
    record = {"round": best, "ms": {str(r): v for r, v in ms.items()}, "gflops": {str(r): v for r, v in gflops.items()},
              "ms_per_gflops_ratio": {str(r): v for r, v in per_gflops.items()},
              "runtime": timed[0]["runtime"], "machine": machine(), "imgsz": imgsz, "target": target,
              "ratios": "per-layer" if data is not None else "uniform"}
    LOGGER.info(f"yolo-opt: prune_round={best} measured on {record['runtime']} ({machine()}): "
                + ", ".join(f"round {r}: {ms[r]:.1f} ms at {gflops[r]:.3f}x GFLOPs" for r in candidates))
    table[key] = record
    atomic_write_bytes(cache, json.dumps(table, indent=1).encode())
    return best, record


def round_for(model: str | Path, prune: PruneOptions, runtime: str, *, imgsz: int, lat_imgsz: int | None = None,
              data: str | Path | None = None) -> tuple[PruneOptions, dict[str, Any]]:
    """`round_for=`: the pruning options with the `prune_round` measured fastest on `runtime`, and its record.

    The one home of the decision for the CLI's `train` and the pipeline's `prune` stage: timed at `lat_imgsz` where
    given (the size the deployed model runs at), else `imgsz`; per-layer runs prune the copies with per-layer ratios
    from `data`, as the run will."""
    if prune.prune_target is None:
        raise ConfigError("round_for= measures roundings at a GFLOPs target: add prune_target=")
    chosen, record = measured_round(model, prune.prune_target, runtime, lat_imgsz or imgsz,
                                    data=data if prune.per_layer else None)
    return prune.replace(prune_round=chosen), record
