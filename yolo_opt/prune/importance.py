"""Channel importance criteria: `prune_method` name -> torch-pruning importance object (the one registry)."""

from __future__ import annotations

from collections.abc import Callable

import torch_pruning as tp

from yolo_opt.errors import ConfigError
from yolo_opt.options import NEEDS_DATA, PRUNE_METHODS

IMPORTANCE: dict[str, Callable[[], tp.importance.Importance]] = {
    "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
    "bn": tp.importance.BNScaleImportance,
    "taylor": tp.importance.GroupTaylorImportance,
    "random": tp.importance.RandomImportance,
}
assert set(IMPORTANCE) == set(PRUNE_METHODS), "every prune_method needs an importance object"
DATA_FREE = tuple(m for m in PRUNE_METHODS if m not in NEEDS_DATA)


def importance(method: str) -> tp.importance.Importance:
    """A fresh importance object for `method`."""
    if method not in IMPORTANCE:
        raise ConfigError(f"unknown prune_method '{method}'; choose one of: {', '.join(PRUNE_METHODS)}")
    return IMPORTANCE[method]()
