"""Measure models the same way for every stage: warm up, then the median of timed runs."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


def torch_latency(weights: str | Path, imgsz: int = 640, runs: int = 30, warmup: int = 5) -> dict:
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


def validate(weights: str | Path, data: str | Path, imgsz: int, batch: int = 16, device: str = "cpu") -> dict:
    """mAP50-95 and mAP50 from the Ultralytics validator (any format it loads: .pt, .onnx, .engine, OpenVINO).

    An OpenVINO model is given as its `*_openvino_model/` folder or its `.xml` (device: `intel:cpu`, `intel:gpu`).
    """
    import contextlib

    from ultralytics import YOLO

    from yolo_opt.io.checkpoint import read_checkpoint

    if str(weights).endswith(".pt"):
        read_checkpoint(weights)  # refused unless safe, before Ultralytics opens it
    with contextlib.ExitStack() as stack:
        if str(weights).endswith(".xml"):
            weights = stack.enter_context(openvino_folder(weights))
        metrics = YOLO(str(weights), task="detect").val(
            data=str(data), imgsz=imgsz, batch=batch if str(weights).endswith(".pt") else 1, plots=False,
            verbose=False, device=device,
        )
    return {"map": float(metrics.box.map), "map50": float(metrics.box.map50)}


@contextlib.contextmanager
def openvino_folder(xml: str | Path) -> Iterator[Path]:
    """A folder Ultralytics loads as OpenVINO (its name ends in `_openvino_model`) holding `xml`, its .bin and the
    metadata.yaml beside it: the parent folder itself when so named, else a temporary one of links."""
    xml = Path(xml).resolve()
    if "_openvino_model" in xml.parent.name:
        yield xml.parent
        return
    with tempfile.TemporaryDirectory(prefix="yolo-opt-ov.") as tmp:
        folder = Path(tmp) / f"{xml.stem}_openvino_model"
        folder.mkdir()
        for src in (xml, xml.with_suffix(".bin"), xml.parent / "metadata.yaml"):
            if src.exists():
                (folder / src.name).symlink_to(src)
        yield folder


def model_stats(weights: str | Path, imgsz: int = 640) -> dict:
    """Parameters, GFLOPs at `imgsz` and file size of a `.pt` checkpoint."""
    from yolo_opt.io.checkpoint import load_model
    from yolo_opt.prune.targets import count_macs

    macs, params = count_macs(load_model(weights), imgsz)
    return {"params": params, "gflops": 2 * macs / 1e9, "size_mb": Path(weights).stat().st_size / 2**20}


def validate_onnx(
    path: str | Path, data: str | Path, imgsz: int | list[int] | None = None, verbose: bool = False, **kwargs: Any
) -> dict[str, float]:
    """mAP of an `.onnx` model with the Ultralytics validator (ONNX Runtime on CPU).

    Returns:
        {"map": mAP50-95, "map50": mAP50}, like `validate`.
    """
    from ultralytics import YOLO

    from yolo_opt.data.checks import dataset_images
    from yolo_opt.io.onnx import load_onnx, onnx_metadata

    dataset_images(data, "val")  # clear DataError before Ultralytics tries to download anything
    load_onnx(path, check=False)
    if imgsz is None:
        imgsz = onnx_metadata(load_onnx(path, check=False)).get("imgsz", 640)
    args = {"data": str(data), "imgsz": imgsz, "plots": False, "batch": 1, "verbose": verbose, "device": "cpu"}
    metrics = YOLO(str(path), task="detect").val(**{**args, **kwargs})
    return {"map": float(metrics.box.map), "map50": float(metrics.box.map50)}
