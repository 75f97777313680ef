"""The pruning-sensitivity report: JSON, a Markdown table (most sensitive group first) and a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from yolo_opt.io.files import atomic_path, atomic_write_bytes


def write_sensitivity_report(report: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Write `sensitivity.json`, `sensitivity.md` and `sensitivity.png` (atomically) into `out`."""
    out = Path(out)
    paths = {"json": out / "sensitivity.json", "md": out / "sensitivity.md", "png": out / "sensitivity.png"}
    atomic_write_bytes(paths["json"], json.dumps(report, indent=1).encode())
    atomic_write_bytes(paths["md"], sensitivity_table(report).encode())
    plot_sensitivity(report, paths["png"])
    return paths


def sensitivity_table(report: dict[str, Any]) -> str:
    """The report as a Markdown table: one row per group, mAP50-95 (when scored) and output change per ratio."""
    ratios = report["ratios"]
    base = report["baseline"]
    key, label = _metric(report)
    has_map = key in base
    head = ["group", "channels"] + [f"{label} @{r:g}" for r in ratios if has_map] + [f"err @{r:g}" for r in ratios]
    scored = (f"{label}50-95 {base[key]:.4f}, {label}50 {base[key + '50']:.4f}" if has_map
              else "scored by output change only")
    lines = [
        f"Baseline {scored} (imgsz={report['imgsz']}, method={report['method']}, round_to={report['round_to']}, "
        f"max_images={report['max_images']})",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, row in _ranked(report):
        cells = [name, str(row["channels"])] + [f"{v:.4f}" for v in row.get(key, [])] + [f"{v:.3f}" for v in row["err"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _metric(report: dict[str, Any]) -> tuple[str, str]:
    """The report's leading mAP (the task's: masks' for segmentation) and its label."""
    key = report.get("primary", "map")
    return key, "mask mAP" if key == "mask_map" else "mAP"


def _ranked(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Groups, most sensitive first: largest mAP drop (or output change, without mAP) at any measured ratio."""
    base = report["baseline"]
    key, _ = _metric(report)
    if key in base:
        return sorted(report["groups"].items(), key=lambda kv: min(kv[1][key]) - base[key])
    return sorted(report["groups"].items(), key=lambda kv: -max(kv[1]["err"]))


def plot_sensitivity(report: dict[str, Any], path: str | Path) -> Path:
    """PNG: mAP50-95 (when scored) and output change vs ratio, one line per group (the most sensitive labelled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = [0.0, *report["ratios"]]
    base = report["baseline"]
    key, metric = _metric(report)
    has_map = key in base
    fig, axes = plt.subplots(1, 2 if has_map else 1, figsize=(12 if has_map else 6.5, 5), squeeze=False)
    axes = axes[0]
    for i, (name, row) in enumerate(_ranked(report)):
        label = name if i < 8 else None
        if has_map:
            axes[0].plot(ratios, [base[key], *row[key]], marker="o", ms=3, lw=1, label=label)
        axes[-1].plot(ratios, [0.0, *row["err"]], marker="o", ms=3, lw=1, label=label)
    if has_map:
        axes[0].set(xlabel="pruning ratio of the group alone", ylabel=f"{metric}50-95 (no fine-tuning)", title=metric)
    axes[-1].set(xlabel="pruning ratio of the group alone", ylabel="relative change of head outputs",
                 title="output change")
    axes[0].legend(fontsize=7, title="most sensitive")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"Per-group pruning sensitivity ({Path(report['model']).name}, imgsz={report['imgsz']})")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


