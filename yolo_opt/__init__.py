"""yolo-opt: prune, quantize and deploy Ultralytics YOLO detectors for edge GPUs."""

__version__ = "0.1.0"

from yolo_opt.errors import ConfigError, DataError, DeployError, ModelError, PruneError, YoloOptError  # noqa: E402

# public name -> module that defines it (imported on first use: torch and Ultralytics load only when needed)
_LAZY = {
    "attach": "yolo_opt.callbacks",
    "train": "yolo_opt.callbacks",
    "prune_model": "yolo_opt.prune",
    "prune_checkpoint": "yolo_opt.prune",
    "load_model": "yolo_opt.prune",
    "make_dataset": "yolo_opt.data",
    "export": "yolo_opt.deploy",
    "export_onnx": "yolo_opt.deploy",
    "quantize_onnx": "yolo_opt.deploy",
    "build_engine": "yolo_opt.deploy",
    "make_bundle": "yolo_opt.deploy",
    "export_qat_onnx": "yolo_opt.quant",
    "optimize": "yolo_opt.pipeline",
    "benchmark": "yolo_opt.bench.report",
}

__all__ = [
    "ConfigError",
    "DataError",
    "DeployError",
    "ModelError",
    "PruneError",
    "YoloOptError",
    "__version__",
    *_LAZY,
]


def __getattr__(name):
    """Import the heavy parts only when they are used."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'yolo_opt' has no attribute {name!r}")
