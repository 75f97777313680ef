"""The model adapter layer: one home per model family and per task, asked by everything that must know a model.

    base       Family / Task records, their registries, the split-free twin base and its conv helpers
    yolov5 yolov8 yolov9 yolov10 yolo11 yolo12 yolo26    one file per family: twins, layers left intact
    detect segment                                        one file per task: heads, outputs, trainer, metrics

`adapter(model)` composes the families a model holds and its task into a `ModelAdapter`; an unsupported model is
one `ModelError` naming what is supported. Adding a family is one file here (registered on import, below) plus a
row in the tests' family matrix.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from yolo_opt.arch import detect, segment, yolo11, yolo12, yolo26, yolov5, yolov8, yolov9, yolov10  # noqa: F401
from yolo_opt.arch.base import FAMILIES, TASKS, Family, SplitTwin, Task, flatten_tensors
from yolo_opt.errors import ModelError

__all__ = ["FAMILIES", "TASKS", "Family", "ModelAdapter", "SplitTwin", "Task", "adapter", "supported", "task_named",
           "twin_classes"]


def supported() -> str:
    """The families and tasks yolo-opt handles, for messages."""
    names = [f.name for f in FAMILIES]
    tasks = " and ".join(t.name.replace("detect", "detection").replace("segment", "segmentation") for t in TASKS)
    return f"{tasks} models of {', '.join(names[:-1])} and {names[-1]}"


def task_named(name: str) -> Task:
    """The registered task called `name` ("detect", "segment")."""
    for task in TASKS:
        if task.name == name:
            return task
    raise ModelError(f"'{name}' models are not supported; yolo-opt handles {supported()}")


def twin_classes() -> tuple[type, ...]:
    """Every split-free twin class (what a pruned checkpoint may hold besides Ultralytics' own classes)."""
    return tuple(dict.fromkeys(t for f in FAMILIES for t in f.twins.values()))


def load_class(path: str) -> type:
    """A class from its "module:Class" path (Ultralytics' trainers and validators are imported when needed)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


class ModelAdapter:
    """What yolo-opt needs to know of one model, from its families and its task."""

    def __init__(self, model: nn.Module, task: Task, families: list[Family]):
        """`families`: the ones whose blocks the model holds (its name); block rules apply by class regardless."""
        self.model, self.task, self.families = model, task, families
        self.head = model.model[-1]

    @property
    def name(self) -> str:
        """The model's family as users know it (the newest whose blocks it holds), e.g. "YOLO26"."""
        return self.families[-1].name if self.families else "YOLO"

    @property
    def end2end(self) -> bool:
        """Whether the head has a one-to-one (NMS-free) branch."""
        return getattr(self.head, "one2one_cv2", None) is not None

    @property
    def reg_max(self) -> int:
        return int(getattr(self.head, "reg_max", 16))

    # ---- pruning ------------------------------------------------------------------------------------------------
    def make_prunable(self) -> int:
        """Replace every block that splits its `cv1` output by its split-free twin, in place; returns how many.

        Block rules apply by class wherever a block appears (YOLO26 is built of YOLO11's C3k2 and C2PSA)."""
        twins = [(cls, twin) for f in FAMILIES for cls, twin in f.twins.items()]
        count = 0
        for parent in list(self.model.modules()):
            for name, child in list(parent.named_children()):
                for cls, twin in twins:
                    # subclasses too, unless they run another forward (the twin reproduces this one's)
                    if isinstance(child, cls) and type(child).forward is cls.forward:
                        setattr(parent, name, twin(child))
                        count += 1
                        break
        return count

    def to_native(self) -> tuple[int, int]:
        """Put Ultralytics' own blocks back wherever a twin's halves kept equal widths, in place.

        Returns:
            (blocks converted, twins kept because their halves differ).
        """
        converted = kept = 0
        for parent in list(self.model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, SplitTwin):
                    native = child.native()
                    if native is None:
                        kept += 1
                    else:
                        setattr(parent, name, native)
                        converted += 1
        return converted, kept

    def keep(self) -> list[nn.Module]:
        """Modules whose output channels pruning leaves intact: the head's outputs, what the families keep
        (attention), and the other half of a twin whose halves must stay equal (`prune_native`)."""
        out = list(self.task.head_keep(self.head))
        for family in FAMILIES:
            if family.keep is not None:
                out.extend(family.keep(self.model))
        for m in self.model.modules():
            if isinstance(m, SplitTwin) and m.equal_halves and m.intact_half() is not None:
                first, second = (getattr(m, n) for n in m.halves)
                out.append(first if m.intact_half() is second else second)
        return list(dict.fromkeys(out))

    def unwrapped(self) -> list[tuple[nn.Parameter, int]]:
        """Bare parameters (not inside a conv or BN) pruned with their channels, and the dimension that holds them."""
        return [p for f in FAMILIES if f.unwrapped is not None for p in f.unwrapped(self.model)]

    @contextlib.contextmanager
    def _training_branches(self) -> Iterator[list[torch.Tensor]]:
        """Run the head's training-only branches on their inputs while the model runs in eval mode."""
        extra: list[torch.Tensor] = []
        hooks = [feeder.register_forward_pre_hook(lambda mod, args, branch=branch: extra.append(branch(args[0])))
                 for branch, feeder in self.task.training_branches(self.head)]
        try:
            yield extra
        finally:
            for h in hooks:
                h.remove()

    def trace(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every output of a forward in eval mode, both heads and training-only branches included: what DepGraph
        traces (only the first output of an end-to-end model is one branch; train mode detaches the one-to-one
        branch's inputs)."""
        with self._training_branches() as extra:
            out = flatten_tensors(self.model(x))
        return out + extra

    @staticmethod
    def _branches(raw: dict) -> list[tuple[str, dict[str, Any]]]:
        """(branch name, its outputs) of a dict of raw head outputs: one-to-many, and one-to-one where the head has
        it (an end-to-end head nests each branch's dict under its name)."""
        return [(k, raw[k]) for k in ("one2many", "one2one") if isinstance(raw.get(k), dict)] or [("one2many", raw)]

    def output_branches(self, out: Any) -> list[tuple[str, dict[str, torch.Tensor]]]:
        """(branch name, {key: tensor}) of an eval-mode output: each head branch's raw outputs per anchor (the task's
        distilled keys: boxes, scores; a segment head's mask coefficients and prototypes). An end-to-end head gives
        both branches: the one-to-one branch is the output it deploys with, the one-to-many one what trains its
        features. Empty when the output is not Ultralytics' dict of raw outputs."""
        raw = out[1] if isinstance(out, (tuple, list)) and len(out) > 1 else out  # eval mode: (decoded, raw)
        if not isinstance(raw, dict):
            return []
        return [(name, {k: b[k] for k in self.task.distill_keys if isinstance(b.get(k), torch.Tensor)})
                for name, b in self._branches(raw)]

    def distill_branches(self, preds: dict) -> list[tuple[str, dict[str, Any]]]:
        """(branch name, {key: tensor}) of a training output: one-to-many, and one-to-one where the head has it;
        each with the task's distilled outputs and the head's input features (their shapes place the anchors)."""
        return [(name, {k: b[k] for k in (*self.task.distill_keys, "feats") if k in b})
                for name, b in self._branches(preds)]

    def deploy_end2end(self, end2end: bool | None = None) -> bool | None:
        """The head a deployed model outputs: True for the NMS-free one-to-one head, False for the one-to-many one
        (needs NMS), None for the one the installed Ultralytics picks by default (known once a file is exported:
        its metadata says; in 8.4.190 the one-to-many head, `nms=None`)."""
        if end2end and not self.end2end:
            raise ModelError(f"end2end=True needs an NMS-free head (YOLO26, YOLOv10); this {self.name} model has "
                             "none: drop end2end=")
        return None if end2end is None else bool(end2end)

    def exporter_args(self, end2end: bool | None = None, nms: bool | None = None) -> dict[str, Any]:
        """Ultralytics exporter arguments that select the head output: its `nms=False` is the NMS-free head, and
        no argument leaves the choice to its default (`end2end=None`).

        `nms` is Ultralytics' argument if the user gave it: `nms=False` asks for the NMS-free head too, and
        `nms=True` (embed NMS) fits only a one-to-many output.
        """
        from yolo_opt.errors import ConfigError

        if nms is False:
            if end2end is False:
                raise ConfigError("nms=False selects the NMS-free head and end2end=False the one-to-many one: give one")
            end2end = True
        end2end = self.deploy_end2end(end2end)
        if nms and end2end:
            raise ConfigError("nms=True embeds NMS after the one-to-many head, and end2end=True asks for the NMS-free "
                              "head: give one")
        return {"nms": False} if end2end else ({"nms": True} if nms else {})

    def output_format(self, end2end: bool) -> str:
        """What a deployed model of this head outputs (bundle metadata and README); `end2end`: the exported file's."""
        return self.task.output(self.head, bool(end2end))


def adapter(model: nn.Module) -> ModelAdapter:
    """The adapter of an Ultralytics YOLO model, or one ModelError naming what is supported."""
    model = getattr(model, "student_model", model)  # a distillation wrapper (a distilled run's last.pt): its student
    layers = getattr(model, "model", None)
    if not isinstance(layers, nn.Sequential) or not len(layers):
        raise ModelError(f"{type(model).__name__} is not an Ultralytics YOLO model; yolo-opt handles {supported()}")
    head = layers[-1]
    task = next((t for t in TASKS if type(head) in t.heads), None)
    if task is None:
        from ultralytics.nn.tasks import guess_model_task

        # the task of the architecture (its yaml's head), not of the arguments a checkpoint was saved with
        task = guess_model_task(model.yaml if isinstance(getattr(model, "yaml", None), dict) else model)
        kind = "an RT-DETR" if type(head).__name__ == "RTDETRDecoder" else f"a '{task}'"
        raise ModelError(f"{kind} model ({type(head).__name__} head) is not supported; yolo-opt handles {supported()}")
    return ModelAdapter(model, task, [f for f in FAMILIES if f.recognise(model)])
