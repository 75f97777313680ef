"""Distillation for recovery after pruning, from the model before pruning.

    losses   output-level distillation: class scores (Bernoulli KL), boxes (DFL bins KL, or L1 without DFL), masks
    model    RecoveryDistillationModel: Ultralytics' DistillationModel with that loss
    teacher  teacher checks, and the wrapper rebuilt around a pruned student
"""

from yolo_opt.distill.losses import output_distillation
from yolo_opt.distill.teacher import check_teacher, rebuild_wrapper, run_teacher

__all__ = ["check_teacher", "output_distillation", "rebuild_wrapper", "run_teacher"]
