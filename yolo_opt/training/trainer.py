"""`PruneTrainer` / `SegmentPruneTrainer`: Ultralytics' detection and segmentation trainers that prune on a schedule
while they train (one mixin, `Pruning`, over each of Ultralytics' trainers; `trainer_for(task)` picks one).

    from ultralytics import YOLO
    from yolo_opt.training import PruneTrainer
    YOLO("best.pt").train(trainer=PruneTrainer, data="data.yaml", epochs=30, prune_target=0.5)

What it adds, through the trainer's public methods (and one callback for the epoch start, which has no method):
  - `get_model` hands a pruned model back as it is (a pruned model cannot be rebuilt from its yaml);
  - `optimizer_step` adds the L1 penalty on BN scales during a sparsity phase (network slimming);
  - at scheduled epochs it prunes (`prune_steps` steps), then rebuilds what holds the old parameters: the
    distillation wrapper, the DDP wrapper, the optimizer, the LR scheduler and the EMA, and restarts best-model
    tracking so `best.pt` always has the final shape;
  - the schedule state lives in the model's metadata, so `resume=True` continues at the right step.

Multi-GPU (Ultralytics' DDP re-creates the trainer in each worker from `type(trainer)`, its arguments and its
pickled callbacks): the options travel in the `PruneSchedule` callback, rank 0 alone decides each pruning step
(Taylor scores would differ per rank's batches) and broadcasts the pruned model, and every rank rebuilds its
wrappers, optimizer and EMA from it.
"""

from __future__ import annotations

import copy
import math
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import distributed as dist
from torch import nn
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.models.yolo.segment import SegmentationTrainer
from ultralytics.utils import DEFAULT_CFG, LOGGER

from yolo_opt.arch import SplitTwin
from yolo_opt.errors import ConfigError
from yolo_opt.io.checkpoint import META_ATTR, meta, safe_loading
from yolo_opt.options import QATOptions, TrainOptions
from yolo_opt.training.schedule import RunState

RUN_KEY = "train_run"  # meta(model)[RUN_KEY]: options and progress of the current pruning run
RUN_RECORD = "yolo-opt-run.json"  # in a run folder: where its trainer keeps last.pt and best.pt (relative paths)


def is_pruned(model: nn.Module) -> bool:
    """True for a model whose shapes came from yolo-opt (it cannot be rebuilt from its yaml): split twins, or
    Ultralytics' own blocks with a pruning history (`prune_native`)."""
    info = getattr(model, META_ATTR, None)
    return any(isinstance(m, SplitTwin) for m in model.modules()) or (
        isinstance(info, dict) and bool(info.get("history")))


def student(model: nn.Module) -> nn.Module:
    """The detection model inside DDP / compile / distillation wrappers."""
    from ultralytics.utils.torch_utils import unwrap_model

    model = unwrap_model(model)
    return getattr(model, "student_model", model)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class PruneSchedule:
    """The `on_train_epoch_start` callback that runs due pruning steps; it also carries the trainer's options.

    Ultralytics pickles a trainer's callbacks into the file a DDP worker starts from, so the options survive the
    trainer's re-creation there (its arguments cannot carry them: Ultralytics refuses unknown keys).
    """

    def __init__(self, opts: TrainOptions, after: QATOptions | None = None):
        """Hold the run's options and the QAT phase that follows this run, if any."""
        self.opts = opts
        self.after = after

    def __call__(self, trainer) -> None:
        """Prune if a step is due at this epoch, then set this epoch's distillation weight."""
        if isinstance(trainer, Pruning):
            trainer.prune_due()
            trainer.distill_due()


class Pruning:
    """yolo-opt's pruning schedule, sparsity penalty and rebuilds (see the module doc), mixed into an Ultralytics
    trainer through its public methods: the same code for every task's trainer."""

    def __init__(self, cfg=DEFAULT_CFG, overrides: dict[str, Any] | None = None, _callbacks: dict | None = None):
        """Take yolo-opt's keys out of `overrides` (the rest is Ultralytics'), or the options a DDP worker carries."""
        safe_loading()  # Ultralytics' own checkpoint loads in this trainer (and in each DDP worker) are weights_only
        overrides = dict(overrides or {})
        carrier = next((cb for cb in (_callbacks or {}).get("on_train_epoch_start", [])
                        if isinstance(cb, PruneSchedule)), None)
        # the options come in the callback (yolo_opt.train, DDP workers) or as keys (`YOLO().train(trainer=...)`)
        self.opts, overrides = TrainOptions.resolve(carrier.opts if carrier else None, overrides)
        if self.opts.qat.qat:
            if self.opts.prune.active:
                raise ConfigError("qat=True after pruning is a second training phase: use yolo_opt.train() or "
                                  "'yolo-opt train', which run prune + recover, then QAT")
            overrides.update(quantize=8)  # a single QAT fine-tune (Ultralytics' ModelOpt fake-quant)
        super().__init__(cfg, overrides, _callbacks)
        if carrier is None:
            carrier = PruneSchedule(self.opts)
            self.add_callback("on_train_epoch_start", carrier)
        self.schedule = carrier
        if self.opts.prune.active and self.args.compile:
            LOGGER.warning("yolo-opt: 'compile' is disabled while pruning (shapes change between epochs)")
            self.args.compile = False
        if self.args.distill_model is None:  # the teacher: teacher=, else the model before pruning
            from yolo_opt.distill import run_teacher

            self.args.distill_model = run_teacher(self.opts, self.args.model)
        self._record_run()

    def _record_run(self) -> None:
        """Write where this trainer keeps its checkpoints into its run folder (`RUN_RECORD`), so whoever continues
        the run (`yolo_opt.training.train_in`) asks the trainer instead of assuming Ultralytics' folder layout."""
        import json

        from ultralytics.utils import RANK

        from yolo_opt.io.files import atomic_write_bytes

        if RANK in {-1, 0} and getattr(self, "save_dir", None) is not None:
            record = {k: str(Path(getattr(self, k)).resolve().relative_to(Path(self.save_dir).resolve()))
                      for k in ("last", "best")}
            atomic_write_bytes(Path(self.save_dir) / RUN_RECORD, json.dumps(record).encode())

    # ---- Ultralytics' public methods ------------------------------------------------------------------------------
    def get_model(self, cfg=None, weights=None, verbose: bool = True):
        """A pruned model is handed back as it is; other models are built from the yaml, keeping our metadata."""
        if isinstance(weights, nn.Module) and is_pruned(weights):
            nc = self.data["nc"]
            if getattr(weights.model[-1], "nc", nc) != nc:
                raise ConfigError(
                    f"the pruned model predicts {weights.model[-1].nc} classes but the dataset has {nc}; "
                    "a pruned head cannot be rebuilt: prune a model trained on this dataset"
                )
            model = copy.deepcopy(weights).float()
            for p in model.parameters():
                p.requires_grad = True
            return self.set_model_names_for_load(model)
        model = super().get_model(cfg=cfg, weights=weights, verbose=verbose)
        if isinstance(weights, nn.Module) and isinstance(getattr(weights, META_ATTR, None), dict):
            setattr(model, META_ATTR, copy.deepcopy(meta(weights)))  # a resumed run's schedule state
        return model

    def setup_model(self):
        """Ultralytics' model set-up; on resume, the stored pruning run's options take over before anything else.

        An end-to-end model (YOLO26) is validated on the head Ultralytics validates by default (`nms=` as given),
        the head its export ships by default too, so best.pt is the best of the head that is deployed."""
        ckpt = super().setup_model()
        stored = self._run()
        if self.resume and stored:  # the checkpoint keeps them as plain data (a weights_only load rebuilds no class)
            self.opts = TrainOptions.from_dict(stored.opts)
            after = stored.after
            self.schedule.opts, self.schedule.after = self.opts, QATOptions(**after) if after else None
        return ckpt

    def set_model_attributes(self) -> None:
        """After Ultralytics sets the model's attributes: wrap it for output-level distillation when distilling."""
        from ultralytics.nn.distill_model import DistillationModel

        from yolo_opt.distill.model import RecoveryDistillationModel

        super().set_model_attributes()
        if not self.opts.distilling or self.args.distill_model is None or isinstance(self.model, RecoveryDistillationModel):
            return
        d = self.opts.distill
        if isinstance(self.model, DistillationModel):  # Ultralytics rebuilt its own wrapper from a resumed checkpoint
            old = self.model
            self.model = RecoveryDistillationModel(old.teacher_model, old.student_model, d.distill_weight,
                                                   d.distill_features)
            self.model.projector.load_state_dict(old.projector.state_dict())
        else:
            self.model = RecoveryDistillationModel(self.args.distill_model, self.model, d.distill_weight,
                                                   d.distill_features)

    def optimizer_step(self) -> None:
        """During the sparsity phase, add the L1 penalty on BN scales to the gradients (at the AMP scale)."""
        if self._sparsity_on():
            lam = self.opts.prune.sparsity * float(self.scaler.get_scale() if self.scaler.is_enabled() else 1.0)
            for m in student(self.model).modules():
                if isinstance(m, nn.BatchNorm2d) and m.weight.grad is not None:
                    m.weight.grad.add_(lam * torch.sign(m.weight.detach()))
        super().optimizer_step()

    def resume_training(self, ckpt) -> None:
        """After Ultralytics' own resume: start the pruning run's record (a resumed run keeps its own)."""
        super().resume_training(ckpt)
        model = student(self.model)
        if (self.resume and meta(model).get(RUN_KEY)) or not self.opts.prune.active:
            return  # a resumed run keeps its record (its options were restored in setup_model)
        from yolo_opt.prune.targets import count_macs
        from yolo_opt.training.schedule import prune_epochs, sparsity_epochs

        macs, params = count_macs(model, self.args.imgsz)
        meta(model)[RUN_KEY] = RunState(
            opts=self.opts.to_dict(),
            epochs=prune_epochs(self.epochs, self.opts.prune.prune_steps, sparsity_epochs(self.opts.prune, self.epochs)),
            base_macs=macs,
            base_params=params,
            imgsz=self.args.imgsz,
            after=self.schedule.after and self.schedule.after.to_dict(),  # a QAT phase that follows (for resume)
        ).to_dict()

    def save_model(self):
        """Checkpoints are saved from the EMA: give it the current run record first."""
        record = meta(student(self.model)).get(RUN_KEY)
        if record is not None and self.ema is not None:
            meta(student(self.ema.ema))[RUN_KEY] = copy.deepcopy(record)
        return super().save_model()

    # ---- the schedule ---------------------------------------------------------------------------------------------
    def _run(self) -> RunState | None:
        """The pruning run's state, read from the model's metadata (where checkpoints and DDP broadcasts carry it)."""
        record = meta(student(self.model)).get(RUN_KEY)
        return RunState.from_dict(record) if record else None

    def _store_run(self, run: RunState) -> None:
        meta(student(self.model))[RUN_KEY] = run.to_dict()

    def _sparsity_on(self) -> bool:
        from yolo_opt.training.schedule import sparsity_epochs

        run = self._run()
        return (bool(self.opts.prune.sparsity) and run is not None and run.steps_done == 0
                and self.epoch < sparsity_epochs(self.opts.prune, self.epochs))

    def prune_due(self) -> None:
        """Run every pruning step scheduled at or before this epoch (several when steps outnumber epochs)."""
        run = self._run()
        while run is not None and run.steps_done < len(run.epochs) and self.epoch >= run.epochs[run.steps_done]:
            self.prune_step()
            run = self._run()

    def distill_due(self) -> None:
        """This epoch's output distillation weight (`distill_schedule`): `distill_weight`; with `linear` falling from
        it at the first epoch to 0 at the last; with `while_behind` 0 once the student has caught up with its teacher."""
        from ultralytics.utils.torch_utils import unwrap_model

        from yolo_opt.distill.model import RecoveryDistillationModel

        model = unwrap_model(self.model)  # DDP
        if not isinstance(model, RecoveryDistillationModel):
            return
        d = self.opts.distill
        if d.distill_schedule == "linear":
            fade = 1 - self.epoch / max(self.epochs - 1, 1)
        else:
            fade = 0.0 if d.distill_schedule == "while_behind" and self._caught_up() else 1.0
        model.weight = d.distill_weight * fade

    def _caught_up(self) -> bool:
        """`while_behind`: whether a validation after the last pruning step scored the student at or above its
        teacher. Sticky: kept in the run's record, so a resumed run stays let go. Rank 0 alone validates, so it
        decides and tells the other ranks."""
        # a run that distils without pruning (teacher=) has no record of its own (a pruned checkpoint carries its
        # earlier run's): its state lives on the trainer
        run = self._run() if self.opts.prune.active else None
        record = run if run is not None else self.__dict__.setdefault("_distill_record", RunState())
        if record.caught_up is not None:
            return True
        pruning = run is not None and run.steps_done < len(run.epochs)
        last_step = run.history[-1]["epoch"] if run and run.history else -1
        now = False
        if (not _distributed() or dist.get_rank() == 0) and not pruning and self.epoch > last_step \
                and self.fitness is not None:  # the last validation scored the final shape
            if record.teacher_fitness is None:
                record.teacher_fitness = self._teacher_fitness()
            now = float(self.fitness) >= record.teacher_fitness
        if _distributed():
            flag = [now]
            dist.broadcast_object_list(flag, src=0)
            now = flag[0]
        if now:
            record.caught_up = self.epoch
            LOGGER.info(f"yolo-opt: the student reached its teacher's fitness ({record.teacher_fitness or 0:.4f}) "
                        f"after epoch {self.epoch}: distillation off from epoch {self.epoch + 1}")
        if run is not None:  # sticky: kept in the run's record, so a resumed run stays let go
            self._store_run(run)
        return now

    def _teacher_fitness(self) -> float:
        """The teacher's fitness as this trainer scores the student: Ultralytics' validator on the run's validation
        split at the run's size (its files go into the run folder)."""
        from ultralytics import YOLO

        metrics = YOLO(self.args.distill_model).val(
            data=self.args.data, imgsz=self.args.imgsz, batch=self.args.batch, device=self.device, workers=0,
            half=False, plots=False, verbose=False, project=str(self.save_dir), name="teacher-val", exist_ok=True)
        return float(metrics.fitness)

    def prune_step(self) -> None:
        """One pruning step (decided on rank 0, broadcast under DDP), then fresh wrappers, optimizer and EMA."""
        model = student(self.model)
        if not _distributed() or dist.get_rank() == 0:
            self._prune(model)
        if _distributed():
            from yolo_opt.prune.depgraph import no_forward_hooks

            with no_forward_hooks(model):
                payload = [copy.deepcopy(model).cpu() if dist.get_rank() == 0 else None]
            dist.broadcast_object_list(payload, src=0)
            if dist.get_rank() != 0:
                model = payload[0].to(self.device)
        self._rewrap(model)
        self._rebuild_optimization()

    def _prune(self, model: nn.Module) -> None:
        """Prune `model` in place by this step's share and record it in the run."""
        from yolo_opt.data.batches import detection_loss
        from yolo_opt.prune.importance import NEEDS_DATA
        from yolo_opt.prune.pruner import prune_model
        from yolo_opt.prune.targets import count_macs
        from yolo_opt.training.schedule import step_layer_ratios, step_ratio

        opts, run, imgsz = self.opts.prune, self._run(), self.args.imgsz
        step, steps = run.steps_done + 1, len(run.epochs)
        if opts.by_group:
            ratio = 0.0
            layer_ratios = step_layer_ratios(model, opts, run, step=step, steps=steps, imgsz=imgsz, data=self.args.data,
                                             folder=self.save_dir / "sensitivity")
        else:
            ratio, layer_ratios = step_ratio(model, opts, run, step=step, steps=steps, imgsz=imgsz), None
        batches = loss_fn = None
        if opts.prune_method in NEEDS_DATA:
            batches = (self.preprocess_batch(b) for b in islice(self.train_loader, opts.prune_batches))
            loss_fn = detection_loss
        prune_model(model, ratio, opts.prune_method, opts.prune_round, prune_global=opts.prune_global, batches=batches,
                    loss_fn=loss_fn, layer_ratios=layer_ratios)
        macs, params = count_macs(model, imgsz)
        run.steps_done = step
        run.history.append({"epoch": self.epoch, "ratio": ratio, "macs_ratio": macs / run.base_macs,
                            "params_ratio": params / run.base_params})
        self._store_run(run)
        LOGGER.info(
            f"yolo-opt: prune step {step}/{steps} at epoch {self.epoch + 1} ({opts.prune_method}, ratio "
            f"{'per-layer' if layer_ratios else f'{ratio:.3f}'}): GFLOPs {macs / run.base_macs:.3f}x, "
            f"params {params / run.base_params:.3f}x"
        )

    def _rewrap(self, model: nn.Module) -> None:
        """Put the (pruned) student back into the distillation and DDP wrappers, built anew for its shapes."""
        from ultralytics.utils.torch_utils import unwrap_model

        from yolo_opt.distill import rebuild_wrapper

        inner = rebuild_wrapper(unwrap_model(self.model), model)
        if _distributed():
            from ultralytics.utils.torch_utils import TORCH_2_13

            # as BaseTrainer._setup_train wraps it (compile is off while pruning); construction broadcasts rank 0's
            # parameters, so the distillation projector built on each rank starts equal too
            self.model = nn.parallel.DistributedDataParallel(
                inner, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True, **{"forward_sync_buffers" if TORCH_2_13 else "broadcast_buffers": False},
            )
        else:
            self.model = inner

    def _rebuild_optimization(self) -> None:
        """New parameters after pruning: new optimizer, LR scheduler and EMA; best-model tracking restarts."""
        from torch import optim
        from ultralytics.utils.torch_utils import ModelEMA

        args = self.args
        accumulate = max(round(args.nbs / self.batch_size), 1)
        decay = args.weight_decay * self.batch_size * accumulate / args.nbs
        iterations = math.ceil(len(self.train_loader.dataset) / max(self.batch_size, args.nbs)) * self.epochs
        self.optimizer = self.build_optimizer(model=self.model, name=args.optimizer, lr=args.lr0,
                                              momentum=args.momentum, decay=decay, iterations=iterations)
        self.scheduler = optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda=self.lf)  # the run's LR curve
        self.scheduler.last_epoch = self.epoch - 1  # the loop steps it to this epoch next
        updates = self.ema.updates if self.ema else 0
        self.ema = ModelEMA(self.model)
        self.ema.updates = updates
        # best.pt must be a model of the final shape: forget fitness measured on the wider model
        self.best_fitness = None
        self.stopper.best_fitness = 0.0
        self.stopper.best_epoch = self.epoch


class PruneTrainer(Pruning, DetectionTrainer):
    """Ultralytics' DetectionTrainer with yolo-opt's pruning."""


class SegmentPruneTrainer(Pruning, SegmentationTrainer):
    """Ultralytics' SegmentationTrainer with yolo-opt's pruning."""


TRAINERS = {"detect": PruneTrainer, "segment": SegmentPruneTrainer}


def trainer_for(task: str) -> type:
    """The pruning trainer of an Ultralytics task ("detect", "segment")."""
    from yolo_opt.arch import task_named

    task_named(task)  # one clear error naming what is supported
    return TRAINERS[task]
