"""When the trainer prunes, and by how much at each step."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from torch import nn

from yolo_opt.arch import adapter
from yolo_opt.options import PruneOptions


@dataclass
class RunState:
    """A pruning run's options and progress. It travels in the model's metadata (`meta(model)[RUN_KEY]`) as the plain
    dict of `to_dict` (a weights_only load rebuilds no class of ours), so `resume=True` continues at the right step.

    `from_dict` reads the records of earlier versions too: a key they lack reads as unset (no `layer_widths`: the
    compounding per-layer schedule they started with)."""

    opts: dict[str, Any] = field(default_factory=dict)  # TrainOptions.to_dict()
    epochs: list[int] = field(default_factory=list)  # the epoch each pruning step runs at
    steps_done: int = 0
    base_macs: float = 0.0  # of the model before the first step
    base_params: int = 0
    imgsz: int | None = None
    after: dict[str, Any] | None = None  # a QAT phase that follows (QATOptions.to_dict())
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry a step
    layer_ratios: dict[str, float] | None = None  # per-layer runs: each group's final ratio
    layer_ratios_target: float | None = None
    layer_widths: dict[str, int] | None = None  # each group's width before the first step
    teacher_fitness: float | None = None  # distill_schedule=while_behind
    caught_up: int | None = None  # the epoch the student reached its teacher
    latency: dict[str, Any] | None = None  # prune_latency=: the allocation's predicted and measured latency
    extra: dict[str, Any] = field(default_factory=dict)  # keys of another version, kept as they were

    _ALWAYS = ("opts", "epochs", "steps_done", "base_macs", "base_params", "imgsz", "after")

    def to_dict(self) -> dict[str, Any]:
        """The record as earlier versions wrote it: the keys of a started run, then those set since."""
        out = {k: getattr(self, k) for k in self._ALWAYS}
        if self.history:
            out["history"] = self.history
        if self.layer_ratios is not None:
            out["layer_ratios"], out["layer_ratios_target"] = self.layer_ratios, self.layer_ratios_target
        for k in ("layer_widths", "teacher_fitness", "caught_up", "latency"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> RunState:
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in record.items() if k in names and v is not None}
        return cls(**known, extra={k: v for k, v in record.items() if k not in names})

    def start_allocation(self, model: nn.Module, final: dict[str, float], target: float | None) -> None:
        """Record the run's final per-group ratios and each group's width before the first step."""
        adapter(model).make_prunable()  # groups are named in the split-free form pruning works on (it would do this)
        self.layer_ratios, self.layer_ratios_target = final, target
        self.layer_widths = {name: group_width(model, name) for name in final}

    def layer_step(self, model: nn.Module, step: int, steps: int) -> dict[str, float]:
        """The fraction of each group's current channels that step `step` of `steps` removes."""
        adapter(model).make_prunable()
        if not self.layer_widths:  # a run started by an earlier version: its compounding schedule
            return {name: step_fraction(r, step, steps) for name, r in self.layer_ratios.items()}
        return {name: max(0.0, 1 - self.layer_widths[name] * (1 - r * step / steps) / group_width(model, name))
                for name, r in self.layer_ratios.items()}


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


def step_ratio(model: nn.Module, opts: PruneOptions, run: RunState, *, step: int, steps: int, imgsz: int) -> float:
    """This step's ratio of the current channels, so that after `steps` steps the goal (prune or GFLOPs) is met."""
    from yolo_opt.prune.targets import count_macs, ratio_for_macs

    if opts.prune_target is not None:
        goal = 1 - (1 - opts.prune_target) * step / steps  # of the run's starting MACs
        current = count_macs(model, imgsz)[0] / run.base_macs
        return ratio_for_macs(model, min(1.0, goal / current), prune_method=opts.prune_method,
                              prune_round=opts.prune_round, prune_global=opts.prune_global)
    return step_fraction(opts.prune, step, steps)


def step_layer_ratios(model: nn.Module, opts: PruneOptions, run: RunState, *, step: int, steps: int,
                      imgsz: int, data: str | None, folder: Path) -> dict[str, float]:
    """Per-group ratios of one step. The final allocation is computed once, at the first step, from the
    sensitivity report (`sensitivity=`, or an analysis of the model before pruning saved in `folder`) for a GFLOPs
    target, or from the latency table for `prune_latency=` (`yolo_opt.bench.latency_target`), and kept in `run` with
    each group's width then, so a resumed run prunes the same way.

    Each step aims at a share of the group's *starting* width, not of the current one: channel rounding
    (prune_round) can leave a narrow group unpruned at an early step (16 channels at 1/6 rounds back to 16), and
    the next steps then take what it still owes, so the last step lands on the one-shot allocation (compounding
    fractions of the current width undershoot the target: docs/benchmarks.md#pruning-in-steps)."""
    from yolo_opt.prune.allocation import run_report, sensitivity_ratios

    if run.layer_ratios is None:
        report = run_report(model, opts, data, imgsz, folder=folder) if opts.per_layer else None
        if opts.prune_latency is not None:
            from yolo_opt.bench.latency_target import latency_allocation

            ratios, run.latency = latency_allocation(model, report, opts, imgsz)
            run.start_allocation(model, ratios, run.latency["gflops_ratio"])
        else:
            run.start_allocation(model, *sensitivity_ratios(model, report, prune=opts.prune or None,
                                                             prune_target=opts.prune_target, round_to=opts.prune_round))
    return run.layer_step(model, step, steps)


def group_width(model: nn.Module, name: str) -> int:
    """Output channels of the group whose root layer is `name` now (in a prunable model)."""
    from yolo_opt.prune.depgraph import group_root

    root = group_root(model, name)
    return int(getattr(root, "out_channels", None) or root.weight.shape[0])
