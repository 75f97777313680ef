"""Training with pruning: the `PruneTrainer` (a DetectionTrainer subclass), its schedule, and the `train()` phases."""

from yolo_opt.train.phases import attach, qat_phase, train, train_in
from yolo_opt.train.trainer import PruneSchedule, PruneTrainer, is_pruned

__all__ = ["PruneSchedule", "PruneTrainer", "attach", "is_pruned", "qat_phase", "train", "train_in"]
