"""GFLOPs: counting them, channel rounding, the pruning ratio that meets a GFLOPs target, and a fast estimate."""

from __future__ import annotations

import copy
import math

import torch
import torch_pruning as tp
from torch import nn

from yolo_opt.errors import PruneError
from yolo_opt.options import DEFAULT_IMGSZ
from yolo_opt.prune.depgraph import SEARCH_IMGSZ, eval_mode, example_input, n_pruned, no_forward_hooks
from yolo_opt.prune.groups import plans
from yolo_opt.prune.pruner import prune_model

# Above this, torch-pruning's per-group cap makes MACs non-monotonic in the ratio.
SEARCH_MAX_RATIO = 0.7
SEARCH_METHODS = ("l1", "l2", "bn")  # deterministic criteria: the searched ratio does not depend on data


def count_macs(model: nn.Module, imgsz: int = DEFAULT_IMGSZ) -> tuple[float, int]:
    """MACs of one forward pass at `imgsz` and the parameter count."""
    with eval_mode(model), no_forward_hooks(model), torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, example_input(model, imgsz))
    return float(macs), int(params)


def _macs_ratio_fn(model: nn.Module, prune_method: str, *, prune_round: int | None, prune_global: bool, imgsz: int):
    """ratio -> MACs of a pruned copy / MACs of `model` (magnitude criteria: cheap and deterministic)."""
    base, _ = count_macs(model, imgsz)
    search_method = prune_method if prune_method in SEARCH_METHODS else "l2"

    def macs_ratio(ratio: float) -> float:
        with no_forward_hooks(model):
            trial = copy.deepcopy(model)
        prune_model(trial, ratio, search_method, prune_round, prune_global=prune_global, imgsz=imgsz)
        return count_macs(trial, imgsz)[0] / base

    return macs_ratio


def check_reachable(target: float, floor: float, tol: float = 0.05) -> None:
    """Raise PruneError when the smallest reachable GFLOPs ratio `floor` is above `target` (+`tol`)."""
    if floor > target * (1 + tol):
        raise PruneError(
            f"prune_target={target} is not reachable: the most pruning searched ({SEARCH_MAX_RATIO}) keeps "
            f"{floor:.2f}x GFLOPs; ask for prune_target >= {math.ceil(floor * 100) / 100:.2f}"
        )


def min_macs_ratio(model: nn.Module, prune_round: int | None = 8, prune_global: bool = False,
                   imgsz: int = SEARCH_IMGSZ) -> float:
    """The smallest GFLOPs ratio pruning can reach on `model` (at the search's largest ratio)."""
    return _macs_ratio_fn(model, "l2", prune_round=prune_round, prune_global=prune_global, imgsz=imgsz)(SEARCH_MAX_RATIO)


def ratio_for_macs(
    model: nn.Module,
    target: float,
    *,
    prune_method: str = "l2",
    prune_round: int | None = 8,
    prune_global: bool = False,
    tol: float = 0.05,
    imgsz: int = SEARCH_IMGSZ,
) -> float:
    """Find the smallest pruning ratio that brings MACs to at most `target` x the model's MACs (+`tol` relative).

    Channel rounding makes MACs a step function of the ratio, so the target is met within `tol`. The ratio is
    searched at `SEARCH_IMGSZ` (a GFLOPs ratio does not depend on the image size). The search ranks channels by
    magnitude (cheap, deterministic); the chosen ratio is then applied with the requested criterion.

    Raises:
        PruneError: The target cannot be reached.
    """
    if target >= 1:
        return 0.0
    macs_ratio = _macs_ratio_fn(model, prune_method, prune_round=prune_round, prune_global=prune_global, imgsz=imgsz)
    lo, hi = 0.0, SEARCH_MAX_RATIO
    check_reachable(target, macs_ratio(hi), tol)
    for _ in range(10):
        mid = (lo + hi) / 2
        if macs_ratio(mid) <= target * (1 + tol):
            hi = mid
        else:
            lo = mid
    return hi


class MacsModel:
    """Fast GFLOPs estimate of a model pruned with per-group ratios (no tracing per candidate).

    For each group it records how many input/output channels of each conv one root channel takes away, and
    each conv's output size; MACs of a candidate are then sum(k*k*H*W*in*out/groups) with the reduced widths.
    """

    def __init__(self, model: nn.Module, round_to: int | None, imgsz: int = SEARCH_IMGSZ):
        """Trace `model` once (on a copy) at `imgsz`; `round_to` is the channel rounding used when pruning."""
        self.round_to = round_to
        net = copy.deepcopy(model).float().eval()
        planned, _ = plans(net, 0.5, "l2", None, imgsz=imgsz)  # half of each group: how channels couple across layers
        self.groups = {name: channels for name, channels, _ in planned}
        self.share: dict[str, dict[tuple[str, str], float]] = {}
        for name, channels, items in planned:
            n_root = n_pruned(channels, 0.5, None)
            shares: dict[tuple[str, str], float] = {}
            for layer, kind, idxs in items:
                if isinstance(net.get_submodule(layer), nn.Conv2d):
                    shares[(layer, kind)] = shares.get((layer, kind), 0) + len(idxs) / max(n_root, 1)
            self.share[name] = shares
        self.convs: dict[str, tuple[nn.Conv2d, int]] = {}
        self.input_hw: dict[str, tuple[int, int]] = {}  # each conv's input size at `imgsz` (the latency table's key)
        self.imgsz = imgsz

        def record(mod: nn.Conv2d, inp: tuple[torch.Tensor, ...], out: torch.Tensor, lname: str) -> None:
            self.convs[lname] = (mod, out.shape[-1] * out.shape[-2])
            self.input_hw[lname] = (int(inp[0].shape[-2]), int(inp[0].shape[-1]))

        hooks = []
        for lname, m in net.named_modules():
            if isinstance(m, nn.Conv2d):
                hooks.append(m.register_forward_hook(lambda mod, inp, out, lname=lname: record(mod, inp, out, lname)))
        with torch.no_grad():
            net(example_input(net, imgsz))
        for h in hooks:
            h.remove()
        # a conv whose block applies an activation after it (Ultralytics' Conv: conv, bn, act): exported as one more op
        self.activated = {}
        for lname in self.convs:
            parent = net.get_submodule(lname.rpartition(".")[0]) if "." in lname else net
            act = getattr(parent, "act", None) if getattr(parent, "conv", None) is self.convs[lname][0] else None
            self.activated[lname] = isinstance(act, nn.Module) and not isinstance(act, nn.Identity)
        self.base = self.macs({})

    def widths(self, ratios: dict[str, float]) -> dict[str, tuple[float, float]]:
        """Each conv's (input, output) channels with group `name` pruned at `ratios[name]` (0 for the rest)."""
        cut: dict[tuple[str, str], float] = {}
        for name, r in ratios.items():
            n = n_pruned(self.groups[name], r, self.round_to) if r > 0 else 0
            for key, share in self.share.get(name, {}).items():
                cut[key] = cut.get(key, 0.0) + n * share
        return {lname: (conv.in_channels - cut.get((lname, "in"), 0.0), conv.out_channels - cut.get((lname, "out"), 0.0))
                for lname, (conv, _) in self.convs.items()}

    def prunable_sides(self) -> dict[str, tuple[bool, bool]]:
        """Per conv: whether pruning changes its (input, output) channels."""
        keys = {key for shares in self.share.values() for key in shares}
        return {lname: ((lname, "in") in keys, (lname, "out") in keys) for lname in self.convs}

    def macs(self, ratios: dict[str, float]) -> float:
        """Conv MACs with group `name` pruned at `ratios[name]` (0 for the rest)."""
        widths = self.widths(ratios)
        total = 0.0
        for lname, (conv, hw) in self.convs.items():
            cin, cout = widths[lname]
            k = conv.kernel_size[0] * conv.kernel_size[1]
            if conv.groups > 1 and conv.groups == conv.in_channels:  # depthwise: one input per output
                total += k * hw * cout
            else:
                total += k * hw * cin * cout / conv.groups
        return total

    def ratio(self, ratios: dict[str, float]) -> float:
        """MACs of the candidate / MACs of the unpruned model."""
        return self.macs(ratios) / self.base
