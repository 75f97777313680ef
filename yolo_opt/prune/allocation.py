"""Per-group pruning ratios allocated from a sensitivity report ("equal damage"), for a GFLOPs target."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from torch import nn

from yolo_opt.arch import adapter
from yolo_opt.errors import ConfigError, PruneError
from yolo_opt.options import PruneOptions, SensitivityOptions
from yolo_opt.prune.depgraph import SEARCH_IMGSZ
from yolo_opt.prune.sensitivity import SENS_METRICS
from yolo_opt.prune.targets import MacsModel

# Damage per unit ratio added to every group's curve in the allocation: a tie-break for flat (noise-level) curves.
TIE_BREAK = 0.005
# The analysis behind per-layer ratios scores val images at the run's size up to this (head-output change: a model
# trained at 640 px scored at 320 ranks its groups alike, at a quarter of the cost).
ANALYSIS_IMGSZ = 320


def load_sensitivity(path: str | Path) -> dict[str, Any]:
    """Read a `sensitivity.json` written by `layer_sensitivity` (clear error when missing or malformed)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"sensitivity file not found: {path}; make one with 'yolo-opt sensitivity model=... data=...'")
    try:
        report = json.loads(path.read_text())
        usable = isinstance(report["groups"], dict) and bool(report["ratios"]) and "baseline" in report
    except (ValueError, KeyError, TypeError):
        usable = False
    if not usable:
        raise ConfigError(f"{path} is not a sensitivity report written by 'yolo-opt sensitivity'")
    return report


def run_report(model: nn.Module, opts: PruneOptions, data: str | Path | None, imgsz: int, *,
               folder: Path | None = None) -> dict[str, Any]:
    """The sensitivity report behind per-layer ratios: `opts.sensitivity` when given, else the one in `folder`
    (a resumed run made it), else a new analysis of `model` written to `folder`.

    A new analysis is scored by the head-output change (`score=err`: a forward pass of 16 val images per case, no
    validator: docs/benchmarks.md#sensitivity-score) at `imgsz` up to ANALYSIS_IMGSZ.
    """
    from yolo_opt.prune.report import write_sensitivity_report
    from yolo_opt.prune.sensitivity import check_method, layer_sensitivity

    if opts.sensitivity:
        return load_sensitivity(opts.sensitivity)
    if folder is not None and (folder / "sensitivity.json").exists():
        return load_sensitivity(folder / "sensitivity.json")
    if not data:
        raise ConfigError("per-layer ratios (prune_ratios=sensitivity) are allocated from the val images: pass "
                          "data=data.yaml, sensitivity=report.json, or prune_ratios=uniform")
    check_method(opts.prune_method)
    report = {"model": "the model before pruning", **layer_sensitivity(
        model, data, SensitivityOptions(score="err"), min(imgsz, ANALYSIS_IMGSZ), prune_method=opts.prune_method,
        prune_round=opts.prune_round)}
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        write_sensitivity_report(report, folder)
    return report


def macs_estimate(model: nn.Module, round_to: int | None, imgsz: int = SEARCH_IMGSZ) -> MacsModel:
    """The analytic GFLOPs estimate of a prunable copy of `model` (`model` is not changed)."""
    net = copy.deepcopy(model).float().eval()
    adapter(net).make_prunable()
    return MacsModel(net, round_to, imgsz)


def check_allocatable(estimate: MacsModel, target: float, r_max: float, tol: float = 0.01) -> None:
    """Per-layer ratios stop at the largest measured ratio `r_max`: refuse a `target` that needs more."""
    floor = estimate.ratio(dict.fromkeys(estimate.groups, r_max))
    if floor > target * (1 + tol):
        raise PruneError(
            f"a GFLOPs target of {target:.3g}x needs more than ratio {r_max} in some groups (per-layer ratios up to "
            f"{r_max} keep {floor:.2f}x); measure larger ratios ('yolo-opt sensitivity ratios=...,0.9' and "
            f"sensitivity=), ask for a larger target, or use prune_ratios=uniform"
        )


def choose_metric(report: dict[str, Any], metric: str = "auto") -> str:
    """'auto': the task's mAP50-95 (masks' for segmentation) when the report has a usable one (>= 0.05), else the
    head-output change `err`."""
    if metric == "auto":
        primary = report.get("primary", "map")
        return primary if report["baseline"].get(primary, 0.0) >= 0.05 else "err"
    if metric not in SENS_METRICS:
        raise ConfigError(f"unknown sensitivity metric '{metric}'; choose one of: auto, {', '.join(SENS_METRICS)}")
    if metric not in report["baseline"]:
        raise ConfigError(f"this sensitivity report was scored by {report.get('score', 'err')} only, not {metric}; "
                          f"make it again with score=map")
    return metric


def damage_curves(report: dict[str, Any], metric: str) -> dict[str, tuple[list[float], list[float]]]:
    """Per group: (ratios, damage) with damage(0)=0, non-negative and non-decreasing (running max)."""
    curves = {}
    for name, row in report["groups"].items():
        values = row[metric]
        raw = values if metric == "err" else [report["baseline"][metric] - v for v in values]
        damage, worst = [0.0], 0.0
        for d in raw:
            worst = max(worst, float(d), 0.0)
            damage.append(worst)
        curves[name] = ([0.0, *report["ratios"]], damage)
    return curves


def _ratio_at(ratios: list[float], damage: list[float], tau: float, eps: float) -> float:
    """Largest r with damage(r) + eps*r <= tau (piecewise-linear damage; the left side is strictly increasing)."""
    cost = [d + eps * r for r, d in zip(ratios, damage, strict=True)]
    if tau >= cost[-1]:
        return ratios[-1]
    for i in range(1, len(ratios)):
        if tau < cost[i]:
            r0, r1, c0, c1 = ratios[i - 1], ratios[i], cost[i - 1], cost[i]
            return r0 + (r1 - r0) * (tau - c0) / (c1 - c0)
    return ratios[-1]


def _ratio_cost(ratios: list[float], damage: list[float], eps: float):
    """r -> interpolated damage(r) + eps*r."""

    def cost(r: float) -> float:
        for i in range(1, len(ratios)):
            if r <= ratios[i]:
                t = (r - ratios[i - 1]) / (ratios[i] - ratios[i - 1])
                return damage[i - 1] + t * (damage[i] - damage[i - 1]) + eps * r
        return damage[-1] + eps * r

    return cost


def allocate_ratios(
    report: dict[str, Any],
    model: nn.Module,
    target: float,
    imgsz: int = SEARCH_IMGSZ,
    round_to: int | None = 8,
    metric: str = "auto",
    tol: float = 0.01,
) -> dict[str, float]:
    """Per-group pruning ratios from a sensitivity report that bring GFLOPs to `target` x the model's.

    Allocation rule ("equal damage"): each group's measured damage curve d_g(r) (mAP drop after pruning the
    group alone at ratio r, clipped at 0, made non-decreasing, linear between measured ratios, d_g(0)=0) gets a
    small tie-break slope, c_g(r) = d_g(r) + eps*r with eps = TIE_BREAK / r_max. For a damage level tau every
    group is pruned at the largest ratio whose cost stays <= tau, r_g(tau), capped at the largest measured ratio
    r_max (nothing beyond what was measured). tau is raised (bisection) until the estimated GFLOPs meet the
    target; groups that channel rounding makes flip together are then moved one at a time (least damage first)
    so the estimate lands just under the target. So every group is pruned to the same predicted accuracy cost:
    insensitive groups lose many channels, sensitive groups few. Drops below the noise tolerance behave like equal sensitivity, and with equal curves
    (e.g. all zero) the rule gives the same ratio to every group, i.e. uniform pruning.

    Args:
        report: A `layer_sensitivity` report (e.g. from `load_sensitivity`); it must cover this model's groups.
        model: The model to prune (made prunable here if needed; not modified).
        target: GFLOPs to keep, as a fraction of the model's (0 < target <= 1).
        imgsz: Image size of the (fast, analytic) GFLOPs estimate (the ratio does not depend on it).
        round_to: Channel rounding used when pruning.
        metric: 'auto' (mAP50-95, or the output change `err` when the baseline mAP is < 0.05), 'map', 'map50', 'err'.
        tol: Relative tolerance on the target (channel rounding makes GFLOPs a step function).

    Returns:
        {group root name: ratio} for `prune_model(..., layer_ratios=...)`.

    Raises:
        PruneError: The report does not match the model, or the target needs more than the measured ratios.
    """
    estimate = macs_estimate(model, round_to, imgsz)
    missing = sorted(set(estimate.groups) - set(report["groups"]))
    if missing:
        raise PruneError(
            f"the sensitivity report does not cover {len(missing)} prunable group(s) of this model "
            f"(e.g. {missing[0]}); run 'yolo-opt sensitivity' on this model (without groups=)"
        )
    metric = choose_metric(report, metric)
    curves = {n: c for n, c in damage_curves(report, metric).items() if n in estimate.groups}
    r_max = max(report["ratios"])
    eps = TIE_BREAK / r_max

    def ratios_at(tau: float) -> dict[str, float]:
        return {n: round(_ratio_at(r, d, tau, eps), 4) for n, (r, d) in curves.items()}

    check_allocatable(estimate, target, r_max, tol)  # at the highest damage level every group is at r_max
    hi = max(d[-1] + eps * r[-1] for r, d in curves.values())
    lo = 0.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if estimate.ratio(ratios_at(mid)) <= target * (1 + tol):
            hi = mid
        else:
            lo = mid
    # Channel rounding makes groups with equal curves flip together between lo and hi (a GFLOPs jump well below
    # the target): move them from their lo to their hi ratio one at a time, least damage first, until it is met.
    below, above = ratios_at(hi), ratios_at(lo)
    cost = {n: _ratio_cost(r, d, eps) for n, (r, d) in curves.items()}
    moves = sorted((n for n in below if below[n] != above[n]), key=lambda n: (cost[n](below[n]) - cost[n](above[n]), n))
    chosen = dict(above)
    for name in moves:
        if estimate.ratio(chosen) <= target * (1 + tol):
            break
        chosen[name] = below[name]
    return chosen


def sensitivity_ratios(
    model: nn.Module,
    sensitivity: str | Path | dict,
    *,
    prune: float | None = None,
    prune_target: float | None = None,
    round_to: int | None = 8,
) -> tuple[dict[str, float], float]:
    """Per-group ratios for the GFLOPs of `prune_target`, or of uniform pruning at `prune`.

    Returns:
        (ratios by group name, the GFLOPs target used).
    """
    report = sensitivity if isinstance(sensitivity, dict) else load_sensitivity(sensitivity)
    if prune_target is None:
        if not prune:
            return {}, 1.0
        estimate = macs_estimate(model, round_to)
        prune_target = estimate.ratio(dict.fromkeys(estimate.groups, prune))
    return allocate_ratios(report, model, prune_target, round_to=round_to), prune_target




def width_levels(channels: int, r_max: float, round_to: int | None) -> list[float]:
    """The ratios at which a `channels`-wide group keeps each width pruning can leave it (multiples of `round_to`,
    down to a cut of `r_max`), lightest cut first; each ratio sits half a channel inside its width, so the pruner's
    own rounding (`n_pruned`) lands on it exactly."""
    step = round_to or 1
    kept = [k for k in range(channels - channels % step or channels, 0, -step)
            if k < channels and 1 - k / channels <= r_max + 1e-9]
    kept = kept[::max(1, -(-len(kept) // 32))]  # at most 32 widths a group (prune_round=1: one per channel)
    return [0.0] + [1 - (k + 0.5) / channels for k in kept]


def allocate_for_cost(report: dict[str, Any] | None, estimate: MacsModel, cost, target: float, *,
                      metric: str = "auto", r_max: float | None = None) -> dict[str, float]:
    """Per-group ratios whose `cost` (e.g. a predicted latency) is at most `target` x the unpruned model's.

    Greedy on measured damage per unit of cost saved (the knapsack rule HALP uses, with time as the weight): from the
    unpruned model, every round moves one group one width down (to the next width that saves any cost), the group
    whose move adds the least damage (its sensitivity curve, plus a `TIE_BREAK` term growing with the square of the
    ratio) per millisecond saved, until the target is met. A layer whose channels buy little time (a memory-bound
    convolution on a large map) is cut late, however cheap its GFLOPs; among flat (noise-level) curves the cut
    spreads, heavier where time per channel is larger. Without a `report` every group has the same flat curve.

    Args:
        report: A sensitivity report covering the model's groups, or None (time alone).
        estimate: The model's channel geometry (`macs_estimate`).
        cost: ratios -> cost of the model pruned at them (`{}`: unpruned).
        target: Cost to keep, as a fraction of the unpruned model's.
        r_max: Largest ratio of any group (default: the report's largest measured ratio, else 0.75).

    Raises:
        PruneError: The target needs more than `r_max` in every group.
    """
    if report is not None:
        missing = sorted(set(estimate.groups) - set(report["groups"]))
        if missing:
            raise PruneError(f"the sensitivity report does not cover {len(missing)} prunable group(s) of this model "
                             f"(e.g. {missing[0]}); run 'yolo-opt sensitivity' on this model (without groups=)")
        metric = choose_metric(report, metric)
        r_max = r_max or max(report["ratios"])
        curves = {n: c for n, c in damage_curves(report, metric).items() if n in estimate.groups}
    else:
        r_max = r_max or 0.75
        curves = {n: ([0.0, r_max], [0.0, 0.0]) for n in estimate.groups}
    eps = TIE_BREAK / r_max
    # the tie-break grows with the square of the ratio: among flat curves, each further cut of a group costs more
    # than the last, so the cut spreads over the groups by time saved instead of emptying the slowest groups first
    def convex(curve):
        return lambda x: curve(x) + eps * x * x / r_max

    damage = {n: convex(_ratio_cost(r, d, 0.0)) for n, (r, d) in curves.items()}
    levels = {n: width_levels(estimate.groups[n], r_max, estimate.round_to) for n in curves}
    at = dict.fromkeys(curves, 0)
    ratios: dict[str, float] = {}
    base = cost({})
    now = base
    while now > target * base:
        best = None
        for name, i in at.items():
            for j in range(i + 1, len(levels[name])):  # the next width down that saves any time
                trial = {**ratios, name: levels[name][j]}
                saved = now - cost(trial)
                if saved > 1e-9 * base:
                    score = (damage[name](levels[name][j]) - damage[name](levels[name][i])) / saved
                    if best is None or score < best[0]:
                        best = (score, name, j, now - saved)
                    break
        if best is None:
            raise PruneError(f"a cost target of {target:.3g}x needs more than ratio {r_max} in some groups (the "
                             f"most pruning measured keeps {now / base:.2f}x); ask for a larger target")
        _, name, j, now = best
        at[name] = j
        ratios[name] = round(levels[name][j], 6)
    return {n: ratios.get(n, 0.0) for n in curves}
