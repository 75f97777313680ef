"""The teacher: the model before pruning (or `teacher=`), checked before any work, and rebuilt around a new student."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from yolo_opt.errors import ModelError


def check_teacher(teacher: str | Path, names: dict[int, str] | None) -> str:
    """Validate a distillation teacher: it loads, detects, and predicts the classes `names` (the student's/data's)."""
    from yolo_opt.io.checkpoint import load_model

    if not Path(teacher).exists():
        raise ModelError(f"teacher model not found: {teacher}; pass teacher=path/to/unpruned.pt")
    net = load_model(teacher)
    theirs = [str(v) for v in dict(getattr(net, "names", {}) or {}).values()]
    ours = [str(v) for v in dict(names or {}).values()]
    if ours and theirs != ours:
        raise ModelError(
            f"teacher {teacher} predicts {len(theirs)} classes {theirs[:5]} but the student has {len(ours)} "
            f"{ours[:5]}; distill from a model trained on the same classes"
        )
    return str(teacher)


def rebuild_wrapper(wrapper: Any, student: nn.Module) -> nn.Module:
    """A distillation wrapper around a new (pruned) student: Ultralytics sizes its projector from the student."""
    from ultralytics.nn.distill_model import DistillationModel

    if isinstance(wrapper, DistillationModel):
        return DistillationModel(teacher_model=wrapper.teacher_model, student_model=student)
    return student
