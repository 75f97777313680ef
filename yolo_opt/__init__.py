"""yolo-opt: prune, quantize and deploy Ultralytics YOLO detectors for edge devices.

The public verbs take a model plus a typed option object (`yolo_opt.options`), or its keyword shortcuts (not both):

    from yolo_opt import train, prune_checkpoint, export, TrainOptions, PruneOptions, ExportOptions
    train("best.pt", TrainOptions(prune=PruneOptions(prune_target=0.5)), data="data.yaml", epochs=30)
    train("best.pt", data="data.yaml", epochs=30, prune_target=0.5)          # the same, as shortcuts
    prune_checkpoint("best.pt", "pruned.pt", PruneOptions(prune=0.5))
    export("pruned.pt", ExportOptions(int8=True, imgsz=640), data="data.yaml")
"""

__version__ = "0.2.0"

from yolo_opt.errors import (  # noqa: E402
    ConfigError,
    DataError,
    DeployError,
    ModelError,
    PruneError,
    StorageError,
    YoloOptError,
)

# public name -> module that defines it (imported on first use: torch and Ultralytics load only when needed)
_LAZY = {
    "PruneOptions": "yolo_opt.options",
    "DistillOptions": "yolo_opt.options",
    "QATOptions": "yolo_opt.options",
    "TrainOptions": "yolo_opt.options",
    "PTQOptions": "yolo_opt.options",
    "ExportOptions": "yolo_opt.options",
    "TuneOptions": "yolo_opt.options",
    "PruneTrainer": "yolo_opt.training",
    "SegmentPruneTrainer": "yolo_opt.training",
    "attach": "yolo_opt.training",
    "train": "yolo_opt.training",
    "prune_model": "yolo_opt.prune",
    "prune_checkpoint": "yolo_opt.training",
    "load_model": "yolo_opt.io",
    "save_model": "yolo_opt.io",
    "make_dataset": "yolo_opt.data",
    "export": "yolo_opt.deploy",
    "export_onnx": "yolo_opt.deploy",
    "build_engine": "yolo_opt.deploy",
    "make_bundle": "yolo_opt.deploy",
    "quantize_onnx": "yolo_opt.quant",
    "export_qat_onnx": "yolo_opt.quant",
    "optimize": "yolo_opt.pipeline",
    "benchmark": "yolo_opt.bench.report",
    "tune": "yolo_opt.tuning",
}

__all__ = [
    "ConfigError",
    "DataError",
    "DeployError",
    "ModelError",
    "PruneError",
    "StorageError",
    "YoloOptError",
    "__version__",
    *_LAZY,
]


def __getattr__(name):
    """Import the heavy parts only when they are used."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # cached: the next lookup does not come here
        return value
    raise AttributeError(f"module 'yolo_opt' has no attribute {name!r}")

