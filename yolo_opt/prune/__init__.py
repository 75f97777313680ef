"""Structured channel pruning (torch-pruning DepGraph) for Ultralytics YOLO detection models."""

from yolo_opt.prune.blocks import C2fSplit, C2PSASplit, make_prunable
from yolo_opt.prune.core import (
    PRUNE_METHODS,
    check_detection_model,
    check_ratio,
    count_macs,
    ignored_layers,
    prune_model,
    ratio_for_macs,
)
from yolo_opt.prune.io import load_model, prune_checkpoint, save_model

__all__ = [
    "PRUNE_METHODS",
    "C2PSASplit",
    "C2fSplit",
    "check_detection_model",
    "check_ratio",
    "count_macs",
    "ignored_layers",
    "load_model",
    "make_prunable",
    "prune_checkpoint",
    "prune_model",
    "ratio_for_macs",
    "save_model",
]
