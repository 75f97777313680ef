"""Structured channel pruning (torch-pruning DepGraph) for Ultralytics YOLO detection models.

    blocks       split-free twins of C2f/C3k2/C2PSA (their `chunk` hides dependencies from DepGraph)
    groups       what may be pruned, how groups are found and named, masking a group
    importance   the criteria (`prune_method`) registry
    pruner       one pruning step, in place (`prune_model`)
    targets      GFLOPs counting, channel rounding, the ratio for a GFLOPs target, a fast estimate
    oneshot      checkpoint -> pruned checkpoint (`prune_checkpoint`)
    sensitivity  per-group sensitivity analysis; report: its JSON/table/plot; allocation: ratios from it
"""

from yolo_opt.prune.blocks import C2fSplit, C2PSASplit, make_prunable
from yolo_opt.prune.groups import ignored_layers, prunable_groups
from yolo_opt.prune.oneshot import prune_checkpoint
from yolo_opt.prune.pruner import prune_model
from yolo_opt.prune.targets import count_macs, ratio_for_macs

__all__ = [
    "C2PSASplit",
    "C2fSplit",
    "count_macs",
    "ignored_layers",
    "make_prunable",
    "prunable_groups",
    "prune_checkpoint",
    "prune_model",
    "ratio_for_macs",
]
