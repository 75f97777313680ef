"""Per-group pruning sensitivity: the validator's mAP after pruning each prunable group *alone*, without fine-tuning.

`pruning_sensitivity` prunes each torch-pruning group alone at a few ratios and measures the Ultralytics validator's
mAP on the val split (and the relative change of the head outputs). Pruning a group is simulated by zeroing the
channels the pruner would remove (`yolo_opt.prune.groups.mask_group`): the same outputs as pruning it, without
re-tracing the network for each of the (groups x ratios) cases. The report is written by
`yolo_opt.prune.report`; `yolo_opt.prune.allocation` turns it into per-group ratios for a GFLOPs target.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yolo_opt.errors import ConfigError
from yolo_opt.options import SEARCH_IMGSZ, SensitivityOptions
from yolo_opt.prune.groups import eval_mode, mask_group, plans
from yolo_opt.prune.targets import n_pruned

SENS_METRICS = ("map", "map50", "err")
# Pruning a group harder should never score better than pruning it lighter, but the validator's mAP on a small
# val split moves by up to ~0.005 for near-identical models (a borderline box or NMS tie; measured on yolov8n at
# 160 px, 40 images: largest increase 0.0052 over 171 cases). Orderings are checked within these tolerances:
MAP_NOISE = 0.01  # absolute mAP
ERR_NOISE = 0.02  # absolute relative-output-change (largest decrease measured: 0.014)


def _subset_data(data: str | Path, max_images: int | None, folder: Path) -> str:
    """A data yaml whose val split is the first `max_images` val images (sorted), written to `folder`."""
    from ultralytics.utils import YAML

    from yolo_opt.data.checks import dataset_images, read_dataset

    info = read_dataset(data)
    files = [str(f.resolve()) for f in dataset_images(data, "val", info)]
    if not max_images:
        return str(data)
    folder = folder.resolve()  # Ultralytics reads the listing relative to `path:`; a relative folder would nest
    folder.mkdir(parents=True, exist_ok=True)
    listing = folder / "val_subset.txt"
    listing.write_text("\n".join(files[:max_images]) + "\n")
    cfg = {"path": str(folder), "train": str(listing), "val": str(listing), "names": info["names"]}
    out = folder / "data_subset.yaml"
    YAML.save(out, cfg)
    return str(out)


class _Evaluator:
    """Validator mAP (one DetectionValidator, its dataloader built once) and head-output change vs a reference."""

    def __init__(self, data: str, imgsz: int, reference: nn.Module, val_args: dict[str, Any] | None = None,
                 err_images: int = 16):
        from ultralytics.models.yolo.detect import DetectionValidator

        self.args = {"batch": 16, "plots": False, "verbose": False, "device": "cpu", "save_json": False, "workers": 0,
                     "half": False, **(val_args or {}), "data": data, "imgsz": imgsz, "split": "val"}
        self.validator = DetectionValidator(args=self.args)
        self.reference = reference
        self.images: torch.Tensor | None = None
        self.ref_out: list[torch.Tensor] | None = None
        self.err_images = err_images

    @staticmethod
    def _outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        with eval_mode(model), torch.no_grad():
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


def pruning_sensitivity(
    model: str | Path,
    data: str | Path,
    opts: SensitivityOptions | None = None,
    imgsz: int = 640,
    prune_method: str = "l2",
    prune_round: int | None = 8,
    out: str | Path = "runs/opt/sensitivity/exp",
    val_args: dict[str, Any] | None = None,
    **shortcuts: Any,
) -> dict[str, Any]:
    """Per-group pruning sensitivity: validator mAP after pruning each prunable group alone, without fine-tuning.

    Args:
        model: Ultralytics `.pt` detection checkpoint.
        data: Dataset yaml; its val split is scored.
        opts: Ratios tried on each group, `max_images`, `groups` (or their keyword shortcuts, e.g. `ratios="0.5"`).
        imgsz: Validation image size.
        prune_method: Channel importance criterion that picks the channels (data-free: not taylor).
        prune_round: Channel rounding, as in pruning (a 16-channel group keeps 16 at 0.25 with rounding 8).
        out: Folder for `sensitivity.json`, `sensitivity.md` and `sensitivity.png`.
        val_args: Ultralytics validator arguments (`batch`, `workers`, `conf`, ...), as for `yolo val`.

    Returns:
        The report: `baseline` metrics, `ratios`, and per group `channels`, `pruned` (channels removed per
        ratio) and `map`/`map50`/`err` lists (one value per ratio). `err` is the relative L2 change of the head's
        raw box and class outputs on up to 16 val images (useful where mAP is ~0, e.g. an untrained model).
    """
    from yolo_opt.data.checks import check_classes
    from yolo_opt.io.checkpoint import load_model
    from yolo_opt.io.files import check_output
    from yolo_opt.prune.blocks import make_prunable
    from yolo_opt.prune.importance import DATA_FREE
    from yolo_opt.prune.report import write_sensitivity_report

    opts = SensitivityOptions.from_kwargs(opts, **shortcuts)
    if prune_method not in DATA_FREE:
        raise ConfigError(f"sensitivity needs a data-free criterion; use prune_method={', '.join(DATA_FREE)}, "
                          f"not '{prune_method}'")
    ratio_list, max_images, groups = opts.ratio_list(), opts.max_images, opts.groups
    net = load_model(model).float().eval()
    check_classes(data, getattr(net, "names", None))
    out = check_output(out, [model, data], folder=True, key="name")
    out.mkdir(parents=True, exist_ok=True)
    make_prunable(net)
    wanted = [g for g in (groups or "").split(",") if g]
    t0 = time.time()
    evaluate = _Evaluator(_subset_data(data, max_images, out), imgsz, net, val_args)
    baseline = evaluate(net)
    planned = {r: plans(net, r, prune_method, prune_round, min(imgsz, SEARCH_IMGSZ))[0] for r in ratio_list}
    names = [p[0] for p in planned[ratio_list[0]]]
    if wanted:
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise ConfigError(f"unknown group(s) {', '.join(unknown)}; prunable groups: {', '.join(names)}")
        names = [n for n in names if n in wanted]
    table: dict[str, dict[str, Any]] = {}
    for name in names:
        row: dict[str, Any] = {"channels": None, "pruned": [], **{k: [] for k in SENS_METRICS}}
        for r in ratio_list:
            _, channels, items = next(p for p in planned[r] if p[0] == name)
            row["channels"] = channels
            n = n_pruned(channels, r, prune_round)
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
        "model": str(model), "data": str(data), "imgsz": imgsz, "method": prune_method, "round_to": prune_round,
        "max_images": max_images, "ratios": ratio_list, "baseline": baseline, "groups": table,
        "seconds": round(time.time() - t0, 1),
    }
    write_sensitivity_report(report, out)
    return report


