"""Training batches for gradient-based channel scoring outside the trainer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import islice

from torch import nn

from yolo_opt.errors import DataError


def detection_loss(model: nn.Module, batch: dict):
    """Scalar Ultralytics detection loss of `model` on a preprocessed batch."""
    loss, _ = model.loss(batch)
    return loss.sum()


def taylor_batches(model: nn.Module, data: str, imgsz: int, n: int, batch_size: int = 8) -> tuple[Iterator, Callable]:
    """`n` preprocessed training batches from `data` (an Ultralytics data.yaml) and the loss to score them."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_dataloader, build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    try:
        info = check_det_dataset(str(data))
    except Exception as e:
        raise DataError(f"cannot read dataset '{data}' ({str(e).splitlines()[0][:160]}); pass a valid data.yaml") from e
    names = getattr(model, "names", None)
    if names and info["nc"] != len(names):
        raise DataError(f"dataset has {info['nc']} classes but the model has {len(names)}")
    cfg = get_cfg(overrides={"imgsz": imgsz, "data": str(data), "mode": "train"})
    model.args = cfg
    stride = int(max(model.stride.max(), 32))
    dataset = build_yolo_dataset(cfg, info["train"], batch_size, info, mode="train", rect=False, stride=stride)
    loader = build_dataloader(dataset, batch_size, 0, shuffle=True)

    def batches() -> Iterator[dict]:
        for batch in islice(loader, n):
            batch["img"] = batch["img"].float() / 255
            yield batch

    return batches(), detection_loss
