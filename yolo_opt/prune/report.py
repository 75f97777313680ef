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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


