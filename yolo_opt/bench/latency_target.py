"""`prune_latency=`: per-group ratios that make the pruned model as fast as asked, measured on the runtime it ships on.

The allocation's cost is the latency table (`yolo_opt.bench.layer_latency`), not MACs: groups are cut where the
least damage buys the most time (`yolo_opt.prune.allocation.allocate_for_cost`). The prediction is then checked
against a real measurement: a copy of the model pruned at the chosen ratios (latency does not depend on the weights)
is exported for the runtime and timed against the unpruned model by the reports' protocol (each in a process of its
own, taking turns over rounds). Where the measured ratio misses the asked one by more than `TOLERANCE`, the
allocation is made again for a corrected goal (at most `ATTEMPTS` measurements, as NetAdapt measures each step): the
goal scaled by the miss, or, once two measurements lie on either side of the asked ratio, interpolated between them
(time is a step function of the widths, on OpenVINO especially: scaling alone overshot both ways). A measurement far
from its prediction is taken again once (a busy machine, not the model). The unpruned model, timed beside every copy,
enters the ratios as the median of all its timings. The closest measurement is kept. The record holds the prediction
and the measurement of what is kept, the table's cost and the attempts, for the report.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yolo_opt.bench.layer_latency import LatencyEstimate, build_table, check_runtime, conv_entries, cuda_call_ms

if TYPE_CHECKING:
    from torch import nn

    from yolo_opt.options import PruneOptions

TOLERANCE = 0.02  # measured ratio within this of the asked one: done
SURPRISE = 0.2  # a measured ratio this far from its prediction is timed again before it steers the next goal
ATTEMPTS = 3  # measurements of a pruned copy, at most
LABELS = {"onnx": "ONNX Runtime CPU", "openvino": "OpenVINO CPU", "torch-cuda": "PyTorch FP16 CUDA"}


def deployable(pt: Path, runtime: str, imgsz: int) -> Path:
    """What `runtime` runs of checkpoint `pt`: its ONNX, its OpenVINO folder, or the checkpoint (PyTorch)."""
    if runtime == "onnx":
        from yolo_opt.deploy.onnx import export_onnx

        return export_onnx(pt, pt.with_suffix(".onnx"), imgsz=imgsz)
    if runtime == "openvino":
        from yolo_opt.deploy.openvino import export_openvino

        return export_openvino(pt, pt.parent / f"{pt.stem}_openvino_model", imgsz=imgsz, validate=False,
                               progress=False).path
    return pt


def _cuda_ms(paths: list[Path], imgsz: int, rounds: int) -> list[dict[str, Any]]:
    """PyTorch FP16 on the GPU, fused as Ultralytics runs it: the models taking turns over rounds."""
    import torch

    from yolo_opt.io.checkpoint import load_model

    torch.backends.cudnn.benchmark = True
    models = [load_model(p).fuse(verbose=False).cuda().half().eval() for p in paths]
    x = torch.randn(1, 3, imgsz, imgsz, device="cuda", dtype=torch.half)
    per: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for m in models:
            for _ in range(10):
                m(x)
        for _ in range(rounds):
            for i, m in enumerate(models):
                per[i].append(cuda_call_ms(m, x))
    return [{"ms": statistics.median(v), "ms_spread": (min(v), max(v)), "runtime": LABELS["torch-cuda"]} for v in per]


def time_models(paths: list[Path], runtime: str, imgsz: int, *, rounds: int = 3,
                threads: int | None = None) -> list[dict[str, Any]]:
    """Median ms and spread of each model on `runtime`, by the reports' protocol."""
    if runtime == "torch-cuda":
        return _cuda_ms(paths, imgsz, rounds)
    from yolo_opt.bench.latency import time_apart

    return time_apart([{"path": str(p)} for p in paths], imgsz, rounds=rounds, threads=threads)


def next_goal(attempts: list[dict[str, Any]], asked: float) -> float:
    """The allocation's next goal: between the closest measurements on either side of `asked` where there are both
    (linear), else the nearest one's goal scaled by its miss (damped to between 0.75x and 1.33x)."""
    below = [a for a in attempts if a["measured"] < asked]
    above = [a for a in attempts if a["measured"] > asked]
    if below and above:
        lo = max(below, key=lambda a: a["measured"])
        hi = min(above, key=lambda a: a["measured"])
        t = (asked - lo["measured"]) / (hi["measured"] - lo["measured"])
        return lo["goal"] + t * (hi["goal"] - lo["goal"])
    near = min(attempts, key=lambda a: abs(a["measured"] - asked))
    return min(max(near["goal"] * min(max(asked / near["measured"], 0.75), 1.33), 0.02), 1.0)


def table_predictor(model: nn.Module, runtime: str, imgsz: int, round_to: int | None, *, threads: int | None = None,
                    progress: bool = True) -> tuple[LatencyEstimate, dict[str, Any]]:
    """The latency table of `model` on `runtime` at `imgsz` (timed, or read from the cache) and its predictor, not yet
    calibrated; returns (predictor, the table's cost)."""
    from ultralytics.utils import LOGGER

    from yolo_opt.prune.allocation import macs_estimate

    check_runtime(runtime)
    estimate = macs_estimate(copy.deepcopy(model).float().cpu().eval(), round_to)
    entries = conv_entries(estimate, imgsz)
    table, cost = build_table(entries, runtime, threads=threads, progress=progress)
    LOGGER.info(f"yolo-opt: latency table on {LABELS[runtime]} at {imgsz} px: {cost['timed']} entries timed in "
                f"{cost['seconds']:.0f} s, {cost['reused']} reused from the cache")
    return LatencyEstimate(estimate, entries, table), cost


def latency_allocation(model: nn.Module, report: dict[str, Any] | None, opts: PruneOptions, imgsz: int, *,
                       threads: int | None = None,
                       progress: bool = True) -> tuple[dict[str, float], dict[str, Any]]:
    """Per-group ratios for `opts.prune_latency` on `opts.lat_runtime` at `opts.lat_imgsz` (else `imgsz`).

    Args:
        model: The model before pruning (not changed).
        report: Its sensitivity report (per-layer ratios), or None (`prune_ratios=uniform`, or no data): every
            group gets the one ratio that meets the target.
        opts: `prune_latency`, `lat_runtime`, `lat_imgsz`, `lat_rounds`, `prune_round`.
        imgsz: The run's image size (the latency's size where `lat_imgsz` is not given).

    Returns:
        (ratios by group, the record: asked, predicted and measured ratios, ms, the table's cost, the attempts).
    """
    from ultralytics.utils import LOGGER

    from yolo_opt.io.checkpoint import save_model
    from yolo_opt.prune.allocation import allocate_for_cost
    from yolo_opt.prune.pruner import prune_model

    runtime, asked, lat_imgsz, rounds = opts.lat_runtime, opts.prune_latency, opts.lat_imgsz or imgsz, opts.lat_rounds
    net = copy.deepcopy(model).float().cpu().eval()
    predictor, cost = table_predictor(net, runtime, lat_imgsz, opts.prune_round, threads=threads, progress=progress)
    estimate = predictor.estimate
    uniform = report is None

    def allocate(goal: float) -> dict[str, float]:
        if not uniform:
            return allocate_for_cost(report, estimate, predictor.ms, goal)
        lo, hi = 0.0, 0.75  # one ratio for every group: the smallest that meets the goal
        every = lambda r: dict.fromkeys(estimate.groups, r)  # noqa: E731
        for _ in range(20):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if predictor.ratio(every(mid)) <= goal else (mid, hi)
        return every(round(hi, 4))

    attempts: list[dict[str, Any]] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="yolo-opt-latency.") as tmp:
        base = deployable(save_model(net, Path(tmp) / "unpruned.pt"), runtime, lat_imgsz)
        unpruned = time_models([base], runtime, lat_imgsz, rounds=rounds, threads=threads)[0]
        predictor.calibrate(unpruned["ms"])
        # the unpruned model is timed beside every copy; the ratios' denominator is the median of all its timings (on
        # 2 cores one timing of it ranged 51-71 ms and steered the goal the wrong way, while the copies timed steadily)
        unpruned_ms = [unpruned["ms"]]
        goal = asked
        for attempt in range(ATTEMPTS):
            ratios = allocate(goal)
            trial = copy.deepcopy(net)
            prune_model(trial, 0.0, "l2", opts.prune_round, layer_ratios=ratios)
            pruned = deployable(save_model(trial, Path(tmp) / f"pruned{attempt}.pt"), runtime, lat_imgsz)
            predicted = predictor.ratio(ratios)
            for _ in range(2):  # a measurement far from its prediction is taken once more before it steers the goal
                base_t, pruned_t = time_models([base, pruned], runtime, lat_imgsz, rounds=rounds, threads=threads)
                unpruned_ms.append(base_t["ms"])
                measured = pruned_t["ms"] / statistics.median(unpruned_ms)
                if abs(measured - predicted) <= SURPRISE:
                    break
            attempts.append({"goal": round(goal, 4), "predicted": round(predicted, 4),
                             "measured": round(measured, 4), "ms": round(pruned_t["ms"], 3),
                             "unpruned_ms": round(base_t["ms"], 3), "ms_spread": pruned_t.get("ms_spread"),
                             "unpruned_spread": base_t.get("ms_spread"),
                             "gflops_ratio": round(estimate.ratio(ratios), 4), "ratios": ratios})
            if abs(measured - asked) <= TOLERANCE:
                break
            goal = next_goal(attempts, asked)
    pooled = statistics.median(unpruned_ms)
    for a in attempts:  # every copy against the same unpruned time, the best known at the end
        a["measured"] = round(a["ms"] / pooled, 4)
    kept = min(attempts, key=lambda a: abs(a["measured"] - asked))
    record = {"asked": asked, "runtime": unpruned["runtime"], "lat_runtime": runtime, "lat_imgsz": lat_imgsz,
              "allocation": "uniform" if uniform else "sensitivity",
              "predicted": kept["predicted"], "measured": kept["measured"], "ms": kept["ms"],
              "unpruned_ms": round(pooled, 3), "unpruned_timings": len(unpruned_ms),
              "unpruned_range": (round(min(unpruned_ms), 3), round(max(unpruned_ms), 3)),
              "gflops_ratio": kept["gflops_ratio"],
              "conv_share": round(predictor.conv_ms / unpruned["ms"], 3),  # the table's sum / the measured time
              "table": cost, "check_seconds": round(time.perf_counter() - start, 1), "rounds": rounds,
              "attempts": [{k: v for k, v in a.items() if k != "ratios"} for a in attempts]}
    miss = kept["measured"] - asked
    LOGGER.info(f"yolo-opt: prune_latency={asked} on {record['runtime']} at {lat_imgsz} px: predicted "
                f"{kept['predicted']:.3f}x, measured {kept['measured']:.3f}x ({kept['ms']:.2f} vs {pooled:.2f} "
                f"ms, {rounds} rounds, {len(attempts)} measurement(s)); GFLOPs {kept['gflops_ratio']:.3f}x"
                + (f"; {abs(miss):.3f} {'slower' if miss > 0 else 'faster'} than asked" if abs(miss) > TOLERANCE
                   else ""))
    return kept["ratios"], record


def latency_markdown(record: dict[str, Any]) -> str:
    """The report's section on a `prune_latency=` run: what was asked, predicted and measured, and what it cost."""
    from yolo_opt.bench.latency import with_spread

    table = record["table"]
    lines = ["## Latency target (prune_latency=)", "",
             "| asked | predicted (table) | measured | pruned ms | unpruned ms | GFLOPs kept |", "|---|---|---|---|---|---|"]
    kept = next((a for a in record["attempts"] if a["measured"] == record["measured"]), record["attempts"][-1])
    lines.append(f"| {record['asked']:.3f}x | {record['predicted']:.3f}x | **{record['measured']:.3f}x** | "
                 f"{with_spread(kept['ms'], kept.get('ms_spread'))} | "
                 f"{with_spread(record['unpruned_ms'], record.get('unpruned_range'))} | {record['gflops_ratio']:.3f}x |")
    lines += ["", f"On {record['runtime']} at {record['lat_imgsz']} px, batch 1; ratios per group from the "
              f"{'sensitivity analysis' if record['allocation'] == 'sensitivity' else 'one uniform ratio'} and the "
              f"latency table. The table: {table['timed']} convolution cases timed in {table['seconds']:.0f} s, "
              f"{table['reused']} reused from the cache; timed alone, the convolutions sum to {record['conv_share']:.2f}x "
              f"the unpruned model's measured time (the prediction is scaled to it). The measurement: a copy pruned at "
              f"the chosen ratios against the unpruned model, each in a process of its own, {record['rounds']} rounds; "
              f"{len(record['attempts'])} measurement(s) ({record['check_seconds']:.0f} s), the allocation corrected by "
              f"each miss; the unpruned time is the median of its {record.get('unpruned_timings', 1)} timing(s)."]
    if abs(record["measured"] - record["asked"]) > TOLERANCE:
        tries = ", ".join(f"{a['measured']:.3f}x" for a in record["attempts"])
        lines.append(f"**Missed:** measured {record['measured']:.3f}x against {record['asked']}x asked "
                     f"(attempts: {tries}); "
                     "see benchmarks/profile_ops.py for where the time goes.")
    return "\n".join(lines)


def latency_line(record: dict[str, Any]) -> str:
    """One line for a `prune_latency=` run's log: measured, predicted and asked."""
    return (f"latency on {record['runtime']} at {record['lat_imgsz']} px: {record['measured']:.3f}x measured "
            f"({record['ms']:.2f} vs {record['unpruned_ms']:.2f} ms), {record['predicted']:.3f}x predicted, "
            f"{record['asked']}x asked")
