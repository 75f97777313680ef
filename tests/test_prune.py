"""Pruning YOLOv8n (C2f) and YOLO11n (C3k2, C2PSA): equivalence of the split-free twins, shapes, GFLOPs."""

import copy

import pytest
import torch
from torch import nn
from ultralytics.nn.tasks import DetectionModel

from yolo_opt.errors import ConfigError, ModelError, PruneError
from yolo_opt.io.checkpoint import load_model
from yolo_opt.prune import (
    C2fSplit,
    C2PSASplit,
    count_macs,
    ignored_layers,
    make_prunable,
    prune_model,
    ratio_for_macs,
)

ARCHS = ["yolov8n.yaml", "yolo11n.yaml"]


@pytest.fixture(params=ARCHS, ids=["v8n", "v11n"])
def model(request):
    torch.manual_seed(0)
    return DetectionModel(request.param, nc=5, verbose=False)


def test_split_free_twins_are_identical(model):
    model.eval()
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        before = model(x)[0]
    replaced = make_prunable(model)
    assert replaced >= 8
    assert not any(type(m).__name__ in {"C2f", "C3k2", "C2PSA"} for m in model.modules())
    with torch.no_grad():
        after = model(x)[0]
    torch.testing.assert_close(before, after, rtol=0, atol=1e-5)


def test_twins_keep_train_mode(model):
    model.train()
    make_prunable(model)
    twins = [m for m in model.modules() if isinstance(m, (C2fSplit, C2PSASplit))]
    assert twins and all(m.training for t in twins for m in t.modules())


@pytest.mark.parametrize("method", ["l2", "l1", "bn", "random"])
def test_prune_half_shapes_and_gflops(model, method):
    base_macs, base_params = count_macs(model, 128)
    head = model.model[-1]
    prune_model(model, 0.5, method, imgsz=128)
    macs, params = count_macs(model, 128)
    assert macs / base_macs < 0.55
    assert params / base_params < 0.6
    # head outputs and DFL keep their shape
    assert all(seq[-1].out_channels == 4 * head.reg_max for seq in head.cv2)
    assert all(seq[-1].out_channels == head.nc for seq in head.cv3)
    assert head.dfl.conv.in_channels == head.reg_max
    # forward works at another size, with the right output layout
    with torch.no_grad():
        y = model.eval()(torch.rand(1, 3, 160, 160))[0]
    assert y.shape == (1, 4 + head.nc, (20 * 20 + 10 * 10 + 5 * 5))


def test_channels_rounded_to_multiple(model):
    prune_model(model, 0.4, "l2", prune_round=8, imgsz=96)
    ignored = {m for layer in ignored_layers(model) for m in layer.modules()}
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m not in ignored]
    assert convs and all(c.out_channels % 8 == 0 for c in convs)


def test_attention_left_intact():
    model = DetectionModel("yolo11n.yaml", nc=5, verbose=False)
    qkv = [m.qkv.conv.out_channels for m in model.modules() if type(m).__name__ == "Attention"]
    prune_model(model, 0.5, "l2", imgsz=96)
    assert [m.qkv.conv.out_channels for m in model.modules() if type(m).__name__ == "Attention"] == qkv


def test_iterative_steps_compose():
    model = DetectionModel("yolov8n.yaml", nc=5, verbose=False)
    base = count_macs(model, 96)[0]
    once = copy.deepcopy(model)
    prune_model(once, 0.5, "l2", imgsz=96)
    prune_model(model, 0.25, "l2", imgsz=96)
    mid = count_macs(model, 96)[0]
    prune_model(model, 1 - 0.5 / 0.75, "l2", imgsz=96)
    assert count_macs(model, 96)[0] < mid < base
    assert count_macs(model, 96)[0] == pytest.approx(count_macs(once, 96)[0], rel=0.15)


@pytest.mark.parametrize("target", [0.6, 0.4])
def test_ratio_for_gflops_target(model, target):
    ratio = ratio_for_macs(model, target, imgsz=96)
    base = count_macs(model, 96)[0]
    prune_model(model, ratio, "l2", imgsz=96)
    achieved = count_macs(model, 96)[0] / base
    assert achieved <= target * 1.06
    assert achieved >= target * 0.7


def test_unreachable_target(model):
    with pytest.raises(PruneError, match="not reachable"):
        ratio_for_macs(model, 0.01, imgsz=96)


def test_taylor_uses_training_batches(tiny_data, v8_checkpoint):
    from yolo_opt.data.batches import taylor_batches

    net = load_model(v8_checkpoint)
    batches, loss_fn = taylor_batches(net, str(tiny_data), 64, n=2, batch_size=4)
    base = count_macs(net, 64)[0]
    prune_model(net, 0.5, "taylor", imgsz=64, batches=batches, loss_fn=loss_fn)
    assert count_macs(net, 64)[0] / base < 0.55
    assert all(p.grad is None for p in net.parameters())
    with pytest.raises(PruneError, match="taylor"):
        prune_model(load_model(v8_checkpoint), 0.5, "taylor", imgsz=64)


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_ratio_out_of_range(model, ratio):
    with pytest.raises(ConfigError, match="out of range"):
        prune_model(model, ratio)


def test_unknown_method(model):
    with pytest.raises(ConfigError, match="unknown prune_method"):
        prune_model(model, 0.3, "magic")


def test_non_detection_model_refused():
    from ultralytics.nn.tasks import ClassificationModel

    with pytest.raises(ModelError, match="not supported; yolo-opt handles detection and segmentation"):
        prune_model(ClassificationModel("yolov8n-cls.yaml", nc=3, verbose=False), 0.3)
