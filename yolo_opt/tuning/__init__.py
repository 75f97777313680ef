"""Compression search on Optuna: mAP vs latency (or GFLOPs) over the `yolo-opt train` keys.

    storage  the RDB storage (SQLite default, PostgreSQL to share a study), heartbeats, redacted errors
    space    what a trial draws
    study    one trial (train + measure) and the resumable study
    report   Pareto table/plot, summary, recipe YAMLs
"""

from yolo_opt.tuning.storage import open_storage
from yolo_opt.tuning.study import tune

__all__ = ["open_storage", "tune"]
