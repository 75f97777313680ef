"""The study's report: the Pareto front as a table and a plot, a summary, and recipe YAMLs of the best trials."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from yolo_opt.io.files import atomic_path, atomic_write_bytes
from yolo_opt.options import TuneOptions


def report(st, run_dir: str | Path, objectives: str, top: int = 3,
           measured: dict[int, float] | None = None) -> dict[str, Any]:
    """Log the Pareto front, plot it (`pareto.png`), write `pareto.md`, `summary.json` and recipe YAMLs.

    `measured`: trial number -> timed ms, where the trials' latency is the table's prediction (`lat_source=table`)."""
    import optuna
    from ultralytics.utils import LOGGER, YAML

    run_dir = Path(run_dir)
    trials = st.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pareto = sorted(st.best_trials if complete else [], key=lambda t: -t.values[0])
    first, second = TuneOptions.OBJECTIVES[objectives]
    unit = "ms" if second == "latency_ms" else "GFLOPs"
    # the first objective is the task's leading mAP50-95: the masks' for a segmentation model
    metric = "mask mAP50-95" if any("mask_map" in t.user_attrs for t in complete) else "mAP50-95"
    checked = measured is not None
    lines = [
        f"Study '{st.study_name}': {len(trials)} trials ({', '.join(f'{k} {v}' for k, v in sorted(states.items()))})",
        "",
        f"| trial | {metric} | {'latency_ms (table)' if checked else second} |{' measured ms |' if checked else ''} "
        "GFLOPs | params | keys |",
        "|---|---|---|" + ("---|" if checked else "") + "---|---|---|",
    ]
    front = []
    for t in pareto:
        keys = t.user_attrs.get("train_keys", t.params)
        timed = measured.get(t.number) if checked else None
        lines.append(
            f"| {t.number} | {t.values[0]:.4f} | {t.values[1]:.4g} |"
            + (f" {timed:.4g} |" if timed is not None else " - |" if checked else "")
            + f" {t.user_attrs.get('gflops', float('nan')):.3f} | "
            f"{int(t.user_attrs.get('params', 0))} | {' '.join(f'{k}={v}' for k, v in keys.items())} |"
        )
        front.append({"trial": t.number, first: t.values[0], second: t.values[1], "keys": keys,
                      "weights": t.user_attrs.get("weights"), **({"measured_ms": timed} if timed is not None else {})})
    if checked and measured:
        pairs = [(e[second], e["measured_ms"]) for e in front if "measured_ms" in e]
        worst = max(abs(p / m - 1) for p, m in pairs)
        lines += ["", f"Latency from the latency table (ONNX Runtime CPU, built once); the front's first {len(pairs)} "
                  f"trial(s) exported and timed: the table within {worst:.0%} of the measurement."]
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    if failed:
        lines += ["", "Failed trials:"] + [f"- {t.number}: {t.user_attrs.get('error', 'no heartbeat (worker killed?)')}" for t in failed]
    text = "\n".join(lines) + "\n"
    LOGGER.info(text)
    atomic_write_bytes(run_dir / "pareto.md", text.encode())
    recipes = []
    for entry in front[:top]:
        path = run_dir / "recipes" / f"trial_{entry['trial']:04d}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        YAML.save(path, dict(entry["keys"]), header=(
            f"# yolo-opt tune: study '{st.study_name}', trial {entry['trial']} (Pareto-optimal)\n"
            f"# {first}={entry[first]:.4f} {second}={entry[second]:.4g} {unit}\n"
            "# use: yolo-opt train model=best.pt data=data.yaml <these key=value pairs>\n"
        ))
        recipes.append(str(path))
    if complete:
        plot_pareto(complete, pareto, run_dir / "pareto.png", second=second, metric=metric)
    summary = {"study": st.study_name, "run_dir": str(run_dir), "states": states, "pareto": front,
               "recipes": recipes, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_bytes(run_dir / "summary.json", json.dumps(summary, indent=1, default=str).encode())
    return summary


def plot_pareto(complete: list, pareto: list, path: Path, *, second: str, metric: str = "mAP50-95") -> Path:
    """PNG: every complete trial (mAP vs latency/GFLOPs), the Pareto front joined and labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    ax.scatter([t.values[1] for t in complete], [t.values[0] for t in complete], c="0.6", s=18, label="trials")
    front = sorted(pareto, key=lambda t: t.values[1])
    ax.plot([t.values[1] for t in front], [t.values[0] for t in front], "o-", c="tab:red", label="Pareto front")
    for t in front:
        ax.annotate(str(t.number), (t.values[1], t.values[0]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(xlabel="ONNX Runtime CPU latency (ms)" if second == "latency_ms" else "GFLOPs", ylabel=metric,
           title="yolo-opt tune: mAP vs cost")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
