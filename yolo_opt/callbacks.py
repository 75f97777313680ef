"""Pruning inside the Ultralytics trainer, through callbacks and trainer-instance hooks.

`attach(model, prune=0.5, ...)` registers callbacks on a `YOLO` model; `model.train(...)` then:
  - keeps a pruned model's shapes (the trainer's `get_model` hands back the module, never rebuilds it),
  - optionally trains with an L1 penalty on BN scales (sparsity phase, network slimming),
  - prunes at scheduled epochs (`prune_steps` iterative steps), rebuilding optimizer, scheduler and EMA,
  - resumes a killed run (`resume=True`) at the right step: the schedule state lives in the checkpoint.
"""

from __future__ import annotations

import copy
import math
import types
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yolo_opt.config import split_args
from yolo_opt.errors import ConfigError
from yolo_opt.prune.blocks import C2fSplit, C2PSASplit
from yolo_opt.prune.core import check_reachable, count_macs, min_macs_ratio, prune_model, ratio_for_macs
from yolo_opt.prune.data import detection_loss
from yolo_opt.prune.io import meta

RUN_KEY = "train_run"  # meta(model)[RUN_KEY]: options and progress of the current pruning run


def is_pruned(model: nn.Module) -> bool:
    """True for a model whose shapes came from yolo-opt (it cannot be rebuilt from its yaml)."""
    return any(isinstance(m, (C2fSplit, C2PSASplit)) for m in model.modules())


def _unwrap(model: nn.Module) -> nn.Module:
    from ultralytics.utils.torch_utils import unwrap_model

    model = unwrap_model(model)
    return getattr(model, "student_model", model)


def prune_epochs(epochs: int, steps: int, start: int) -> list[int]:
    """Epochs at whose start each pruning step runs: spread over the run, leaving time to fine-tune after."""
    span = max(epochs - start, 1)
    gap = max(1, span // (steps + 1)) if steps > 1 else 0
    return [min(start + i * gap, epochs - 1) for i in range(steps)]


class PruneController:
    """Holds one run's pruning options and implements the callbacks."""

    def __init__(self, opts: dict[str, Any]):
        """Create a controller from validated yolo-opt options (see `config.ARGS`)."""
        self.opts = opts
        if opts.get("prune") and opts.get("prune_target") is not None:
            raise ConfigError("give prune=<channel fraction> or prune_target=<GFLOPs ratio>, not both")
        if opts.get("prune_ratios") == "sensitivity":
            from yolo_opt.prune.sensitivity import check_sensitivity_opts

            check_sensitivity_opts(opts)

    @property
    def active(self) -> bool:
        """Whether this run prunes at all."""
        return bool(self.opts.get("prune")) or self.opts.get("prune_target") is not None

    # ---- trainer-instance hooks -------------------------------------------------------------------------------
    def install(self, trainer) -> None:
        """on_pretrain_routine_start: hook `get_model` and `optimizer_step` of this trainer instance."""
        original_get_model = trainer.get_model
        original_step = trainer.optimizer_step

        def get_model(self_, cfg=None, weights=None, verbose=True):
            if isinstance(weights, nn.Module) and is_pruned(weights):
                nc = self_.data["nc"]
                if getattr(weights.model[-1], "nc", nc) != nc:
                    raise ConfigError(
                        f"the pruned model predicts {weights.model[-1].nc} classes but the dataset has {nc}; "
                        "a pruned head cannot be rebuilt: prune a model trained on this dataset"
                    )
                model = copy.deepcopy(weights).float()
                for p in model.parameters():
                    p.requires_grad = True
                return self_.set_model_names_for_load(model)
            return original_get_model(cfg=cfg, weights=weights, verbose=verbose)

        def optimizer_step(self_):
            if self._sparsity_on(self_):
                self._add_bn_l1(self_)
            return original_step()

        trainer.get_model = types.MethodType(get_model, trainer)
        trainer.optimizer_step = types.MethodType(optimizer_step, trainer)
        if self.active and trainer.args.compile:
            trainer.args.compile = False  # pruning changes shapes; a compiled graph would be stale

    # ---- schedule ---------------------------------------------------------------------------------------------
    def _sparsity_epochs(self, trainer) -> int:
        if not self.opts.get("sparsity"):
            return 0
        return self.opts.get("sparsity_epochs") or max(1, trainer.epochs // 3)

    def _sparsity_on(self, trainer) -> bool:
        run = meta(_unwrap(trainer.model)).get(RUN_KEY, {})
        return bool(self.opts.get("sparsity")) and run.get("steps_done", 0) == 0 and trainer.epoch < self._sparsity_epochs(trainer)

    def _add_bn_l1(self, trainer) -> None:
        lam = self.opts["sparsity"] * float(trainer.scaler.get_scale() if trainer.scaler.is_enabled() else 1.0)
        for m in _unwrap(trainer.model).modules():
            if isinstance(m, nn.BatchNorm2d) and m.weight.grad is not None:
                m.weight.grad.add_(lam * torch.sign(m.weight.detach()))

    def on_pretrain_routine_end(self, trainer) -> None:
        """Start (or, on resume, keep) the run's record in the model's metadata."""
        if not self.active:
            return
        model = _unwrap(trainer.model)
        if trainer.resume and RUN_KEY in meta(model):
            return
        macs, params = count_macs(model, trainer.args.imgsz)
        meta(model)[RUN_KEY] = {
            "opts": dict(self.opts),
            "epochs": prune_epochs(trainer.epochs, self.opts["prune_steps"], self._sparsity_epochs(trainer)),
            "steps_done": 0,
            "base_macs": macs,
            "base_params": params,
            "imgsz": trainer.args.imgsz,
        }
        self._sync_ema_meta(trainer)

    def on_train_epoch_start(self, trainer) -> None:
        """Run the pruning step scheduled for this epoch, if any."""
        if not self.active:
            return
        run = meta(_unwrap(trainer.model))[RUN_KEY]
        while run["steps_done"] < len(run["epochs"]) and trainer.epoch >= run["epochs"][run["steps_done"]]:
            self._prune_step(trainer, run)

    def _prune_step(self, trainer, run: dict) -> None:
        """One pruning step on the trainer's (student) model, then fresh optimizer, scheduler and EMA."""
        model = _unwrap(trainer.model)
        step = run["steps_done"]
        steps = len(run["epochs"])
        per_layer = self.opts.get("prune_ratios") == "sensitivity"
        ratio = 0.0 if per_layer else self._step_ratio(trainer, model, run, step + 1, steps)
        batches = loss_fn = None
        if self.opts["prune_method"] == "taylor":
            n = self.opts["prune_batches"]
            batches = (trainer.preprocess_batch(b) for b in islice(trainer.train_loader, n))
            loss_fn = detection_loss
        layer_ratios = None
        if per_layer:  # per-group ratios from the sensitivity report, for the same GFLOPs goal
            from yolo_opt.prune.sensitivity import run_layer_ratios

            layer_ratios = run_layer_ratios(model, run, self.opts, step + 1, steps, trainer.args.imgsz)
        prune_model(
            model, ratio, self.opts["prune_method"], self.opts["prune_round"], self.opts["prune_global"],
            trainer.args.imgsz, batches, loss_fn, layer_ratios=layer_ratios,
        )
        macs, params = count_macs(model, trainer.args.imgsz)
        run["steps_done"] = step + 1
        run.setdefault("history", []).append(
            {"epoch": trainer.epoch, "ratio": ratio, "macs_ratio": macs / run["base_macs"],
             "params_ratio": params / run["base_params"]}
        )
        from ultralytics.utils import LOGGER

        LOGGER.info(
            f"yolo-opt: prune step {step + 1}/{steps} at epoch {trainer.epoch + 1} ({self.opts['prune_method']}, "
            f"ratio {'per-layer' if layer_ratios else f'{ratio:.3f}'}): GFLOPs {macs / run['base_macs']:.3f}x, params {params / run['base_params']:.3f}x"
        )
        self._rewrap_distillation(trainer)
        self._rebuild_optimization(trainer)

    @staticmethod
    def _rewrap_distillation(trainer) -> None:
        """A distillation wrapper's projector was sized for the unpruned student: build it anew."""
        from ultralytics.nn.distill_model import DistillationModel
        from ultralytics.utils.torch_utils import unwrap_model

        wrapper = unwrap_model(trainer.model)
        if isinstance(wrapper, DistillationModel):
            trainer.model = DistillationModel(teacher_model=wrapper.teacher_model, student_model=wrapper.student_model)

    def _step_ratio(self, trainer, model: nn.Module, run: dict, step: int, steps: int) -> float:
        """This step's ratio of the *current* channels, so that after `steps` steps the goal is met."""
        if self.opts.get("prune_target") is not None:
            goal = 1 - (1 - self.opts["prune_target"]) * step / steps  # of the run's starting MACs
            current = count_macs(model, trainer.args.imgsz)[0] / run["base_macs"]
            return ratio_for_macs(model, min(1.0, goal / current), self.opts["prune_method"],
                                  self.opts["prune_round"], self.opts["prune_global"],
                                  imgsz=min(trainer.args.imgsz, 320))
        p = self.opts["prune"]
        keep_now, keep_next = 1 - p * (step - 1) / steps, 1 - p * step / steps
        return 1 - keep_next / keep_now

    def _rebuild_optimization(self, trainer) -> None:
        """New parameters after pruning: rebuild optimizer, LR scheduler and EMA; restart best-model tracking."""
        from ultralytics.utils.torch_utils import ModelEMA

        args = trainer.args
        accumulate = max(round(args.nbs / trainer.batch_size), 1)
        decay = args.weight_decay * trainer.batch_size * accumulate / args.nbs
        iterations = math.ceil(len(trainer.train_loader.dataset) / max(trainer.batch_size, args.nbs)) * trainer.epochs
        trainer.optimizer = trainer.build_optimizer(
            model=trainer.model, name=args.optimizer, lr=args.lr0, momentum=args.momentum, decay=decay,
            iterations=iterations,
        )
        trainer._setup_scheduler()
        trainer.scheduler.last_epoch = trainer.epoch - 1
        updates = trainer.ema.updates if trainer.ema else 0
        trainer.ema = ModelEMA(trainer.model)
        trainer.ema.updates = updates
        # best.pt must be a model of the final shape: forget fitness measured on the wider model
        trainer.best_fitness = None
        trainer.stopper.best_fitness = 0.0
        trainer.stopper.best_epoch = trainer.epoch

    def _sync_ema_meta(self, trainer) -> None:
        if trainer.ema is not None:
            meta(_unwrap(trainer.ema.ema))[RUN_KEY] = copy.deepcopy(meta(_unwrap(trainer.model))[RUN_KEY])

    def on_train_epoch_end(self, trainer) -> None:
        """Keep the EMA's copy of the run record current (checkpoints are saved from the EMA)."""
        if self.active:
            self._sync_ema_meta(trainer)

    def callbacks(self) -> dict[str, Any]:
        """Ultralytics event name -> callback."""
        return {
            "on_pretrain_routine_start": self.install,
            "on_pretrain_routine_end": self.on_pretrain_routine_end,
            "on_train_epoch_start": self.on_train_epoch_start,
            "on_train_epoch_end": self.on_train_epoch_end,
        }


def attach(model, **opts) -> PruneController:
    """Register yolo-opt's training callbacks on a `ultralytics.YOLO` model; then call `model.train(...)`.

    Args:
        model: A `YOLO` instance.
        **opts: yolo-opt training options (`prune`, `prune_target`, `prune_method`, `prune_steps`, ...).

    Returns:
        The controller (its options are also saved in the checkpoints, so `resume=True` continues the run).
    """
    ours, rest = split_args("train", opts)
    if rest:
        raise ConfigError(f"not yolo-opt training options: {', '.join(rest)} (pass Ultralytics arguments to train())")
    phased = [k for k in ("qat", "distill", "teacher") if k in opts]
    if phased:
        raise ConfigError(f"attach() handles pruning only; for {', '.join(phased)} use yolo_opt.train(...), or pass "
                          "quantize=8 / distill_model=teacher.pt to model.train()")
    controller = PruneController(ours)
    for event, fn in controller.callbacks().items():
        model.add_callback(event, fn)
    return controller


def saved_options(checkpoint: str | Path) -> dict[str, Any] | None:
    """The yolo-opt options stored in a training checkpoint (for resume), or None."""
    from yolo_opt.prune.io import load_model

    run = meta(load_model(checkpoint)).get(RUN_KEY)
    return dict(run["opts"]) if run else None


def _check_teacher(teacher: str, student: nn.Module | None, data: str | None) -> str:
    """Validate a distillation teacher: it loads, detects, and predicts the same classes as the student/data."""
    from yolo_opt.errors import ModelError
    from yolo_opt.prune.io import load_model

    if not Path(teacher).exists():
        raise ModelError(f"teacher model not found: {teacher}; pass teacher=path/to/unpruned.pt")
    net = load_model(teacher)
    names = dict(getattr(net, "names", {}) or {})
    if student is not None:
        expected = dict(getattr(student, "names", {}) or {})
    else:
        from ultralytics.data.utils import check_det_dataset

        expected = dict(check_det_dataset(str(data))["names"]) if data else {}
    if expected and (len(names) != len(expected) or list(names.values()) != list(expected.values())):
        raise ModelError(
            f"teacher {teacher} predicts {len(names)} classes {list(names.values())[:5]} but the student has "
            f"{len(expected)} {list(expected.values())[:5]}; distill from a model trained on the same classes"
        )
    return str(teacher)


def _run(model: str | Path, opts: dict[str, Any], rest: dict[str, Any]):
    """One Ultralytics training run with yolo-opt's callbacks; returns the trainer."""
    from ultralytics import YOLO

    yolo = YOLO(str(model), task="detect")
    for event, fn in PruneController(opts).callbacks().items():
        yolo.add_callback(event, fn)
    yolo.train(**rest)
    return yolo.trainer


def train(model: str | Path, **kwargs) -> dict[str, Any]:
    """Train (fine-tune) `model` with Ultralytics, with yolo-opt's pruning, distillation and QAT.

    Phases: [prune + recover (optionally distilling from the unpruned model)] -> [QAT fine-tune] -> QDQ ONNX.
    Without `qat`, only the first phase runs; without pruning options it is a plain Ultralytics training.

    Example:
        >>> from yolo_opt import train
        >>> train("best.pt", data="data.yaml", epochs=30, prune=0.5, prune_steps=3, distill=True, qat=True)

    Returns:
        Dict with `save_dir` and `best` of the last phase, `metrics` (Ultralytics), and `qat_onnx` when qat=True.
    """
    from yolo_opt.prune.io import load_model

    ours, rest = split_args("train", kwargs)
    PruneController(ours)  # validates the combination of options
    resume = rest.get("resume")
    net = None
    if resume and str(model).endswith(".pt"):
        stored = saved_options(model)
        if stored:
            ours = {**stored, **{k: v for k, v in ours.items() if k in kwargs}}
    elif str(model).endswith(".pt"):
        net = load_model(model)  # clear error for a missing, corrupt or non-detection file
        if ours.get("prune_target") is not None:  # fail before the trainer creates its run folder
            check_reachable(ours["prune_target"], min_macs_ratio(net, ours["prune_round"], ours["prune_global"]))
    if (ours.get("distill") or ours.get("teacher")) and not resume:
        teacher = ours.get("teacher") or (str(model) if net is not None else None)
        if teacher is None:
            raise ConfigError("distill=True needs teacher=path/to/model.pt when training from a yaml")
        rest["distill_model"] = _check_teacher(teacher, net, rest.get("data"))
    pruning = PruneController(ours).active
    if ours.get("qat") and not pruning:
        rest["quantize"] = 8  # a single QAT fine-tune (Ultralytics' ModelOpt fake-quant)
    trainer = _run(model, ours, rest)
    if ours.get("qat") and pruning:
        qat_rest = {
            k: v for k, v in rest.items() if k not in {"resume", "epochs", "name", "lr0", "optimizer", "pretrained"}
        }
        qat_opts = {**ours, "prune": 0.0, "prune_target": None, "sparsity": 0.0}
        trainer = _run(
            trainer.best if trainer.best.exists() else trainer.last, qat_opts,
            {**qat_rest, "quantize": 8, "epochs": ours["qat_epochs"], "optimizer": "AdamW", "lr0": ours["qat_lr0"],
             "warmup_epochs": 0, "name": f"{trainer.save_dir.name}-qat", "data": trainer.args.data},
        )
    result = {"save_dir": Path(trainer.save_dir), "best": Path(trainer.best), "metrics": trainer.metrics}
    if ours.get("qat"):
        from yolo_opt.quant import export_qat_onnx

        result["qat_onnx"] = export_qat_onnx(result["best"], imgsz=trainer.args.imgsz)
    return result


def train_in(project: str | Path, name: str, model: str | Path, **kwargs) -> Path:
    """Train `model` into `project/name`, or continue what is there: resume an interrupted run (its last.pt),
    reuse a finished one. Returns the run's best.pt (last.pt when no best was saved).
    """
    import shutil

    folder = Path(project) / name
    last, best = folder / "weights" / "last.pt", folder / "weights" / "best.pt"
    if last.exists():
        # Ultralytics strips the final checkpoints and marks them epoch -1
        if torch.load(last, map_location="cpu", weights_only=False).get("epoch", -1) != -1:
            train(str(last), resume=True)
    else:
        shutil.rmtree(folder, ignore_errors=True)
        train(str(model), **{**kwargs, "project": str(project), "name": name, "exist_ok": True})
    return best if best.exists() else last
