"""FP32 ONNX export through Ultralytics' own exporter, in a temporary folder renamed into place, and the one
rewrite of its graph we add: the DFL softmax over the last axis (`last_axis_dfl`).

An end-to-end model (YOLO26, YOLOv10) is exported with the head the installed Ultralytics exports by default (in
8.4.190 the one-to-many output, which needs NMS), as `yolo export` would; `end2end=True` gives the NMS-free one-to-one
head (`yolo_opt.arch.ModelAdapter.exporter_args`). The written file's metadata says which head it holds
(`exported_end2end`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from yolo_opt.errors import ConfigError, DeployError, first_line
from yolo_opt.io.files import hints_outside, temporary_dir
from yolo_opt.options import DEFAULT_IMGSZ


def export_onnx(
    model: str | Path,
    out: str | Path | None = None,
    imgsz: int | list[int] = DEFAULT_IMGSZ,
    opset: int | None = None,
    simplify: bool = True,
    end2end: bool | None = None,
    **kwargs: Any,
) -> Path:
    """Export an Ultralytics `.pt` (pruned ones too) to an FP32 ONNX file with Ultralytics' own exporter.

    The export runs in a temporary folder next to `out` and is renamed into place, so a failed export never
    leaves a partial file. Batch size is 1 and shapes are static (what TensorRT and INT8 calibration want).

    Args:
        model: Path to the `.pt` checkpoint.
        out: Output `.onnx` path (default: next to the model, same stem).
        imgsz: Export image size (int or [h, w]).
        opset: ONNX opset (None: Ultralytics' default).
        simplify: Run onnxslim as Ultralytics does.
        end2end: True: the NMS-free one-to-one output of an end-to-end model; False: the one-to-many output that
            needs NMS; None: the head Ultralytics exports by default.
        **kwargs: Other Ultralytics export arguments (e.g. `nms=True` to embed NMS after a one-to-many head).

    Returns:
        Path of the written FP32 ONNX file.

    Raises:
        ModelError: Missing or unreadable checkpoint.
        DeployError: Ultralytics' exporter failed.
    """
    from ultralytics import YOLO

    from yolo_opt.arch import adapter
    from yolo_opt.io.checkpoint import load_model
    from yolo_opt.io.onnx import load_onnx

    model = Path(model)
    head = adapter(load_model(model)).exporter_args(end2end, kwargs.pop("nms", None))  # a bad model: one clear error
    out = Path(out) if out else model.with_suffix(".onnx")
    if out.suffix != ".onnx":
        raise ConfigError(f"ONNX output must end in .onnx, got '{out}'")
    tmpdir = temporary_dir(out)
    try:
        yolo = YOLO(str(model))  # its task from the checkpoint
        yolo.model.pt_path = str(tmpdir / f"{out.stem}.pt")  # Ultralytics writes next to pt_path
        args = {"format": "onnx", "imgsz": imgsz, "simplify": simplify, "dynamic": False, "batch": 1, **kwargs, **head}
        if opset:
            args["opset"] = opset
        try:
            with hints_outside(tmpdir):
                written = Path(yolo.export(**args))
        except Exception as e:
            first = first_line(e)
            raise DeployError(f"Ultralytics ONNX export of {model} failed: {first}") from e
        graph = load_onnx(written)
        got, want = exported_end2end(graph), True if head.get("nms") is False else (False if end2end is False else None)
        if want is not None and got != want:
            raise DeployError(f"Ultralytics exported the {'NMS-free' if got else 'one-to-many'} head of {model}, not "
                              f"the one asked for (end2end={want}): this Ultralytics version selects heads otherwise; "
                              "drop end2end=")
        if last_axis_dfl(graph):
            import onnx

            onnx.save(graph, str(written))
        os.replace(written, out)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return out


def exported_end2end(model) -> bool:
    """Whether an exported ONNX model (a loaded graph or a path) outputs the NMS-free head: Ultralytics' metadata."""
    from yolo_opt.io.onnx import load_onnx, onnx_metadata

    graph = load_onnx(model, check=False) if isinstance(model, (str, Path)) else model
    return bool(onnx_metadata(graph).get("end2end", False))


def last_axis_dfl(model) -> int:
    """Rewrite each DFL decode of a Detect head to take its softmax over the last axis, in place; returns how many.

    Ultralytics exports DFL as Reshape (1, 4, 16, A) -> Transpose (0, 2, 1, 3) -> Softmax(axis=1) -> Conv with the
    fixed weights 0..15. ONNX Runtime computes a softmax over an inner axis by transposing around it, which makes
    this float tail slow. Transposing to (1, 4, A, 16) instead, then Softmax over the last axis and a MatMul with
    the same weights, gives identical outputs (the Conv's (1, 1, 4, A) and the MatMul's (1, 4, A, 1) hold the same
    elements in the same order for the Reshape that follows) faster (measured: docs/benchmarks.md#dfl-rewrite).
    Graphs without that pattern are left unchanged.
    """
    from onnx import numpy_helper

    from yolo_opt.quant.graph import consumers, producers

    init = {i.name: i for i in model.graph.initializer}
    producer, users = producers(model.graph), consumers(model.graph)

    def attr(node, name):
        return next((a for a in node.attribute if a.name == name), None)

    rewritten = 0
    for soft in [n for n in model.graph.node if n.op_type == "Softmax"]:
        axis, trans, readers = attr(soft, "axis"), producer.get(soft.input[0]), users.get(soft.output[0], [])
        conv = readers[0] if len(readers) == 1 else None  # a softmax that is a graph output has no reader
        if (axis is None or axis.i != 1 or trans is None or trans.op_type != "Transpose"
                or list(attr(trans, "perm").ints) != [0, 2, 1, 3] or conv is None
                or len(users[trans.output[0]]) != 1 or conv.op_type != "Conv" or len(conv.input) != 2
                or conv.input[1] not in init):
            continue
        weight = numpy_helper.to_array(init[conv.input[1]])
        if weight.shape[0] != 1 or weight.shape[2:] != (1, 1):
            continue
        attr(trans, "perm").ints[:] = [0, 1, 3, 2]
        axis.i = -1
        name = f"{conv.input[1]}_matmul"
        model.graph.initializer.append(numpy_helper.from_array(weight.reshape(-1, 1), name))
        old = conv.input[1]
        conv.op_type, conv.input[1], conv.name = "MatMul", name, f"{conv.name}_as_matmul"
        del conv.attribute[:]
        if not any(old in n.input for n in model.graph.node):
            model.graph.initializer.remove(init[old])
        keep = [v for v in model.graph.value_info if v.name not in {trans.output[0], soft.output[0], conv.output[0]}]
        del model.graph.value_info[:]
        model.graph.value_info.extend(keep)  # the shapes changed: drop their stale annotations
        rewritten += 1
    return rewritten
