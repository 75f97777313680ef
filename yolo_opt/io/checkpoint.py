"""Load and save Ultralytics checkpoints with clear errors and atomic writes; yolo-opt's per-model metadata."""

from __future__ import annotations

import copy
import re
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yolo_opt.arch import adapter, twin_classes
from yolo_opt.errors import ModelError, UntrustedCheckpoint, YoloOptError, first_line
from yolo_opt.io.files import atomic_write_bytes
from yolo_opt.options import TRUST_ENV

# Our per-model metadata, pickled with the module (survives EMA copies and Ultralytics checkpoints).
META_ATTR = "yolo_opt"


# yolo-opt's own classes that its checkpoints pickle: the split-free twins of pruned models (`yolo_opt.arch`), and the
# distillation wrapper a distilled run's last.pt holds (resume; by name: io/ does not import distill/). They and the
# Ultralytics and torch model classes Ultralytics' `_SafeLoad` knows are all a safe load reconstructs.
DISTILL_CLASSES = ("yolo_opt.distill.model.RecoveryDistillationModel",)


def safe_loading() -> bool:
    """Make every checkpoint load in this process a `weights_only` load, unless `YOLO_OPT_TRUST=1`; returns trust.

    Registers yolo-opt's classes with torch's allow-list and switches Ultralytics' own loader to its restricted mode
    (what `ULTRALYTICS_SAFE_LOAD=1` does), so `YOLO(path)`, trainers (resume, distillation teachers), validators and
    exporters cannot unpickle code behind our back either. Idempotent; PruneTrainer calls it in DDP workers too.
    """
    import importlib

    from ultralytics.nn import tasks

    from yolo_opt.options import trust_checkpoints

    if trust_checkpoints():
        return True
    if not hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):  # torch < 2.6: no restricted loader
        raise ModelError(f"safe checkpoint loading needs torch >= 2.6 (this is {torch.__version__}); upgrade torch, "
                         "or set YOLO_OPT_TRUST=1 to load checkpoints you trust with full pickle")
    classes: list = []
    for cls in twin_classes():
        classes += [cls, *((cls, name) for name in cls.pickled_as)]  # older checkpoints name it elsewhere
    for name in DISTILL_CLASSES:
        module, _, attr = name.rpartition(".")
        classes.append(getattr(importlib.import_module(module), attr))
    torch.serialization.add_safe_globals(classes)
    tasks.SAFE_LOAD = True
    return False


def _corrupt(path: Path, e: BaseException | str) -> ModelError:
    return ModelError(f"cannot read {path} as an Ultralytics checkpoint ({first_line(e, 160)}); is the file corrupt or "
                      "truncated?")


def _is_pickle(path: Path) -> bool:
    """Whether the file is a complete pickle stream (parsed with pickletools: nothing is executed)."""
    import pickletools

    try:
        with open(path, "rb") as f:
            for _ in pickletools.genops(f):
                pass
        return True
    except Exception:
        return False


def _not_a_checkpoint(path: Path) -> ModelError:
    return ModelError(f"{path} is a Python pickle, not an Ultralytics checkpoint (a torch.save archive holding a "
                      "model); pass a YOLO .pt saved by Ultralytics or yolo-opt")


def _refused(path: Path, names: list[str]) -> UntrustedCheckpoint:
    more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
    return UntrustedCheckpoint(
        f"{path} was not loaded: it holds '{names[0]}'{more}, which is not part of an Ultralytics or yolo-opt "
        f"checkpoint, and unpickling it could run code; if you trust this file, rerun with {TRUST_ENV}=1")


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict of a `.pt` file (model, epoch, train_args, modelopt, ...), loaded safely.

    Safe loading (the default): torch's `weights_only` unpickler, allowing only tensors, plain data and the classes
    of Ultralytics and yolo-opt models; a file holding anything else is refused before any of it is unpickled.
    `YOLO_OPT_TRUST=1` loads with full pickle instead (runs code inside the file: only for files you trust).

    Raises:
        ModelError: Missing, corrupt, or not a PyTorch checkpoint. UntrustedCheckpoint: refused by the allow-list.
    """
    import pickle
    import zipfile

    from ultralytics.nn.tasks import _SafeLoad
    from ultralytics.utils.patches import torch_load

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}; pass model=path/to/best.pt")
    trusted = safe_loading()
    archive = zipfile.is_zipfile(path)
    try:
        if trusted:
            ckpt = torch_load(path, map_location="cpu", weights_only=False)
        else:
            if archive:  # name what the allow-list refuses before unpickling anything
                with _SafeLoad.loading(path):  # registers the Ultralytics classes this file references
                    pass
                refused = torch.serialization.get_unsafe_globals_in_checkpoint(path)
                if refused:
                    raise _refused(path, refused)
            with _SafeLoad.loading(path), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # torch's note on pickle protocols: nothing to act on
                ckpt = torch_load(path, map_location="cpu", weights_only=True)
    except YoloOptError:
        raise
    except (AttributeError, ImportError) as e:  # full pickle of a class this environment does not have
        raise ModelError(f"{path} needs code that is not installed here ({first_line(e, 160)}); pass a "
                         "YOLO .pt saved by Ultralytics or yolo-opt") from None
    except pickle.UnpicklingError as e:
        # the weights_only unpickler refusing a global (a legacy non-zip file) vs bytes that are no pickle at all
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if found:
            raise _refused(path, [found[1]]) from None
        if not archive and _is_pickle(path):
            raise _not_a_checkpoint(path) from None
        reason = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(e))  # the point of torch's long message
        raise _corrupt(path, reason[1] if reason else e) from None
    except Exception as e:  # torch/zip/pickle raise many types for a damaged file
        if not archive and _is_pickle(path):
            raise _not_a_checkpoint(path) from None
        raise _corrupt(path, e) from None
    model = ckpt.get("ema") or ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(model, nn.Module):
        held = f"a {type(ckpt).__name__}" if not isinstance(ckpt, dict) else \
            f"keys {', '.join(map(str, list(ckpt)[:5])) or 'none'}"
        raise ModelError(f"{path} is a PyTorch file but not an Ultralytics checkpoint (no model inside; it holds "
                         f"{held}); pass a YOLO .pt saved by Ultralytics or yolo-opt")
    return ckpt


def trained_imgsz(path: str | Path) -> int:
    """The image size a checkpoint was trained at (its `train_args`), which `yolo export` and `yolo val` use when
    not told otherwise; `DEFAULT_IMGSZ` for a checkpoint that does not say."""
    from yolo_opt.options import DEFAULT_IMGSZ

    args = read_checkpoint(path).get("train_args") or {}
    size = (args if isinstance(args, dict) else vars(args)).get("imgsz")
    if isinstance(size, (list, tuple)) and size:
        size = max(size)
    return int(size) if isinstance(size, int) and not isinstance(size, bool) and size >= 32 else DEFAULT_IMGSZ


def load_model(path: str | Path) -> nn.Module:
    """Load the model of an Ultralytics `.pt` checkpoint (FP32, CPU, eval mode), safely (`read_checkpoint`).

    Raises:
        ModelError: Missing file, not a `.pt`, unreadable/corrupt/untrusted checkpoint, or a model yolo-opt does not
            support (`yolo_opt.arch.adapter` names what it supports).
    """
    from ultralytics.nn.tasks import load_checkpoint

    path = Path(path)
    if path.suffix != ".pt" and path.exists():
        raise ModelError(f"model must be an Ultralytics .pt checkpoint, got '{path.name}'")
    read_checkpoint(path)  # the checks and clear errors; Ultralytics then builds the model (its loader now safe too)
    try:
        model, _ = load_checkpoint(path)
    except Exception as e:
        raise _corrupt(path, e) from e
    try:
        adapter(model)
    except YoloOptError as e:
        raise ModelError(f"{path}: {e}") from e
    return model


def check_model_yaml(model: str | Path, key: str = "model") -> dict:
    """The parsed model yaml (Ultralytics' name resolution: `yolov8n.yaml` needs no file), or one ModelError: a
    missing file, bad YAML, or a yaml that is no model (a data.yaml has no `backbone:`)."""
    from ultralytics.nn.tasks import yaml_model_load

    try:
        cfg = yaml_model_load(str(model))
    except (FileNotFoundError, OSError, ValueError, SyntaxError) as e:
        raise ModelError(f"{key}={model}: {first_line(e)}; pass a .pt checkpoint or a model yaml such as "
                         "yolov8n.yaml") from None
    except Exception as e:  # yaml's parser errors
        raise ModelError(f"{key}={model} is not valid YAML ({first_line(e)})") from None
    if not isinstance(cfg, dict) or "backbone" not in cfg or "head" not in cfg:
        raise ModelError(f"{key}={model} is not a model yaml (no backbone: and head:); a dataset goes in data=, the "
                         "model is a .pt or e.g. yolov8n.yaml")
    return cfg


# Model files and folders Ultralytics loads besides a .pt (its export formats), by suffix
MODEL_SUFFIXES = (".torchscript", ".onnx", ".engine", ".mlpackage", ".pb", ".tflite", ".mnn", ".xml", ".pte")
MODEL_FOLDERS = ("_openvino_model", "_saved_model", "_web_model", "_paddle_model", "_ncnn_model", "_imx_model",
                 "_rknn_model", "_executorch_model", "_axelera_model", "_mlpackage")


def check_model_file(model: str | Path) -> dict[str, Any]:
    """Check a `model=` of `val`/`predict` before Ultralytics opens it; one ModelError for a missing file, a folder
    or file that is no model (a text file, a data.yaml), or a bad checkpoint.

    Returns:
        For a `.pt`: {"task", "names", "data" (the dataset it was trained on, or None)}; {} for other formats.
    """
    path = Path(str(model))
    if path.suffix == ".pt":
        net = load_model(path)
        args = read_checkpoint(path).get("train_args") or {}
        return {"task": adapter(net).task.name, "names": getattr(net, "names", None), "data": args.get("data")}
    if path.suffix in {".yaml", ".yml"}:
        check_model_yaml(path)
        return {}
    if not path.exists():
        raise ModelError(f"model file not found: {path}; pass model=path/to/best.pt")
    if path.is_dir():
        if path.name.endswith(MODEL_FOLDERS) or any(path.glob("*.xml")):
            return {}
        raise ModelError(f"model={path} is a folder, not a model; pass a .pt, .onnx, .engine or an exported model "
                         "folder")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise ModelError(f"model={path} is not a model file ({path.suffix or 'no suffix'}); pass a .pt, .onnx, "
                         ".engine or an exported model folder")
    return {}


def save_model(model: nn.Module, path: str | Path, train_args: dict | None = None) -> Path:
    """Save `model` as a normal Ultralytics checkpoint (FP16 module under 'model'), atomically."""
    import io

    from ultralytics import __version__ as ul_version

    from yolo_opt import __version__

    path = Path(path)
    if path.suffix != ".pt":
        raise ModelError(f"output must end in .pt, got '{path.name}'")
    snapshot = copy.deepcopy(model).eval().half()
    for p in snapshot.parameters():
        p.requires_grad = False
    if hasattr(snapshot, "criterion"):
        snapshot.criterion = None
    buffer = io.BytesIO()
    torch.save(
        {
            "date": datetime.now().astimezone().isoformat(),
            "version": ul_version,
            "yolo_opt": __version__,
            "license": "AGPL-3.0 (https://ultralytics.com/license)",
            "model": snapshot,
            "train_args": dict(train_args or getattr(model, "args", None) or {}),
        },
        buffer,
    )
    atomic_write_bytes(path, buffer.getvalue())
    return path


def meta(model: nn.Module) -> dict:
    """The model's yolo-opt metadata dict (created empty on first use)."""
    info = getattr(model, META_ATTR, None)
    if not isinstance(info, dict):
        info = {}
        setattr(model, META_ATTR, info)
    return info
