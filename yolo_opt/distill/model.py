"""`RecoveryDistillationModel`: Ultralytics' DistillationModel with yolo-opt's output-level distillation.

A subclass, so everything Ultralytics does for its own distillation wrapper still happens (the frozen teacher,
the EMA and the final checkpoints without it, its rebuild on resume), while the loss is ours: the detection loss
plus `weight` x the output distillation of `yolo_opt.distill.losses`, plus, if asked, Ultralytics' feature
distillation (`feature_weight` x its projector loss) for comparison.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from ultralytics.nn.distill_model import DistillationModel

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
        """Detection loss of the student, then the distillation terms as extra loss items."""
        if not self.training:  # validation during training: the student's loss, the same items at zero
            regular, items = self.student_model.loss(batch, preds)
            zero = torch.zeros(3 if self.feature_weight else 2, device=regular.device)
            items.update(kd_cls=zero[0], kd_box=zero[1])
            if self.feature_weight:
                items["dis_loss"] = zero[2]
            return torch.cat([regular, zero]), items
        self._teacher_feats.clear()
        self._student_feats.clear()
        with torch.no_grad():
            teacher_out = self.teacher_model(batch["img"])  # eval mode: (decoded, raw head outputs)
        student_out = self.student_model(batch["img"])  # train mode: raw head outputs
        regular, items = self.student_model.loss(batch, student_out)
        hyp = self.student_model.args
        kd = output_distillation(student_out, teacher_out[1], self.student_model.model[-1].reg_max, hyp.cls, hyp.dfl)
        kd = kd * self.weight
        items.update(kd_cls=kd[0].detach(), kd_box=kd[1].detach())
        losses = [regular, kd * batch["img"].shape[0]]
        if self.feature_weight:
            features = self._feature_loss() * self.feature_weight
            items["dis_loss"] = features.detach()
            losses.append(features.view(1) * batch["img"].shape[0])
        return torch.cat(losses), items

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
