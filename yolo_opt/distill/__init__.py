"""Distillation for recovery after pruning: teacher checks and the distillation wrapper around a pruned student."""

from yolo_opt.distill.teacher import check_teacher, rebuild_wrapper

__all__ = ["check_teacher", "rebuild_wrapper"]
