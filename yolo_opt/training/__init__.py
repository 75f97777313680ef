"""Training with pruning: the pruning trainers (Ultralytics' detection and segmentation trainers), their schedule,
and the `train()` phases."""

from yolo_opt.training.phases import attach, qat_phase, train, train_in
from yolo_opt.training.trainer import PruneSchedule, PruneTrainer, SegmentPruneTrainer, is_pruned, trainer_for

__all__ = ["PruneSchedule", "PruneTrainer", "SegmentPruneTrainer", "attach", "is_pruned", "qat_phase", "train", "train_in",
           "trainer_for"]
