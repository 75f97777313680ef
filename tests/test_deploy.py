"""Deploy: FP32/INT8 QDQ ONNX, calibration methods, accuracy fallback, TensorRT path, Jetson bundle, errors.

Tiny and fast: a 16/8-image generated dataset at 96 px and an untrained yolov8n (nc=5) plus a pruned copy.
Tolerance: INT8 outputs vs FP32 on real val images must agree within 10% relative L2 error of the whole output
tensor (boxes + scores); measured ~2-4% here.
"""

from __future__ import annotations

import ast
import json
import os
import py_compile
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")

IMGSZ = 96
REL_TOL = 0.10


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Dataset, untrained and pruned checkpoints, FP32 ONNX of the pruned model."""
    from ultralytics.nn.tasks import DetectionModel

    from yolo_opt.data import make_dataset
    from yolo_opt.deploy import export_onnx
    from yolo_opt.io.checkpoint import save_model
    from yolo_opt.prune import prune_checkpoint

    root = tmp_path_factory.mktemp("deploy")
    data = Path(make_dataset(root / "data", n_train=16, n_val=8, imgsz=IMGSZ))
    data = data if data.suffix == ".yaml" else data / "data.yaml"
    net = DetectionModel("yolov8n.yaml", nc=5, verbose=False)
    net.names = {i: n for i, n in enumerate(["circle", "square", "triangle", "cross", "ring"])}
    net.args = {"imgsz": IMGSZ}
    base = save_model(net, root / "base.pt")
    pruned = root / "pruned.pt"
    prune_checkpoint(base, pruned, prune=0.5, imgsz=IMGSZ)
    fp32 = export_onnx(pruned, root / "pruned.onnx", imgsz=IMGSZ)
    base_fp32 = export_onnx(base, root / "base.onnx", imgsz=IMGSZ)
    return {"root": root, "data": data, "base": base, "pruned": pruned, "fp32": fp32, "base_fp32": base_fp32}


def _val_batches(ws, n=4):
    from yolo_opt.data.calib import load_batches
    from yolo_opt.data.checks import dataset_images

    return load_batches(dataset_images(ws["data"], "val")[:n], IMGSZ, progress=False)


def _outputs(path, batches):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return [sess.run(None, {name: b})[0] for b in batches]


def rel_error(a_path, b_path, batches) -> float:
    a, b = _outputs(a_path, batches), _outputs(b_path, batches)
    return float(sum(np.linalg.norm(x - y) for x, y in zip(a, b, strict=True)) / sum(np.linalg.norm(y) for y in b))


@pytest.fixture(scope="module")
def int8(ws):
    from yolo_opt.quant import quantize_onnx

    return quantize_onnx(ws["fp32"], ws["data"], ws["root"] / "pruned_int8.onnx", calib="minmax", calib_images=16, validate=False,
                         progress=False)


def test_full_graph_qdq_with_float_tail(ws, int8):
    import onnx

    from yolo_opt.quant.graph import float_tail

    q = onnx.load(str(int8.path))
    ops = [n.op_type for n in q.graph.node]
    assert ops.count("QuantizeLinear") > 50 and ops.count("DequantizeLinear") > 50
    prod = {o: n for n in q.graph.node for o in n.output}
    dq_fed = lambda n: any(prod.get(i) is not None and prod[i].op_type == "DequantizeLinear" for i in n.input)  # noqa: E731
    tail = set(float_tail(onnx.load(str(ws["fp32"]))))
    assert any("Softmax" in t for t in tail) and "output0" in {o for n in q.graph.node if n.name in tail for o in n.output}
    body = [n for n in q.graph.node if n.op_type in {"Conv", "Sigmoid", "Mul", "Add", "Concat"} and n.name not in tail]
    assert body and all(dq_fed(n) for n in body), "every backbone/neck op must read quantized inputs"
    tail_out = {o for n in q.graph.node if n.name in tail for o in n.output}
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] in tail_out for n in q.graph.node), "tail is float"
    assert not any(dq_fed(n) for n in q.graph.node if n.name in tail and n.op_type in {"Conv", "Softmax", "Sigmoid"})
    # One scale shared across each quantized Concat's inputs and output.
    init = {i.name: onnx.numpy_helper.to_array(i) for i in q.graph.initializer}
    for n in q.graph.node:
        if n.op_type == "Concat" and n.name not in tail:
            scales = {float(init[prod[i].input[1]]) for i in n.input if prod.get(i) is not None}
            assert len(scales) == 1, n.name
    meta = {p.key: p.value for p in q.metadata_props}
    assert meta["yolo_opt_precision"] == "int8-qdq" and "names" in meta and meta["imgsz"] == f"[{IMGSZ}, {IMGSZ}]"
    assert int8.path.stat().st_size < ws["fp32"].stat().st_size / 2


@pytest.mark.parametrize("calib", ["minmax", "entropy", pytest.param("percentile", marks=pytest.mark.xfail(
    raises=Exception, reason="ORT's 2048-bin percentile histogram fails on an untrained model's ~1e-9 activations"))])
def test_calibration_methods_close_to_fp32(ws, calib, tmp_path):
    from yolo_opt.quant import quantize_onnx

    r = quantize_onnx(ws["base_fp32"], ws["data"], tmp_path / f"{calib}.onnx", calib=calib, calib_images=8, validate=False, progress=False)
    err = rel_error(r.path, ws["base_fp32"], _val_batches(ws))
    assert err < REL_TOL, f"{calib}: INT8 vs FP32 relative error {err:.3f}"
    assert r.calib == calib and r.calib_images == 8


def test_tensorrt_form_is_lossless_int8(ws, int8, tmp_path):
    import onnx
    import onnxruntime as ort

    from yolo_opt.quant import to_tensorrt_qdq

    trt_path = to_tensorrt_qdq(int8.path, tmp_path / "trt.onnx")
    q = onnx.load(str(trt_path))
    zps = {n.input[2] for n in q.graph.node if n.op_type in {"QuantizeLinear", "DequantizeLinear"} and len(n.input) > 2}
    init = {i.name: i for i in q.graph.initializer}
    assert not any(init[z].data_type == onnx.TensorProto.UINT8 for z in zps if z in init)
    assert all(not onnx.numpy_helper.to_array(init[z]).any() for z in zps if z in init and init[z].data_type == 3)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # exact Q/DQ arithmetic
    x = _val_batches(ws, 1)[0]
    a = ort.InferenceSession(str(int8.path), so, providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    b = ort.InferenceSession(str(trt_path), so, providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    np.testing.assert_array_equal(a, b)


def test_max_map_drop_keeps_sensitive_layers_float(ws, tmp_path):
    """Force the fallback: the score is output agreement with FP32, and the bound is half the full-INT8 error."""
    import onnx

    from yolo_opt.quant import quantize_onnx

    batches = _val_batches(ws)
    score = lambda p: -rel_error(p, ws["fp32"], batches)  # noqa: E731 (FP32 scores 0, INT8 its -error)
    full = quantize_onnx(ws["fp32"], ws["data"], tmp_path / "full.onnx", calib="minmax", calib_images=8, evaluate=score, progress=False)
    bound = (full.fp32_map - full.int8_map) / 2
    r = quantize_onnx(ws["fp32"], ws["data"], tmp_path / "fb.onnx", calib="minmax", calib_images=8, max_map_drop=bound, evaluate=score,
                      progress=False)
    assert r.excluded_layers and r.fp32_map - r.int8_map <= bound
    assert r.sensitivity and r.sensitivity[0]["added_error"] >= r.sensitivity[-1]["added_error"]
    assert [s["layer"] for s in r.sensitivity[: len(r.excluded_layers)]] == r.excluded_layers
    q = onnx.load(str(r.path))
    prod = {o: n for n in q.graph.node for o in n.output}
    for name in r.excluded_layers:
        conv = next(n for n in q.graph.node if n.name == name)
        assert prod.get(conv.input[1]) is None, f"{name}: weights must stay float"  # FP32 initializer, no DQ
    meta = {p.key: p.value for p in q.metadata_props}
    assert json.loads(meta["yolo_opt_float_layers"]) == r.excluded_layers


def test_export_api_validates_fp32_and_int8(ws, tmp_path, capsys):
    import shutil

    from yolo_opt.deploy import export

    pt = tmp_path / "m.pt"
    shutil.copyfile(ws["pruned"], pt)
    rep = export(pt, data=ws["data"], format="onnx", int8=True, imgsz=IMGSZ, calib_images=8)
    assert Path(rep["fp32"]).exists() and Path(rep["path"]).name == "m_int8.onnx"
    assert isinstance(rep["fp32_map"], float) and isinstance(rep["int8_map"], float)
    assert "mAP50-95 FP32" in capsys.readouterr().out


def test_bundle(ws, tmp_path):
    from yolo_opt.deploy import make_bundle

    out = make_bundle(ws["base"], ws["data"], tmp_path / "jetson", imgsz=IMGSZ, calib_images=8, validate=False,
                      progress=False)
    names = {p.name for p in out.iterdir()}
    assert {"model_fp32.onnx", "model_int8.onnx", "metadata.json", "build_engine.py", "build_engine.sh", "infer.py",
            "README.txt"} <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folders left behind"
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["imgsz"] == [IMGSZ, IMGSZ] and meta["stride"] == 32 and meta["precision"] == "int8-qdq"
    assert meta["names"]["0"] == "circle" and meta["input"]["name"] == "images"
    assert meta["input"]["shape"] == [1, 3, IMGSZ, IMGSZ] and meta["outputs"][0]["shape"] == [1, 9, 189]
    for script in ("build_engine.py", "infer.py"):
        py_compile.compile(str(out / script), doraise=True, cfile=str(tmp_path / f"{script}c"))
        tree = ast.parse((out / script).read_text())
        mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        mods |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not mods & {"yolo_opt", "ultralytics", "torch"}, (script, mods)
        assert mods <= {"argparse", "json", "os", "pathlib", "ctypes", "cv2", "numpy", "tensorrt", "onnxruntime"}
    sh = (out / "build_engine.sh").read_text()
    assert "trtexec" in sh and "--onnx=model_int8.onnx" in sh and "--int8" in sh
    readme = (out / "README.txt").read_text()
    assert "build_engine.py" in readme and "infer.py" in readme
    # The bundle's own decode + NMS (numpy) on the INT8 model, through ONNX Runtime: runs and prints JSON detections.
    from yolo_opt.data.checks import dataset_images

    img = dataset_images(ws["data"], "val")[0]
    res = subprocess.run([sys.executable, str(out / "infer.py"), str(img), "--onnx", str(out / "model_int8.onnx"),
                          "--conf", "0.0001", "--json", "--out", str(tmp_path / "det.jpg")],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": ""})
    assert res.returncode == 0, res.stderr
    dets = json.loads(res.stdout)
    assert isinstance(dets, list) and (tmp_path / "det.jpg").exists()


def test_calibration_cache_format():
    from yolo_opt.deploy import format_calibration_cache, parse_calibration_cache

    payload = format_calibration_cache({"images": 1 / 127, "/model.0/conv/Conv_output_0": 0.0421})
    lines = payload.decode().splitlines()
    assert lines[0] == "TRT-100300-EntropyCalibration2" and lines[1] == "images: 3c010204"
    header, scales = parse_calibration_cache(payload)
    assert header == lines[0] and scales["/model.0/conv/Conv_output_0"] == pytest.approx(0.0421)


def test_tensorrt_engine(ws, int8, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (no GPU/TensorRT on this machine)")
    from yolo_opt.deploy import build_engine

    engine = build_engine(int8.path, tmp_path / "m.engine")
    assert engine.stat().st_size > 0


def test_no_tensorrt_is_one_clear_error(int8, tmp_path):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed")
    except ImportError:
        pass
    from yolo_opt.deploy import build_engine
    from yolo_opt.errors import DeployError

    with pytest.raises(DeployError, match="TensorRT is not installed"):
        build_engine(int8.path, tmp_path / "m.engine")
    assert not list(tmp_path.iterdir())


def test_bad_input_errors(ws, tmp_path):
    from yolo_opt.cli import main
    from yolo_opt.deploy import export, make_bundle
    from yolo_opt.errors import ConfigError, DataError, ModelError
    from yolo_opt.quant import quantize_onnx

    with pytest.raises(DataError, match="data="):
        quantize_onnx(ws["fp32"], None, tmp_path / "x.onnx")
    with pytest.raises(ConfigError, match="unknown calib 'kl'"):
        quantize_onnx(ws["fp32"], ws["data"], tmp_path / "x.onnx", calib="kl")
    with pytest.raises(ConfigError, match="calib_images"):
        quantize_onnx(ws["fp32"], ws["data"], tmp_path / "x.onnx", calib_images=0)
    with pytest.raises(ModelError, match="not found"):
        export(tmp_path / "missing.pt", int8=True, data=ws["data"])
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 50)
    with pytest.raises(ModelError, match="not a valid ONNX"):
        quantize_onnx(bad, ws["data"], tmp_path / "out.onnx")
    with pytest.raises(DataError):
        make_bundle(ws["base"], tmp_path / "nope.yaml", tmp_path / "b")
    with pytest.raises(DataError, match="data="):
        export(ws["base"], format="onnx", int8=True, data=None)
    # Nothing half-written: no outputs, no temporary files.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.onnx"]
    # CLI: one line, exit code 2, no traceback.
    assert main(["export", f"model={ws['base']}", "format=onnx", "int8=True"]) == 2
    assert main(["export", f"model={ws['base']}", "int8=True", f"data={ws['data']}", "calib=kl"]) == 2
    assert main(["bundle", f"model={ws['base']}", f"data={ws['data']}"]) == 2
    assert main(["export", f"model={ws['base']}", "int8=True", f"data={ws['data']}", "calib_images=0"]) == 2
