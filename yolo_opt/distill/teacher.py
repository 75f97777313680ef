"""The teacher: the model before pruning (or `teacher=`), checked before any work, and rebuilt around a new student."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from yolo_opt.errors import ConfigError, ModelError
from yolo_opt.options import TrainOptions


def run_teacher(opts: TrainOptions, model: str | Path) -> str | None:
    """The teacher of a training run: `teacher=`, else the model itself when it is a checkpoint (the model before
    pruning); None when the run does not distil."""
    if not opts.distilling:
        return None
    teacher = opts.distill.teacher or (str(model) if str(model).endswith(".pt") else None)
    if teacher is None:
        raise ConfigError("distillation (distill=True or a distill_* setting) needs teacher=path/to/model.pt when "
                          "training from a yaml")
    return teacher


def check_teacher(teacher: str | Path, names: dict[int, str] | None, student: nn.Module | None = None,
                  imgsz: int | None = None) -> str:
    """Validate a distillation teacher before any work: it loads, detects, predicts the classes `names` on the same
    anchors as `student` (strides, DFL bins), and was trained at the run's `imgsz` (when both are known).

    Output-level distillation compares teacher and student anchor for anchor, so a head of another layout cannot
    teach, and a teacher scored at a size it was not trained for teaches its own errors.
    """
    from yolo_opt.arch import adapter
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
    if student is not None:
        t_layout, s_layout = _layout(adapter(net)), _layout(adapter(student))
        if t_layout != s_layout:
            raise ModelError(f"teacher {teacher} predicts on other anchors or outputs (task, strides, DFL bins, "
                             f"end-to-end {t_layout} vs the student's {s_layout}); distill from a model of the same "
                             "head layout")
    trained = (getattr(net, "args", None) or {}).get("imgsz") if isinstance(getattr(net, "args", None), dict) else None
    if imgsz is not None and isinstance(trained, int) and trained != imgsz:
        raise ModelError(f"teacher {teacher} was trained at imgsz={trained} but this run trains at imgsz={imgsz}; "
                         f"pass imgsz={trained} or a teacher trained at {imgsz}")
    return str(teacher)


def _layout(arch) -> tuple:
    """What output distillation compares anchor for anchor: the task, strides, DFL bins and the one-to-one branch."""
    return arch.task.name, arch.head.stride.tolist(), arch.reg_max, arch.end2end


def rebuild_wrapper(wrapper: Any, student: nn.Module) -> nn.Module:
    """The distillation wrapper around a new (pruned) student (its projector is sized from the student), or the
    student itself when there is no wrapper."""
    from ultralytics.nn.distill_model import DistillationModel

    if hasattr(wrapper, "rebuilt"):
        return wrapper.rebuilt(student)
    if isinstance(wrapper, DistillationModel):
        return DistillationModel(teacher_model=wrapper.teacher_model, student_model=student)
    return student
