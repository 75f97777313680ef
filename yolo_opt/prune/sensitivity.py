"""Per-layer pruning sensitivity, and per-layer pruning ratios allocated from it.

`layer_sensitivity` prunes each prunable torch-pruning group *alone* at a few ratios, without fine-tuning, and
measures the Ultralytics validator's mAP on the val split (and the relative change of the head outputs). The
result is a table (JSON + Markdown) and a PNG plot; `allocate_ratios` turns it into per-group ratios that meet a
GFLOPs target while pruning more where it hurts least (`prune_ratios=sensitivity sensitivity=path.json`).

A group is named by its root layer (e.g. `model.4.m.1.cv2`): all layers whose channels are coupled with that
layer's output channels (residual adds, concats, BN, the consumers' input channels) lose the same channels.

Pruning a group alone is simulated by zeroing the BN scale and shift (and the conv rows) of the channels the
pruner would remove in every layer of the group: after SiLU the channel is exactly zero, which is what
removing it does to every consumer. This gives the same outputs as physically pruning (checked in the tests)
without re-tracing the network for each of the (groups x ratios) cases.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yolo_opt.errors import ConfigError, DataError, PruneError
from yolo_opt.prune.core import (
    _build_pruner,
    _eval_mode,
    _example_input,
    check_detection_model,
    check_ratio,
    traceable,
)

SENS_METRICS = ("map", "map50", "err")
# Pruning a group harder should never score better than pruning it lighter, but the validator's mAP on a small
# val split moves by up to ~0.005 for near-identical models (a borderline box or NMS tie; measured on yolov8n at
# 160 px, 40 images: largest increase 0.0052 over 171 cases). Orderings are checked within these tolerances:
MAP_NOISE = 0.01  # absolute mAP
ERR_NOISE = 0.02  # absolute relative-output-change (largest decrease measured: 0.014)
# Damage per unit ratio added to every group's curve in the allocation: a tie-break for flat (noise-level) curves.
TIE_BREAK = 0.005
MAX_RATIO = 0.9  # torch-pruning's max_pruning_ratio used by prune_model


# ---- groups ------------------------------------------------------------------------------------------------------
def _layer_name(names: dict[nn.Module, str], module: nn.Module) -> str:
    name = names[module]
    return name[: -len(".conv")] if name.endswith(".conv") else name


def n_pruned(channels: int, ratio: float, round_to: int | None) -> int:
    """Channels MetaPruner (with yolo-opt's nearest rounding) removes from a `channels`-wide group at `ratio`."""
    ratio = min(ratio, MAX_RATIO)
    n = channels - int(channels * (1 - ratio))
    if n <= 0:
        return 0
    if round_to:
        kept = max(round_to, int(round((channels - n) / round_to)) * round_to)
        n = max(channels - min(kept, channels), 0)
    return n


def _plans(model: nn.Module, ratio: float, method: str, round_to: int | None, imgsz: int) -> tuple[list, Any]:
    """Channels the pruner would remove from each group at `ratio`, scored on the unpruned model.

    Returns (list of (group name, root channels, [(module name, 'out'|'in', channel idxs)]), pruner).
    """
    names = {m: n for n, m in model.named_modules()}
    with _eval_mode(model), traceable(model):
        pruner = _build_pruner(model, ratio, method, round_to, False, imgsz)
        plans = []
        for group in pruner.step(interactive=True):  # yields the planned groups; nothing is pruned here
            root = group[0].dep.target.module
            items = []
            for dep, idxs in group:
                target = dep.target.module
                if target not in names or not isinstance(target, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
                    continue
                kind = "out" if pruner.DG.is_out_channel_pruning_fn(dep.handler) else "in"
                items.append((names[target], kind, sorted({int(i) for i in idxs})))
            plans.append((_layer_name(names, root), getattr(root, "out_channels", None), items))
    return plans, pruner


def prunable_groups(model: nn.Module, imgsz: int = 64, round_to: int | None = 8) -> dict[str, int]:
    """Prunable groups of a detection model: root layer name -> channels (after `make_prunable`)."""
    from yolo_opt.prune.blocks import make_prunable

    check_detection_model(model)
    make_prunable(model)
    names = {m: n for n, m in model.named_modules()}
    with _eval_mode(model), traceable(model):
        pruner = _build_pruner(model, 0.0, "l2", round_to, False, imgsz)
        groups = pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types)
        return {_layer_name(names, g[0].dep.target.module): g[0].dep.target.module.out_channels for g in groups}


def mask_group(model: nn.Module, items: Sequence[tuple[str, str, list[int]]]) -> None:
    """Zero the channels a group's pruning would remove (BN scale+shift and conv rows of out-pruned layers)."""
    with torch.no_grad():
        for name, kind, idxs in items:
            if kind != "out" or not idxs:
                continue
            module = model.get_submodule(name)
            index = torch.tensor(idxs, dtype=torch.long)
            if isinstance(module, nn.BatchNorm2d):
                module.weight[index] = 0
                module.bias[index] = 0
            elif isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight[index] = 0
                if module.bias is not None:
                    module.bias[index] = 0


# ---- evaluation --------------------------------------------------------------------------------------------------
def _subset_data(data: str | Path, max_images: int | None, folder: Path) -> str:
    """A data yaml whose val split is the first `max_images` val images (sorted), written to `folder`."""
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils import YAML

    try:
        info = check_det_dataset(str(data))
    except Exception as e:
        raise DataError(f"cannot read dataset '{data}' ({str(e).splitlines()[0][:160]}); pass a valid data.yaml") from e
    if not max_images:
        return str(data)
    val = info.get("val")
    val = val if isinstance(val, list) else [val]
    files: list[str] = []
    for entry in val:
        p = Path(entry)
        if p.is_dir():
            files += sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})
        elif p.suffix == ".txt":
            files += [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
    if not files:
        raise DataError(f"no val images found for {data}")
    folder.mkdir(parents=True, exist_ok=True)
    listing = folder / "val_subset.txt"
    listing.write_text("\n".join(files[:max_images]) + "\n")
    cfg = {"path": str(folder), "train": str(listing), "val": str(listing), "names": info["names"]}
    out = folder / "data_subset.yaml"
    YAML.save(out, cfg)
    return str(out)


class _Evaluator:
    """Validator mAP (one DetectionValidator, its dataloader built once) and head-output change vs a reference."""

    def __init__(self, data: str, imgsz: int, batch: int, reference: nn.Module, err_images: int = 16):
        from ultralytics.models.yolo.detect import DetectionValidator

        self.args = dict(data=data, imgsz=imgsz, batch=batch, plots=False, verbose=False, device="cpu", split="val",
                         save_json=False, workers=0, half=False)
        self.validator = DetectionValidator(args=self.args)
        self.reference = reference
        self.images: torch.Tensor | None = None
        self.ref_out: list[torch.Tensor] | None = None
        self.err_images = err_images

    @staticmethod
    def _outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        with _eval_mode(model), torch.no_grad():
            out = model(x)
        raw = out[1] if isinstance(out, (tuple, list)) and len(out) > 1 else out
        if isinstance(raw, dict):
            return [raw[k] for k in ("boxes", "scores") if k in raw] or [out[0]]
        return [t for t in raw if isinstance(t, torch.Tensor)] if isinstance(raw, (list, tuple)) else [raw]

    def __call__(self, model: nn.Module) -> dict[str, float]:
        net = copy.deepcopy(model).float().eval()
        stats = self.validator(model=net)
        result = {"map": float(stats.get("metrics/mAP50-95(B)", 0.0)), "map50": float(stats.get("metrics/mAP50(B)", 0.0))}
        if self.images is None:
            imgs = []
            for b in self.validator.dataloader:
                imgs.append(b["img"].float() / 255)
                if sum(len(i) for i in imgs) >= self.err_images:
                    break
            self.images = torch.cat(imgs)[: self.err_images]
            self.ref_out = self._outputs(self.reference, self.images)
        out = self._outputs(model, self.images)
        errs = [float((o - r).norm() / r.norm().clamp_min(1e-12)) for o, r in zip(out, self.ref_out, strict=True)]
        result["err"] = sum(errs) / len(errs)
        return result


# ---- the analysis ------------------------------------------------------------------------------------------------
def parse_ratios(ratios: str | float | Iterable[float]) -> list[float]:
    """'0.25,0.5,0.75' (or numbers) -> sorted unique ratios, each 0 < r < 1."""
    if isinstance(ratios, str):
        try:
            values = [float(r) for r in ratios.replace(" ", "").split(",") if r]
        except ValueError:
            raise ConfigError(f"ratios={ratios!r} must be comma-separated fractions, e.g. ratios=0.25,0.5,0.75") from None
    elif isinstance(ratios, (int, float)):
        values = [float(ratios)]
    else:
        values = [float(r) for r in ratios]
    if not values or any(not 0 < r < 1 for r in values):
        raise ConfigError(f"ratios={ratios!r}: give fractions 0 < r < 1, e.g. ratios=0.25,0.5,0.75")
    return sorted(set(values))


def layer_sensitivity(
    model: str | Path,
    data: str | Path,
    ratios: str | Sequence[float] = (0.25, 0.5, 0.75),
    imgsz: int = 640,
    method: str = "l2",
    round_to: int | None = 8,
    max_images: int | None = None,
    groups: str | Sequence[str] | None = None,
    batch: int = 16,
    out: str | Path = "runs/opt/sensitivity/exp",
) -> dict[str, Any]:
    """Per-group pruning sensitivity: validator mAP after pruning each prunable group alone, without fine-tuning.

    Args:
        model: Ultralytics `.pt` detection checkpoint.
        data: Dataset yaml; its val split is scored.
        ratios: Pruning ratios tried on each group (comma-separated string or numbers).
        imgsz: Validation image size.
        method: Channel importance criterion that picks the channels (as `prune_method`; not taylor).
        round_to: Channel rounding, as in pruning (a 16-channel group keeps 16 at 0.25 with round_to=8).
        max_images: Score only the first N val images (faster, noisier); None for all.
        groups: Only these group names (comma-separated or a list); None for all.
        batch: Validation batch size.
        out: Folder for `sensitivity.json`, `sensitivity.md` and `sensitivity.png`.

    Returns:
        The report: `baseline` metrics, `ratios`, and per group `channels`, `pruned` (channels removed per
        ratio) and `map`/`map50`/`err` lists (one value per ratio). `err` is the relative L2 change of the head's
        raw box and class outputs on up to 16 val images (useful where mAP is ~0, e.g. an untrained model).
    """
    from yolo_opt.prune.blocks import make_prunable
    from yolo_opt.prune.core import PRUNE_METHODS
    from yolo_opt.prune.io import load_model

    if method not in PRUNE_METHODS or method == "taylor":
        raise ConfigError(f"sensitivity needs a data-free criterion; use prune_method=l2, l1, bn or random, not '{method}'")
    ratio_list = parse_ratios(ratios)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    net = load_model(model).float().eval()
    make_prunable(net)
    wanted = [g for g in groups.split(",") if g] if isinstance(groups, str) else list(groups or [])
    t0 = time.time()
    evaluate = _Evaluator(_subset_data(data, max_images, out), imgsz, batch, net)
    baseline = evaluate(net)
    plans = {r: _plans(net, r, method, round_to, min(imgsz, 320))[0] for r in ratio_list}
    names = [p[0] for p in plans[ratio_list[0]]]
    if wanted:
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise ConfigError(f"unknown group(s) {', '.join(unknown)}; prunable groups: {', '.join(names)}")
        names = [n for n in names if n in wanted]
    table: dict[str, dict[str, Any]] = {}
    for name in names:
        row: dict[str, Any] = {"channels": None, "pruned": [], **{k: [] for k in SENS_METRICS}}
        for r in ratio_list:
            _, channels, items = next(p for p in plans[r] if p[0] == name)
            row["channels"] = channels
            n = n_pruned(channels, r, round_to)
            row["pruned"].append(n)
            if n == 0:  # rounding keeps every channel: same model as the baseline
                scores = baseline
            else:
                trial = copy.deepcopy(net)
                mask_group(trial, items)
                scores = evaluate(trial)
            for k in SENS_METRICS:
                row[k].append(round(scores[k], 6))
        table[name] = row
    report = {
        "model": str(model), "data": str(data), "imgsz": imgsz, "method": method, "round_to": round_to,
        "max_images": max_images, "ratios": ratio_list, "baseline": baseline, "groups": table,
        "seconds": round(time.time() - t0, 1),
    }
    write_report(report, out)
    return report


def write_report(report: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Write `sensitivity.json`, `sensitivity.md` and `sensitivity.png` (atomically) into `out`."""
    from yolo_opt.files import atomic_write_bytes

    out = Path(out)
    paths = {"json": out / "sensitivity.json", "md": out / "sensitivity.md", "png": out / "sensitivity.png"}
    atomic_write_bytes(paths["json"], json.dumps(report, indent=1).encode())
    atomic_write_bytes(paths["md"], markdown_table(report).encode())
    plot_sensitivity(report, paths["png"])
    return paths


def markdown_table(report: dict[str, Any]) -> str:
    """The report as a Markdown table: one row per group, mAP50-95 (and output change) per ratio."""
    ratios = report["ratios"]
    base = report["baseline"]
    head = ["group", "channels"] + [f"mAP @{r:g}" for r in ratios] + [f"err @{r:g}" for r in ratios]
    lines = [
        f"Baseline mAP50-95 {base['map']:.4f}, mAP50 {base['map50']:.4f} (imgsz={report['imgsz']}, "
        f"method={report['method']}, round_to={report['round_to']}, max_images={report['max_images']})",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, row in sorted(report["groups"].items(), key=lambda kv: -_worst_drop(report, kv[1], "map")):
        cells = [name, str(row["channels"])] + [f"{v:.4f}" for v in row["map"]] + [f"{v:.3f}" for v in row["err"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _worst_drop(report: dict[str, Any], row: dict[str, Any], metric: str) -> float:
    if metric == "err":
        return max(row["err"])
    return report["baseline"][metric] - min(row[metric])


def plot_sensitivity(report: dict[str, Any], path: str | Path) -> Path:
    """PNG: mAP50-95 vs ratio, one line per group (the most sensitive labelled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = [0.0, *report["ratios"]]
    base = report["baseline"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    ranked = sorted(report["groups"].items(), key=lambda kv: -_worst_drop(report, kv[1], "map"))
    for i, (name, row) in enumerate(ranked):
        label = name if i < 8 else None
        axes[0].plot(ratios, [base["map"], *row["map"]], marker="o", ms=3, lw=1, label=label)
        axes[1].plot(ratios, [0.0, *row["err"]], marker="o", ms=3, lw=1, label=label)
    axes[0].set(xlabel="pruning ratio of the group alone", ylabel="mAP50-95 (no fine-tuning)", title="mAP")
    axes[1].set(xlabel="pruning ratio of the group alone", ylabel="relative change of head outputs", title="output change")
    axes[0].legend(fontsize=7, title="most sensitive")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"Per-group pruning sensitivity ({Path(report['model']).name}, imgsz={report['imgsz']})")
    fig.tight_layout()
    path = Path(path)
    from yolo_opt.files import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


# ---- allocation --------------------------------------------------------------------------------------------------
def load_sensitivity(path: str | Path) -> dict[str, Any]:
    """Read a `sensitivity.json` written by `layer_sensitivity` (clear error when missing or malformed)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"sensitivity file not found: {path}; make one with 'yolo-opt sensitivity model=... data=...'")
    try:
        report = json.loads(path.read_text())
        assert isinstance(report["groups"], dict) and report["ratios"] and "baseline" in report
    except (ValueError, KeyError, TypeError, AssertionError):
        raise ConfigError(f"{path} is not a sensitivity report written by 'yolo-opt sensitivity'") from None
    return report


def choose_metric(report: dict[str, Any], metric: str = "auto") -> str:
    """'auto': mAP50-95 when the baseline has a usable mAP (>= 0.05), else the head-output change `err`."""
    if metric == "auto":
        return "map" if report["baseline"]["map"] >= 0.05 else "err"
    if metric not in SENS_METRICS:
        raise ConfigError(f"unknown sensitivity metric '{metric}'; choose one of: auto, {', '.join(SENS_METRICS)}")
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


class MacsModel:
    """Fast GFLOPs estimate of a model pruned with per-group ratios (no tracing per candidate).

    For each group it records how many input/output channels of each conv one root channel takes away, and
    each conv's output size; MACs of a candidate are then sum(k*k*H*W*in*out/groups) with the reduced widths.
    """

    def __init__(self, model: nn.Module, imgsz: int, round_to: int | None):
        self.round_to = round_to
        net = copy.deepcopy(model).float().eval()
        plans, _ = _plans(net, 0.5, "l2", None, imgsz)  # half of each group: how channels couple across layers
        self.groups = {name: channels for name, channels, _ in plans}
        self.share: dict[str, dict[tuple[str, str], float]] = {}
        for name, channels, items in plans:
            n_root = n_pruned(channels, 0.5, None)
            shares: dict[tuple[str, str], float] = {}
            for layer, kind, idxs in items:
                if isinstance(net.get_submodule(layer), nn.Conv2d):
                    shares[(layer, kind)] = shares.get((layer, kind), 0) + len(idxs) / max(n_root, 1)
            self.share[name] = shares
        self.convs: dict[str, tuple[nn.Conv2d, int]] = {}
        hooks = []
        for lname, m in net.named_modules():
            if isinstance(m, nn.Conv2d):
                hooks.append(m.register_forward_hook(
                    lambda mod, inp, out, lname=lname: self.convs.__setitem__(lname, (mod, out.shape[-1] * out.shape[-2]))
                ))
        with torch.no_grad():
            net(_example_input(net, imgsz))
        for h in hooks:
            h.remove()
        self.base = self.macs({})

    def macs(self, ratios: dict[str, float]) -> float:
        """Conv MACs with group `name` pruned at `ratios[name]` (0 for the rest)."""
        cut: dict[tuple[str, str], float] = {}
        for name, r in ratios.items():
            n = n_pruned(self.groups[name], r, self.round_to) if r > 0 else 0
            for key, share in self.share.get(name, {}).items():
                cut[key] = cut.get(key, 0.0) + n * share
        total = 0.0
        for lname, (conv, hw) in self.convs.items():
            cin = conv.in_channels - cut.get((lname, "in"), 0.0)
            cout = conv.out_channels - cut.get((lname, "out"), 0.0)
            k = conv.kernel_size[0] * conv.kernel_size[1]
            if conv.groups > 1 and conv.groups == conv.in_channels:  # depthwise: one input per output
                total += k * hw * cout
            else:
                total += k * hw * cin * cout / conv.groups
        return total

    def ratio(self, ratios: dict[str, float]) -> float:
        """MACs of the candidate / MACs of the unpruned model."""
        return self.macs(ratios) / self.base


def allocate_ratios(
    report: dict[str, Any],
    model: nn.Module,
    target: float,
    imgsz: int = 128,
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
        imgsz: Image size of the (fast, analytic) GFLOPs estimate.
        round_to: Channel rounding used when pruning.
        metric: 'auto' (mAP50-95, or the output change `err` when the baseline mAP is < 0.05), 'map', 'map50', 'err'.
        tol: Relative tolerance on the target (channel rounding makes GFLOPs a step function).

    Returns:
        {group root name: ratio} for `prune_model(..., layer_ratios=...)`.

    Raises:
        PruneError: The report does not match the model, or the target needs more than the measured ratios.
    """
    from yolo_opt.prune.blocks import make_prunable

    if not 0 < target <= 1:
        raise ConfigError(f"GFLOPs target {target} must be in (0, 1]")
    net = copy.deepcopy(model).float().eval()
    make_prunable(net)
    estimate = MacsModel(net, imgsz, round_to)
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

    hi = max(d[-1] + eps * r[-1] for r, d in curves.values())
    if estimate.ratio(ratios_at(hi)) > target * (1 + tol):
        raise PruneError(
            f"GFLOPs target {target} needs more than the largest measured ratio {r_max} in some groups; "
            f"measure larger ratios (ratios=...,0.9) or ask for a larger target"
        )
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
    prune: float | None = None,
    prune_target: float | None = None,
    round_to: int | None = 8,
    imgsz: int = 128,
) -> tuple[dict[str, float], float]:
    """Per-group ratios for the GFLOPs of `prune_target`, or of uniform pruning at `prune`.

    Returns:
        (ratios by group name, the GFLOPs target used).
    """
    report = sensitivity if isinstance(sensitivity, dict) else load_sensitivity(sensitivity)
    if prune_target is None:
        check_ratio(prune or 0.0, "prune")
        if not prune:
            return {}, 1.0
        net = copy.deepcopy(model).float().eval()
        from yolo_opt.prune.blocks import make_prunable

        make_prunable(net)
        estimate = MacsModel(net, imgsz, round_to)
        prune_target = estimate.ratio(dict.fromkeys(estimate.groups, prune))
    return allocate_ratios(report, model, prune_target, imgsz, round_to), prune_target


def check_sensitivity_opts(opts: dict[str, Any]) -> dict[str, Any]:
    """Validate `prune_ratios=sensitivity` options before any work: a readable report, no global ranking."""
    if not opts.get("sensitivity"):
        raise ConfigError("prune_ratios=sensitivity needs sensitivity=path/to/sensitivity.json ('yolo-opt sensitivity')")
    if opts.get("prune_global"):
        raise ConfigError("prune_ratios=sensitivity sets one ratio per group; it cannot be combined with prune_global=True")
    return load_sensitivity(opts["sensitivity"])


def step_ratios(final: dict[str, float], step: int, steps: int) -> dict[str, float]:
    """Ratios of the *current* channels at iterative step `step` of `steps`, so group g ends at `final[g]`."""
    out = {}
    for name, r in final.items():
        keep_now, keep_next = 1 - r * (step - 1) / steps, 1 - r * step / steps
        out[name] = max(0.0, 1 - keep_next / keep_now)
    return out


def run_layer_ratios(model: nn.Module, run: dict[str, Any], opts: dict[str, Any], step: int, steps: int,
                     imgsz: int) -> dict[str, float]:
    """Per-group ratios of one trainer pruning step; the final allocation is computed once and kept in `run`."""
    if "layer_ratios" not in run:
        final, target = sensitivity_ratios(model, opts["sensitivity"], opts.get("prune"), opts.get("prune_target"),
                                           opts.get("prune_round"), imgsz=min(imgsz, 320))
        run["layer_ratios"], run["layer_ratios_target"] = final, target
    return step_ratios(run["layer_ratios"], step, steps)
