"""`train()`: yolo-opt's training verb, in phases: [prune + recover (distilling when asked)] -> [QAT] -> QDQ ONNX.

Without QAT only the first phase runs; without pruning options it is a plain Ultralytics training (with
`PruneTrainer`, which then changes nothing). Every input is checked before the first run folder is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yolo_opt.errors import ConfigError, ModelError
from yolo_opt.options import DEFAULT_IMGSZ, QATOptions, SensitivityOptions, TrainOptions, check_ultralytics_args


def _ultralytics_run(model: str | Path, opts: TrainOptions | None = None, after: QATOptions | None = None,
                     **args: Any):
    """One Ultralytics training run with yolo-opt's trainer, given `opts` (and the QAT phase to follow)."""
    from ultralytics import YOLO

    from yolo_opt.training.trainer import PruneSchedule, trainer_for

    yolo = YOLO(str(model))  # its task from the checkpoint or yaml: the pruning trainer of that task
    if opts is not None:  # the trainer takes its options from this callback (how they also reach DDP workers)
        yolo.add_callback("on_train_epoch_start", PruneSchedule(opts, after))
    yolo.train(trainer=trainer_for(yolo.task), **args)
    return yolo.trainer


def _check_inputs(model: str | Path, opts: TrainOptions, args: dict[str, Any]) -> None:
    """Fail before any run folder exists: model, data, GFLOPs target, sensitivity report, teacher."""
    from yolo_opt.data.checks import check_dataset
    from yolo_opt.io.checkpoint import load_model

    net = None
    if str(model).endswith(".pt"):
        net = load_model(model)  # a clear error for a missing, corrupt or non-detection file
    elif str(model).endswith((".yaml", ".yml")):
        from yolo_opt.io.checkpoint import check_model_yaml

        check_model_yaml(model)  # a data.yaml as model= failed deep in Ultralytics (KeyError: 'backbone')
    else:
        raise ModelError(f"model={model} must be a .pt checkpoint or a model .yaml")
    names = getattr(net, "names", None)
    task = "detect"
    if net is not None:
        from yolo_opt.arch import adapter

        task = adapter(net).task.name  # a segmentation model needs polygons
    check_dataset(args.get("data"), names, ("train", "val") if args.get("val", True) else ("train",), task=task)
    if args.get("project"):  # Ultralytics would fail with a traceback after loading everything
        from yolo_opt.io.files import check_output

        check_output(str(args["project"]), folder=True, key="project")
    p = opts.prune
    r_max = max(SensitivityOptions().ratio_list())  # what a new analysis measures
    if p.per_layer and p.sensitivity:
        from yolo_opt.prune.allocation import load_sensitivity

        r_max = max(load_sensitivity(p.sensitivity)["ratios"])
    if p.prune_latency is not None:  # a runtime that cannot be timed here: refused before any training
        from yolo_opt.bench.layer_latency import check_runtime

        check_runtime(p.lat_runtime)
    if net is not None and p.prune_target is not None:
        from yolo_opt.prune.targets import check_reachable, min_macs_ratio

        check_reachable(p.prune_target, min_macs_ratio(net, p.prune_round, p.prune_global))
        if p.per_layer:
            from yolo_opt.prune.allocation import check_allocatable, macs_estimate

            check_allocatable(macs_estimate(net, p.prune_round), p.prune_target, r_max)
    from yolo_opt.distill import check_teacher, run_teacher

    teacher = run_teacher(opts, model)
    if teacher is not None:
        if names is None:
            from yolo_opt.data.checks import read_dataset

            names = read_dataset(args.get("data"))["names"]
        explicit = opts.distill.teacher is not None  # the model itself teaches at whatever size it is fine-tuned
        args["distill_model"] = check_teacher(teacher, names, net, int(args.get("imgsz", DEFAULT_IMGSZ)) if explicit else None)


def _check_resume(model: str | Path) -> None:
    """A resumable last.pt whose dataset is here: Ultralytics would otherwise try to download a named dataset
    (`coco8.yaml`) of a finished run before it says there is nothing to resume."""
    from yolo_opt.data.checks import read_dataset
    from yolo_opt.io.checkpoint import read_checkpoint

    ckpt = read_checkpoint(model)  # refused unless safe, before Ultralytics' resume opens it
    if ckpt.get("epoch", -1) == -1:  # Ultralytics marks a finished run's last.pt with -1
        raise ConfigError(f"{model} is a finished training run: nothing to resume; fine-tune it with model={model} "
                          "(without resume=)")
    read_dataset((ckpt.get("train_args") or {}).get("data"))


def train(model: str | Path, opts: TrainOptions | None = None, **kwargs: Any) -> dict[str, Any]:
    """Train (fine-tune) `model` with Ultralytics, with yolo-opt's pruning, distillation and QAT.

    Example:
        >>> from yolo_opt import train, TrainOptions, PruneOptions
        >>> train("best.pt", TrainOptions(prune=PruneOptions(prune_target=0.5)), data="data.yaml", epochs=30)
        >>> train("best.pt", data="data.yaml", epochs=30, prune_target=0.5, prune_steps=3, distill=True)  # shortcuts

    Args:
        model: `.pt` checkpoint (or a model yaml), or a `last.pt` with `resume=True`.
        opts: Pruning, distillation and QAT options; their keys may instead be given as keyword shortcuts.
        **kwargs: yolo-opt keyword shortcuts and Ultralytics train arguments (`data=`, `epochs=`, ...).

    Returns:
        Dict with `save_dir`, `best` and `last` of the last phase (the trainer's own paths), `metrics`
        (Ultralytics), `qat_onnx` when qat=True, and `latency` with prune_latency= (asked, predicted, measured).
    """
    opts, rest = TrainOptions.resolve(opts, kwargs)  # what is left is Ultralytics' arguments
    check_ultralytics_args(rest, "train")  # its own checks, before anything is loaded or written
    if rest.get("resume"):  # Ultralytics restores its arguments, the trainer the pruning run, from last.pt
        _check_resume(model)
        trainer = _ultralytics_run(model, **rest)
        after = trainer.schedule.after
        if after:  # the run was the prune + recover phase of a phased run: QAT follows
            keep = {k: getattr(trainer.args, k) for k in RESUMED_ARGS}
            trainer = _qat_after(trainer, after, keep)
        return _result(trainer, trainer.opts.replace(qat=after) if after else trainer.opts)
    _check_inputs(model, opts, rest)
    fine_tune_steps(model, rest)
    phased = opts.qat.qat and opts.prune.active
    first = opts.replace(qat=QATOptions()) if phased else opts
    trainer = _ultralytics_run(model, first, opts.qat if phased else None, **rest)
    if phased:
        trainer = _qat_after(trainer, opts.qat, rest)
    return _result(trainer, opts)


def fine_tune_steps(model: str | Path, args: dict[str, Any]) -> None:
    """Fine-tuning a checkpoint takes an optimizer step every batch (`nbs=batch`) unless `nbs=` is given.

    Ultralytics accumulates gradients to a nominal batch of 64, which suits training from scratch; a fine-tune on a
    few hundred images then gets ~5 optimizer steps an epoch. Recovery after pruning is limited by steps, not by
    images seen, for the pruned model and the unpruned reference alike (measured:
    docs/benchmarks.md#fine-tune-optimizer-steps). Both stages of a pipeline (reference and prune) fine-tune a checkpoint
    through here, so they share the schedule; training from a yaml keeps Ultralytics' 64. Weight decay is
    unchanged (Ultralytics scales it by batch x accumulate / nbs = 1).
    """
    from ultralytics.utils import DEFAULT_CFG

    batch = args.get("batch", DEFAULT_CFG.batch)
    if str(model).endswith(".pt") and "nbs" not in args and isinstance(batch, int) and batch >= 1:
        args["nbs"] = batch


# Ultralytics arguments a QAT phase takes over from a resumed prune + recover run
RESUMED_ARGS = ("imgsz", "batch", "workers", "device", "plots", "amp", "seed", "cache", "val", "exist_ok")


def _qat_after(trainer, qat: QATOptions, args: dict[str, Any]):
    """The QAT phase after a finished prune + recover run, in `<its name>-qat/` beside it."""
    weights = trainer.best if trainer.best.exists() else trainer.last
    return qat_phase(weights, qat, {**args, "name": f"{trainer.save_dir.name}-qat",
                                    "project": str(trainer.save_dir.parent), "data": trainer.args.data})


def qat_phase(weights: str | Path, qat: QATOptions, args: dict[str, Any]):
    """The QAT fine-tune after pruning + recovery (the pruned shapes are kept); returns the trainer.

    Used by `train()` and by the pipeline's `qat` stage, so both run the same phase.
    """
    keep = {k: v for k, v in args.items()
            if k not in {"resume", "epochs", "lr0", "optimizer", "pretrained", "warmup_epochs", "distill_model"}}
    return _ultralytics_run(weights, TrainOptions(), **keep, **qat.phase_args())


def _result(trainer, opts: TrainOptions) -> dict[str, Any]:
    result = {"save_dir": Path(trainer.save_dir), "best": Path(trainer.best), "last": Path(trainer.last),
              "metrics": trainer.metrics}
    run = trainer._run() if hasattr(trainer, "_run") else None
    if run is not None and run.latency:  # prune_latency=: the allocation's predicted and measured latency
        result["latency"] = run.latency
    if opts.qat.qat:
        from yolo_opt.quant.qat import export_qat_onnx

        result["qat_onnx"] = export_qat_onnx(result["best"], imgsz=trainer.args.imgsz)
    return result


def train_in(project: str | Path, name: str, model: str | Path, opts: TrainOptions | None = None,
             **kwargs: Any) -> Path:
    """Train `model` into the folder `project/name` (one training phase), or continue what is there: resume an
    interrupted run (its last.pt), reuse a finished one. Returns the run's best.pt (last.pt when no best was saved).

    `project` is made absolute: Ultralytics places a relative one under its own runs folder (`runs/<task>/`), and
    where a run went is then asked of the trainer, not assumed.
    """
    import json
    import shutil

    from yolo_opt.errors import YoloOptError
    from yolo_opt.io.checkpoint import read_checkpoint
    from yolo_opt.training.trainer import RUN_RECORD

    folder = Path(project).resolve() / name
    record = folder / RUN_RECORD  # written by the trainer: where it keeps last.pt and best.pt
    # a run of yolo-opt 0.2 has no record: its trainer (Ultralytics 8.4) kept them in weights/
    saved = json.loads(record.read_text()) if record.exists() else {"last": "weights/last.pt", "best": "weights/best.pt"}
    last, best = folder / saved["last"], folder / saved["best"]
    if last.exists() and read_checkpoint(last).get("epoch", -1) == -1:  # Ultralytics marks a finished run's -1
        return best if best.exists() else last
    if last.exists():
        result = train(str(last), resume=True)
    else:
        shutil.rmtree(folder, ignore_errors=True)
        result = train(str(model), opts, **{**kwargs, "project": str(folder.parent), "name": name, "exist_ok": True})
    if Path(result["save_dir"]).resolve() != folder:
        raise YoloOptError(f"Ultralytics saved the run in {result['save_dir']}, not {folder}; this Ultralytics version "
                           "places runs differently: report it with 'yolo-opt version'")
    return result["best"] if result["best"].exists() else result["last"]


def attach(model, **opts: Any):
    """Make `model.train(...)` (a `ultralytics.YOLO`) train with yolo-opt's pruning options; returns the options.

    A thin shim over `model.train(trainer=PruneTrainer, **opts)`, kept for scripts written against it.
    """
    import functools

    from yolo_opt.training.trainer import trainer_for

    options, rest = TrainOptions.resolve(None, opts)
    if rest:
        raise ConfigError(f"not yolo-opt training options: {', '.join(rest)} (pass Ultralytics arguments to train())")
    if options.qat.qat or "distill" in opts or "teacher" in opts:
        raise ConfigError("attach() handles pruning only; for qat/distill use yolo_opt.train(...), or pass "
                          "quantize=8 / distill_model=teacher.pt to model.train()")
    # the trainer takes the keys given here (Ultralytics passes them through as its overrides)
    model.train = functools.partial(type(model).train, model, trainer=trainer_for(model.task), **opts)
    return options
