"""Measure models the same way for every stage: stats, latency (warm up, then the median of timed runs) and the
Ultralytics validator's accuracy (`yolo_opt.validation`)."""

from __future__ import annotations

from pathlib import Path

import torch

from yolo_opt.options import DEFAULT_IMGSZ
from yolo_opt.validation import validate, validate_onnx

__all__ = ["model_stats", "onnx_latency", "torch_latency", "validate", "validate_onnx"]


def torch_latency(weights: str | Path, imgsz: int = DEFAULT_IMGSZ, runs: int = 30, warmup: int = 5) -> dict:
    """Median batch-1 CPU latency (ms) of a fused `.pt` model in eval mode, with the threads used (this process)."""
    from yolo_opt.bench.latency import interleaved

    before = torch.get_num_threads()
    try:
        r = interleaved([weights], imgsz, runs=runs, rounds=1, warmup=warmup)[0]
    finally:
        torch.set_num_threads(before)  # as ONNX Runtime, one thread per core; training may have lowered it
    return {"ms": r["ms"], "threads": r["threads"], "imgsz": r["imgsz"]}


def onnx_latency(path: str | Path, imgsz: int | None = None, runs: int = 30, warmup: int = 5,
                 threads: int | None = None) -> dict:
    """Median batch-1 ONNX Runtime CPU latency (ms), with the intra-op threads used (this process)."""
    from yolo_opt.bench.latency import interleaved

    r = interleaved([path], imgsz, runs=runs, rounds=1, warmup=warmup, threads=threads)[0]
    return {"ms": r["ms"], "threads": r["threads"], "imgsz": r["imgsz"]}


def model_stats(weights: str | Path, imgsz: int = DEFAULT_IMGSZ) -> dict:
    """Parameters, GFLOPs at `imgsz` and file size of a `.pt` checkpoint."""
    from yolo_opt.io.checkpoint import load_model
    from yolo_opt.prune.targets import count_macs

    macs, params = count_macs(load_model(weights), imgsz)
    return {"params": params, "gflops": 2 * macs / 1e9, "size_mb": Path(weights).stat().st_size / 2**20}
