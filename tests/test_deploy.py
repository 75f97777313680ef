"""Deploy: FP32/INT8 QDQ ONNX, calibration methods, accuracy fallback, errors (TensorRT and the Jetson bundle:
tests/test_tensorrt.py).

Tiny and fast: a 16/8-image generated dataset at 96 px and an untrained yolov8n (nc=5) plus a pruned copy; the
calibration methods and INT8 kernels run on a seeded Kaiming-initialized yolov8n, whose activations vary per image.
Tolerance: INT8 outputs vs FP32 on real val images must agree within 10% relative L2 error of the whole output
tensor (boxes + scores); measured ~2-4% here.
"""

from __future__ import annotations

import json
import os
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
    from yolo_opt.training import prune_checkpoint

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


def test_export_takes_dfl_softmax_over_last_axis(ws, tmp_path):
    """Our FP32 export computes DFL's softmax over the last axis, with the outputs of Ultralytics' own export."""
    import shutil

    import onnx
    from ultralytics import YOLO

    shutil.copy(ws["base"], tmp_path / "base.pt")
    plain = YOLO(str(tmp_path / "base.pt")).export(format="onnx", imgsz=IMGSZ, simplify=True, batch=1)

    def softmax_axes(path):
        return [a.i for n in onnx.load(str(path)).graph.node if n.op_type == "Softmax" for a in n.attribute]

    assert softmax_axes(plain) == [1] and softmax_axes(ws["base_fp32"]) == [-1]
    batches = _val_batches(ws)
    for a, b in zip(_outputs(ws["base_fp32"], batches), _outputs(plain, batches), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_cli_fp32_onnx_export_is_ours(ws, tmp_path, capsys):
    """`yolo-opt export format=onnx` writes our FP32 export (the DFL rewrite) to out=, passes Ultralytics' ONNX keys
    through, and refuses them where they do not apply."""
    import onnx

    from yolo_opt.cli import main

    out = tmp_path / "fp32.v1.onnx"
    assert main(["export", f"model={ws['base']}", "format=onnx", f"imgsz={IMGSZ}", f"out={out}", "opset=17"]) == 0
    graph = onnx.load(str(out))
    assert [a.i for n in graph.graph.node if n.op_type == "Softmax" for a in n.attribute] == [-1]
    assert next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) == 17
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # nothing else written, nothing left over
    for bad in (["int8=True", f"data={ws['data']}", "opset=17"], [f"out={tmp_path / 'x.engine'}"]):
        assert main(["export", f"model={ws['base']}", "format=onnx", *bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("yolo-opt: error:") for line in err), err


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


@pytest.fixture(scope="module")
def kaiming_fp32(tmp_path_factory):
    """FP32 ONNX of a seeded Kaiming-initialized yolov8n: activations that vary with the image, so every calibration
    method has real ranges to pick (the default init's ~1e-9 activations broke ORT's percentile histogram at random)."""
    from tests.conftest import kaiming_checkpoint
    from yolo_opt.deploy import export_onnx

    root = tmp_path_factory.mktemp("kaiming")
    return export_onnx(kaiming_checkpoint("yolov8n.yaml", root / "k.pt"), root / "k.onnx", imgsz=IMGSZ)


@pytest.mark.parametrize("calib", ["minmax", "entropy", "percentile"])
def test_calibration_methods_close_to_fp32(ws, kaiming_fp32, calib, tmp_path):
    from yolo_opt.quant import quantize_onnx

    r = quantize_onnx(kaiming_fp32, ws["data"], tmp_path / f"{calib}.onnx", calib=calib, calib_images=8, validate=False,
                      progress=False)
    err = rel_error(r.path, kaiming_fp32, _val_batches(ws))
    assert err < REL_TOL, f"{calib}: INT8 vs FP32 relative error {err:.3f}"
    assert r.calib == calib and r.calib_images == 8


def test_int8_kernels_compute_the_graph_exactly(ws, kaiming_fp32, tmp_path):
    """ONNX Runtime's INT8 convolutions give what the Q/DQ graph says, on this CPU. x86 CPUs without VNNI sum pairs of
    U8 x S8 products into a saturating int16 (vpmaddubsw): with 8-bit weights a trained yolov8n lost half its mAP50-95
    there (benchmarks/int8_kernels.py), so weights are 7-bit. The first conv gets large one-signed weights, the case
    that overflows; its quantized outputs (and the next layers') must equal the exact ones within one step."""
    import onnx
    import onnxruntime as ort

    from yolo_opt.quant import quantize_onnx

    m = onnx.load(str(kaiming_fp32))
    w = next(i for i in m.graph.initializer if i.name == next(n for n in m.graph.node if n.op_type == "Conv").input[1])
    a = onnx.numpy_helper.to_array(w)
    rng = np.random.default_rng(0)
    sign = np.sign(rng.standard_normal((a.shape[0], 1, 1, 1)))
    w.CopyFrom(onnx.numpy_helper.from_array((sign * rng.uniform(0.5, 1, a.shape) * np.abs(a).max()).astype(np.float32),
                                            w.name))
    fp32 = tmp_path / "k.onnx"
    onnx.save(m, str(fp32))
    q = quantize_onnx(fp32, ws["data"], tmp_path / "k_int8.onnx", calib_images=8, validate=False, progress=False).path
    m = onnx.load(str(q))
    weights = [onnx.numpy_helper.to_array(i) for i in m.graph.initializer
               if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4]
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64
    probes = [n.output[0] for n in m.graph.node
              if n.op_type == "QuantizeLinear" and ("model.0/" in n.input[0] or "model.1/" in n.input[0])]
    del m.graph.output[:]
    m.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.UINT8, None) for t in probes)
    onnx.save(m, str(tmp_path / "probe.onnx"))
    fused, exact = ort.SessionOptions(), ort.SessionOptions()
    fused.optimized_model_filepath = str(tmp_path / "fused.onnx")  # what ONNX Runtime runs: QLinearConv kernels
    exact.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # Q/DQ pairs run as float ops
    kernels, reference = (ort.InferenceSession(str(tmp_path / "probe.onnx"), so, providers=["CPUExecutionProvider"])
                          for so in (fused, exact))
    assert any(n.op_type == "QLinearConv" for n in onnx.load(str(tmp_path / "fused.onnx")).graph.node)
    name = kernels.get_inputs()[0].name
    for x in _val_batches(ws, 2):
        for t, k, r in zip(probes, kernels.run(None, {name: x}), reference.run(None, {name: x}), strict=True):
            step = int(np.abs(k.astype(np.int32) - r.astype(np.int32)).max())
            assert step <= 1, f"{t}: integer kernels differ from exact arithmetic by {step} quantization steps"


def test_max_map_drop_keeps_sensitive_layers_float(ws, tmp_path):
    """Force the fallback: the score is output agreement with FP32, and the bound is half the full-INT8 error.
    Symmetric activations: on this untrained model asymmetric INT8 reproduces FP32's outputs exactly (no error to
    halve)."""
    import onnx

    from yolo_opt.quant import quantize_onnx

    batches = _val_batches(ws)
    score = lambda p: -rel_error(p, ws["fp32"], batches)  # noqa: E731 (FP32 scores 0, INT8 its -error)
    full = quantize_onnx(ws["fp32"], ws["data"], tmp_path / "full.onnx", calib="minmax", calib_images=8, evaluate=score,
                         progress=False, symmetric=True)
    bound = (full.fp32_map - full.int8_map) / 2
    assert bound > 0
    r = quantize_onnx(ws["fp32"], ws["data"], tmp_path / "fb.onnx", calib="minmax", calib_images=8, max_map_drop=bound, evaluate=score,
                      progress=False, symmetric=True)
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


def test_export_api_validates_fp32_and_int8(ws, tmp_path, logged):
    import shutil

    from yolo_opt.deploy import export

    pt = tmp_path / "m.pt"
    shutil.copyfile(ws["pruned"], pt)
    rep = export(pt, data=ws["data"], format="onnx", int8=True, imgsz=IMGSZ, calib_images=8)
    assert Path(rep["path"]).name == "m_int8.onnx" and "fp32" not in rep
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "m_int8.onnx"]  # the FP32 step is not left here
    assert isinstance(rep["fp32_map"], float) and isinstance(rep["int8_map"], float)
    assert any("mAP50-95 FP32" in line for line in logged)  # reported through Ultralytics' LOGGER


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


def test_int8_activations_chosen_by_measurement(ws, kaiming_fp32, tmp_path, logged):
    """Unset `symmetric`, a scored INT8 export measures both kinds of activations on the same calibration images and
    keeps the one that loses less; the log line says which and by how much. Scored here by fidelity to FP32 (the
    `evaluate` hook: minus the relative output error on val images), which separates the kinds on an untrained model
    where mAP cannot."""
    import onnx

    from yolo_opt.quant import quantize_onnx

    batches = _val_batches(ws)

    def fidelity(path):
        return -rel_error(path, kaiming_fp32, batches)

    r = quantize_onnx(kaiming_fp32, ws["data"], tmp_path / "auto.onnx", calib_images=8, evaluate=fidelity,
                      progress=False)
    kinds = {sym: quantize_onnx(kaiming_fp32, ws["data"], tmp_path / f"{sym}.onnx", calib_images=8, validate=False,
                                symmetric=sym, progress=False).path for sym in (False, True)}
    errors = {sym: rel_error(path, kaiming_fp32, batches) for sym, path in kinds.items()}
    assert errors[False] != errors[True]
    assert r.symmetric == (errors[True] < errors[False])  # the more faithful kind was kept
    written = {p.key: p.value for p in onnx.load(str(r.path)).metadata_props}["yolo_opt_activations"]
    assert written == ("symmetric" if r.symmetric else "asymmetric")
    assert rel_error(r.path, kaiming_fp32, batches) == pytest.approx(min(errors.values()), rel=1e-6)
    line = next(x for x in logged if "INT8 activations" in x)
    assert f"INT8 activations {written}" in line and "less loss" in line
    # asked for one kind, or unscored: no measurement, no choice
    r = quantize_onnx(kaiming_fp32, ws["data"], tmp_path / "asym.onnx", calib_images=8, validate=False, progress=False)
    assert r.symmetric is False


def test_export_defaults_to_the_checkpoints_training_size(ws, tmp_path):
    """As `yolo export`: without imgsz=, the size the checkpoint was trained at (here IMGSZ, not 640); nothing
    else is written, no `runs/` folder in the working directory, and the last line names the file."""
    import onnx

    from tests.conftest import run_cli

    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    r = run_cli("export", f"model={ws['base']}", "format=onnx", f"out={out}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    dims = [d.dim_value for d in onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, IMGSZ, IMGSZ]
    assert r.stdout.strip().splitlines()[-1] == f"yolo-opt: wrote {out}"
    assert "updating to 'imgsz=" not in r.stdout + r.stderr
    assert f".{out.name}.yolo-opt" not in r.stdout + r.stderr  # no hint names the temporary folder it was made in
    r = run_cli("export", f"model={ws['base']}", "int8=True", f"data={ws['data']}", "calib_images=4",
                f"out={tmp_path / 'out' / 'm_int8.onnx'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == f"yolo-opt: wrote {tmp_path / 'out' / 'm_int8.onnx'}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no runs/detect/val* from the validation
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m.onnx", "m_int8.onnx"]


def test_yolo26_exports_the_head_plain_yolo_export_ships(tmp_path):
    """An end-to-end model's default export is the head the installed Ultralytics exports by default (the same
    outputs as `yolo export` of the same checkpoint); end2end=True is the NMS-free head, and the file says which."""
    import shutil

    from ultralytics import YOLO

    from tests.conftest import kaiming_checkpoint, run_cli
    from yolo_opt.deploy.onnx import exported_end2end

    base = kaiming_checkpoint("yolo26n.yaml", tmp_path / "y26.pt")
    ours = tmp_path / "ours.onnx"
    r = run_cli("export", f"model={base}", "format=onnx", f"imgsz={IMGSZ}", f"out={ours}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    shutil.copy(base, tmp_path / "plain.pt")
    plain = YOLO(str(tmp_path / "plain.pt")).export(format="onnx", imgsz=IMGSZ, batch=1)
    assert exported_end2end(ours) == exported_end2end(plain)
    x = np.random.default_rng(0).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    for a, b in zip(_outputs(ours, [x]), _outputs(plain, [x]), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)
    e2e = tmp_path / "e2e.onnx"
    r = run_cli("export", f"model={base}", "format=onnx", f"imgsz={IMGSZ}", "end2end=True", f"out={e2e}", cwd=tmp_path)
    assert r.returncode == 0 and exported_end2end(e2e), r.stderr[-3000:]
    assert _outputs(e2e, [x])[0].shape[-1] == 6  # (1, max_det, 6): boxes, score, class
