"""One-shot pruning of a checkpoint, without training: load, prune, save (atomically)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yolo_opt.arch import SplitTwin, adapter
from yolo_opt.errors import ConfigError, PruneError
from yolo_opt.options import DEFAULT_IMGSZ, PruneOptions


def prune_checkpoint(
    model: str | Path,
    out: str | Path,
    opts: PruneOptions | None = None,
    imgsz: int = DEFAULT_IMGSZ,
    data: str | Path | None = None,
    **shortcuts: Any,
) -> dict[str, Any]:
    """Load `model`, prune it as `opts` says, save it to `out`. Returns a summary dict.

    Args:
        model: Ultralytics `.pt` detection checkpoint.
        out: Output `.pt` path (never the input).
        opts: `prune` (channel fraction) or `prune_target` (GFLOPs ratio to keep), criterion, rounding, ... (or
            their keyword shortcuts: `prune_checkpoint("best.pt", "pruned.pt", prune=0.5)`). Per-layer ratios
            (`prune_ratios="sensitivity"`, and `"auto"` with `prune_target` when `data` is given) come from the
            `sensitivity=` report or an analysis of the model on `data`'s val images, and reach the same GFLOPs
            (see `yolo_opt.prune.allocation.allocate_ratios`); `"auto"` without `data` prunes uniformly.
        imgsz: Image size of the GFLOPs figures, of the Taylor batches and (up to 320) of the analysis; the
            pruning itself is decided at `yolo_opt.prune.depgraph.SEARCH_IMGSZ` (ratios do not depend on it).
        data: data.yaml, needed by `prune_method="taylor"` (training batches score the channels) and by per-layer
            ratios without `sensitivity=` (val images score the groups).

    With `prune_native`, the checkpoint holds Ultralytics' own block classes (`yolo_opt.arch.ModelAdapter.to_native`).
    """
    from yolo_opt.io.checkpoint import load_model, meta, save_model
    from yolo_opt.io.files import check_output
    from yolo_opt.prune.importance import NEEDS_DATA
    from yolo_opt.prune.pruner import prune_model
    from yolo_opt.prune.targets import count_macs, ratio_for_macs

    opts = PruneOptions.from_kwargs(opts, **shortcuts)
    if not opts.active:
        raise ConfigError("give prune=<fraction of channels>, prune_target=<GFLOPs ratio> or prune_latency=<latency "
                          "ratio>, e.g. prune=0.5")
    if opts.prune_latency is not None:
        from yolo_opt.bench.layer_latency import check_runtime

        check_runtime(opts.lat_runtime)
    out = Path(out)
    if out.suffix != ".pt":
        raise ConfigError(f"out= must name a .pt file, got '{out}'")
    check_output(out, [model], example="pruned.pt")  # never the input, nor a folder or an unwritable place
    if opts.prune_method in NEEDS_DATA and not data:
        raise ConfigError(f"prune_method={opts.prune_method} scores channels with training batches; pass data=data.yaml")
    per_layer = opts.per_layer and (bool(data or opts.sensitivity) or opts.prune_ratios == "sensitivity")
    if per_layer and opts.sensitivity:
        from yolo_opt.prune.allocation import load_sensitivity

        load_sensitivity(opts.sensitivity)  # a clear error before loading the model
    net = load_model(model)
    if data is not None:
        from yolo_opt.data.checks import check_dataset

        splits = ("train",) * (opts.prune_method in NEEDS_DATA) + ("val",) * (per_layer and not opts.sensitivity)
        check_dataset(data, getattr(net, "names", None), splits)
    if opts.prune_native:
        adapter(net).make_prunable()
        for m in net.modules():
            if isinstance(m, SplitTwin):
                m.equal_halves = True
    base_macs, base_params = count_macs(net, imgsz)
    layer_ratios, latency = None, None
    if opts.prune_latency is not None:
        from yolo_opt.bench.latency_target import latency_allocation
        from yolo_opt.prune.allocation import run_report

        report = run_report(net, opts, data, imgsz) if per_layer else None
        layer_ratios, latency = latency_allocation(net, report, opts, imgsz)
        ratio = 0.0
    elif per_layer:
        from yolo_opt.prune.allocation import run_report, sensitivity_ratios

        report = run_report(net, opts, data, imgsz)
        layer_ratios, _ = sensitivity_ratios(net, report, prune=opts.prune or None, prune_target=opts.prune_target,
                                             round_to=opts.prune_round)
        ratio = 0.0
    elif opts.prune_target is not None:
        ratio = ratio_for_macs(net, opts.prune_target, prune_method=opts.prune_method, prune_round=opts.prune_round,
                               prune_global=opts.prune_global)
    else:
        ratio = opts.prune
    batches = loss_fn = None
    if opts.prune_method in NEEDS_DATA:
        from yolo_opt.data.batches import taylor_batches

        batches, loss_fn = taylor_batches(net, data, imgsz, opts.prune_batches)
    prune_model(net, ratio, opts.prune_method, opts.prune_round, prune_global=opts.prune_global, batches=batches,
                loss_fn=loss_fn, layer_ratios=layer_ratios)
    macs, params = count_macs(net, imgsz)
    info = meta(net)
    info.setdefault("base_macs", base_macs)
    info.setdefault("base_params", base_params)
    step = {"ratio": ratio, "method": opts.prune_method, "macs": macs, "params": params}
    if layer_ratios:
        step["layer_ratios"] = layer_ratios
    if latency:
        step["latency"] = latency
    info.setdefault("history", []).append(step)
    if opts.prune_native:
        _, kept = adapter(net).to_native()
        if kept:  # uniform ratios keep halves equal; this would be a change in the pruner
            raise PruneError(f"{kept} block(s) ended with unequal halves; prune without prune_native=True")
    save_model(net, out)
    return {
        "out": str(out),
        "ratio": ratio,
        "method": opts.prune_method,
        "layer_ratios": layer_ratios,
        "params": params,
        "params_ratio": params / base_params,
        "gflops": 2 * macs / 1e9,
        "gflops_ratio": macs / base_macs,
        "imgsz": imgsz,
        "native": opts.prune_native,
        "latency": latency,
    }
