"""One pruning step of an Ultralytics detection model with torch-pruning (DepGraph), in place."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import nn

from yolo_opt.arch import adapter
from yolo_opt.errors import ConfigError, PruneError, first_line
from yolo_opt.prune.depgraph import SEARCH_IMGSZ, build_pruner, eval_mode, memory_guard, no_forward_hooks, traceable
from yolo_opt.prune.importance import NEEDS_DATA, importance


def _accumulate_gradients(model: nn.Module, batches: Iterable, loss_fn: Callable) -> None:
    model.zero_grad(set_to_none=True)  # called inside `traceable`: every channel gets a gradient to score
    seen = 0
    for batch in batches:
        loss_fn(model, batch).backward()
        seen += 1
    if not seen:
        raise PruneError("prune_method=taylor needs training batches to score channels; pass data=")


def _check_fraction(value: float, name: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
        raise ConfigError(f"{name}={value!r} is out of range; use a fraction 0 <= {name} < 1 (e.g. {name}=0.5)")
    return float(value)


def prune_model(
    model: nn.Module,
    ratio: float,
    prune_method: str = "l2",
    prune_round: int | None = 8,
    prune_global: bool = False,
    imgsz: int = SEARCH_IMGSZ,
    *,
    batches: Iterable | None = None,
    loss_fn: Callable | None = None,
    layer_ratios: dict[str, float] | None = None,
) -> nn.Module:
    """Remove `ratio` of the prunable channels of a YOLO detection model, in place.

    Args:
        model: An Ultralytics DetectionModel (made prunable here if needed).
        ratio: Fraction of channels to remove from each prunable group (global: of all), 0 <= ratio < 1.
        prune_method: Channel importance criterion (see `yolo_opt.options.PRUNE_METHODS`).
        prune_round: Keep channel counts a multiple of this (hardware efficiency); None to disable.
        prune_global: Rank channels across layers instead of the same ratio per layer.
        imgsz: Image size of the tracing input (any multiple of 32 gives the same result; small is fast).
        batches: Training batches, needed by gradient-based criteria (taylor).
        loss_fn: `loss_fn(model, batch) -> scalar loss`, needed with `batches`.
        layer_ratios: Per-group ratios that override `ratio`, keyed by the group's root layer name
            (e.g. `{"model.4.cv1": 0.6}`, as listed by `yolo_opt.prune.groups.prunable_groups`); see
            `yolo_opt.prune.allocation.allocate_ratios` for ratios from a sensitivity analysis.

    Returns:
        The same model, pruned.
    """
    _check_fraction(ratio, "prune")
    importance(prune_method)  # a clear error for an unknown criterion before any work
    adapter(model).make_prunable()
    for name, r in (layer_ratios or {}).items():
        _check_fraction(r, f"ratio of {name}")
    if ratio == 0 and not any((layer_ratios or {}).values()):
        return model
    try:
        with memory_guard("pruning"), eval_mode(model), no_forward_hooks(model), traceable(model):
            pruner = build_pruner(model, ratio, prune_method, prune_round, prune_global=prune_global,
                                  layer_ratios=layer_ratios, imgsz=imgsz)
            if prune_method in NEEDS_DATA:
                if batches is None or loss_fn is None:
                    raise PruneError(f"prune_method={prune_method} needs training data to score channels; pass data=")
                model.train()  # the training loss needs the raw head outputs
                for m in model.modules():
                    if isinstance(m, nn.BatchNorm2d):
                        m.eval()  # keep running statistics untouched while scoring
                _accumulate_gradients(model, batches, loss_fn)
                model.eval()
            pruner.step()
            model.zero_grad(set_to_none=True)
    except (PruneError, ConfigError):
        raise
    except RuntimeError as e:
        raise PruneError(f"torch-pruning could not prune this model ({first_line(e)})") from e
    model.model[-1].shape = None  # the head rebuilds its cached anchors for the new shapes
    return model
