"""The verbs that prune a model: the pruning trainers (Ultralytics' detection and segmentation trainers), their
schedule and the `train()` phases; one-shot pruning of a checkpoint (`prune_checkpoint`); and the decisions they
measure on a runtime (`rounding`: `round_for=`; a latency target through `yolo_opt.bench.latency_target`)."""

from yolo_opt.training.oneshot import prune_checkpoint
from yolo_opt.training.phases import attach, qat_phase, train, train_in
from yolo_opt.training.trainer import PruneSchedule, PruneTrainer, SegmentPruneTrainer, is_pruned, trainer_for

__all__ = ["PruneSchedule", "PruneTrainer", "SegmentPruneTrainer", "attach", "is_pruned", "prune_checkpoint", "qat_phase", "train",
           "train_in",
           "trainer_for"]
