"""OpenVINO: export (FP32, NNCF INT8, accuracy control), pruned checkpoints, the bundle's infer.py, the benchmark's
OpenVINO rows, the intel-openvino recipe, and the errors (missing OpenVINO, absent device, bad input).

Real OpenVINO and NNCF on tiny untrained models at 64 px. The accuracy-control check needs a non-zero mAP from an
untrained model: its val labels are made from the FP32 model's own top detection per image, so the FP32 model
scores well above 0 and the validation function can be compared with the Ultralytics validator.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import IMGSZ, kaiming_checkpoint, run_cli, run_python

pytest.importorskip("openvino")
pytest.importorskip("nncf")


@pytest.fixture(scope="module")
def kaiming(tmp_path_factory) -> Path:
    """Untrained yolov8n whose outputs differ per image (see conftest.kaiming_checkpoint), with class scores raised
    from Ultralytics' prior (~0.0025) and box distributions peaked at the first DFL bins: boxes of ~3 strides instead
    of 15, so that some lie inside a 64 px image and can be matched."""
    import torch

    from yolo_opt.io.checkpoint import load_model, save_model

    path = kaiming_checkpoint("yolov8n.yaml", tmp_path_factory.mktemp("ovk") / "v8k.pt")
    model = load_model(path).float()
    with torch.no_grad():
        for branch in model.model[-1].cv3:
            branch[-1].bias += 5.0
        for branch in model.model[-1].cv2:
            branch[-1].bias.copy_(-0.5 * torch.arange(16.0).repeat(4))
    return save_model(model, path, train_args={"imgsz": IMGSZ, "task": "detect"})


@pytest.fixture(scope="module")
def pruned(tmp_path_factory, kaiming) -> Path:
    from yolo_opt.training import prune_checkpoint

    out = tmp_path_factory.mktemp("ovp") / "pruned.pt"
    prune_checkpoint(kaiming, out, prune=0.5, imgsz=IMGSZ)
    return out


@pytest.fixture(scope="module")
def fp32(tmp_path_factory, kaiming):
    from yolo_opt.deploy.openvino import export_openvino

    return export_openvino(kaiming, tmp_path_factory.mktemp("ov32") / "v8k_openvino_model", IMGSZ,
                           validate=False).path


# f32 math: on CPUs with AVX512-BF16 OpenVINO runs an FP32 IR in bf16 by default (~2e-3 relative error)
F32 = {"INFERENCE_PRECISION_HINT": "f32"}


def _ov_default_runtime() -> str:
    """The runtime label of an OpenVINO model run at OpenVINO's default precision on this CPU."""
    import openvino as ov

    bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "OpenVINO CPU (bf16)" if bf16 else "OpenVINO CPU"


OV_DEFAULT_RUNTIME = _ov_default_runtime()


def _ov_out(folder: Path, x: np.ndarray) -> np.ndarray:
    import openvino as ov

    from yolo_opt.deploy.openvino import model_xml

    compiled = ov.Core().compile_model(str(model_xml(folder)), "CPU", F32)
    return compiled(x)[compiled.output(0)]


def _val_image(data: Path, size: int = IMGSZ) -> np.ndarray:
    import cv2

    from yolo_opt.data.calib import preprocess
    from yolo_opt.data.checks import dataset_images

    return preprocess(cv2.imread(str(dataset_images(data, "val")[0])), size)


def test_cli_export_int8(tmp_path, v8_checkpoint, tiny_data):
    out = tmp_path / "v8.t0.5_int8_openvino_model"  # dots in the name: Ultralytics validates the folder by its name
    r = run_cli("export", f"model={v8_checkpoint}", "format=openvino", "int8=True", f"data={tiny_data}",
                f"imgsz={IMGSZ}", "calib_images=8", f"out={out}", "device=cpu")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "OpenVINO INT8 IR" in r.stdout and "mAP50-95 FP32" in r.stdout
    assert sorted(p.suffix for p in out.iterdir() if p.name != ".yolo-opt") == [".bin", ".xml", ".yaml"]
    assert (out / ".yolo-opt").read_text().strip() == "OpenVINO model folder"  # ours: a rerun may replace it
    xml = next(out.glob("*.xml")).read_text()
    assert xml.count('type="FakeQuantize"') > 20  # NNCF quantized the convolutions
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_pruned_checkpoint_exports_and_matches_pytorch(tmp_path, pruned, tiny_data):
    """Pruned checkpoints hold yolo-opt's split-free twin blocks: the IR must compute what PyTorch computes."""
    import torch

    from yolo_opt.deploy.openvino import export_openvino
    from yolo_opt.io.checkpoint import load_model

    folder = export_openvino(pruned, tmp_path / "p_openvino_model", IMGSZ, validate=False).path
    x = _val_image(tiny_data)
    with torch.inference_mode():
        ref = load_model(pruned).float().eval()(torch.from_numpy(x))[0].numpy()
    got = _ov_out(folder, x)
    assert got.shape == ref.shape
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-3


def test_cli_errors(tmp_path, v8_checkpoint, tiny_data):
    r = run_cli("export", f"model={v8_checkpoint}", "format=openvino", "device=NPU", f"imgsz={IMGSZ}")
    assert r.returncode == 2 and "OpenVINO device 'NPU' is not available here; available: CPU" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run_cli("export", f"model={v8_checkpoint}", "format=openvino", "int8=True", f"imgsz={IMGSZ}")
    assert r.returncode == 2 and "data=" in r.stderr
    r = run_cli("export", f"model={v8_checkpoint}", "format=onnx", "int8=True", "device=GPU", f"data={tiny_data}")
    assert r.returncode == 2 and "format=openvino" in r.stderr
    r = run_cli("export", f"model={v8_checkpoint}", "format=openvino", "int8=True", "calib=entropy",
                f"data={tiny_data}")
    assert r.returncode == 2 and "NNCF calibrates" in r.stderr
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    r = run_cli("export", f"model={v8_checkpoint}", "format=openvino", f"imgsz={IMGSZ}", f"out={busy}")
    assert r.returncode == 2 and "not a yolo-opt OpenVINO model folder" in r.stderr
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    r = run_cli("export", f"model={tmp_path / 'nope.pt'}", "format=openvino")
    assert r.returncode == 2 and "not found" in r.stderr


def test_missing_openvino_names_the_extra(tmp_path, v8_checkpoint):
    code = ("import sys; sys.modules['openvino'] = None; sys.modules['nncf'] = None\n"  # as if not installed
            "from yolo_opt.cli import main\n"
            f"sys.exit(main(['export', 'model={v8_checkpoint}', 'format=openvino', 'out={tmp_path / 'x'}']))")
    r = run_python(code)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip() == 'yolo-opt: error: openvino is not installed; pip install "yolo-opt[openvino]"'
    assert not (tmp_path / "x").exists()


def test_bundle_infer_runs_on_an_image(tmp_path, kaiming, tiny_data):
    out = tmp_path / "bundle"
    r = run_cli("bundle", "format=openvino", f"model={kaiming}", f"data={tiny_data}", f"imgsz={IMGSZ}",
                "calib_images=8", f"out={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["models"] == {"fp32": "model_fp32_openvino_model", "int8": "model_int8_openvino_model"}
    assert meta["device"] == "CPU" and "accuracy" in meta
    # the bundle alone, copied elsewhere: infer.py needs only OpenVINO, NumPy and OpenCV
    moved = tmp_path / "device"
    shutil.copytree(out, moved)
    from yolo_opt.data.checks import dataset_images

    image = tmp_path / "img.png"
    shutil.copyfile(dataset_images(tiny_data, "val")[0], image)
    r = subprocess.run([sys.executable, "-I", str(moved / "infer.py"), str(image), "--json", "--conf", "0.0001",
                        "--model", "model_fp32_openvino_model"], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(r.stdout)
    assert (tmp_path / "detections" / "img_det.jpg").exists()  # in the current folder, never beside the input
    # the same detections as Ultralytics' own predictor on the same IR
    from ultralytics import YOLO

    res = YOLO(str(moved / "model_fp32_openvino_model"), task="detect").predict(str(image), conf=0.0001, iou=0.45,
                                                                                  imgsz=IMGSZ, verbose=False)[0]
    assert rows and len(res.boxes)
    assert rows[0]["score"] == pytest.approx(float(res.boxes.conf.max()), abs=1e-3)
    r = subprocess.run([sys.executable, "-I", str(moved / "infer.py"), str(image), "--device", "NPU"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "available: CPU" in r.stderr


@pytest.fixture(scope="module")
def self_labelled(tmp_path_factory, tiny_data, fp32) -> Path:
    """The tiny dataset with val labels = the FP32 IR's own top detection per image (a non-zero mAP to control)."""
    import cv2
    import yaml

    from yolo_opt.data.calib import preprocess
    from yolo_opt.data.checks import dataset_images

    root = tmp_path_factory.mktemp("selflab")
    shutil.copytree(Path(tiny_data).parent, root / "d")
    info = yaml.safe_load((root / "d" / "data.yaml").read_text())
    info["path"] = str(root / "d")
    (root / "d" / "data.yaml").write_text(yaml.safe_dump(info))
    for img in dataset_images(root / "d" / "data.yaml", "val"):
        pred = _ov_out(fp32, preprocess(cv2.imread(str(img)), IMGSZ))[0].T  # (anchors, 4 + nc)
        xyxy = np.concatenate([pred[:, :2] - pred[:, 2:4] / 2, pred[:, :2] + pred[:, 2:4] / 2], 1)
        inside = (xyxy[:, :2] >= 0).all(1) & (xyxy[:, 2:] <= IMGSZ).all(1)  # the validator matches unclipped boxes
        best = pred[np.where(inside, pred[:, 4:].max(1), -1).argmax()]
        (cx, cy), (w, h) = best[:2], best[2:4]
        x1, y1, x2, y2 = np.clip([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 0, IMGSZ) / IMGSZ
        label = img.parent.parent.parent / "labels" / "val" / f"{img.stem}.txt"
        label.write_text(f"{int(best[4:].argmax())} {(x1 + x2) / 2:.6f} {(y1 + y2) / 2:.6f} {max(x2 - x1, 0.03):.6f} "
                         f"{max(y2 - y1, 0.03):.6f}\n")
    for cache in (root / "d" / "labels").glob("*.cache"):
        cache.unlink()
    return root / "d" / "data.yaml"


def test_accuracy_control_scores_like_the_validator(tmp_path, kaiming, fp32, self_labelled):
    import openvino as ov

    from yolo_opt.bench.measure import validate
    from yolo_opt.deploy.openvino import export_openvino, map_validation, model_xml
    from yolo_opt.io.checkpoint import load_model

    names = load_model(kaiming).names
    loader, fn = map_validation(self_labelled, IMGSZ, names)
    ours = fn(ov.Core().compile_model(str(model_xml(fp32)), "CPU"), loader)[0]
    ultralytics = validate(fp32, self_labelled, IMGSZ, device="intel:cpu")["map"]
    assert ultralytics > 0.005  # measured 0.012: every label found (recall 1), among many false positives
    assert ours == pytest.approx(ultralytics, abs=1e-6)
    r = export_openvino(kaiming, tmp_path / "ac_openvino_model", IMGSZ, int8=True, data=self_labelled,
                        calib_images=8, max_map_drop=0.001, fp32=fp32)
    assert r.fp32_map == pytest.approx(ultralytics, abs=1e-6)
    # NNCF holds the bound in f32 math (its accuracy control compiles with inference precision f32); the validator
    # runs OpenVINO's default, bf16 on AVX512-BF16 CPUs, where the drop it sees may be larger (yolo-opt warns then)
    fp32_f32 = fn(ov.Core().compile_model(str(model_xml(fp32)), "CPU", F32), loader)[0]
    int8_f32 = fn(ov.Core().compile_model(str(model_xml(r.path)), "CPU", F32), loader)[0]
    assert int8_f32 >= fp32_f32 - 0.001 - 1e-6
    assert 'type="FakeQuantize"' in next(r.path.glob("*.xml")).read_text()


def test_benchmark_times_openvino_beside_onnx_and_pytorch(tmp_path, v8_checkpoint, fp32, tiny_data):
    from yolo_opt.deploy import export_onnx

    onnx = export_onnx(v8_checkpoint, tmp_path / "v8.onnx", imgsz=IMGSZ)
    models = f"model={v8_checkpoint},{onnx},{fp32},{next(fp32.glob('*.xml'))}"
    r = run_cli("benchmark", models, f"data={tiny_data}", f"imgsz={IMGSZ}", f"project={tmp_path}", "name=b")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = list(json.loads((tmp_path / "b" / "results.json").read_text()).values())
    ov_default = OV_DEFAULT_RUNTIME
    assert [row["runtime"] for row in rows] == ["PyTorch CPU", "ONNX Runtime CPU", ov_default, ov_default]
    assert all(row["latency_ms"] > 0 for row in rows)
    assert rows[2]["gflops"] == pytest.approx(rows[1]["gflops"], rel=0.02)
    assert f"| {ov_default} |" in (tmp_path / "b" / "report.md").read_text()
    # ov_precision=f32: OpenVINO's f32 math, named as plain "OpenVINO CPU"; a precision it does not know: one line
    r = run_cli("benchmark", models, f"data={tiny_data}", f"imgsz={IMGSZ}", f"project={tmp_path}", "name=f32",
                "ov_precision=f32")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = list(json.loads((tmp_path / "f32" / "results.json").read_text()).values())
    assert [row["runtime"] for row in rows[2:]] == ["OpenVINO CPU", "OpenVINO CPU"]
    r = run_cli("benchmark", models, f"data={tiny_data}", f"project={tmp_path}", "name=x", "ov_precision=fp8")
    assert r.returncode == 2 and "ov_precision" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()


def test_latency_runs_each_runtime_in_its_own_process(fp32):
    from yolo_opt.bench.latency import latency_in_process

    res = latency_in_process([fp32], IMGSZ, runs=2, rounds=2, warmup=1)
    assert res[0]["runtime"] == OV_DEFAULT_RUNTIME and res[0]["ms"] > 0 and res[0]["imgsz"] == IMGSZ
    assert res[0]["rounds"] == 2 and res[0]["threads"] >= 1
    with pytest.raises(ValueError, match="one runtime per process"):
        latency_in_process([fp32, fp32.parent / "x.onnx"])


@pytest.mark.slow  # 5.5 min: the cpu-onnx pipeline (run by the demo in CI) on OpenVINO, whose stages this file tests
def test_intel_recipe_end_to_end(tmp_path, v8_checkpoint, tiny_data):
    from tests.test_pipeline import OPT

    opt = [a for a in OPT if not a.startswith("runtimes=")] + ["runtimes=openvino"]
    r = run_cli("optimize", f"model={v8_checkpoint}", f"data={tiny_data}", "recipe=intel-openvino", "name=i",
                f"project={tmp_path}", *opt, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    folder = tmp_path / "i"
    state = json.loads((folder / "state.json").read_text())
    assert list(state["stages"]) == ["baseline", "reference", "prune", "openvino", "select", "benchmark"]
    measured = state["stages"]["prune"]["prune_round"]  # round_for=openvino: the rounding timed on OpenVINO here
    assert measured["runtime"].startswith("OpenVINO") and set(measured["ms"]) == {"8", "16", "32"}
    selection = json.loads((folder / "deploy" / "selection.json").read_text())
    assert all(c["form"].startswith(("ov", "ul_ov")) for c in selection["candidates"])
    assert (folder / "openvino" / "infer.py").exists()
    rows = json.loads((folder / "results.json").read_text())
    assert {"baseline openvino", "reference openvino", "openvino fp32", "openvino int8"} <= set(rows)
    assert rows["reference openvino"]["reference"]  # the report compares the OpenVINO models with it
    assert all(rows[k]["runtime"] == OV_DEFAULT_RUNTIME for k in ("baseline openvino", "openvino fp32", "openvino int8"))
    assert rows["openvino fp32"]["gflops"] < 0.6 * rows["baseline openvino"]["gflops"]
