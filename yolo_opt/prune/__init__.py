"""Structured channel pruning (torch-pruning DepGraph) for Ultralytics YOLO detection models.

    blocks       split-free twins of C2f/C3k2/C2PSA (their `chunk` hides dependencies from DepGraph)
    importance   the criteria (`prune_method`) registry
    depgraph     the torch-pruning pruner, channel rounding, what is left alone, tracing (at SEARCH_IMGSZ)
    groups       the channel groups: what the pruner would remove from each, their names, masking one
    pruner       one pruning step, in place (`prune_model`)
    targets      GFLOPs counting, the ratio for a GFLOPs target, a fast estimate
    sensitivity  per-group sensitivity analysis; report: its JSON/table/plot; allocation: ratios from it (for a
                 GFLOPs target, or for any measured cost: the latency of `prune_latency=`)

The verbs that prune a checkpoint (`yolo_opt.training`: `train`, `prune_checkpoint`) sit above measurement
(`yolo_opt.bench`), since a latency target or `round_for=` is decided by timing pruned copies.
"""

from yolo_opt.prune.blocks import C2fSplit, C2PSASplit, make_prunable
from yolo_opt.prune.depgraph import ignored_layers
from yolo_opt.prune.groups import prunable_groups
from yolo_opt.prune.pruner import prune_model
from yolo_opt.prune.targets import count_macs, ratio_for_macs

__all__ = [
    "C2PSASplit",
    "C2fSplit",
    "count_macs",
    "ignored_layers",
    "make_prunable",
    "prunable_groups",
    "prune_model",
    "ratio_for_macs",
]
