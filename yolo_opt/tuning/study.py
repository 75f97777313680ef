"""Multi-objective compression search with Optuna: mAP vs measured ONNX Runtime latency (or GFLOPs).

Every trial fine-tunes the model with yolo-opt's trainer pruning (the same `yolo-opt train` keys a user would
type), in its own folder `<run>/trials/<number>`, and reports (mAP50-95, latency ms | GFLOPs). The study lives in
an Optuna RDB storage: SQLite in the run folder by default, or PostgreSQL/MySQL so that several machines run
trials of one study at once. Heartbeats turn the running trial of a killed worker into FAIL; an exception in a
trial records it as FAIL with the error in the `error` user attribute; running the same command again resumes
the study and runs only the missing trials.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from yolo_opt.errors import ConfigError, YoloOptError, first_line
from yolo_opt.options import DEFAULT_IMGSZ, TrainOptions, TuneOptions


def _error(e: BaseException) -> str:
    """The error as a trial records it (in the study, which other machines read): its type and first line."""
    return f"{type(e).__name__}: {first_line(e, 300)}"


def _onnx_ms(weights: Path, imgsz: int) -> dict[str, float]:
    """ONNX Runtime latency of the ONNX that `yolo-opt export` writes for this model (the graph a user deploys, DFL
    rewrite included), written beside the weights."""
    from yolo_opt.bench.measure import onnx_latency
    from yolo_opt.deploy.onnx import export_onnx

    onnx = export_onnx(weights, weights.with_suffix(".onnx"), imgsz=imgsz)
    lat = onnx_latency(onnx, imgsz, runs=20, warmup=3)
    return {"latency_ms": lat["ms"], "latency_threads": float(lat["threads"])}


def _table(net, data_dir: Path, imgsz: int, round_to: int | None) -> Callable[[Path], float]:
    """`lat_source=table`: the input model's latency table on ONNX Runtime at `imgsz` (built once, cached per machine),
    on the scale of the input model timed as the trials would be; returns weights -> predicted ms."""
    from yolo_opt.bench.latency_target import table_predictor
    from yolo_opt.io.checkpoint import load_model, save_model

    predictor, _ = table_predictor(net, "onnx", imgsz, round_to)
    data_dir.mkdir(parents=True, exist_ok=True)
    predictor.calibrate(_onnx_ms(save_model(net, data_dir / "input.pt"), imgsz)["latency_ms"])
    return lambda weights: predictor.model_ms(load_model(weights))


def _measure(weights: Path, data: str, imgsz: int, *, latency: bool, metrics: dict | None,
             predict: Callable[[Path], float] | None = None) -> dict[str, float]:
    """mAP (the trainer's final validation), GFLOPs and params, and the latency: the ONNX Runtime time of the
    exported model, or `predict`'s (the latency table's) where given and the model is the table's lineage.

    The `objective` figure is the task's leading mAP50-95: the boxes', or the masks' for a segmentation model.
    """
    from yolo_opt.arch import adapter
    from yolo_opt.bench.measure import model_stats, validate
    from yolo_opt.io.checkpoint import load_model

    task = adapter(load_model(weights)).task
    if metrics and all(name in metrics for name in task.metrics.values()):  # the trainer's final validation
        scores = {key: float(metrics[name]) for key, name in task.metrics.items()}
    else:
        scores = validate(weights, data, imgsz)
    scores["objective"] = scores[task.primary]
    stats = model_stats(weights, imgsz)
    scores.update(gflops=stats["gflops"], params=float(stats["params"]))
    if latency and predict is not None:
        try:
            scores.update(latency_ms=predict(weights), latency_table=1.0)
            return scores
        except KeyError:  # not the table's architecture: timed instead
            pass
    if latency:
        scores.update(_onnx_ms(weights, imgsz))
    return scores


def run_trial(trial, model: str, data: str, *, fixed: dict[str, Any], ultralytics_args: dict[str, Any],
              run_dir: Path, objectives: str, max_epochs: int,
              predict: Callable[[Path], float] | None = None) -> tuple[float, float]:
    """Fine-tune with the trial's keys in `run_dir/trials/<number>`, then measure; returns the objectives."""
    from yolo_opt.training.phases import train
    from yolo_opt.tuning.space import suggest

    params = suggest(trial, fixed, max_epochs)
    folder = run_dir / "trials" / f"{trial.number:04d}"
    trial.set_user_attr("dir", str(folder))
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    trial.set_user_attr("train_keys", {**ultralytics_args, **params})  # all a recipe needs to reproduce the trial
    try:
        opts, args = TrainOptions.resolve(None, {"plots": False, "exist_ok": True, "verbose": False,
                                                 **ultralytics_args, **params})
        result = train(model, opts, data=data, project=str(folder.parent), name=folder.name, **args)
        metrics, weights = result["metrics"], Path(result["best"])  # where the trainer saved, not assumed
        if not weights.exists():
            raise YoloOptError(f"training wrote no {weights}")
        imgsz = int(ultralytics_args.get("imgsz", DEFAULT_IMGSZ))
        scores = _measure(weights, data, imgsz, latency=TuneOptions.OBJECTIVES[objectives][1] == "latency_ms",
                          metrics=metrics, predict=predict)
    except Exception as e:
        from ultralytics.utils import LOGGER

        trial.set_user_attr("error", _error(e))
        LOGGER.warning(f"yolo-opt tune: trial {trial.number} failed ({_error(e)}); recorded as FAIL")
        raise
    for key, value in scores.items():
        trial.set_user_attr(key, value)
    trial.set_user_attr("weights", str(weights))
    first, second = TuneOptions.OBJECTIVES[objectives]
    return scores["objective" if first == "map" else first], scores[second]


def _measure_front(st, imgsz: int, top: int) -> dict[int, float]:
    """`lat_source=table`: the Pareto front's trials that become recipes (`top`), exported and timed, as the report's
    check of the table's predictions; kept in the study (a resumed study times only new ones)."""
    front = sorted(st.best_trials, key=lambda t: -t.values[0])[:top]
    measured = {}
    for t in front:
        key = f"measured_ms_{t.number}"
        weights = Path(t.user_attrs.get("weights") or "")
        # another machine's trial (a shared study) is timed by a worker that holds its weights
        if key not in st.user_attrs and t.user_attrs.get("latency_table") and weights.is_file():
            st.set_user_attr(key, _onnx_ms(weights, imgsz)["latency_ms"])
        if key in st.user_attrs:
            measured[t.number] = st.user_attrs[key]
    return measured


def _split_keys(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fixed yolo-opt train keys (validated) and Ultralytics arguments; unknown keys raise ConfigError."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    given = [k for k in kwargs if k in TrainOptions.specs()]
    opts, rest = TrainOptions.resolve(None, kwargs, "train")  # validates every given key and their combination
    values = opts.to_dict()
    fixed = {k: values[k] for k in given}  # as keys: a trial adds the ones it draws
    unknown = [k for k in rest if k not in DEFAULT_CFG_DICT]
    if unknown:
        raise ConfigError(f"unknown argument(s) for 'yolo-opt tune': {', '.join(unknown)}; see 'yolo-opt help'")
    for key in ("epochs", "lr0"):  # searched Ultralytics keys: given, they are fixed like ours
        if key in rest:
            fixed[key] = rest.pop(key)
    for key in ("model", "data", "project", "name"):
        if key in rest:
            raise ConfigError(f"'{key}=' is set by yolo-opt tune for each trial; remove it")
    return fixed, rest


def _study_report(net, data: str | Path, fixed: dict[str, Any], *, imgsz: int, folder: Path) -> None:
    """Trials that may allocate per-layer ratios share one sensitivity report of the input model, made once per
    run folder (a resumed study reuses it) and fixed as `sensitivity=`; trials then draw uniform or per-layer."""
    from yolo_opt.options import NEEDS_DATA, PruneOptions
    from yolo_opt.prune.allocation import run_report

    if fixed.get("sensitivity") or "prune" in fixed or fixed.get("prune_ratios") == "uniform":
        return
    method = fixed.get("prune_method", "l2")
    opts = PruneOptions(prune_method="l2" if method in NEEDS_DATA else method, prune_round=fixed.get("prune_round", 8))
    run_report(net, opts, data, imgsz, folder=folder)
    fixed["sensitivity"] = str(folder / "sensitivity.json")


def tune(
    model: str | Path,
    data: str | Path,
    opts: TuneOptions | None = None,
    project: str | Path = "runs/opt/tune",
    **kwargs: Any,
) -> dict[str, Any]:
    """Run (or resume) an Optuna study over compression and fine-tuning hyperparameters.

    Args:
        model: Ultralytics `.pt` detection checkpoint to compress.
        data: Dataset yaml (training and validation).
        opts: The study: `trials` (total the study should have, any state; a resumed study runs only the missing
            ones; workers sharing a study stop when it has this many, up to one extra per concurrent worker),
            `storage` (Optuna/SQLAlchemy URL; None for SQLite `<project>/<study>/study.db`), `study` (name and
            run folder), `objectives` ('map,latency': mAP50-95 up, ONNX Runtime CPU ms down, or 'map,gflops'),
            `lat_source` ('measured': each trial exported and timed; 'table': predicted from the latency table,
            built once, the recipes' trials timed at the end),
            `max_epochs`, `top` (Pareto-optimal trials written as recipe YAMLs), `heartbeat` (seconds; a killed
            worker's trial becomes FAIL after 2x this). Or their keyword shortcuts.
        project: Parent folder of the run folder.
        **kwargs: TuneOptions shortcuts, and what is fixed for every trial: yolo-opt train keys (they are then
            not searched, e.g. `prune_method="l2"`, `epochs=1`) and Ultralytics train arguments (`imgsz=`, ...).

    Returns:
        Summary: study name, storage, run folder, trial counts by state, the Pareto front and recipe paths.

    Raises:
        StorageError: Bad or unreachable storage.
        ConfigError: Bad arguments.
    """
    import optuna

    from yolo_opt.data.checks import check_dataset
    from yolo_opt.io.checkpoint import load_model
    from yolo_opt.io.files import check_output
    from yolo_opt.tuning.report import report
    from yolo_opt.tuning.storage import open_storage, redact

    opts, rest = TuneOptions.resolve(opts, kwargs)
    trials, storage, study, objectives = opts.trials, opts.storage, opts.study, opts.objectives
    fixed, ultra = _split_keys(rest)
    net = load_model(model)  # clear error for a missing or corrupt checkpoint
    check_dataset(data, getattr(net, "names", None))  # every trial trains and validates on it
    if fixed.get("sensitivity"):
        from yolo_opt.prune.allocation import load_sensitivity

        load_sensitivity(fixed["sensitivity"])
    # absolute: trials train inside it, and Ultralytics would put a relative project under its own runs folder
    run_dir = check_output(Path(project) / study, folder=True, key="project").resolve()
    store = open_storage(storage, run_dir, opts.heartbeat)
    run_dir.mkdir(parents=True, exist_ok=True)
    directions = ["maximize", "minimize"]
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials are reported in one line by run_trial
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        st = optuna.create_study(
            study_name=study, storage=store, directions=directions, load_if_exists=True,
            sampler=optuna.samplers.TPESampler(n_startup_trials=min(10, max(2, trials // 3))),
        )
    except ValueError as e:
        raise ConfigError(f"study '{study}' cannot be opened as a 2-objective study ({_error(e)})") from None
    stored = st.user_attrs.get("objectives")
    if stored and stored != objectives:
        raise ConfigError(f"study '{study}' was created with objectives={stored}; use it or pick another study=")
    if not stored:
        st.set_user_attr("objectives", objectives)

    imgsz = int(ultra.get("imgsz", DEFAULT_IMGSZ))
    _study_report(net, data, fixed, imgsz=imgsz, folder=run_dir / "sensitivity")
    predict = _table(net, run_dir / "latency", imgsz, fixed.get("prune_round", 8)) if opts.lat_source == "table" else None

    def objective(trial):
        return run_trial(trial, str(model), str(data), fixed=fixed, ultralytics_args=ultra, run_dir=run_dir,
                         objectives=objectives, max_epochs=opts.max_epochs, predict=predict)

    optuna.storages.fail_stale_trials(st)  # trials of killed workers (no heartbeat) become FAIL before counting
    ran = 0
    while len(st.get_trials(deepcopy=False)) < trials:
        st.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        ran += 1
    measured = _measure_front(st, imgsz, opts.top) if predict is not None else None
    summary = report(st, run_dir, objectives, opts.top, measured=measured)
    summary.update(storage=redact(store.url if hasattr(store, "url") else str(storage)), ran_here=ran)
    if not summary["states"].get("COMPLETE"):
        errors = [t.user_attrs.get("error") for t in st.get_trials(deepcopy=False) if t.user_attrs.get("error")]
        raise YoloOptError(
            f"no trial of study '{study}' completed ({summary['states']}); first error: {errors[0] if errors else 'none recorded'}"
        )
    return summary


