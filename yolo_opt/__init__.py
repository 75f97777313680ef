"""yolo-opt: prune, quantize and deploy Ultralytics YOLO detectors for edge GPUs."""

__version__ = "0.1.0"

from yolo_opt.errors import ConfigError, DataError, ModelError, PruneError, YoloOptError  # noqa: E402

__all__ = [
    "ConfigError",
    "DataError",
    "ModelError",
    "PruneError",
    "YoloOptError",
    "__version__",
    "attach",
    "load_model",
    "make_dataset",
    "prune_model",
    "prune_checkpoint",
    "train",
]


def __getattr__(name):
    """Import the heavy parts (torch, ultralytics) only when they are used."""
    if name in {"attach", "train"}:
        from yolo_opt import callbacks

        return getattr(callbacks, name)
    if name in {"prune_model", "prune_checkpoint", "load_model"}:
        from yolo_opt import prune

        return getattr(prune, name)
    if name == "make_dataset":
        from yolo_opt.data import make_dataset

        return make_dataset
    raise AttributeError(f"module 'yolo_opt' has no attribute {name!r}")
