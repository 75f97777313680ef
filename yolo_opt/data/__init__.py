"""Deterministic generated detection dataset in Ultralytics format (the embedded default)."""

from yolo_opt.data.generate import CLASS_NAMES, make_dataset

__all__ = ["CLASS_NAMES", "make_dataset"]
