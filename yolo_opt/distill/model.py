"""`RecoveryDistillationModel`: Ultralytics' DistillationModel with yolo-opt's output-level distillation.

A subclass, so everything Ultralytics does for its own distillation wrapper still happens (the frozen teacher,
the EMA and the final checkpoints without it, its rebuild on resume), while the loss is ours: the detection loss
plus `weight` x the output distillation of `yolo_opt.distill.losses` (on every branch of the head, masks included
for a segment head), plus, if asked, Ultralytics' feature distillation (`feature_weight` x its projector loss).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from ultralytics.nn.distill_model import DistillationModel

from yolo_opt.arch import adapter
from yolo_opt.distill.losses import output_distillation


class RecoveryDistillationModel(DistillationModel):
    """Teacher (the model before pruning) and pruned student; the loss adds output-level distillation."""

    def __init__(self, teacher_model: str | Path | nn.Module, student_model: nn.Module, weight: float = 1.0,
                 feature_weight: float = 0.0):
        """Wrap `student_model`; `weight` scales the output distillation, `feature_weight` Ultralytics' own."""
        super().__init__(teacher_model=teacher_model, student_model=student_model)
        self.weight, self.feature_weight = float(weight), float(feature_weight)

    def rebuilt(self, student: nn.Module) -> RecoveryDistillationModel:
        """The same teacher and weights around a new (pruned) student (the projector is sized for it anew)."""
        return type(self)(self.teacher_model, student, self.weight, self.feature_weight)

    def loss(self, batch, preds=None):
        """Detection (or segmentation) loss of the student, then the distillation terms as extra loss items."""
        arch = adapter(self.student_model)
        keys = ["kd_cls", "kd_box"] + (["kd_mask"] if "mask_coefficient" in arch.task.distill_keys else [])
        if not self.training:  # validation during training: the student's loss, the same items at zero
            regular, items = self.student_model.loss(batch, preds)
            zero = torch.zeros(len(keys) + bool(self.feature_weight), device=regular.device)
            items.update(zip(keys, zero[: len(keys)], strict=True))
            if self.feature_weight:
                items["dis_loss"] = zero[-1]
            return torch.cat([regular, zero]), items
        self._teacher_feats.clear()
        self._student_feats.clear()
        with torch.no_grad():
            teacher_out = self.teacher_model(batch["img"])  # eval mode: (decoded, raw head outputs)
        student_out = self.student_model(batch["img"])  # train mode: raw head outputs
        regular, items = self.student_model.loss(batch, student_out)
        kd = self.distillation(arch, student_out, teacher_out[1]) * self.weight
        items.update(zip(keys, kd.detach(), strict=True))
        losses = [regular, kd * batch["img"].shape[0]]
        if self.feature_weight:
            features = self._feature_loss() * self.feature_weight
            items["dis_loss"] = features.detach()
            losses.append(features.view(1) * batch["img"].shape[0])
        return torch.cat(losses), items

    def distillation(self, arch, student_out: dict, teacher_out: dict) -> torch.Tensor:
        """The output distillation terms over the head's branches: the one-to-many branch (the dense signal) and
        an end-to-end head's one-to-one branch, weighted as the label loss weighs them (YOLO26 shifts its weight
        from one-to-many to one-to-one as training goes on)."""
        hyp, criterion = self.student_model.args, self.student_model.criterion
        gains = {"one2many": getattr(criterion, "o2m", 1.0), "one2one": getattr(criterion, "o2o", 1.0)}
        teacher = dict(arch.distill_branches(teacher_out))
        total = None
        for name, student in arch.distill_branches(student_out):
            terms = output_distillation(student, teacher[name], arch.reg_max, hyp, strides=arch.head.stride)
            value = torch.stack(list(terms.values())) * gains[name]
            total = value if total is None else total + value
        return total

    def _feature_loss(self) -> torch.Tensor:
        """Ultralytics' score-weighted L2 on neck features through the projector (what `dis=` weighs)."""
        n = len(self.feats_idx) - 1
        teacher_scores = self.decouple_outputs(self._teacher_feats[n], branch="one2many")["scores"]
        sizes = [self._teacher_feats[i].shape[-2] * self._teacher_feats[i].shape[-1] for i in range(n)]
        parts = torch.split(teacher_scores, sizes, dim=-1)
        scores = tuple(p.sigmoid().max(dim=1, keepdim=True).values for p in parts)
        total = torch.zeros((), device=teacher_scores.device)
        for i in range(n):
            student = self.projector[i](self.decouple_outputs(self._student_feats[i]))
            total = total + self.loss_sl2(student, self.decouple_outputs(self._teacher_feats[i]), i, scores)
        return total
