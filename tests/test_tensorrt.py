"""TensorRT path without a GPU: the TensorRT form of every QDQ model we write, the API names of the real bindings, the
Jetson bundle's scripts.

What is real and what is static here:
- Graph checks are real: every TensorRT-form model we write (PTQ yolov8n and yolo11n, a pruned yolov8n, a ModelOpt
  QAT export) passes `lint_tensorrt_qdq`, and ONNX Runtime runs the ONNX Runtime form and the TensorRT form on the
  same real images.
- TensorRT API names are a static check: `tests/fixtures/tensorrt/*.json` hold what the real Python bindings of
  8.6.1, 10.3.0, 10.16.1.11 and 11.4.0.106 export (made by tools/tensorrt_api.py from the PyPI wheels). Our TensorRT
  code is parsed with `ast` and, per version, every `trt.*` name and every attribute of a TensorRT object reachable
  on that version's code path (branches on `major` evaluated) must exist in that version. It proves names, not
  behaviour: no engine is built here (no GPU, no TensorRT).
- build_engine.sh is run against a stand-in `trtexec` that prints the banner real trtexec prints ("TensorRT v8602",
  "v100300", ...) and echoes its arguments: it checks our version parsing and flag choice, not trtexec.

Models are untrained but Kaiming-initialized: with Ultralytics' default init the activations of an untrained
yolov8n shrink to ~1e-9 deep in the network and every output is its bias, which would make accuracy comparisons
meaningless.
"""

from __future__ import annotations

import ast
import json
import os
import py_compile
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")

IMGSZ = 64
ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "tensorrt"
VERSIONS = ["8.6.1", "10.3.0", "10.16.1.11", "11.4.0.106"]
TRT_SOURCES = ["yolo_opt/deploy/tensorrt.py", "yolo_opt/deploy/templates/build_engine.py",
               "yolo_opt/deploy/templates/infer.py"]


# ---------------------------------------------------------------------------------------------- TensorRT API names
def api(version: str) -> dict:
    return json.loads((FIXTURES / f"{version}.json").read_text())


def has(version: str, name: str) -> bool:
    """Does TensorRT `version` export `name` ('Builder', 'BuilderFlag.INT8', 'IBuilderConfig.int8_calibrator')?"""
    a = api(version)
    head, _, member = name.partition(".")
    if head not in a["module"]:
        return False
    return not member or member in a["classes"].get(head, a["enums"].get(head, []))


# Variables that hold TensorRT objects in our code, by convention (self.<name> too).
VAR_TYPES = {"builder": "Builder", "network": "INetworkDefinition", "config": "IBuilderConfig",
             "parser": "OnnxParser", "runtime": "Runtime", "engine": "ICudaEngine", "context": "IExecutionContext",
             "layer": "ILayer", "tensor": "ITensor", "logger": "Logger"}


def _truth(expr, major: int):
    """True/False when `expr` is decided by the TensorRT major version (`major < 11`, `... and major >= 10`), else None."""
    if isinstance(expr, ast.Compare) and len(expr.ops) == 1:
        left, right = expr.left, expr.comparators[0]
        name = left.id if isinstance(left, ast.Name) else left.attr if isinstance(left, ast.Attribute) else None
        if name == "major" and isinstance(right, ast.Constant) and isinstance(right.value, int):
            ops = {ast.Lt: major < right.value, ast.LtE: major <= right.value, ast.Gt: major > right.value,
                   ast.GtE: major >= right.value, ast.Eq: major == right.value, ast.NotEq: major != right.value}
            return ops.get(type(expr.ops[0]))
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.Not):
        v = _truth(expr.operand, major)
        return None if v is None else not v
    if isinstance(expr, ast.BoolOp):
        values = [_truth(v, major) for v in expr.values]
        if isinstance(expr.op, ast.And):
            return False if False in values else (True if all(v is True for v in values) else None)
        return True if True in values else (False if all(v is False for v in values) else None)
    return None


def _terminates(stmts) -> bool:
    return bool(stmts) and isinstance(stmts[-1], ast.Raise | ast.Return)


class _Names(ast.NodeVisitor):
    """TensorRT names a source uses on the code path of one major version."""

    def __init__(self, major: int):
        self.major, self.found = major, []

    def visit_block(self, stmts):
        for st in stmts:
            self.visit(st)
            if isinstance(st, ast.If):
                v = _truth(st.test, self.major)
                if (v is True and _terminates(st.body)) or (v is False and _terminates(st.orelse)):
                    return  # the rest of the block is unreachable on this version

    def generic_visit(self, node):
        for _, value in ast.iter_fields(node):
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                self.visit_block(value)
            elif isinstance(value, list):
                for v in value:
                    if isinstance(v, ast.AST):
                        self.visit(v)
            elif isinstance(value, ast.AST):
                self.visit(value)

    def visit_If(self, node):  # noqa: N802
        self.visit(node.test)
        v = _truth(node.test, self.major)
        if v is not False:
            self.visit_block(node.body)
        if v is not True:
            self.visit_block(node.orelse)

    def visit_IfExp(self, node):  # noqa: N802
        self.visit(node.test)
        v = _truth(node.test, self.major)
        if v is not False:
            self.visit(node.body)
        if v is not True:
            self.visit(node.orelse)

    def visit_BoolOp(self, node):  # noqa: N802
        for value in node.values:
            self.visit(value)
            v = _truth(value, self.major)
            if (isinstance(node.op, ast.And) and v is False) or (isinstance(node.op, ast.Or) and v is True):
                break

    def visit_Attribute(self, node):  # noqa: N802
        chain, base = [], node
        while isinstance(base, ast.Attribute):
            chain.insert(0, base.attr)
            base = base.value
        if not isinstance(base, ast.Name):
            self.generic_visit(node)
            return
        chain.insert(0, base.id)
        if chain[0] == "self" and len(chain) > 2 and chain[1] in VAR_TYPES:
            chain = chain[1:]
        if chain[0] == "trt":
            parts = [p for p in chain[1:3] if not p.startswith("__")]
            if parts:
                self.found.append((".".join(parts), node.lineno))
        elif chain[0] in VAR_TYPES and len(chain) > 1:
            self.found.append((f"{VAR_TYPES[chain[0]]}.{chain[1]}", node.lineno))


def tensorrt_names(source: str, major: int) -> list[tuple[str, int]]:
    walker = _Names(major)
    walker.visit_block(ast.parse(source).body)
    return walker.found


def missing_names(source: str, version: str) -> list[str]:
    major = int(version.split(".")[0])
    return sorted({f"{name} (line {line})" for name, line in tensorrt_names(source, major) if not has(version, name)})


def test_fixtures_hold_the_api_changes_of_each_version():
    """The facts the three code paths rest on, read from the real bindings."""
    for v in VERSIONS:
        a = api(v)
        assert a["version"] == v and a["source"]["wheel"].endswith(".whl") and len(a["module"]) > 150
        for name in ("Builder.create_network", "IBuilderConfig.set_memory_pool_limit", "MemoryPoolType.WORKSPACE",
                     "OnnxParser.parse", "Builder.build_serialized_network", "Runtime.deserialize_cuda_engine",
                     "IExecutionContext.execute_async_v3", "IExecutionContext.set_tensor_address",
                     "ICudaEngine.num_io_tensors", "TensorIOMode.INPUT", "nptype", "LayerType.QUANTIZE"):
            assert has(v, name), (v, name)
    legacy = ["BuilderFlag.INT8", "BuilderFlag.FP16", "IInt8EntropyCalibrator2", "IBuilderConfig.int8_calibrator",
              "Builder.platform_has_fast_fp16"]
    for v in ("8.6.1", "10.3.0", "10.16.1.11"):
        assert all(has(v, n) for n in legacy), v
    assert not any(has("11.4.0.106", n) for n in legacy)
    assert has("8.6.1", "NetworkDefinitionCreationFlag.EXPLICIT_BATCH")
    assert not has("8.6.1", "NetworkDefinitionCreationFlag.STRONGLY_TYPED")
    assert has("10.3.0", "NetworkDefinitionCreationFlag.STRONGLY_TYPED")
    assert has("11.4.0.106", "NetworkDefinitionCreationFlag.STRONGLY_TYPED")
    assert not has("11.4.0.106", "NetworkDefinitionCreationFlag.EXPLICIT_BATCH")


@pytest.mark.parametrize("version", VERSIONS)
def test_our_tensorrt_code_uses_only_names_of_that_version(version):
    for path in TRT_SOURCES:
        assert missing_names((ROOT / path).read_text(), version) == [], (path, version)


def test_each_code_path_uses_its_own_api():
    """The names reached per version are the ones its path needs (the checker follows the `major` branches)."""
    src = (ROOT / "yolo_opt/deploy/templates/build_engine.py").read_text()
    used = {v: {n for n, _ in tensorrt_names(src, v)} for v in (8, 10, 11)}
    assert {"NetworkDefinitionCreationFlag.EXPLICIT_BATCH", "BuilderFlag.INT8", "BuilderFlag.FP16"} <= used[8]
    assert "NetworkDefinitionCreationFlag.STRONGLY_TYPED" not in used[8]
    assert {"BuilderFlag.INT8", "IBuilderConfig.int8_calibrator"} <= used[10]
    assert "NetworkDefinitionCreationFlag.EXPLICIT_BATCH" not in used[10]
    assert "NetworkDefinitionCreationFlag.STRONGLY_TYPED" in used[11]
    assert not {n for n in used[11] if n.startswith("BuilderFlag.")} and "IBuilderConfig.int8_calibrator" not in used[11]
    host = (ROOT / "yolo_opt/deploy/tensorrt.py").read_text()
    assert "IInt8EntropyCalibrator2" in {n for n, _ in tensorrt_names(host, 10)}
    assert "IInt8EntropyCalibrator2" not in {n for n, _ in tensorrt_names(host, 11)}


def test_name_check_fails_on_names_a_version_lacks():
    unguarded = "def f(trt, builder, config):\n    config.set_flag(trt.BuilderFlag.INT8)\n    builder.platform_has_fast_fp16\n"
    assert missing_names(unguarded, "10.3.0") == []
    assert missing_names(unguarded, "11.4.0.106") == ["Builder.platform_has_fast_fp16 (line 3)",
                                                      "BuilderFlag.INT8 (line 2)"]
    guarded = "def f(trt, major, config):\n    if major < 11:\n        config.set_flag(trt.BuilderFlag.INT8)\n"
    assert missing_names(guarded, "11.4.0.106") == []
    early = ("def f(trt, major):\n    if major >= 11:\n        raise RuntimeError('no calibrator')\n"
             "    class C(trt.IInt8EntropyCalibrator2):\n        pass\n")
    assert missing_names(early, "11.4.0.106") == [] and missing_names(early, "8.6.1") == []
    assert missing_names("x = trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH\n", "11.4.0.106")
    assert missing_names("x = trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED\n", "8.6.1")


def test_tensorrt_version_number_and_calibration_cache_header():
    from yolo_opt.deploy import format_calibration_cache, parse_calibration_cache
    from yolo_opt.deploy.tensorrt import tensorrt_version_number

    # The numbers TensorRT writes in cache headers and trtexec prints in its banner ("TensorRT v8602", "v100300").
    assert [tensorrt_version_number(v) for v in ("8.5.2.2", "8.6.1", "10.3.0.26", "11.4.0.106")] == [
        8502, 8601, 100300, 110400]
    payload = format_calibration_cache({"images": 1 / 127, "/model.0/conv/Conv_output_0": 0.0421}, version="10.3.0")
    lines = payload.decode().splitlines()
    assert lines[0] == "TRT-100300-EntropyCalibration2" and lines[1] == "images: 3c010204"
    header, scales = parse_calibration_cache(payload)
    assert header == lines[0] and scales["/model.0/conv/Conv_output_0"] == pytest.approx(0.0421)
    assert format_calibration_cache({"x": 0.1}, version="8.6.1").startswith(b"TRT-8601-EntropyCalibration2\n")
    try:
        import tensorrt as trt
    except ImportError:
        from yolo_opt.errors import TensorRTMissing

        with pytest.raises(TensorRTMissing):
            format_calibration_cache({"x": 0.1})
    else:
        header = format_calibration_cache({"x": 0.1}).decode().splitlines()[0]
        assert header == f"TRT-{tensorrt_version_number(trt.__version__)}-EntropyCalibration2"


def test_legacy_calibrator_is_refused_on_tensorrt_11():
    """Our version gate (a version string, not TensorRT): one line naming the fix, before any CUDA or TensorRT call."""
    from yolo_opt.deploy.tensorrt import _make_calibrator
    from yolo_opt.errors import DeployError

    with pytest.raises(DeployError, match="removed in TensorRT 11 .* explicit quantization") as e:
        _make_calibrator(types.SimpleNamespace(__version__="11.4.0.106"), 11, [], Path("x.cache"))
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------- models
def _kaiming_checkpoint(cfg: str, path: Path) -> Path:
    from tests.conftest import kaiming_checkpoint

    return kaiming_checkpoint(cfg, path)


def _qat_export(base: Path, out: Path) -> Path:
    """A real ModelOpt QAT model (Ultralytics' prepare_qat, calibrated on 2 random batches, no training: the Q/DQ
    structure of a trained one, in seconds), exported through yolo-opt's export_qat_onnx."""
    from copy import deepcopy

    import torch
    from ultralytics.utils.torch_utils import prepare_qat, qat_state, strip_qat

    from yolo_opt.quant import export_qat_onnx

    ckpt = torch.load(base, map_location="cpu", weights_only=False)
    model = (ckpt.get("ema") or ckpt["model"]).float()
    torch.manual_seed(0)
    model = prepare_qat(model, [torch.rand(2, 3, IMGSZ, IMGSZ) for _ in range(2)], lambda b: b, batches=2)
    state, plain = qat_state(model), deepcopy(model).half()
    strip_qat(plain)
    torch.save({"model": plain, "modelopt": state, "train_args": {"imgsz": IMGSZ, "task": "detect"}}, out)
    return export_qat_onnx(out, imgsz=IMGSZ, out=out.with_suffix(".onnx"))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """FP32 ONNX, ONNX Runtime-form QDQ and TensorRT-form QDQ of each model we write, plus val images."""
    from yolo_opt.data import make_dataset
    from yolo_opt.data.calib import load_batches
    from yolo_opt.data.checks import dataset_images
    from yolo_opt.deploy import export_onnx
    from yolo_opt.quant import quantize_onnx, to_tensorrt_qdq
    from yolo_opt.training import prune_checkpoint

    root = tmp_path_factory.mktemp("trt")
    data = Path(make_dataset(root / "data", seed=1, n_train=16, n_val=8, imgsz=IMGSZ))
    out = {"root": root, "data": data,
           "images": load_batches(dataset_images(data, "val"), IMGSZ, progress=False)}
    pts = {"v8n": _kaiming_checkpoint("yolov8n.yaml", root / "v8n.pt"),
           "v11n": _kaiming_checkpoint("yolo11n.yaml", root / "v11n.pt")}
    prune_checkpoint(pts["v8n"], root / "pruned.pt", prune=0.5, imgsz=IMGSZ)
    pts["pruned"] = root / "pruned.pt"
    out["pt"] = pts
    for name, pt in pts.items():
        fp32 = export_onnx(pt, root / f"{name}.onnx", imgsz=IMGSZ)
        ort_form = quantize_onnx(fp32, data, root / f"{name}_ort.onnx", calib="minmax", calib_images=8, validate=False,
                                 progress=False, symmetric=True).path  # what format=engine and bundle quantize
        out[name] = {"fp32": fp32, "ort": ort_form, "trt": to_tensorrt_qdq(ort_form, root / f"{name}_trt.onnx")}
    qat = _qat_export(pts["v8n"], root / "qat.pt")
    out["qat"] = {"fp32": out["v8n"]["fp32"], "ort": qat, "trt": to_tensorrt_qdq(qat, root / "qat_trt.onnx")}
    return out


def _session(path, optimize: bool = False, extra_outputs: list[str] | None = None):
    import onnx
    import onnxruntime as ort

    m = onnx.load(str(path))
    for t in extra_outputs or []:
        m.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimize:  # exact Q/DQ arithmetic, no QLinear fusion
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _run(path, images, names=None, optimize=False):
    sess = _session(path, optimize, names)
    return [sess.run(names, {"images": x}) for x in images]


def _head_inputs(fp32_path) -> list[str]:
    """The tensors the float decode tail reads (the head convs' outputs): where accuracy is decided."""
    import onnx

    from yolo_opt.quant.graph import float_tail

    m = onnx.load(str(fp32_path))
    tail = set(float_tail(m))
    prod = {o: n for n in m.graph.node for o in n.output}
    return sorted({t for n in m.graph.node if n.name in tail for t in n.input if t in prod and prod[t].name not in tail})


def _errors(a, b, f):
    """Relative L2 errors of a and b against f, and of a against b, on the input-dependent part of each tensor."""
    ea = eb = eab = den = 0.0
    for k in range(len(f[0])):
        F, A, B = (np.stack([x[k] for x in r]) for r in (f, a, b))
        den += float(np.linalg.norm(F - F.mean(0, keepdims=True)))
        ea += float(np.linalg.norm(A - F))
        eb += float(np.linalg.norm(B - F))
        eab += float(np.linalg.norm(A - B))
    return ea / den, eb / den, eab / den


ALL = ["v8n", "v11n", "pruned", "qat"]


@pytest.mark.parametrize("name", ALL)
def test_every_tensorrt_form_we_write_passes_the_lint(models, name):
    import onnx

    from yolo_opt.quant.tensorrt import lint_tensorrt_qdq

    trt_form = onnx.load(str(models[name]["trt"]))
    onnx.checker.check_model(trt_form, full_check=True)
    assert lint_tensorrt_qdq(trt_form) == []
    meta = {p.key: p.value for p in trt_form.metadata_props}
    assert meta["yolo_opt_precision"] == "int8-qdq-tensorrt" and "names" in meta
    before = lint_tensorrt_qdq(onnx.load(str(models[name]["ort"])))
    if name == "qat":  # ModelOpt writes INT8 zero points and Q/DQ on Conv inputs; only the shared scales are missing
        assert before and all(p.startswith("placement: ") and "scales in one" in p for p in before)
    else:  # ONNX Runtime's form: UINT8 activations, INT32 bias DQ, Q/DQ on Conv/Sigmoid outputs
        assert any("UINT8" in p for p in before) and any("INT32 constant" in p for p in before)
        assert any("feeds Mul, Sigmoid" in p for p in before)


@pytest.mark.parametrize("name", ["v8n", "v11n", "pruned"])
def test_lossless_steps_give_bit_identical_outputs(models, name, tmp_path):
    """Bias folding and the zero-point rewrite alone: ONNX Runtime outputs equal the ONNX Runtime form's, bit for bit."""
    import onnx

    from yolo_opt.quant.tensorrt import lint_tensorrt_qdq, to_tensorrt_qdq

    lossless = to_tensorrt_qdq(models[name]["ort"], tmp_path / "lossless.onnx", placement=False)
    assert lint_tensorrt_qdq(onnx.load(str(lossless)), placement=False) == []
    a, b = _run(models[name]["ort"], models["images"]), _run(lossless, models["images"])
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x[0], y[0])


@pytest.mark.parametrize("name", ALL)
def test_placement_keeps_accuracy(models, name):
    """Placement changes ONNX Runtime outputs (fewer Q/DQ, shared scales), so it is bounded instead of bit-identical.

    On the head convs' outputs (what the float decode reads), against FP32, over the val images: the TensorRT form is
    within 10% of the ONNX Runtime form's INT8 error (it removes quantization from Conv/Sigmoid outputs and adds only
    the shared residual-Add scales), and the two forms differ by less than 1.5x that error. Measured here (ONNX
    Runtime form vs FP32 / TensorRT form vs FP32 / between them): v8n 0.182 / 0.158 / 0.176, v11n 0.159 / 0.140 /
    0.158, pruned 0.155 / 0.139 / 0.154, QAT 0.333 / 0.334 / 0.084 (QAT: only the shared scales change). Errors are
    large because the weights are random; what matters is the ratio.
    """
    m = models[name]
    names = _head_inputs(m["fp32"])
    f, a, b = (_run(m[k], models["images"], names) for k in ("fp32", "ort", "trt"))
    e_ort, e_trt, between = _errors(a, b, f)
    print(f"{name}: INT8 error vs FP32, ONNX Runtime form {e_ort:.4f}, TensorRT form {e_trt:.4f}; between {between:.4f}")
    assert 0 < e_ort < 0.5
    assert e_trt <= 1.10 * e_ort
    assert between <= 1.5 * e_ort
    # The final outputs (decoded boxes and scores) move the same way.
    fo, ao, bo = (_run(m[k], models["images"]) for k in ("fp32", "ort", "trt"))
    err = lambda x: sum(np.linalg.norm(p[0] - q[0]) for p, q in zip(x, fo, strict=True))  # noqa: E731
    assert err(bo) <= 1.10 * err(ao) + 1e-6


def test_tensorrt_form_placement(models):
    """NVIDIA's placement on the PTQ yolov8n: Q/DQ on Conv inputs and residual Adds, none on Conv/Sigmoid outputs or
    into the float tail, one scale per Concat/MaxPool/residual-Add group, and the form is a fixed point."""
    import onnx

    from yolo_opt.quant.graph import float_tail
    from yolo_opt.quant.tensorrt import scale_groups, tensorrt_form

    q = onnx.load(str(models["v8n"]["trt"]))
    prod = {o: n for n in q.graph.node for o in n.output}
    cons: dict[str, list] = {}
    for n in q.graph.node:
        for t in n.input:
            cons.setdefault(t, []).append(n)
    dq_fed = lambda n, i=0: n.input[i] in prod and prod[n.input[i]].op_type == "DequantizeLinear"  # noqa: E731
    tail = set(float_tail(onnx.load(str(models["v8n"]["fp32"]))))
    convs = [n for n in q.graph.node if n.op_type == "Conv" and n.name not in tail]
    assert convs and all(dq_fed(n, 0) and dq_fed(n, 1) for n in convs), "Conv inputs and weights are INT8"
    quantized = {n.input[0]: n for n in q.graph.node if n.op_type == "QuantizeLinear"}
    for t in quantized:
        producer = prod.get(t)
        assert producer is None or producer.op_type not in {"Conv", "Sigmoid"}, f"Q/DQ on the output of {t}"
    assert not any(dq_fed(n, i) for n in q.graph.node if n.name in tail for i in range(len(n.input))), "tail is float"
    adds = [n for n in q.graph.node if n.op_type == "Add" and n.name not in tail]
    assert adds and all(dq_fed(n, 0) and dq_fed(n, 1) for n in adds), "residual Adds read INT8"
    init = {i.name: onnx.numpy_helper.to_array(i) for i in q.graph.initializer}
    groups = scale_groups(q)
    assert groups
    for group in groups:
        assert len({float(init[quantized[t].input[1]]) for t in group}) == 1, group
    assert not any(i.data_type == onnx.TensorProto.INT32 for i in q.graph.initializer), "no INT32 bias left"
    again = onnx.load(str(models["v8n"]["trt"]))
    report = tensorrt_form(again)
    assert (report.folded_constants, report.zero_points, report.removed_pairs, report.rescaled) == (0, 0, 0, 0)


def test_lint_reports_each_rule():
    """The lint on small hand-made graphs: each broken rule is named."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from yolo_opt.quant.tensorrt import lint_tensorrt_qdq

    def graph(zp_type=TensorProto.INT8, zp=0, bias_int32=False, act_scales=1, axis=0, w_scale=0.1):
        inits = [numpy_helper.from_array(np.full(act_scales, 0.02, np.float32).reshape(() if act_scales == 1 else -1),
                                         "s"),
                 helper.make_tensor("z", zp_type, [] if act_scales == 1 else [act_scales], [zp] * act_scales),
                 numpy_helper.from_array(np.ones((4, 3, 1, 1), np.int8), "w"),
                 numpy_helper.from_array(np.full(4, w_scale, np.float32), "ws"),
                 numpy_helper.from_array(np.zeros(4, np.int8), "wz")]
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
                 helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
                 helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], name="wdq",
                                  **({} if axis is None else {"axis": axis}))]
        conv_in = ["xd", "wd"]
        if bias_int32:
            inits += [numpy_helper.from_array(np.arange(4, dtype=np.int32), "b"),
                      numpy_helper.from_array(np.full(4, 0.002, np.float32), "bs")]
            nodes.append(helper.make_node("DequantizeLinear", ["b", "bs"], ["bd"], name="bdq", axis=0))
            conv_in.append("bd")
        nodes.append(helper.make_node("Conv", conv_in, ["y"], name="conv"))
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], inits)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])

    assert lint_tensorrt_qdq(graph()) == []
    onnx.checker.check_model(graph())
    assert any("UINT8 initializer z" in p for p in lint_tensorrt_qdq(graph(zp_type=TensorProto.UINT8, zp=128)))
    assert any("zero point must be INT8 0" in p for p in lint_tensorrt_qdq(graph(zp=3)))
    assert any("INT32 constant" in p for p in lint_tensorrt_qdq(graph(bias_int32=True)))
    assert any("per-channel scale on an activation" in p for p in lint_tensorrt_qdq(graph(act_scales=3)))
    assert any("axis must be given as 0" in p for p in lint_tensorrt_qdq(graph(axis=None)))
    assert any("finite and positive" in p for p in lint_tensorrt_qdq(graph(w_scale=0.0)))


def test_tensorrt_form_refuses_asymmetric_activations(models, tmp_path):
    import onnx
    from onnx import numpy_helper

    from yolo_opt.errors import DeployError
    from yolo_opt.quant.tensorrt import to_tensorrt_qdq

    m = onnx.load(str(models["v8n"]["ort"]))
    zp = next(i for i in m.graph.initializer if i.data_type == onnx.TensorProto.UINT8)
    zp.CopyFrom(numpy_helper.from_array(np.array(120, dtype=np.uint8), zp.name))
    bad = tmp_path / "asym.onnx"
    onnx.save(m, str(bad))
    with pytest.raises(DeployError, match="not 128"):
        to_tensorrt_qdq(bad, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_onnx_runtime_form_is_asymmetric_and_refused_by_the_tensorrt_form(models, tmp_path):
    """The default INT8 (ONNX Runtime) has asymmetric activations: one-signed tensors keep their 8th bit. TensorRT
    cannot run it: the TensorRT form says how to get the symmetric one."""
    import onnx
    from onnx import numpy_helper

    from yolo_opt.errors import DeployError
    from yolo_opt.quant import quantize_onnx
    from yolo_opt.quant.tensorrt import to_tensorrt_qdq

    r = quantize_onnx(models["v8n"]["fp32"], models["data"], tmp_path / "asym.onnx", calib_images=8, validate=False,
                      progress=False)
    m = onnx.load(str(r.path))
    zps = [numpy_helper.to_array(i) for i in m.graph.initializer if i.data_type == onnx.TensorProto.UINT8]
    assert zps and any(np.any(z != 128) for z in zps)
    assert {p.key: p.value for p in m.metadata_props}["yolo_opt_activations"] == "asymmetric"
    sym = onnx.load(str(models["v8n"]["ort"]))
    assert {p.key: p.value for p in sym.metadata_props}["yolo_opt_activations"] == "symmetric"
    assert all(np.all(numpy_helper.to_array(i) == 128) for i in sym.graph.initializer
               if i.data_type == onnx.TensorProto.UINT8)
    with pytest.raises(DeployError, match="symmetric=True"):
        to_tensorrt_qdq(r.path, tmp_path / "out.onnx")


# ---------------------------------------------------------------------------------------------- engine build (host)
def test_engine_build_refuses_bad_requests_before_tensorrt(models, tmp_path):
    from yolo_opt.deploy import build_engine
    from yolo_opt.errors import ConfigError

    fp32 = models["v8n"]["fp32"]
    with pytest.raises(ConfigError, match="differs from the ONNX input 64x64"):
        build_engine(fp32, tmp_path / "m.engine", calib="legacy", data=models["data"], calib_images=2, imgsz=96)
    with pytest.raises(ConfigError, match="needs a QDQ ONNX"):
        build_engine(fp32, tmp_path / "m.engine", int8=True)
    with pytest.raises(ConfigError, match="int8=True"):
        build_engine(models["v8n"]["ort"], tmp_path / "m.engine", int8=False)
    assert not list(tmp_path.iterdir())


def test_tensorrt_engine(models, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (no GPU/TensorRT on this machine)")
    from yolo_opt.deploy import build_engine

    engine = build_engine(models["v8n"]["ort"], tmp_path / "m.engine")
    assert engine.stat().st_size > 0


def test_no_tensorrt_is_one_clear_error(models, tmp_path):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed")
    except ImportError:
        pass
    from yolo_opt.deploy import build_engine
    from yolo_opt.errors import DeployError

    with pytest.raises(DeployError, match="TensorRT is not installed"):
        build_engine(models["v8n"]["ort"], tmp_path / "m.engine")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------- the Jetson bundle
@pytest.fixture(scope="module")
def bundle(models, tmp_path_factory):
    from yolo_opt.deploy import make_bundle

    root = tmp_path_factory.mktemp("bundle")
    out = make_bundle(models["pt"]["v8n"], models["data"], root / "jetson", imgsz=IMGSZ, calib_images=8,
                      validate=False, progress=False)
    return out


def test_bundle(bundle, models, tmp_path):
    import onnx

    from yolo_opt.quant.tensorrt import lint_tensorrt_qdq

    out = bundle
    names = {p.name for p in out.iterdir()}
    assert {"model_fp32.onnx", "model_int8.onnx", "metadata.json", "build_engine.py", "build_engine.sh", "infer.py",
            "yolo_decode.py", "README.txt"} <= names
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "temporary folders left behind"
    assert lint_tensorrt_qdq(onnx.load(str(out / "model_int8.onnx"))) == []
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["imgsz"] == [IMGSZ, IMGSZ] and meta["precision"] == "int8-qdq" and meta["input"]["name"] == "images"
    assert meta["engine"] == {"precision": "int8", "file": "model_int8.engine"} and set(meta["tensorrt"]) == {
        "8", "10", "11"}
    for script in ("build_engine.py", "infer.py", "yolo_decode.py"):  # infer.py's decode is the bundle's own module
        py_compile.compile(str(out / script), doraise=True, cfile=str(tmp_path / f"{script}c"))
        tree = ast.parse((out / script).read_text())
        mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        mods |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not mods & {"yolo_opt", "ultralytics", "torch", "onnx"}, (script, mods)
        assert mods <= {"argparse", "json", "os", "sys", "pathlib", "ctypes", "cv2", "numpy", "tensorrt", "onnxruntime",
                        "yolo_decode"}
    readme = (out / "README.txt").read_text()
    for text in ("build_engine.py", "infer.py", "JetPack 5.1", "JetPack 6.1", "TensorRT 8.5 / 8.6", "TensorRT 10.x",
                 "TensorRT 11.x", "strongly typed", "tensorrt.__version__", "trtexec's banner"):
        assert text in readme, text


def _fake_trtexec(folder: Path, banner: str) -> Path:
    """Prints the banner real trtexec prints first (e.g. '&&&& RUNNING TensorRT.trtexec [TensorRT v100300]'), then
    echoes the arguments it was given."""
    exe = folder / "trtexec"
    exe.write_text('#!/bin/sh\n'
                   f'echo "&&&& RUNNING TensorRT.trtexec [TensorRT {banner}] # trtexec $*"\n'
                   'if [ "$1" = --help ]; then echo "=== Model Options ==="; exit 0; fi\n'
                   'echo "ARGS $*"\n')
    exe.chmod(0o755)
    return exe


@pytest.mark.parametrize(("banner", "int8_flags"), [("v8602", "--int8 --fp16"), ("v100300", "--int8 --fp16"),
                                                    ("v101600", "--int8 --fp16"), ("v110400", "")])
def test_build_engine_sh_picks_flags_per_trtexec_version(bundle, tmp_path, banner, int8_flags):
    exe = _fake_trtexec(tmp_path, banner)

    def run(*args, **env):
        return subprocess.run(["sh", str(bundle / "build_engine.sh"), *args], capture_output=True, text=True,
                              env={**os.environ, "TRTEXEC": str(exe), **env}, timeout=30)

    r = run()
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("ARGS"))
    flags = line.split("--saveEngine=model_int8.engine", 1)[1].replace("--memPoolSize=workspace:2048", "").strip()
    assert line.startswith("ARGS --onnx=model_int8.onnx") and flags == int8_flags
    assert "--memPoolSize=workspace:2048" in line  # plain MiB: 8.x's trtexec takes no unit suffix
    r = run("fp16")
    if banner == "v110400":  # strongly typed: FP16 needs an FP16 ONNX
        assert r.returncode == 2 and "FP16 needs an FP16 ONNX" in r.stderr
        r = run("fp16", ONNX="model_fp16.onnx")
        assert "ARGS --onnx=model_fp16.onnx --saveEngine=model_fp16.engine --memPoolSize" in r.stdout
    else:
        assert "ARGS --onnx=model_fp32.onnx --saveEngine=model_fp16.engine --fp16 --memPoolSize" in r.stdout
    assert "--stronglyTyped" not in r.stdout and "--workspace=" not in r.stdout
    r = run("int8", TRT_MAJOR="11")
    assert "--int8" not in next(ln for ln in r.stdout.splitlines() if ln.startswith("ARGS"))


def test_infer_onnx_runs_and_default_engine_follows_the_bundle(bundle, models, tmp_path):
    from yolo_opt.data.checks import dataset_images

    img = dataset_images(models["data"], "val")[0]
    res = subprocess.run([sys.executable, str(bundle / "infer.py"), str(img), "--onnx", str(bundle / "model_int8.onnx"),
                          "--conf", "0.0001", "--json", "--out", str(tmp_path / "det.jpg")],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": ""})
    assert res.returncode == 0, res.stderr
    assert isinstance(json.loads(res.stdout), list) and (tmp_path / "det.jpg").exists()
    sys.path.insert(0, str(bundle))
    try:
        import infer  # the bundle's own script (cv2 + numpy at import; tensorrt only inside TRTRunner)
    finally:
        sys.path.remove(str(bundle))
        sys.modules.pop("infer", None)
    meta = json.loads((bundle / "metadata.json").read_text())
    assert infer.default_engine(meta) == "model_int8.engine"
    assert infer.default_engine({"models": {"fp32": "model_fp32.onnx"}}) == "model_fp16.engine"


def test_infer_checks_cuda_and_tensorrt_results():
    """Static check of infer.py's TensorRT runner (it cannot run without a GPU): every CUDA call but the frees is
    checked, execute_async_v3 gets the created stream and its result is tested, a None engine is caught."""
    src = (ROOT / "yolo_opt/deploy/templates/infer.py").read_text()
    tree = ast.parse(src)
    runner = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TRTRunner")
    parents = {c: p for p in ast.walk(runner) for c in ast.iter_child_nodes(p)}
    cuda_calls = [n for n in ast.walk(runner) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                  and isinstance(n.func.value, ast.Attribute) and n.func.value.attr == "cuda"]
    assert len(cuda_calls) >= 6
    for call in cuda_calls:
        if call.func.attr in {"cudaFree", "cudaStreamDestroy"}:
            continue
        parent = parents[call]
        assert isinstance(parent, ast.Call) and getattr(parent.func, "attr", "") == "_check", call.func.attr
    execute = [n for n in ast.walk(runner) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") ==
               "execute_async_v3"]
    assert len(execute) == 1 and ast.unparse(execute[0].args[0]) == "self.stream.value"
    assert isinstance(parents[execute[0]], ast.UnaryOp), "execute_async_v3's result is tested"
    assert "if self.engine is None" in src and "another TensorRT version" in src
    assert "cudaStreamCreate" in src and "execute_async_v3(0)" not in src
