"""Segmentation models (YOLOv8-seg, YOLO11-seg, YOLO26-seg): the generated masks, pruning, a distilled pruned epoch,
INT8 and the bundles' mask decode, kill/resume, OpenVINO, and the mask figures in reports."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import IMGSZ, run_cli, run_cli_killed_after_epoch

SEG = [("yolov8n-seg.yaml", "YOLOv8", False), ("yolo11n-seg.yaml", "YOLO11", False), ("yolo26n-seg.yaml", "YOLO26", True)]
IDS = [s[0].split(".")[0] for s in SEG]


@pytest.fixture(scope="session")
def seg_data(tmp_path_factory):
    """The tiny generated dataset with instance polygons (the same images as tiny_data's)."""
    from yolo_opt.data import make_dataset

    return make_dataset(tmp_path_factory.mktemp("segdata") / "shapes", seed=1, n_train=24, n_val=8, imgsz=IMGSZ,
                        task="segment")


def seg_checkpoint(cfg: str, path):
    from ultralytics.nn.tasks import SegmentationModel

    from yolo_opt.data import CLASS_NAMES
    from yolo_opt.io.checkpoint import save_model

    torch.manual_seed(0)
    model = SegmentationModel(cfg, nc=len(CLASS_NAMES), verbose=False)
    model.names = dict(enumerate(CLASS_NAMES))
    for m in model.modules():  # Kaiming: an untrained model's masks then differ from image to image and from empty
        if isinstance(m, nn.Conv2d) and m.weight.shape[0] > 1:
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return save_model(model, path, train_args={"imgsz": IMGSZ, "task": "segment"})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seg")
    return {cfg: seg_checkpoint(cfg, folder / cfg.replace(".yaml", ".pt")) for cfg, _, _ in SEG}


def test_generated_masks_are_the_objects_outlines(seg_data, tiny_data):
    """Same images as the detection set; each label is a polygon whose box is the object's box (less what a later
    object hides); Ultralytics reads them as a segmentation dataset."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset

    from yolo_opt.data.checks import read_dataset

    seg, det = read_dataset(seg_data), read_dataset(tiny_data)
    image = sorted(p.name for p in (seg_data.parent / "images" / "train").iterdir())[0]
    assert (seg_data.parent / "images/train" / image).read_bytes() == (tiny_data.parent / "images/train" / image).read_bytes()
    for txt in sorted((seg_data.parent / "labels" / "train").glob("*.txt"))[:10]:
        boxes = [list(map(float, ln.split()[1:])) for ln in (tiny_data.parent / "labels/train" / txt.name).read_text().split("\n") if ln]
        polys = [list(map(float, ln.split()[1:])) for ln in txt.read_text().split("\n") if ln]
        assert len(polys) == len(boxes) and all(len(p) >= 6 and len(p) % 2 == 0 for p in polys)
        for (cx, cy, w, h), p in zip(boxes, polys, strict=True):
            xs, ys = p[0::2], p[1::2]
            assert cx - w / 2 - 0.03 <= min(xs) and max(xs) <= cx + w / 2 + 0.03  # inside its box (+1-2 px)
            assert cy - h / 2 - 0.03 <= min(ys) and max(ys) <= cy + h / 2 + 0.03
    cfg = get_cfg(overrides={"imgsz": IMGSZ, "task": "segment", "mode": "val"})
    dataset = build_yolo_dataset(cfg, seg["val"], 4, seg, mode="val", stride=32)
    assert dataset[0]["masks"].any() and dataset.use_segments and seg["names"] == det["names"]


@pytest.mark.parametrize(("cfg", "name", "end2end"), SEG, ids=IDS)
def test_seg_prune_is_exact_and_runs(cfg, name, end2end):
    """Masks' branches included: pruned outputs (mask coefficients, prototypes) == the same channels masked; the
    pruned model trains (YOLO26-seg's training-only semantic branch too) and evaluates."""
    from ultralytics.nn.tasks import SegmentationModel

    from yolo_opt.arch import adapter
    from yolo_opt.prune import count_macs, prune_model
    from yolo_opt.prune.groups import mask_group, plans

    torch.manual_seed(0)
    model = SegmentationModel(cfg, nc=5, verbose=False)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2)
            m.bias.data.uniform_(-0.3, 0.3)
    arch = adapter(model.eval())
    assert (arch.name, arch.task.name, arch.end2end) == (name, "segment", end2end)
    arch.make_prunable()
    base = count_macs(model, 128)[0]
    masked, pruned = copy.deepcopy(model), copy.deepcopy(model)
    for _, _, items in plans(masked, 0.5, "l2", 8)[0]:
        mask_group(masked, items)
    prune_model(pruned, 0.5, "l2", 8)
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        a, b = adapter(masked).output_branches(masked(x)), adapter(pruned).output_branches(pruned.eval()(x))
    assert [name for name, _ in a] == (["one2many", "one2one"] if end2end else ["one2many"])
    for (_, t), (_, u) in zip(a, b, strict=True):
        assert len(t) == 4 and t.keys() == u.keys()  # boxes, scores, mask coefficients, prototypes (shared)
        for k in t:
            torch.testing.assert_close(t[k], u[k], rtol=1e-3, atol=1e-3 * float(t[k].abs().max()))
    assert count_macs(pruned, 128)[0] / base < 0.4
    pruned.train()
    out = pruned(torch.rand(2, 3, 128, 128))
    proto = (out["one2many"] if end2end else out)["proto"]
    if end2end:
        assert isinstance(proto, tuple) and proto[1].shape[1] == 5  # the semantic branch: one channel per class


@pytest.mark.parametrize(("cfg", "name", "end2end"), [
    pytest.param(*s, marks=[] if s[1] == "YOLO26" else pytest.mark.slow) for s in SEG], ids=IDS)
def test_seg_distilled_epoch_int8_and_bundle_masks(cfg, name, end2end, checkpoints, seg_data, tmp_path):
    """A pruned epoch distils masks too (distill=True); the INT8 QDQ ONNX has both outputs and validates with mask
    figures; the Jetson bundle's infer.py decodes masks like Ultralytics' own predictor on the same FP32 ONNX."""
    from ultralytics import YOLO

    from yolo_opt import export, train
    from yolo_opt.data.checks import dataset_images

    result = train(checkpoints[cfg], data=str(seg_data), epochs=1, imgsz=IMGSZ, batch=8, workers=0, plots=False,
                   warmup_epochs=0, prune=0.3, distill=True, project=str(tmp_path), name="run", exist_ok=True)
    columns = (result["save_dir"] / "results.csv").read_text().splitlines()[0]
    assert all(f"train/{k}" in columns for k in ("kd_cls", "kd_box", "kd_mask", "seg_loss"))
    report = export(result["best"], int8=True, imgsz=IMGSZ, calib_images=4, out=str(tmp_path / "int8.onnx"),
                    data=str(seg_data))
    assert report["fp32_mask_map"] is not None and report["int8_mask_map"] is not None
    bundle = tmp_path / "bundle"
    export(result["best"], format="jetson", imgsz=IMGSZ, calib_images=4, out=str(bundle), data=str(seg_data),
           bundle=True, end2end=True if end2end else None)  # the NMS-free head's masks where there is one
    meta = json.loads((bundle / "metadata.json").read_text())
    assert meta["task"] == "segment" and meta["nm"] == 32 and meta["end2end"] == end2end
    detections, prototypes = (o["shape"] for o in meta["outputs"])
    assert (detections[2] == 6 + 32) if end2end else (detections[1] == 4 + 5 + 32)  # then 32 mask coefficients
    assert prototypes == [1, 32, IMGSZ // 4, IMGSZ // 4]
    image = tmp_path / "img.png"
    shutil.copyfile(dataset_images(seg_data, "val")[0], image)
    r = subprocess.run([sys.executable, str(bundle / "infer.py"), str(image), "--onnx", str(bundle / "model_fp32.onnx"),
                        "--conf", "0.001", "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(r.stdout)
    res = YOLO(str(bundle / "model_fp32.onnx"), task="segment").predict(str(image), conf=0.001, iou=0.45, imgsz=IMGSZ,
                                                                        verbose=False)[0]
    assert rows and len(res.boxes) == len(rows)
    ours = sorted(r["mask_pixels"] for r in rows)
    theirs = sorted(int(m.sum()) for m in res.masks.data)
    assert np.allclose(ours, theirs, atol=3), (ours, theirs)  # a pixel or two at mask edges (resize rounding)


@pytest.mark.slow  # the default set kills and resumes detection runs (YOLO26's default recipe, a distilled one)
def test_seg_pruned_run_killed_resumes(checkpoints, seg_data, tmp_path):
    """A pruned segmentation run (per-layer ratios, distilled with its masks: distill=True) killed after its first
    epoch resumes through Ultralytics' segmentation trainer, still distilling, and finishes pruned."""
    from yolo_opt.io.checkpoint import read_checkpoint

    args = ("train", f"model={checkpoints['yolo11n-seg.yaml']}", f"data={seg_data}", "epochs=2", f"imgsz={IMGSZ}",
            "batch=8", "workers=0", "plots=False", "warmup_epochs=0", "prune_target=0.5", "distill=True",
            f"project={tmp_path}", "name=seg")
    killed = run_cli_killed_after_epoch(0, *args)
    assert killed.returncode == 17, killed.stderr[-3000:]
    resumed = run_cli("train", f"model={tmp_path / 'seg' / 'weights' / 'last.pt'}", "resume=True")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "kd_mask" in resumed.stdout + resumed.stderr and "seg_loss" in resumed.stdout + resumed.stderr
    ckpt = read_checkpoint(tmp_path / "seg" / "weights" / "best.pt")
    model = ckpt.get("ema") or ckpt["model"]
    assert type(model).__name__ == "SegmentationModel" and model.yolo_opt["train_run"]["steps_done"] == 1


@pytest.mark.slow
def test_seg_openvino_int8_accuracy_control_and_bundle(checkpoints, seg_data, tmp_path):
    """OpenVINO: the NNCF INT8 IR of a segmentation model under accuracy control (NNCF scores the masks' mAP), its
    bundle's infer.py decodes masks on OpenVINO alone."""
    out = tmp_path / "ov"
    r = run_cli("bundle", "format=openvino", f"model={checkpoints['yolo26n-seg.yaml']}", f"data={seg_data}",
                f"imgsz={IMGSZ}", "calib_images=8", "max_map_drop=0.5", "end2end=True", f"out={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["task"] == "segment" and meta["end2end"] and "fp32_mask_map" in meta["accuracy"]
    image = tmp_path / "img.png"
    from yolo_opt.data.checks import dataset_images

    shutil.copyfile(dataset_images(seg_data, "val")[0], image)
    r = subprocess.run([sys.executable, "-I", str(out / "infer.py"), str(image), "--json", "--conf", "0.0001"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert all("mask_pixels" in row for row in json.loads(r.stdout))


def test_seg_benchmark_and_sensitivity_show_masks(checkpoints, seg_data, tmp_path):
    """The benchmark report leads with the masks' mAP beside the boxes'; a sensitivity analysis scores the mask
    outputs (coefficients, prototypes) with the head's others."""
    pt = checkpoints["yolo11n-seg.yaml"]
    r = run_cli("benchmark", f"model={pt}", f"data={seg_data}", f"imgsz={IMGSZ}", f"project={tmp_path}", "name=b")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((tmp_path / "b" / "results.json").read_text())
    assert "mask_map" in next(iter(rows.values())) and "mask mAP50-95" in (tmp_path / "b" / "report.md").read_text()
    r = run_cli("sensitivity", f"model={pt}", f"data={seg_data}", f"imgsz={IMGSZ}", "ratios=0.5", "score=map",
                f"project={tmp_path}", "name=s", "groups=model.2.cv0")
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "s" / "sensitivity.json").read_text())
    assert report["task"] == "segment" and report["primary"] == "mask_map" and "mask_map" in report["baseline"]
    assert "mask mAP" in (tmp_path / "s" / "sensitivity.md").read_text()
