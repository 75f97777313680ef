"""When the trainer prunes, and by how much at each step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from yolo_opt.arch import adapter
from yolo_opt.options import PruneOptions


def prune_epochs(epochs: int, steps: int, start: int) -> list[int]:
    """Epochs at whose start each pruning step runs: spread over the run, leaving time to fine-tune after."""
    span = max(epochs - start, 1)
    gap = max(1, span // (steps + 1)) if steps > 1 else 0
    return [min(start + i * gap, epochs - 1) for i in range(steps)]


def sparsity_epochs(opts: PruneOptions, epochs: int) -> int:
    """Length of the BN-sparsity phase before the first pruning step (0 without sparsity)."""
    if not opts.sparsity:
        return 0
    return opts.sparsity_epochs or max(1, epochs // 3)


def step_fraction(final: float, step: int, steps: int) -> float:
    """Fraction of the *current* channels to remove at step `step` of `steps`, so that `final` is removed in all."""
    keep_now, keep_next = 1 - final * (step - 1) / steps, 1 - final * step / steps
    return max(0.0, 1 - keep_next / keep_now)


def step_ratio(model: nn.Module, opts: PruneOptions, run: dict[str, Any], *, step: int, steps: int, imgsz: int) -> float:
    """This step's ratio of the current channels, so that after `steps` steps the goal (prune or GFLOPs) is met."""
    from yolo_opt.prune.targets import count_macs, ratio_for_macs

    if opts.prune_target is not None:
        goal = 1 - (1 - opts.prune_target) * step / steps  # of the run's starting MACs
        current = count_macs(model, imgsz)[0] / run["base_macs"]
        return ratio_for_macs(model, min(1.0, goal / current), prune_method=opts.prune_method,
                              prune_round=opts.prune_round, prune_global=opts.prune_global)
    return step_fraction(opts.prune, step, steps)


def step_layer_ratios(model: nn.Module, opts: PruneOptions, run: dict[str, Any], *, step: int, steps: int,
                      imgsz: int, data: str | None, folder: Path) -> dict[str, float]:
    """Per-group ratios of one step. The final allocation is computed once, at the first step, from the
    sensitivity report (`sensitivity=`, or an analysis of the model before pruning saved in `folder`), and kept in
    `run` with each group's width then, so a resumed run prunes the same way.

    Each step aims at a share of the group's *starting* width, not of the current one: channel rounding
    (prune_round) can leave a narrow group unpruned at an early step (16 channels at 1/6 rounds back to 16), and
    the next steps then take what it still owes, so the last step lands on the one-shot allocation (compounding
    fractions of the current width undershoot the target: docs/benchmarks.md#pruning-in-steps)."""
    from yolo_opt.prune.allocation import run_report, sensitivity_ratios

    if "layer_ratios" not in run:
        report = run_report(model, opts, data, imgsz, folder=folder)
        start_allocation(run, model, *sensitivity_ratios(model, report, prune=opts.prune or None,
                                                         prune_target=opts.prune_target, round_to=opts.prune_round))
    return layer_step(model, run, step, steps)


def start_allocation(run: dict[str, Any], model: nn.Module, final: dict[str, float], target: float | None) -> None:
    """Record the run's final per-group ratios and each group's width before the first step."""
    adapter(model).make_prunable()  # groups are named in the split-free form pruning works on (it would do this)
    run["layer_ratios"], run["layer_ratios_target"] = final, target
    run["layer_widths"] = {name: group_width(model, name) for name in final}


def layer_step(model: nn.Module, run: dict[str, Any], step: int, steps: int) -> dict[str, float]:
    """The fraction of each group's current channels that step `step` of `steps` removes."""
    widths = run.get("layer_widths")  # absent in runs started by earlier versions: their compounding schedule
    adapter(model).make_prunable()
    if not widths:
        return {name: step_fraction(r, step, steps) for name, r in run["layer_ratios"].items()}
    return {name: max(0.0, 1 - widths[name] * (1 - r * step / steps) / group_width(model, name))
            for name, r in run["layer_ratios"].items()}


def group_width(model: nn.Module, name: str) -> int:
    """Output channels of the group whose root layer is `name` now (in a prunable model)."""
    from yolo_opt.prune.depgraph import group_root

    root = group_root(model, name)
    return int(getattr(root, "out_channels", None) or root.weight.shape[0])
