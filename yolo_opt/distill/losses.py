"""Output-level distillation from the model before pruning: class scores and DFL box distributions.

The Detect head's output convs are never pruned, so teacher (the model before pruning) and student predict on the
same anchors with the same channels: the student can match the teacher anchor for anchor, with no projector to
learn (Ultralytics' feature distillation starts a projector from random weights, which cost accuracy in short
recoveries here: 0.357 -> 0.260 at `dis=6`).

Both terms are divergences, zero when the student equals the teacher:
  - classes: Bernoulli KL between the teacher's and the student's sigmoid scores, summed over classes and anchors
    and divided by the sum of the teacher's scores: the units of Ultralytics' class loss (BCE summed, divided by
    the sum of the assigned target scores), so background anchors teach suppression as labels do;
  - boxes: KL between the softmaxed DFL bins (localization distillation, Zheng et al. 2022), averaged over the
    four sides and weighted per anchor by the teacher's confidence (boxes matter where there is an object),
    divided by the sum of those weights: the units of Ultralytics' DFL loss.
Each term takes Ultralytics' own gain (`cls`, `dfl`), so a distillation weight of 1 weighs the teacher like the
labels on any dataset, without tuning.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812


def bernoulli_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(teacher || student) of independent sigmoid scores, from logits (stable; 0 where equal)."""
    target = teacher_logits.sigmoid()
    return (F.binary_cross_entropy_with_logits(student_logits, target, reduction="none")
            - F.binary_cross_entropy_with_logits(teacher_logits, target, reduction="none"))


def output_distillation(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor], reg_max: int,
                        cls_gain: float, dfl_gain: float, temperature: float = 1.0) -> torch.Tensor:
    """The distillation loss of one batch, per image (multiply by the batch size as Ultralytics does).

    Args:
        student, teacher: Detect head training outputs: `scores` (B, nc, A) logits, `boxes` (B, 4*reg_max, A).
        reg_max: DFL bins per box side.
        cls_gain, dfl_gain: Ultralytics' loss gains (`hyp.cls`, `hyp.dfl`).
        temperature: Softening of the DFL distributions (scaled back by T^2).

    Returns:
        Tensor of shape (2,): the class and box terms, gains applied.
    """
    t_scores, s_scores = teacher["scores"].detach().float(), student["scores"].float()
    t_prob = t_scores.sigmoid()
    cls = bernoulli_kl(s_scores, t_scores).sum() / t_prob.sum().clamp(min=1)

    b, _, a = s_scores.shape
    t_bins = teacher["boxes"].detach().float().view(b, 4, reg_max, a) / temperature
    s_bins = student["boxes"].float().view(b, 4, reg_max, a) / temperature
    kl = (t_bins.softmax(2) * (t_bins.log_softmax(2) - s_bins.log_softmax(2))).sum(2).mean(1)  # (B, A)
    weight = t_prob.amax(1)  # (B, A): the teacher's confidence that the anchor holds an object
    box = (kl * weight).sum() / weight.sum().clamp(min=1e-6) * temperature**2
    return torch.stack((cls * cls_gain, box * dfl_gain))
