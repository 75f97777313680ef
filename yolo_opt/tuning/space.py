"""The search space of a compression study: which `yolo-opt train` keys a trial draws, and their ranges."""

from __future__ import annotations

from typing import Any

PRUNE_METHODS_SEARCHED = ("l2", "l1", "taylor")


def suggest(trial, fixed: dict[str, Any], max_epochs: int) -> dict[str, Any]:
    """yolo-opt train keys of one trial: the searched ones drawn by `trial`, the `fixed` ones as given.

    Searched (unless fixed): epochs 1..max_epochs, lr0 log 1e-4..1e-2, prune_target (GFLOPs to keep) 0.3..0.9
    (not when prune= is fixed), prune_method l2/l1/taylor, prune_steps 1..min(3, epochs), prune_ratios
    uniform/sensitivity when there is a sensitivity report (`sensitivity=`, or the one the study makes).
    """
    p: dict[str, Any] = dict(fixed)
    if "epochs" not in p:
        p["epochs"] = trial.suggest_int("epochs", 1, max(1, max_epochs))
    if "lr0" not in p:
        p["lr0"] = float(f"{trial.suggest_float('lr0', 1e-4, 1e-2, log=True):.3g}")
    if not any(k in p for k in ("prune", "prune_target", "prune_latency")):  # a fixed goal is not searched
        p["prune_target"] = round(trial.suggest_float("prune_target", 0.3, 0.9, step=0.05), 2)
    if "prune_method" not in p:
        p["prune_method"] = trial.suggest_categorical("prune_method", PRUNE_METHODS_SEARCHED)
    if "prune_steps" not in p:
        p["prune_steps"] = trial.suggest_int("prune_steps", 1, max(1, min(3, int(p["epochs"]))))
    if p.get("sensitivity") and "prune_ratios" not in p:
        p["prune_ratios"] = trial.suggest_categorical("prune_ratios", ("uniform", "sensitivity"))
    return p


