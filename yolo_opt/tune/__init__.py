"""Optuna compression search: mAP vs latency/GFLOPs over pruning and fine-tuning hyperparameters."""

from yolo_opt.tune.study import OBJECTIVES, StorageError, open_storage, report, suggest, tune

__all__ = ["OBJECTIVES", "StorageError", "open_storage", "report", "suggest", "tune"]
