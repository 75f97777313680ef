"""Shared fixtures: a tiny generated dataset and tiny YOLOv8n / YOLO11n checkpoints (no downloads)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")

IMGSZ = 64


@pytest.fixture
def logged():
    """The lines yolo-opt logs through Ultralytics' LOGGER during a test (its one way to report)."""
    import logging

    from ultralytics.utils import LOGGER

    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    LOGGER.addHandler(handler)
    try:
        yield lines
    finally:
        LOGGER.removeHandler(handler)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A 24/8-image generated dataset at 64 px."""
    from yolo_opt.data import make_dataset

    return make_dataset(tmp_path_factory.mktemp("data") / "shapes", seed=1, n_train=24, n_val=8, imgsz=IMGSZ)


def make_checkpoint(cfg: str, path: Path) -> Path:
    """An untrained detection checkpoint built from an Ultralytics yaml, saved the Ultralytics way."""
    from ultralytics.nn.tasks import DetectionModel

    from yolo_opt.data import CLASS_NAMES
    from yolo_opt.io.checkpoint import save_model

    model = DetectionModel(cfg, nc=len(CLASS_NAMES), verbose=False)
    model.names = dict(enumerate(CLASS_NAMES))
    return save_model(model, path, train_args={"imgsz": IMGSZ, "task": "detect"})


def kaiming_checkpoint(cfg: str, path: Path) -> Path:
    """An untrained checkpoint with Kaiming-initialized convolutions: with Ultralytics' default init the activations
    of an untrained yolov8n shrink to ~1e-9 deep in the network and every output is its bias (the same for every
    image), which makes accuracy comparisons meaningless."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    from yolo_opt.data import CLASS_NAMES
    from yolo_opt.io.checkpoint import save_model

    torch.manual_seed(0)
    model = DetectionModel(cfg, nc=len(CLASS_NAMES), verbose=False)
    model.names = dict(enumerate(CLASS_NAMES))
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d) and m.weight.shape[0] > 1:  # not DFL's fixed 1-channel conv
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return save_model(model, path, train_args={"imgsz": IMGSZ, "task": "detect"})


@pytest.fixture(scope="session", params=["yolov8n.yaml", "yolo11n.yaml"], ids=["v8n", "v11n"])
def tiny_checkpoint(request, tmp_path_factory) -> Path:
    """Untrained yolov8n / yolo11n checkpoints (5 classes)."""
    return make_checkpoint(request.param, tmp_path_factory.mktemp("ckpt") / f"{Path(request.param).stem}.pt")


@pytest.fixture(scope="session")
def v8_checkpoint(tmp_path_factory) -> Path:
    """Untrained yolov8n checkpoint (5 classes)."""
    return make_checkpoint("yolov8n.yaml", tmp_path_factory.mktemp("ckpt8") / "yolov8n.pt")


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 900,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `yolo-opt ARGS` in a fresh process (`env`: variables to add)."""
    return subprocess.run(
        [sys.executable, "-m", "yolo_opt.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
        env={**os.environ, "YOLO_OFFLINE": "1", "YOLO_VERBOSE": "True", **(env or {})},
    )


def run_python(code: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run Python code in a fresh process (nothing imported from this one)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=timeout,
        env={**os.environ, "YOLO_OFFLINE": "1", "YOLO_VERBOSE": "True"},
    )


def run_cli_killed_after_epoch(epoch: int, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run `yolo-opt ARGS` in a fresh process that dies (exit 17) right after the trainer saves epoch `epoch` (0-based),
    as a kill would leave it: last.pt written, nothing after."""
    code = (
        "import os, sys; sys.argv = ['yolo-opt'] + sys.argv[1:];"
        "import ultralytics.engine.trainer as t;"
        "orig = t.BaseTrainer.save_model\n"
        "def save(self):\n"
        "    ok = orig(self)\n"
        f"    if self.epoch == {epoch}: os._exit(17)\n"
        "    return ok\n"
        "t.BaseTrainer.save_model = save\n"
        "from yolo_opt.cli import main; sys.exit(main())"
    )
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "YOLO_OFFLINE": "1"})
