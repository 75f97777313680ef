"""The family matrix: every supported Ultralytics detector, built from its yaml (tiny, untrained), through the adapter
layer: recognised, pruned exactly (pruned outputs == the same channels masked), run in train and eval mode, put back
into Ultralytics' own blocks, trained one pruned epoch with distillation, exported to INT8 and run on ONNX Runtime.

Adding a family is one file in `yolo_opt/arch/` and one row in FAMILIES.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import IMGSZ, make_checkpoint, run_cli, run_cli_killed_after_epoch

# (yaml, the family yolo-opt names it, end-to-end head)
FAMILIES = [
    ("yolov5nu.yaml", "YOLOv5u", False),
    ("yolov8n.yaml", "YOLOv8", False),
    ("yolov9t.yaml", "YOLOv9", False),
    ("yolov10n.yaml", "YOLOv10", True),
    ("yolo11n.yaml", "YOLO11", False),
    ("yolo12n.yaml", "YOLO12", False),
    ("yolo26n.yaml", "YOLO26", True),
]
IDS = [f[1] for f in FAMILIES]


def _model(cfg: str):
    """A detection model with random BN statistics and Kaiming convs: no channel is zero or alike by accident."""
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel(cfg, nc=5, verbose=False)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
        elif isinstance(m, nn.Conv2d) and m.weight.shape[0] > 1:
            nn.init.kaiming_normal_(m.weight)
    return model.eval()


def _outputs(model, x) -> list[torch.Tensor]:
    """Every output tensor of an eval forward (decoded output, each branch's raw outputs), not the head's inputs."""

    def flat(out):
        if isinstance(out, torch.Tensor):
            return [out]
        if isinstance(out, dict):
            return [t for k, v in out.items() if k != "feats" for t in flat(v)]
        return [t for o in out for t in flat(o)] if isinstance(out, (list, tuple)) else []

    with torch.no_grad():
        return flat(model(x))


@pytest.mark.parametrize(("cfg", "name", "end2end"), FAMILIES, ids=IDS)
def test_prune_is_exact_and_runs(cfg, name, end2end):
    """Pruning removes exactly the channels the plan names (a model with them zeroed gives the same outputs, every
    output of both heads), cuts GFLOPs, and the pruned model runs in train and eval mode (end-to-end: its NMS-free
    output too) and goes back into Ultralytics' blocks (prune_native) without changing its outputs."""
    from yolo_opt.arch import SplitTwin, adapter
    from yolo_opt.prune import count_macs, prune_model
    from yolo_opt.prune.groups import mask_group, plans

    model = _model(cfg)
    arch = adapter(model)
    assert (arch.name, arch.task.name, arch.end2end) == (name, "detect", end2end)
    arch.make_prunable()
    assert adapter(model).name == name  # still recognised with its twins
    base = count_macs(model, 128)[0]
    masked, pruned = copy.deepcopy(model), copy.deepcopy(model)
    for _, _, items in plans(masked, 0.5, "l2", 8)[0]:
        mask_group(masked, items)
    prune_model(pruned, 0.5, "l2", 8)
    x = torch.rand(1, 3, 128, 128)
    for a, b in zip(_outputs(masked.eval(), x), _outputs(pruned.eval(), x), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * float(a.abs().max()))  # float rounding only
    assert count_macs(pruned, 128)[0] / base < 0.4
    pruned.train()
    pruned(torch.rand(2, 3, 128, 128))
    if end2end:
        pruned.eval().end2end = True
        assert pruned(x)[0].shape[-1] == 6  # (1, k, 6): xyxy, score, class

    native = copy.deepcopy(model)
    for m in native.modules():
        if isinstance(m, SplitTwin):
            m.equal_halves = True
    prune_model(native, 0.5, "l2", 8)
    before = _outputs(native.eval(), x)
    _, kept = adapter(native).to_native()
    assert kept == 0 and not any(isinstance(m, SplitTwin) for m in native.modules())
    for a, b in zip(before, _outputs(native.eval(), x), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * float(a.abs().max()))  # float rounding only


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("families")
    return {cfg: make_checkpoint(cfg, folder / cfg.replace(".yaml", ".pt")) for cfg, _, _ in FAMILIES}


@pytest.mark.parametrize(("cfg", "name", "end2end"), [
    pytest.param(*f, marks=[] if f[1] in ("YOLO26", "YOLOv9") else pytest.mark.slow) for f in FAMILIES], ids=IDS)
def test_pruned_distilled_epoch_and_int8(cfg, name, end2end, checkpoints, tiny_data, tmp_path, logged):
    """One pruned epoch with distillation (distill=True) through the trainer, then INT8 QDQ ONNX of the result,
    run by ONNX Runtime: the end-to-end output (1, k, 6) for YOLO26/YOLOv10, else (1, 4+nc, anchors)."""
    import onnxruntime as ort

    from yolo_opt import export, train

    result = train(checkpoints[cfg], data=str(tiny_data), epochs=1, imgsz=IMGSZ, batch=8, workers=0, plots=False,
                   warmup_epochs=0, prune=0.3, distill=True, project=str(tmp_path), name="run", exist_ok=True)
    assert any("prune step 1/1" in line for line in logged)
    columns = (result["save_dir"] / "results.csv").read_text().splitlines()[0]
    assert "train/kd_cls" in columns and "train/kd_box" in columns  # distilled: its terms are loss items
    out = tmp_path / "int8.onnx"
    # the NMS-free head where there is one (the default export carries Ultralytics' default head)
    export(result["best"], int8=True, imgsz=IMGSZ, calib_images=4, out=str(out), data=str(tiny_data),
           end2end=True if end2end else None)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    pred = session.run(None, {session.get_inputs()[0].name: np.random.rand(1, 3, IMGSZ, IMGSZ).astype(np.float32)})[0]
    if end2end:
        assert pred.shape[0] == 1 and pred.shape[2] == 6
    else:
        assert pred.shape[:2] == (1, 4 + 5)


def test_yolo26_default_recipe_killed_resumes_with_its_ratios(checkpoints, tiny_data, tmp_path):
    """YOLO26 with the default recipe (prune_target: per-layer ratios from the trainer's analysis, no distillation),
    killed after its first epoch: the resumed run keeps its allocation and finishes at the target."""
    from yolo_opt.io.checkpoint import read_checkpoint
    from yolo_opt.prune import count_macs

    args = ("train", f"model={checkpoints['yolo26n.yaml']}", f"data={tiny_data}", "epochs=3", f"imgsz={IMGSZ}",
            "batch=8", "workers=0", "plots=False", "warmup_epochs=0", "prune_target=0.5", f"project={tmp_path}",
            "name=y26")
    killed = run_cli_killed_after_epoch(0, *args)
    assert killed.returncode == 17, killed.stderr[-3000:]
    last = tmp_path / "y26" / "weights" / "last.pt"
    run = read_checkpoint(last)["ema"].yolo_opt["train_run"]
    assert run["steps_done"] == 1 and run["layer_ratios"]
    resumed = run_cli("train", f"model={last}", "resume=True")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "box_loss" in resumed.stdout + resumed.stderr and "kd_box" not in resumed.stdout + resumed.stderr
    ckpt = read_checkpoint(tmp_path / "y26" / "weights" / "best.pt")
    model = (ckpt.get("ema") or ckpt["model"]).float()
    assert model.yolo_opt["train_run"]["layer_ratios"] == run["layer_ratios"]
    base = count_macs(read_checkpoint(checkpoints["yolo26n.yaml"])["model"].float(), 128)[0]
    assert 0.45 < count_macs(model, 128)[0] / base <= 0.52


@pytest.fixture(scope="module")
def one_class(tmp_path_factory, tiny_data):
    """The tiny dataset with every object labelled as one class."""
    import shutil

    from yolo_opt.data.checks import read_dataset

    root = tmp_path_factory.mktemp("oneclass")
    src = read_dataset(tiny_data)
    for split in ("train", "val"):
        images = Path(src[split])
        shutil.copytree(images, root / "images" / split)
        (root / "labels" / split).mkdir(parents=True)
        for txt in (images.parent.parent / "labels" / split).glob("*.txt"):
            (root / "labels" / split / txt.name).write_text(re.sub(r"(?m)^\d+ ", "0 ", txt.read_text()))
    yaml = root / "data.yaml"
    yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: object\n")
    return yaml


@pytest.mark.parametrize("cfg", ["yolov8n.yaml", "yolo26n.yaml"], ids=["v8n", "yolo26"])
def test_one_class_models_quantize_their_class_convs(cfg, one_class, tmp_path):
    """A one-class model's class convs have one output channel, like DFL's integral conv: only the fixed-weight DFL
    stays float (YOLO26 has none); the class convs are INT8."""
    import onnx
    from ultralytics.nn.tasks import DetectionModel

    from yolo_opt.deploy.onnx import export_onnx
    from yolo_opt.io.checkpoint import save_model
    from yolo_opt.quant.graph import feature_convs
    from yolo_opt.quant.ptq import quantize_onnx

    model = DetectionModel(cfg, nc=1, verbose=False)
    model.names = {0: "object"}
    pt = save_model(model, tmp_path / "one.pt", train_args={"imgsz": IMGSZ, "task": "detect"})
    from ultralytics import YOLO

    plain = onnx.load(YOLO(str(pt)).export(format="onnx", imgsz=IMGSZ))  # Ultralytics' graph: DFL is a Conv there
    convs = [n for n in plain.graph.node if n.op_type == "Conv"]
    assert len(convs) - len(feature_convs(plain)) == (0 if "26" in cfg else 1)  # only DFL's integral conv
    fp32 = export_onnx(pt, tmp_path / "one.onnx", imgsz=IMGSZ)  # ours: DFL is a MatMul (last_axis_dfl)
    r = quantize_onnx(fp32, one_class, tmp_path / "one_int8.onnx", calib_images=4, validate=False, progress=False)
    q = onnx.load(str(r.path))
    producers = {o: n for n in q.graph.node for o in n.output}
    init = {i.name: i for i in q.graph.initializer}
    one_channel = [n for n in q.graph.node if n.op_type == "Conv" and (w := producers.get(n.input[1])) is not None
                   and w.op_type == "DequantizeLinear" and w.input[0] in init and init[w.input[0]].dims[0] == 1]
    assert len(one_channel) == 3  # the class conv of each level (YOLO26 exports its one-to-one head alone)


def test_unsupported_models_are_one_line_naming_what_is(tmp_path):
    """Pose and RT-DETR are refused in one line that names the supported families and tasks (not a contradiction
    such as "only detection models are supported (this is a 'detect' model ...)")."""
    from ultralytics.nn.tasks import PoseModel, RTDETRDetectionModel

    from yolo_opt.arch import adapter
    from yolo_opt.errors import ModelError
    from yolo_opt.io.checkpoint import save_model

    with pytest.raises(ModelError, match=r"^an RT-DETR model \(RTDETRDecoder head\) is not supported; yolo-opt "
                                         r"handles detection and segmentation models of YOLOv5u, .* and YOLO26$"):
        adapter(RTDETRDetectionModel("rtdetr-l.yaml", nc=5, verbose=False))
    pose = save_model(PoseModel("yolo11n-pose.yaml", nc=1, verbose=False), tmp_path / "pose.pt")
    r = run_cli("prune", f"model={pose}", "prune=0.5", f"out={tmp_path / 'out.pt'}")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]
    assert "a 'pose' model (Pose head) is not supported" in r.stderr and "YOLO26" in r.stderr
    assert not (tmp_path / "out.pt").exists()


def test_a_pruning_that_outgrows_its_memory_budget_stops_cleanly(checkpoints, tmp_path):
    """A trace that takes memory without bound ends in one line (exit 2), not in the kernel's OOM kill; here the
    budget is made tiny instead of the trace huge."""
    import subprocess
    import sys

    out = tmp_path / "p.pt"
    r = subprocess.run([sys.executable, "-m", "yolo_opt.cli", "prune", f"model={checkpoints['yolo12n.yaml']}",
                        "prune=0.5", f"out={out}", f"imgsz={IMGSZ}"], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "YOLO_OFFLINE": "1", "YOLO_OPT_PRUNE_MEMORY_GB": "0.0005"})
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]
    assert "of memory and was stopped" in r.stderr and "YOLO_OPT_PRUNE_MEMORY_GB" in r.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
