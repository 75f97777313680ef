"""Measure a set of model files the same way and report them: JSON, Markdown table and a PNG plot."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from yolo_opt.bench.latency import noisy_copies
from yolo_opt.errors import ModelError
from yolo_opt.io.files import atomic_write_bytes, check_output
from yolo_opt.options import DEFAULT_IMGSZ

SUPPORTED = (".pt", ".onnx", ".engine", ".xml", "an OpenVINO *_openvino_model/ folder")


def check_model_file(path: Path) -> None:
    """A benchmarkable model file, or a one-line ModelError naming the formats."""
    from yolo_opt.bench.latency import kind_of

    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if kind_of(path) not in ("pt", "onnx", "engine", "openvino"):
        raise ModelError(f"cannot benchmark '{path.name}': supported formats are {', '.join(SUPPORTED)}")
    if kind_of(path) == "openvino":
        from yolo_opt.io.openvino import model_xml, require

        require("openvino")
        model_xml(path)


def openvino_stats(path: str | Path) -> dict[str, Any]:
    """GFLOPs (2 x convolution MACs of the static IR) and file size (.xml + .bin) of an OpenVINO model."""
    import numpy as np

    from yolo_opt.io.openvino import model_xml, require

    ov = require("openvino")
    xml = model_xml(path)
    macs = 0
    for op in ov.Core().read_model(str(xml)).get_ordered_ops():
        if op.get_type_name() in ("Convolution", "GroupConvolution"):
            out = op.get_output_partial_shape(0)
            w = op.input_value(1).get_partial_shape()
            if out.is_static and w.is_static:
                w = [d.get_length() for d in w]
                per_out = np.prod(w[1:]) if op.get_type_name() == "Convolution" else np.prod(w[2:])
                macs += int(np.prod([d.get_length() for d in out])) * int(per_out)
    size = sum(f.stat().st_size for f in (xml, xml.with_suffix(".bin")))
    return {"params": None, "gflops": 2 * macs / 1e9, "size_mb": size / 2**20}


def onnx_stats(path: str | Path) -> dict[str, float]:
    """Parameters (initializer elements) and GFLOPs (2 x conv/matmul MACs from inferred shapes) of an ONNX model."""
    import numpy as np
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    # weights of a QDQ model sit behind DequantizeLinear: count each weight tensor once
    params = sum(int(np.prod(t.dims)) for t in inits.values() if len(t.dims) > 1 or t.data_type in (1, 10, 11))
    inferred = shape_inference.infer_shapes(model)
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if dims and all(d > 0 for d in dims):
            shapes[vi.name] = dims
    for name, t in inits.items():
        shapes[name] = list(t.dims)
    producers = {o: n for n in inferred.graph.node for o in n.output}

    def weight_shape(name: str) -> list[int] | None:
        node = producers.get(name)
        if node is not None and node.op_type == "DequantizeLinear":  # QDQ weight
            return shapes.get(node.input[0]) or (list(numpy_helper.to_array(inits[node.input[0]]).shape)
                                                 if node.input[0] in inits else None)
        return shapes.get(name)

    macs = 0
    for node in inferred.graph.node:
        if node.op_type == "Conv" and node.output[0] in shapes:
            w = weight_shape(node.input[1])
            if w:
                macs += int(np.prod(shapes[node.output[0]])) * int(np.prod(w[1:]))
    return {"params": params, "gflops": 2 * macs / 1e9}


def measure_file(path: str | Path, data: str | Path, imgsz: int, *, lat_imgsz: int | None = None,
                 runs: int = 30, latency: bool = True) -> dict[str, Any]:
    """Every figure of one model file: params, GFLOPs, size, mAP50-95/mAP50, CPU latency and its runtime.

    Latency is timed in a process of the model's runtime alone (`yolo_opt.bench.latency`); `benchmark` instead
    interleaves all models of a runtime in one such process.
    """
    from yolo_opt.bench.latency import RUNTIMES, kind_of, latency_in_process
    from yolo_opt.bench.measure import model_stats, validate

    path = Path(path)
    check_model_file(path)
    kind = kind_of(path)
    lat_imgsz = lat_imgsz or imgsz
    row: dict[str, Any] = {"file": str(path), "runtime": RUNTIMES.get(kind, "TensorRT")}
    if kind == "pt":
        stats = model_stats(path, imgsz)
        row.update(params=stats["params"], gflops=stats["gflops"], size_mb=stats["size_mb"])
    elif kind == "onnx":
        row.update(onnx_stats(path), size_mb=path.stat().st_size / 2**20)
    elif kind == "openvino":
        row.update(openvino_stats(path))
    else:  # .engine: needs TensorRT and a GPU, measured by the validator's own timing only
        row.update(params=None, gflops=None, size_mb=path.stat().st_size / 2**20)
    row.update(latency_ms=None, threads=None)
    if latency and kind in RUNTIMES:
        lat = latency_in_process([path], lat_imgsz, runs=runs, rounds=1)[0]
        row.update(latency_ms=lat["ms"], threads=lat["threads"], runtime=lat["runtime"])
        lat_imgsz = lat["imgsz"]
    elif kind in ("onnx", "openvino"):
        lat_imgsz = None  # a fixed-shape model is validated at its own input size
    row.update(validate(path, data, imgsz if kind in ("pt", "engine") else (lat_imgsz or _input_size(path, imgsz)),
                        device="intel:cpu" if kind == "openvino" else "cpu"))
    if kind == "pt" and _has_nms_free_head(path):  # the other head too: the report shows both where they differ
        row["map_nms_free"] = validate(path, data, imgsz, end2end=True)["map"]
    row["imgsz"] = imgsz
    row["lat_imgsz"] = lat_imgsz
    return row


def _has_nms_free_head(path: Path) -> bool:
    from yolo_opt.arch import adapter
    from yolo_opt.io.checkpoint import load_model

    return adapter(load_model(path)).end2end


def _input_size(path: Path, default: int) -> int:
    """Input side of a fixed-shape ONNX or OpenVINO model (`default` for a dynamic one)."""
    from yolo_opt.bench.latency import kind_of

    if kind_of(path) == "onnx":
        from yolo_opt.io.onnx import load_onnx, onnx_io

        side = onnx_io(load_onnx(path, check=False))["inputs"][0]["shape"][-1]
        return side if isinstance(side, int) and side > 0 else default
    from yolo_opt.io.openvino import model_xml, require

    dim = require("openvino").Core().read_model(str(model_xml(path))).input(0).get_partial_shape()[-1]
    return dim.get_length() if dim.is_static else default


def _fmt(value: Any, ref: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if ref:
        return f"{value:.{digits}g} ({value / ref:.2f}x)"
    return f"{value:.{digits}g}"


def _first_per_runtime(rows: dict[str, dict[str, Any]], only_reference: bool = False) -> dict[Any, dict[str, Any]]:
    """The first row timed on each runtime (of the reference rows alone, if asked): like is compared with like."""
    first: dict[Any, dict[str, Any]] = {}
    for r in rows.values():
        if r.get("reference") or not only_reference:
            first.setdefault(r.get("runtime"), r)
    return first


def markdown_table(rows: dict[str, dict[str, Any]]) -> str:
    """Side-by-side table, each figure also as a ratio to the first row (the input model).

    Rows marked `reference` (the input trained the same extra epochs, unpruned) add a "vs reference" column: each
    row's mAP50-95 over the reference's on the same runtime. "vs input" alone flatters a pruned model, which got
    training its input did not. Segmentation models add the masks' mAP50-95 (and its ratio to the reference).
    """
    names = list(rows)
    ref = rows[names[0]]
    first_of_runtime = _first_per_runtime(rows)
    reference_of_runtime = _first_per_runtime(rows, only_reference=True)
    vs_ref = bool(reference_of_runtime)
    masks = any(r.get("mask_map") is not None for r in rows.values())
    head = ["stage", "file", "params (M)", "GFLOPs", "size (MB)", "mAP50-95 (vs input)"] + ["vs reference"] * vs_ref
    if masks:
        head += ["mask mAP50-95 (vs input)"] + ["mask vs reference"] * vs_ref
    head += ["mAP50", "latency (ms)", "pipeline (ms)", "runtime"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def vs_reference(r: dict[str, Any], key: str) -> str:
        reference = reference_of_runtime.get(r.get("runtime"))
        return f"{r[key] / reference[key]:.3f}x" if reference and reference.get(key) and r.get(key) is not None else "-"

    for name in names:
        r = rows[name]
        params = r["params"] / 1e6 if r.get("params") else None
        ref_params = ref["params"] / 1e6 if ref.get("params") else None
        cells = [name, Path(r["file"]).name, _fmt(params, ref_params), _fmt(r.get("gflops"), ref.get("gflops")),
                 _fmt(r["size_mb"], ref["size_mb"]), _fmt(r["map"], ref["map"])] + [vs_reference(r, "map")] * vs_ref
        if masks:
            cells += [_fmt(r.get("mask_map"), ref.get("mask_map"))] + [vs_reference(r, "mask_map")] * vs_ref
        first = first_of_runtime[r.get("runtime")]
        cells += [f"{r['map50']:.3f}", _timing(r, "latency_ms", first), _timing(r, "pipeline_ms", first),
                  r.get("runtime", "-")]
        lines.append("| " + " | ".join(cells) + " |")
    threads = {r.get("threads") for r in rows.values() if r.get("threads")}
    sizes = {r.get("lat_imgsz") for r in rows.values()}
    lines.append("")
    rounds = max((r.get("rounds") or 1 for r in rows.values()), default=1)
    lines.append(f"Latency: batch 1, {'/'.join(map(str, sorted(threads)))} threads, input "
                 f"{'/'.join(map(str, sorted(s for s in sizes if s)))} px; each file timed once for this report, in a "
                 f"process of its own, the files taking turns over {rounds} round(s): the median, and in brackets the "
                 f"fastest and slowest round. mAP from the Ultralytics validator on the val split (boxes"
                 f"{', and masks' if masks else ''}), each model on the head it ships with. 'pipeline' is what a "
                 f"user's loop spends per frame: letterbox of a real image + the model + decode (and NMS where the "
                 f"model has none; exported models); the model's time is taken inside those frames. Ratios are to "
                 f"the first row (latency: to the first row on the same runtime)."
                 + (" 'vs reference': mAP50-95 over the reference's on the same runtime (the input trained the same "
                    "extra epochs without pruning)." if vs_ref else ""))
    heads = [n for n, r in rows.items() if r.get("map_nms_free") is not None and abs(r["map_nms_free"] - r["map"]) > 0.01]
    if heads:
        lines.append("")
        lines.append("The NMS-free head scores apart from the head Ultralytics uses by default: "
                     + ", ".join(f"{n} {rows[n]['map']:.4f} (default) vs {rows[n]['map_nms_free']:.4f} (NMS-free)"
                                 for n in heads) + ".")
    noise = noisy_copies([(n, (r.get("runtime"), r.get("params"), r.get("gflops")) if r.get("gflops") else None,
                           r.get("latency_ms"), r.get("latency_ms_spread")) for n, r in rows.items()])
    if noise:
        lines.append("")
        lines.append(f"**Noise:** {noise}.")
    return "\n".join(lines)


def _timing(r: dict[str, Any], key: str, first: dict[str, Any]) -> str:
    """A latency cell: the median (its rounds' range), and its ratio to the first row on the same runtime."""
    from yolo_opt.bench.latency import with_spread

    if r.get(key) is None:
        return "-"
    cell = with_spread(r[key], r.get(f"{key}_spread"))
    return f"{cell}, {r[key] / first[key]:.2f}x" if first.get(key) else cell


def numbered_plot(points: list[dict[str, Any]], out: str | Path, xlabel: str, ylabel: str, title: str,
                  hline: tuple[float, str] | None = None) -> Path:
    """A scatter of numbered points whose legend, beside the axes, names each number: labels never overprint one
    another and nothing runs off the axes, however close the points sit.

    Args:
        points: {"label", "x", "y", and optionally "marker", "color", "size"}.
        hline: (y, label) of a horizontal line (a bound).
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(10, 4.8), dpi=120)
    handles = []
    for i, pt in enumerate(points, 1):
        color = pt.get("color", f"C{(i - 1) % 10}")
        ax.scatter(pt["x"], pt["y"], marker=pt.get("marker", "o"), s=pt.get("size", 60), c=color, edgecolors="k",
                   alpha=0.8, zorder=3)
        ax.annotate(str(i), (pt["x"], pt["y"]), textcoords="offset points", xytext=(0, 0), ha="center",
                    va="center", fontsize=6, zorder=4)
        handles.append(Line2D([], [], marker=pt.get("marker", "o"), ls="", color=color, markeredgecolor="k",
                              label=f"{i}: {pt['label']}"))
    if hline is not None:
        ax.axhline(hline[0], ls="--", c="tab:red", lw=1)
        handles.append(Line2D([], [], ls="--", c="tab:red", lw=1, label=hline[1]))
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.margins(0.08)
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    out = Path(out)
    atomic_write_bytes(out, buffer.getvalue())
    return out


def plot(rows: dict[str, dict[str, Any]], out: str | Path) -> Path:
    """mAP50-95 (the masks' for segmentation models) vs latency, one numbered point per stage, marker area ~ file
    size."""
    sizes = [r["size_mb"] for r in rows.values()]
    scale = 600 / max(sizes) if sizes and max(sizes) else 1
    key = "mask_map" if any(r.get("mask_map") is not None for r in rows.values()) else "map"
    points = [{"label": f"{name} ({r['size_mb']:.1f} MB, {r.get('runtime', '')})", "x": r["latency_ms"], "y": r[key],
               "size": max(40, r["size_mb"] * scale)}
              for name, r in rows.items() if r.get("latency_ms") is not None and r.get(key) is not None]
    return numbered_plot(points, out, xlabel="CPU latency, batch 1 (ms)",
                         ylabel="mask mAP50-95" if key == "mask_map" else "mAP50-95",
                         title="yolo-opt: accuracy vs latency (marker area = file size)")


def write_report(rows: dict[str, dict[str, Any]], folder: str | Path, title: str = "yolo-opt report") -> dict[str, Path]:
    """Write results.json, report.md and report.png into `folder`; returns their paths."""
    folder = Path(folder)
    paths = {"json": folder / "results.json", "md": folder / "report.md", "png": folder / "report.png"}
    atomic_write_bytes(paths["json"], json.dumps(rows, indent=1).encode())
    plot(rows, paths["png"])
    md = f"# {title}\n\n{markdown_table(rows)}\n\n![mAP vs latency]({paths['png'].name})\n"
    atomic_write_bytes(paths["md"], md.encode())
    return paths


def _class_names(path: Path) -> dict[int, str] | None:
    """The classes a model file predicts (a .pt's model, an ONNX's Ultralytics metadata; unknown for an engine)."""
    if path.suffix == ".pt":
        from yolo_opt.io.checkpoint import load_model

        return getattr(load_model(path), "names", None)
    if path.suffix == ".onnx":
        from yolo_opt.io.onnx import load_onnx, onnx_metadata

        return onnx_metadata(load_onnx(path, check=False)).get("names")
    return None


def _unique_labels(models: list[Path]) -> list[str]:
    """Shortest distinguishing names: stem, else file name, else parent folders + file name."""
    for label in (lambda m: m.stem, lambda m: m.name, lambda m: f"{m.parent.name}/{m.name}",
                  lambda m: f"{m.parent.parent.name}/{m.parent.name}/{m.name}"):
        labels = [label(m) for m in models]
        if len(set(labels)) == len(labels):
            return labels
    return [str(m) for m in models]


def benchmark(models: Iterable[str | Path], data: str | Path, imgsz: int = DEFAULT_IMGSZ, *,
              out: str | Path | None = None, lat_imgsz: int | None = None, runs: int = 30, names: Iterable[str] | None = None,
              references: Iterable[str] = (), reference: str | Path | None = None, rounds: int = 3,
              ov_precision: str | None = None, timed: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """`yolo-opt benchmark`: measure each model file and write the report. Returns the rows.

    Latency: every file once, by the one protocol of reports (`yolo_opt.bench.latency.time_apart`: each file in a
    process of its own, the files taking turns over `rounds` rounds); ratios in the table stay within one runtime.

    The reference is the input trained as long as the compressed models were, unpruned; the report then shows
    each row's mAP against it. `references` names the rows (labels) that are references; `reference` adds one
    more model file as the row "reference". `ov_precision` sets OpenVINO's CPU inference precision (f32, bf16,
    f16; None: OpenVINO's default, which is bf16 on CPUs with AVX512-BF16 or AMX: the runtime column says so).
    `timed`: figures of files this report has timed already ({resolved path: `time_apart` figures}, e.g. a
    selection's): reused, so that every table of one report shows one figure per file.
    """
    from ultralytics.utils import TQDM as tqdm  # noqa: N812 (Ultralytics ships its own progress bar)

    from yolo_opt.bench.latency import RUNTIMES, kind_of, time_apart
    from yolo_opt.data.checks import check_dataset, dataset_images

    models = [Path(m) for m in models]
    labels = list(names) if names else _unique_labels(models)
    references = set(references)
    if reference is not None:
        models, labels, references = [*models, Path(reference)], [*labels, "reference"], references | {"reference"}
    if out:
        check_output(out, models, folder=True, key="name")
    for m in models:  # fail before measuring anything: missing files, and a dataset of other classes
        check_model_file(m)
        check_dataset(data, _class_names(m), (), what=m.name)
    dataset_images(data, "val")
    rows = {}
    for label, m in tqdm(list(zip(labels, models, strict=True)), desc="benchmark", unit="model"):
        rows[label] = measure_file(m, data, imgsz, lat_imgsz=lat_imgsz, runs=runs, latency=False)
        if label in references:
            rows[label]["reference"] = True
    timed = dict(timed or {})
    todo = [m for m in dict.fromkeys(str(m.resolve()) for m in models)
            if m not in timed and kind_of(m) in RUNTIMES]
    for m, lat in zip(todo, time_apart([{"path": m, "precision": ov_precision} for m in todo], lat_imgsz or imgsz,
                                       rounds=rounds, runs=max(1, runs // rounds),
                                       image=str(dataset_images(data, "val")[0])), strict=True):
        timed[m] = lat
    for label, m in zip(labels, models, strict=True):
        lat = timed.get(str(m.resolve()))
        if lat is not None:
            rows[label].update(latency_ms=lat["ms"], latency_ms_spread=lat.get("ms_spread"),
                               pipeline_ms=lat.get("pipeline_ms"), pipeline_ms_spread=lat.get("pipeline_ms_spread"),
                               threads=lat["threads"], lat_imgsz=lat["imgsz"], runtime=lat["runtime"],
                               rounds=lat.get("rounds"))
    if out:
        write_report(rows, out)
    return rows
