"""Output-level distillation from the model before pruning: class scores, boxes, and (segmentation) masks.

The head's output convs are never pruned, so teacher (the model before pruning) and student predict on the same
anchors with the same channels: the student can match the teacher anchor for anchor, with no projector to learn
(Ultralytics' feature distillation starts a projector from random weights, which cost accuracy in short recoveries:
docs/benchmarks.md#distillation).

Every term is a divergence, zero when the student equals the teacher, in the units of the label loss it mirrors and
with Ultralytics' own gain, so a distillation weight of 1 weighs the teacher like the labels on any dataset:
  - classes: Bernoulli KL between the teacher's and the student's sigmoid scores, summed over classes and anchors
    and divided by the sum of the teacher's scores (Ultralytics' class loss: BCE summed over the sum of target
    scores), so background anchors teach suppression as labels do; gain `cls`;
  - boxes, with DFL (`reg_max` > 1): KL between the softmaxed DFL bins (localization distillation, Zheng et al.
    2022), averaged over the four sides; without DFL (YOLO26, `reg_max` = 1): the L1 distance between the box side
    distances normalised by the image size (Ultralytics' L1 box loss there). Weighted per anchor by the teacher's
    confidence (boxes matter where there is an object) and divided by the sum of those weights; gain `dfl`;
  - masks (segment heads): Bernoulli KL between the teacher's and the student's mask logits (mask coefficients
    times prototypes) over the prototype pixels, for each image's anchors the teacher is most confident of,
    weighted by that confidence; it teaches coefficients and prototypes together, whatever basis the prototypes
    drift to; gain `box` (Ultralytics' mask-loss gain).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

MASK_ANCHORS = 32  # anchors per image whose masks are distilled: the teacher's most confident ones


def bernoulli_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(teacher || student) of independent sigmoid scores, from logits (stable; 0 where equal)."""
    target = teacher_logits.sigmoid()
    return (F.binary_cross_entropy_with_logits(student_logits, target, reduction="none")
            - F.binary_cross_entropy_with_logits(teacher_logits, target, reduction="none"))


def anchor_scale(feats: list[torch.Tensor], strides: torch.Tensor) -> torch.Tensor:
    """(A,) each anchor's stride over the image side: a box distance in grid units times this is a fraction of the
    image (Ultralytics normalises its L1 box loss so)."""
    size = feats[0].shape[-1] * float(strides[0])
    return torch.cat([torch.full((f.shape[-2] * f.shape[-1],), float(s) / size, device=f.device)
                      for f, s in zip(feats, strides, strict=True)])


def _masks(coef: torch.Tensor, proto: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, K, H*W) mask logits of the anchors `index` (B, K): their coefficients (B, nm, A) times the prototypes."""
    picked = coef.gather(2, index[:, None].expand(-1, coef.shape[1], -1))  # (B, nm, K)
    return torch.einsum("bnk,bnp->bkp", picked, proto.flatten(2))


def output_distillation(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor], reg_max: int,
                        hyp, strides: torch.Tensor, temperature: float = 1.0) -> dict[str, torch.Tensor]:
    """The distillation terms of one batch for one head branch, per image (Ultralytics multiplies by the batch).

    Args:
        student, teacher: One branch of a head's training outputs: `scores` (B, nc, A) logits, `boxes`
            (B, 4*reg_max, A), `feats`; segment heads add `mask_coefficient` (B, nm, A) and `proto` (B, nm, H, W).
        reg_max: DFL bins per box side (1: no DFL).
        hyp: Ultralytics' hyperparameters (the gains `cls`, `dfl`, `box`).
        strides: The head's strides per level.
        temperature: Softening of the DFL distributions (scaled back by T^2).

    Returns:
        {"kd_cls", "kd_box"[, "kd_mask"]}: scalar terms, gains applied.
    """
    t_scores, s_scores = teacher["scores"].detach().float(), student["scores"].float()
    t_prob = t_scores.sigmoid()
    out = {"kd_cls": bernoulli_kl(s_scores, t_scores).sum() / t_prob.sum().clamp(min=1) * hyp.cls}

    b, _, a = s_scores.shape
    weight = t_prob.amax(1)  # (B, A): the teacher's confidence that the anchor holds an object
    t_box, s_box = teacher["boxes"].detach().float(), student["boxes"].float()
    if reg_max > 1:
        t_bins = t_box.view(b, 4, reg_max, a) / temperature
        s_bins = s_box.view(b, 4, reg_max, a) / temperature
        per_anchor = (t_bins.softmax(2) * (t_bins.log_softmax(2) - s_bins.log_softmax(2))).sum(2).mean(1)
        per_anchor = per_anchor * temperature**2
    else:  # box side distances in grid units: compare them as fractions of the image
        per_anchor = (s_box - t_box).abs().mean(1) * anchor_scale(student["feats"], strides)
    out["kd_box"] = (per_anchor * weight).sum() / weight.sum().clamp(min=1e-6) * hyp.dfl

    if "mask_coefficient" in student and "proto" in student:
        t_proto, s_proto = (p[0] if isinstance(p, (tuple, list)) else p for p in (teacher["proto"], student["proto"]))
        k = min(MASK_ANCHORS, a)
        conf, index = weight.topk(k, dim=1)  # (B, K)
        t_masks = _masks(teacher["mask_coefficient"].detach().float(), t_proto.detach().float(), index)
        s_masks = _masks(student["mask_coefficient"].float(), s_proto.float(), index)
        per_mask = bernoulli_kl(s_masks, t_masks).mean(2)  # (B, K): mean over the prototype pixels
        out["kd_mask"] = (per_mask * conf).sum() / conf.sum().clamp(min=1e-6) * hyp.box
    return out
