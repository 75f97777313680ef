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

import numpy as np
import torch
from torch import nn

from yolo_opt.arch import adapter
from yolo_opt.errors import ConfigError
from yolo_opt.options import DEFAULT_IMGSZ, SensitivityOptions
from yolo_opt.prune.depgraph import eval_mode, n_pruned, no_forward_hooks
from yolo_opt.prune.groups import mask_group, plans

SENS_METRICS = ("map", "map50", "mask_map", "mask_map50", "err")
# Pruning a group harder should never score better than pruning it lighter, but the validator's mAP on a small
# val split moves a little for near-identical models (a borderline box or NMS tie). Orderings are checked within
# tolerances above that noise (measured: docs/benchmarks.md#sensitivity-noise):
MAP_NOISE = 0.01  # absolute mAP
ERR_NOISE = 0.02  # absolute relative-output-change


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
    """Validator mAP (one DetectionValidator, its dataloader built once) and head-output change vs a reference.

    With `score="err"` there is no validator: the output change is measured on the first `err_images` val images.
    """

    def __init__(self, data: str, imgsz: int, reference: nn.Module, val_args: dict[str, Any] | None = None,
                 err_images: int = 16, score: str = "map"):
        self.reference = reference
        self.images: torch.Tensor | None = None
        self.ref_out: list[tuple[str, dict[str, torch.Tensor]]] | None = None
        self.err_images = err_images
        self.validator = None
        self.arch = adapter(reference)
        if score == "map":
            from yolo_opt.arch import load_class

            args = {"batch": 16, "plots": False, "verbose": False, "device": "cpu", "save_json": False, "workers": 0,
                    "half": False, **(val_args or {}), "data": data, "imgsz": imgsz, "split": "val"}
            self.validator = load_class(self.arch.task.validator)(args=args)
        else:
            from yolo_opt.data.calib import load_batches
            from yolo_opt.data.checks import dataset_images

            files = dataset_images(data, "val")[:err_images]
            self.images = torch.from_numpy(np.concatenate(load_batches(files, imgsz, progress=False)))

    def _outputs(self, model: nn.Module, x: torch.Tensor) -> list[tuple[str, dict[str, torch.Tensor]]]:
        """The head's raw outputs per branch (boxes, scores; mask coefficients and prototypes of a segment head)."""
        with eval_mode(model), torch.no_grad():
            return self.arch.output_branches(model(x))

    def __call__(self, model: nn.Module) -> dict[str, float]:
        result = {}
        if self.validator is not None:
            stats = self.validator(model=copy.deepcopy(model).float().eval())
            result = {key: float(stats.get(name, 0.0)) for key, name in self.arch.task.metrics.items()}
            if self.images is None:
                imgs = []
                for b in self.validator.dataloader:
                    imgs.append(b["img"].float() / 255)
                    if sum(len(i) for i in imgs) >= self.err_images:
                        break
                self.images = torch.cat(imgs)[: self.err_images]
        images = self.images.to(next(model.parameters()).device)
        if self.ref_out is None:
            self.ref_out = self._outputs(self.reference, images)
        out = self._outputs(model, images)
        result["err"] = output_change(out, self.ref_out)
        return result


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def output_change(out: list[tuple[str, dict[str, torch.Tensor]]],
                  ref: list[tuple[str, dict[str, torch.Tensor]]]) -> float:
    """How much a pruned model's head outputs moved from the reference's, where it matters: the relative L2 change
    of the class probabilities (sigmoid: background anchors, near 0 in both, weigh nothing), and of the boxes and
    mask coefficients weighted per anchor by the reference's confidence (prototypes, not per anchor, as they are).
    Each kind of output scores its worst-hit branch, and the score is the mean over kinds: a group that feeds only
    an end-to-end head's one-to-one branch counts in full, not halved by the branch it leaves alone.

    Raw logits and box distances over all anchors, averaged over both branches, would let the background's logits
    dominate and halve the one-to-one head's damage (measured: docs/benchmarks.md#sensitivity-score).
    """
    worst: dict[str, float] = {}
    for (_, o), (_, r) in zip(out, ref, strict=True):
        weight = r["scores"].float().sigmoid().amax(1, keepdim=True)  # (B, 1, anchors)
        anchors = weight.shape[-1]
        for key, t in o.items():
            t, t_ref = t.float(), r[key].float()
            if key == "scores":
                change = _relative(t.sigmoid(), t_ref.sigmoid())
            elif t.dim() == 3 and t.shape[-1] == anchors:
                change = _relative(t * weight, t_ref * weight)
            else:
                change = _relative(t, t_ref)
            worst[key] = max(worst.get(key, 0.0), change)
    return sum(worst.values()) / max(len(worst), 1)


def pruning_sensitivity(
    model: str | Path,
    data: str | Path,
    opts: SensitivityOptions | None = None,
    imgsz: int = DEFAULT_IMGSZ,
    *,
    prune_method: str = "l2",
    prune_round: int | None = 8,
    out: str | Path = "runs/opt/sensitivity/exp",
    val_args: dict[str, Any] | None = None,
    **shortcuts: Any,
) -> dict[str, Any]:
    """Per-group pruning sensitivity of a checkpoint (`yolo-opt sensitivity`), written to `out`.

    Args:
        model: Ultralytics `.pt` detection checkpoint.
        data: Dataset yaml; its val split is scored.
        opts: Ratios tried on each group, `max_images`, `groups`, `score` (or their keyword shortcuts, e.g.
            `ratios="0.5"`).
        imgsz: Validation image size.
        prune_method: Channel importance criterion that picks the channels (data-free: not taylor).
        prune_round: Channel rounding, as in pruning (a 16-channel group keeps 16 at 0.25 with rounding 8).
        out: Folder for `sensitivity.json`, `sensitivity.md` and `sensitivity.png`.
        val_args: Ultralytics validator arguments (`batch`, `workers`, `conf`, ...), as for `yolo val`.

    Returns:
        The report of `layer_sensitivity`.
    """
    from yolo_opt.data.checks import check_dataset
    from yolo_opt.io.checkpoint import load_model
    from yolo_opt.io.files import check_output, made_folder
    from yolo_opt.prune.report import write_sensitivity_report

    opts = SensitivityOptions.from_kwargs(opts, **shortcuts)
    check_method(prune_method)
    net = load_model(model)
    check_dataset(data, getattr(net, "names", None), ("val",), task=adapter(net).task.name)
    out = check_output(out, [model, data], folder=True, key="name")
    with made_folder(out):  # a refusal (unknown group, ...) leaves no folder behind
        report = {"model": str(model), **layer_sensitivity(net, data, opts, imgsz, prune_method=prune_method,
                                                            prune_round=prune_round, folder=out, val_args=val_args)}
        write_sensitivity_report(report, out)
    return report


def check_method(prune_method: str) -> None:
    """Sensitivity masks the channels a data-free criterion picks (Taylor scores need training batches)."""
    from yolo_opt.prune.importance import DATA_FREE

    if prune_method not in DATA_FREE:
        raise ConfigError(f"sensitivity needs a data-free criterion; use prune_method={', '.join(DATA_FREE)}, "
                          f"not '{prune_method}'")


def layer_sensitivity(
    model: nn.Module,
    data: str | Path,
    opts: SensitivityOptions,
    imgsz: int,
    *,
    prune_method: str = "l2",
    prune_round: int | None = 8,
    folder: str | Path = ".",
    val_args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score pruning each prunable group of `model` alone (on a copy: `model` is not changed).

    `folder` receives the val-subset yaml when `opts.max_images` limits the validator's images.

    Returns:
        The report: `baseline` metrics, `ratios`, and per group `channels`, `pruned` (channels removed per
        ratio) and `map`/`map50`/`err` lists (one value per ratio; only `err` with `score="err"`). `err` is the
        change of the head's outputs (`output_change`) on up to 16 val images (useful where mAP is ~0,
        e.g. an untrained model, and the cheap score: a forward pass per case instead of a validation).
    """
    from ultralytics.utils.tqdm import TQDM as tqdm  # noqa: N813 (Ultralytics ships its own tqdm)

    ratio_list, max_images = opts.ratio_list(), opts.max_images
    with no_forward_hooks(model):  # a distillation wrapper's feature capture would keep traced outputs in the copy
        net = copy.deepcopy(model).float().eval()
    adapter(net).make_prunable()
    wanted = [g for g in (opts.groups or "").split(",") if g]
    t0 = time.time()
    subset = _subset_data(data, max_images, Path(folder)) if opts.score == "map" else str(data)
    evaluate = _Evaluator(subset, imgsz, net, val_args, score=opts.score)
    baseline = evaluate(net)
    planned = {r: plans(net, r, prune_method, prune_round)[0] for r in ratio_list}
    names = [p[0] for p in planned[ratio_list[0]]]
    if wanted:
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise ConfigError(f"unknown group(s) {', '.join(unknown)}; prunable groups: {', '.join(names)}")
        names = [n for n in names if n in wanted]
    table: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(names) * len(ratio_list), desc=f"pruning sensitivity ({opts.score})", unit="case")
    for name in names:
        row: dict[str, Any] = {"channels": None, "pruned": [], **{k: [] for k in baseline}}
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
            for k in scores:
                row[k].append(round(scores[k], 6))
            bar.update()
        table[name] = row
    bar.close()
    return {
        "data": str(data), "imgsz": imgsz, "method": prune_method, "round_to": prune_round, "max_images": max_images,
        "score": opts.score, "task": evaluate.arch.task.name, "primary": evaluate.arch.task.primary,
        "ratios": ratio_list, "baseline": baseline, "groups": table,
        "seconds": round(time.time() - t0, 1),
    }
