"""Training batches and the model's training loss, for gradient-based channel scoring outside the trainer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import islice

from torch import nn


def detection_loss(model: nn.Module, batch: dict):
    """Scalar Ultralytics training loss of `model` (detection or segmentation) on a preprocessed batch."""
    loss, _ = model.loss(batch)
    return loss.sum()


def taylor_batches(model: nn.Module, data: str, imgsz: int, n: int, batch_size: int = 8) -> tuple[Iterator, Callable]:
    """`n` preprocessed training batches from `data` (an Ultralytics data.yaml) and the loss to score them."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_dataloader, build_yolo_dataset

    from yolo_opt.data.checks import check_classes, dataset_images

    info = check_classes(data, getattr(model, "names", None))
    dataset_images(data, "train")  # an empty train split is one clear error, not a dataloader traceback
    from yolo_opt.arch import adapter

    task = adapter(model).task.name  # a segment model's loss needs the masks its dataset yields
    cfg = get_cfg(overrides={"imgsz": imgsz, "data": str(data), "mode": "train", "task": task})
    model.args = cfg
    stride = int(max(model.stride.max(), 32))
    dataset = build_yolo_dataset(cfg, info["train"], batch_size, info, mode="train", rect=False, stride=stride)
    loader = build_dataloader(dataset, batch_size, 0, shuffle=True)

    def batches() -> Iterator[dict]:
        for batch in islice(loader, n):
            batch["img"] = batch["img"].float() / 255
            yield batch

    return batches(), detection_loss
