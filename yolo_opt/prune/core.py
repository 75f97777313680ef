"""Structured channel pruning of Ultralytics detection models with torch-pruning (DepGraph)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from contextlib import contextmanager

import torch
import torch_pruning as tp
from torch import nn
from ultralytics.nn.modules import Attention, Detect

from yolo_opt.errors import ConfigError, PruneError
from yolo_opt.prune.blocks import make_prunable

PRUNE_METHODS = {
    "l2": "group L2 magnitude of the weights of each channel group",
    "l1": "group L1 magnitude of the weights of each channel group",
    "bn": "BatchNorm scale |gamma| (network slimming; pair with sparsity=)",
    "taylor": "first-order Taylor |w * dL/dw| on training batches (needs data)",
    "random": "random channels (a baseline for comparisons)",
}

# Above this, torch-pruning's per-group cap makes MACs non-monotonic in the ratio.
SEARCH_MAX_RATIO = 0.7

# Detection heads other than plain boxes (Segment, Pose, OBB, ...) subclass Detect.
_SUPPORTED_HEADS = (Detect,)


def check_detection_model(model: nn.Module) -> Detect:
    """Return the detection head, or raise if `model` is not an Ultralytics detection model."""
    layers = getattr(model, "model", None)
    if not isinstance(layers, nn.Sequential) or not len(layers):
        raise PruneError(f"{type(model).__name__} is not an Ultralytics YOLO model; pass a YOLO detection .pt")
    head = layers[-1]
    if type(head) not in _SUPPORTED_HEADS:
        task = getattr(model, "task", type(head).__name__)
        raise PruneError(f"only detection models can be pruned (this is a '{task}' model with a {type(head).__name__} head)")
    return head


def ignored_layers(model: nn.Module) -> list[nn.Module]:
    """Layers whose output channels stay intact: head output convs, DFL, and attention (qkv is head-shaped)."""
    head = check_detection_model(model)
    ignored: list[nn.Module] = [head.dfl] if isinstance(head.dfl, nn.Module) else []
    for branches in (head.cv2, head.cv3, getattr(head, "one2one_cv2", None), getattr(head, "one2one_cv3", None)):
        if branches is not None:
            ignored.extend(seq[-1] for seq in branches)
    ignored.extend(m for m in model.modules() if isinstance(m, Attention))
    return ignored


def _importance(method: str):
    if method == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if method == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if method == "bn":
        return tp.importance.BNScaleImportance()
    if method == "taylor":
        return tp.importance.GroupTaylorImportance()
    if method == "random":
        return tp.importance.RandomImportance()
    raise ConfigError(f"unknown prune_method '{method}'; choose one of: {', '.join(PRUNE_METHODS)}")


@contextmanager
def _eval_mode(model: nn.Module):
    """Trace and measure in eval mode (no BN statistics updates), then restore each module's mode."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.train(mode)


@contextmanager
def _no_forward_hooks(model: nn.Module):
    """Detach forward hooks (e.g. a distillation wrapper's feature capture) while the model is copied or traced."""
    from collections import OrderedDict

    saved = {m: m._forward_hooks for m in model.modules() if m._forward_hooks}
    for m in saved:
        m._forward_hooks = OrderedDict()
    try:
        yield model
    finally:
        for m, hooks in saved.items():
            m._forward_hooks = hooks


@contextmanager
def traceable(model: nn.Module):
    """Every float parameter requires grad while tracing, then restored.

    DepGraph follows autograd: in a released (frozen) checkpoint the first layers, reached only by an input that
    needs no grad, are invisible to it and form no group (yolov8n: model.0 and model.1). The trainer's model is
    trainable, so tracing this way gives the groups the trainer sees.
    """
    params = [p for p in model.parameters() if p.is_floating_point()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    try:
        yield model
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


def _example_input(model: nn.Module, imgsz: int) -> torch.Tensor:
    p = next(model.parameters())
    ch = getattr(model, "yaml", {}).get("ch", 3) if isinstance(getattr(model, "yaml", None), dict) else 3
    return torch.rand(1, ch, imgsz, imgsz, device=p.device, dtype=p.dtype)


def _forward_outputs(model: nn.Module, x: torch.Tensor):
    out = model(x)
    return out[0] if isinstance(out, (tuple, list)) else out


def count_macs(model: nn.Module, imgsz: int = 640) -> tuple[float, int]:
    """MACs of one forward pass at `imgsz` and the parameter count."""
    with _eval_mode(model), _no_forward_hooks(model), torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, _example_input(model, imgsz))
    return float(macs), int(params)


class _NearestRoundPruner(tp.pruner.MetaPruner):
    """MetaPruner that rounds kept channels to the *nearest* multiple of `round_to` (torch-pruning floors it).

    Flooring keeps 8 of 16 channels at a 25% ratio; nearest-rounding keeps the achieved ratio close to the
    asked one, so GFLOPs targets can be met precisely while channel counts stay hardware friendly.
    """

    def _round_to(self, n_pruned, current_channels, round_to):
        kept = current_channels - n_pruned
        kept = max(round_to, int(round(kept / round_to)) * round_to)
        return max(current_channels - min(kept, current_channels), 0)


def group_root(model: nn.Module, name: str) -> nn.Module:
    """The torch-pruning root layer named `name` (an Ultralytics `Conv` wrapper resolves to its `nn.Conv2d`)."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise PruneError(
            f"layer '{name}' is not in this model; per-layer ratios (sensitivity=) must come from the same model"
        ) from None
    return module.conv if isinstance(getattr(module, "conv", None), nn.Conv2d) else module


def _build_pruner(
    model: nn.Module,
    ratio: float,
    method: str,
    round_to: int | None,
    global_pruning: bool,
    imgsz: int,
    layer_ratios: dict[str, float] | None = None,
) -> tp.pruner.MetaPruner:
    ratio_dict = {group_root(model, name): float(r) for name, r in (layer_ratios or {}).items()}
    return _NearestRoundPruner(
        model,
        _example_input(model, imgsz),
        importance=_importance(method),
        pruning_ratio=ratio,
        global_pruning=global_pruning,
        max_pruning_ratio=0.9,
        ignored_layers=ignored_layers(model),
        round_to=round_to,
        forward_fn=_forward_outputs,
        pruning_ratio_dict=ratio_dict or None,
    )


def _accumulate_gradients(model: nn.Module, batches: Iterable, loss_fn: Callable) -> None:
    model.zero_grad(set_to_none=True)  # called inside `traceable`: every channel gets a gradient to score
    seen = 0
    for batch in batches:
        loss_fn(model, batch).backward()
        seen += 1
    if not seen:
        raise PruneError("prune_method=taylor needs training batches to score channels; pass data=")


def prune_model(
    model: nn.Module,
    ratio: float,
    method: str = "l2",
    round_to: int | None = 8,
    global_pruning: bool = False,
    imgsz: int = 640,
    batches: Iterable | None = None,
    loss_fn: Callable | None = None,
    layer_ratios: dict[str, float] | None = None,
) -> nn.Module:
    """Remove `ratio` of the prunable channels of a YOLO detection model, in place.

    Args:
        model: An Ultralytics DetectionModel (made prunable here if needed).
        ratio: Fraction of channels to remove from each prunable group (global: of all), 0 <= ratio < 1.
        method: Channel importance criterion, one of PRUNE_METHODS.
        round_to: Keep channel counts a multiple of this (hardware efficiency); None to disable.
        global_pruning: Rank channels across layers instead of the same ratio per layer.
        imgsz: Image size of the tracing input.
        batches: Training batches, needed by gradient-based criteria (taylor).
        loss_fn: `loss_fn(model, batch) -> scalar loss`, needed with `batches`.
        layer_ratios: Per-group ratios that override `ratio`, keyed by the group's root layer name
            (e.g. `{"model.4.cv1": 0.6}`, as listed by `yolo_opt.prune.sensitivity.prunable_groups`); see
            `yolo_opt.prune.sensitivity.allocate_ratios` for ratios from a sensitivity analysis.

    Returns:
        The same model, pruned.
    """
    check_ratio(ratio, "prune")
    if method not in PRUNE_METHODS:
        _importance(method)  # raises the clear error
    check_detection_model(model)
    make_prunable(model)
    for name, r in (layer_ratios or {}).items():
        check_ratio(r, f"ratio of {name}")
    if ratio == 0 and not any((layer_ratios or {}).values()):
        return model
    try:
        with _eval_mode(model), _no_forward_hooks(model), traceable(model):
            pruner = _build_pruner(model, ratio, method, round_to, global_pruning, imgsz, layer_ratios)
            if method == "taylor":
                if batches is None or loss_fn is None:
                    raise PruneError("prune_method=taylor needs training data to score channels; pass data=")
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
        raise PruneError(f"torch-pruning could not prune this model ({str(e).splitlines()[0][:200]})") from e
    _refresh_head(model)
    return model


def _refresh_head(model: nn.Module) -> None:
    """Reset cached anchors so the head rebuilds them for the new shapes."""
    head = model.model[-1]
    head.shape = None


def check_ratio(ratio: float, name: str = "prune") -> float:
    """Validate a pruning fraction in [0, 1)."""
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 <= ratio < 1:
        raise ConfigError(f"{name}={ratio!r} is out of range; use a fraction 0 <= {name} < 1 (e.g. {name}=0.5)")
    return float(ratio)


def _macs_ratio_fn(model: nn.Module, method: str, round_to: int | None, global_pruning: bool, imgsz: int):
    """ratio -> MACs of a pruned copy / MACs of `model` (magnitude criteria: cheap and deterministic)."""
    base, _ = count_macs(model, imgsz)
    search_method = method if method in {"l1", "l2", "bn"} else "l2"

    def macs_ratio(ratio: float) -> float:
        with _no_forward_hooks(model):
            trial = copy.deepcopy(model)
        prune_model(trial, ratio, search_method, round_to, global_pruning, imgsz)
        return count_macs(trial, imgsz)[0] / base

    return macs_ratio


def check_reachable(target: float, floor: float, tol: float = 0.05) -> None:
    """Raise PruneError when the smallest reachable GFLOPs ratio `floor` is above `target` (+`tol`)."""
    if floor > target * (1 + tol):
        raise PruneError(
            f"prune_target={target} is not reachable: the most pruning searched ({SEARCH_MAX_RATIO}) keeps "
            f"{floor:.2f}x GFLOPs; ask for prune_target >= {math.ceil(floor * 100) / 100:.2f}"
        )


def min_macs_ratio(model: nn.Module, round_to: int | None = 8, global_pruning: bool = False, imgsz: int = 128) -> float:
    """The smallest GFLOPs ratio pruning can reach on `model` (at the search's largest ratio)."""
    return _macs_ratio_fn(model, "l2", round_to, global_pruning, imgsz)(SEARCH_MAX_RATIO)


def ratio_for_macs(
    model: nn.Module,
    target: float,
    method: str = "l2",
    round_to: int | None = 8,
    global_pruning: bool = False,
    tol: float = 0.05,
    imgsz: int = 128,
) -> float:
    """Find the smallest pruning ratio that brings MACs to at most `target` x the model's MACs (+`tol` relative).

    Channel rounding makes MACs a step function of the ratio, so the target is met within `tol`. Convolution
    MACs scale with the image area, so the ratio is searched at a small `imgsz`. The search ranks channels by
    magnitude (cheap, deterministic); the chosen ratio is then applied with the requested criterion.

    Raises:
        PruneError: The target cannot be reached.
    """
    if target >= 1:
        return 0.0
    macs_ratio = _macs_ratio_fn(model, method, round_to, global_pruning, imgsz)
    lo, hi = 0.0, SEARCH_MAX_RATIO
    check_reachable(target, macs_ratio(hi), tol)
    for _ in range(10):
        mid = (lo + hi) / 2
        if macs_ratio(mid) <= target * (1 + tol):
            hi = mid
        else:
            lo = mid
    return hi
