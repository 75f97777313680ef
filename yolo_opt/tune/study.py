"""Multi-objective compression search with Optuna: mAP vs measured ONNX Runtime latency (or GFLOPs).

Every trial fine-tunes the model with yolo-opt's trainer pruning (the same `yolo-opt train` keys a user would
type), in its own folder `<run>/trials/<number>`, and reports (mAP50-95, latency ms | GFLOPs). The study lives in
an Optuna RDB storage: SQLite in the run folder by default, or PostgreSQL/MySQL so that several machines run
trials of one study at once. Heartbeats turn the running trial of a killed worker into FAIL; an exception in a
trial records it as FAIL with the error in the `error` user attribute; running the same command again resumes
the study and runs only the missing trials.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import warnings
from pathlib import Path
from typing import Any

from yolo_opt.errors import ConfigError, YoloOptError

OBJECTIVES = {"map,latency": ("map", "latency_ms"), "map,gflops": ("map", "gflops")}
PRUNE_METHODS_SEARCHED = ("l2", "l1", "taylor")


class StorageError(YoloOptError):
    """The Optuna storage URL is malformed, unreachable, or its driver is missing."""


# ---- storage -----------------------------------------------------------------------------------------------------
def _redact(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def _on_stale_trial(study, trial) -> None:
    from ultralytics.utils import LOGGER

    LOGGER.warning(
        f"yolo-opt tune: trial {trial.number} of study '{study.study_name}' stopped sending heartbeats "
        "(its worker was killed?); it is recorded as FAIL"
    )


def open_storage(url: str | None, run_dir: str | Path, heartbeat: int = 60):
    """An Optuna `RDBStorage` with heartbeats, from a URL (default: SQLite `study.db` in `run_dir`).

    Args:
        url: SQLAlchemy URL, e.g. `sqlite:///study.db`, `postgresql://user:password@host:5432/db`; None for the
            default SQLite file.
        run_dir: The study's run folder (holds the default SQLite file).
        heartbeat: Seconds between heartbeats of a running trial; a trial silent for twice as long is failed
            by the next worker that starts a trial.

    Raises:
        StorageError: One line naming the problem (bad URL, unreachable server, missing driver).
    """
    import optuna
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if url is None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{Path(run_dir).resolve() / 'study.db'}"
    url = str(url)
    hint = "use sqlite:///path/study.db or postgresql://user:password@host:5432/dbname"
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise StorageError(f"storage='{_redact(url)}' is not a database URL; {hint}") from None
    backend = parsed.get_backend_name()
    if backend not in {"sqlite", "postgresql", "mysql"}:
        raise StorageError(f"storage='{_redact(url)}': unsupported database '{backend}'; {hint}")
    if backend == "sqlite":
        db = parsed.database
        if not db or db == ":memory:":
            raise StorageError(f"storage='{url}' has no file path; a study needs a file, e.g. sqlite:///study.db")
        if not Path(db).expanduser().resolve().parent.is_dir():
            raise StorageError(f"storage='{url}': folder {Path(db).parent} does not exist; create it or fix the path")
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
        if backend == "postgresql":
            engine_kwargs["connect_args"] = {"connect_timeout": 10}
    kwargs: dict[str, Any] = {"heartbeat_interval": heartbeat, "grace_period": 2 * heartbeat}
    import inspect

    params = inspect.signature(optuna.storages.RDBStorage).parameters
    kwargs["heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params else "failed_trial_callback"] = (
        _on_stale_trial
    )
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna; nothing for a user to act on
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
    except (ImportError, ModuleNotFoundError) as e:
        raise StorageError(
            f"storage='{_redact(url)}': the database driver is not installed ({e}); "
            "for PostgreSQL: pip install 'psycopg[binary]'"
        ) from None
    except Exception as e:
        first = str(getattr(e, "orig", None) or e).strip().splitlines()
        reason = first[0][:200] if first else type(e).__name__
        raise StorageError(f"cannot open storage '{_redact(url)}' ({reason}); check the URL, server and credentials") from None


# ---- search space ------------------------------------------------------------------------------------------------
def suggest(trial, fixed: dict[str, Any], max_epochs: int) -> dict[str, Any]:
    """yolo-opt train keys of one trial: the searched ones drawn by `trial`, the `fixed` ones as given.

    Searched (unless fixed): epochs 1..max_epochs, lr0 log 1e-4..1e-2, prune_target (GFLOPs to keep) 0.3..0.9
    (not when prune= is fixed), prune_method l2/l1/taylor, prune_steps 1..min(3, epochs), prune_ratios
    uniform/sensitivity when sensitivity= is given.
    """
    p: dict[str, Any] = dict(fixed)
    if "epochs" not in p:
        p["epochs"] = trial.suggest_int("epochs", 1, max(1, max_epochs))
    if "lr0" not in p:
        p["lr0"] = float(f"{trial.suggest_float('lr0', 1e-4, 1e-2, log=True):.3g}")
    if "prune" not in p and "prune_target" not in p:
        p["prune_target"] = round(trial.suggest_float("prune_target", 0.3, 0.9, step=0.05), 2)
    if "prune_method" not in p:
        p["prune_method"] = trial.suggest_categorical("prune_method", PRUNE_METHODS_SEARCHED)
    if "prune_steps" not in p:
        p["prune_steps"] = trial.suggest_int("prune_steps", 1, max(1, min(3, int(p["epochs"]))))
    if p.get("sensitivity") and "prune_ratios" not in p:
        p["prune_ratios"] = trial.suggest_categorical("prune_ratios", ("uniform", "sensitivity"))
    return p


# ---- one trial ---------------------------------------------------------------------------------------------------
def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300]}" if text else type(e).__name__


def _measure(weights: Path, data: str, imgsz: int, latency: bool, metrics: dict | None) -> dict[str, float]:
    from yolo_opt.bench.measure import model_stats, onnx_latency, validate

    key = "metrics/mAP50-95(B)"
    if metrics and key in metrics:  # the trainer's final validation of best.pt: no second pass
        scores = {"map": float(metrics[key]), "map50": float(metrics["metrics/mAP50(B)"])}
    else:
        scores = validate(weights, data, imgsz)
    stats = model_stats(weights, imgsz)
    scores.update(gflops=stats["gflops"], params=float(stats["params"]))
    if latency:
        from ultralytics import YOLO

        onnx = YOLO(str(weights), task="detect").export(format="onnx", imgsz=imgsz, verbose=False)
        lat = onnx_latency(onnx, imgsz, runs=20, warmup=3)
        scores.update(latency_ms=lat["ms"], latency_threads=float(lat["threads"]))
    return scores


def run_trial(trial, model: str, data: str, fixed: dict[str, Any], ultralytics_args: dict[str, Any],
              run_dir: Path, objectives: str, max_epochs: int) -> tuple[float, float]:
    """Fine-tune with the trial's keys in `run_dir/trials/<number>`, then measure; returns the objectives."""
    from yolo_opt.callbacks import train

    params = suggest(trial, fixed, max_epochs)
    folder = run_dir / "trials" / f"{trial.number:04d}"
    trial.set_user_attr("dir", str(folder))
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    trial.set_user_attr("train_keys", {**ultralytics_args, **params})  # all a recipe needs to reproduce the trial
    try:
        args = {"plots": False, "exist_ok": True, "verbose": False, **ultralytics_args, **params}
        metrics = train(model, data=data, project=str(folder.parent), name=folder.name, **args)["metrics"]
        weights = folder / "weights" / "best.pt"
        if not weights.exists():
            raise YoloOptError(f"training wrote no {weights}")
        imgsz = int(ultralytics_args.get("imgsz", 640))
        scores = _measure(weights, data, imgsz, OBJECTIVES[objectives][1] == "latency_ms", metrics)
    except Exception as e:
        from ultralytics.utils import LOGGER

        trial.set_user_attr("error", _first_line(e))
        LOGGER.warning(f"yolo-opt tune: trial {trial.number} failed ({_first_line(e)}); recorded as FAIL")
        raise
    for key, value in scores.items():
        trial.set_user_attr(key, value)
    trial.set_user_attr("weights", str(weights))
    first, second = OBJECTIVES[objectives]
    return scores[first], scores[second]


# ---- the study ---------------------------------------------------------------------------------------------------
def _split_keys(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fixed yolo-opt train keys and Ultralytics arguments (validated; unknown keys raise ConfigError)."""
    from yolo_opt.config import ARG_BY_NAME, coerce, split_args

    ours = {k: coerce(k, v) for k, v in kwargs.items() if k in ARG_BY_NAME and "train" in ARG_BY_NAME[k].modes}
    split_args("train", ours)  # mode checks
    rest = {k: v for k, v in kwargs.items() if k not in ours}
    if rest:
        from ultralytics.cfg import DEFAULT_CFG_DICT

        unknown = [k for k in rest if k not in DEFAULT_CFG_DICT]
        if unknown:
            raise ConfigError(f"unknown argument(s) for 'yolo-opt tune': {', '.join(unknown)}; see 'yolo-opt help'")
    for key in ("epochs", "lr0"):  # searched Ultralytics keys: given, they are fixed like ours
        if key in rest:
            ours[key] = rest.pop(key)
    for key in ("model", "data", "project", "name"):
        if key in rest:
            raise ConfigError(f"'{key}=' is set by yolo-opt tune for each trial; remove it")
    return ours, rest


def tune(
    model: str | Path,
    data: str | Path,
    trials: int = 20,
    storage: str | None = None,
    study: str = "tune",
    objectives: str = "map,latency",
    max_epochs: int = 10,
    top: int = 3,
    heartbeat: int = 60,
    project: str | Path = "runs/opt/tune",
    **train_kwargs: Any,
) -> dict[str, Any]:
    """Run (or resume) an Optuna study over compression and fine-tuning hyperparameters.

    Args:
        model: Ultralytics `.pt` detection checkpoint to compress.
        data: Dataset yaml (training and validation).
        trials: Total trials the study should have (any state); a resumed study runs only the missing ones.
            Workers sharing a study stop when it has this many (up to one extra per concurrent worker).
        storage: Optuna/SQLAlchemy URL; None for SQLite `<project>/<study>/study.db`.
        study: Study name; the run folder is `<project>/<study>`.
        objectives: 'map,latency' (mAP50-95 up, ONNX Runtime CPU ms down) or 'map,gflops'.
        max_epochs: Largest number of fine-tuning epochs a trial may draw (fix it with `epochs=`).
        top: How many Pareto-optimal trials to write as recipe YAML files.
        heartbeat: Heartbeat interval in seconds (a killed worker's trial becomes FAIL after 2x this).
        project: Parent folder of the run folder.
        **train_kwargs: Fixed for every trial: yolo-opt train keys (they are then not searched, e.g.
            `prune_method="l2"`, `epochs=1`) and Ultralytics train arguments (`imgsz=`, `batch=`, ...).

    Returns:
        Summary: study name, storage, run folder, trial counts by state, the Pareto front and recipe paths.

    Raises:
        StorageError: Bad or unreachable storage.
        ConfigError: Bad arguments.
    """
    import optuna

    from yolo_opt.cli import check_data
    from yolo_opt.prune.io import load_model

    if objectives not in OBJECTIVES:
        raise ConfigError(f"unknown objectives '{objectives}'; choose one of: {', '.join(OBJECTIVES)}")
    if not re.fullmatch(r"[\w.-]+", str(study)):
        raise ConfigError(f"study={study!r}: use letters, digits, '.', '-' or '_' (it names the run folder)")
    if int(trials) < 1:
        raise ConfigError(f"trials={trials} must be >= 1")
    fixed, ultra = _split_keys(train_kwargs)
    check_data(data)
    load_model(model)  # clear error for a missing or corrupt checkpoint
    if fixed.get("prune_ratios") == "sensitivity" or fixed.get("sensitivity"):
        from yolo_opt.prune.sensitivity import load_sensitivity

        if not fixed.get("sensitivity"):
            raise ConfigError("prune_ratios=sensitivity needs sensitivity=path/to/sensitivity.json")
        load_sensitivity(fixed["sensitivity"])
    run_dir = Path(project) / study
    store = open_storage(storage, run_dir, heartbeat)
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
        raise ConfigError(f"study '{study}' cannot be opened as a 2-objective study ({_first_line(e)})") from None
    stored = st.user_attrs.get("objectives")
    if stored and stored != objectives:
        raise ConfigError(f"study '{study}' was created with objectives={stored}; use it or pick another study=")
    if not stored:
        st.set_user_attr("objectives", objectives)

    def objective(trial):
        return run_trial(trial, str(model), str(data), fixed, ultra, run_dir, objectives, max_epochs)

    optuna.storages.fail_stale_trials(st)  # trials of killed workers (no heartbeat) become FAIL before counting
    ran = 0
    while len(st.get_trials(deepcopy=False)) < trials:
        st.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        ran += 1
    summary = report(st, run_dir, objectives, top)
    summary.update(storage=_redact(store.url if hasattr(store, "url") else str(storage)), ran_here=ran)
    if not summary["states"].get("COMPLETE"):
        errors = [t.user_attrs.get("error") for t in st.get_trials(deepcopy=False) if t.user_attrs.get("error")]
        raise YoloOptError(
            f"no trial of study '{study}' completed ({summary['states']}); first error: {errors[0] if errors else 'none recorded'}"
        )
    return summary


# ---- reporting ---------------------------------------------------------------------------------------------------
def _objective_names(objectives: str) -> tuple[str, str]:
    return OBJECTIVES[objectives]


def report(st, run_dir: str | Path, objectives: str, top: int = 3) -> dict[str, Any]:
    """Print the Pareto front, plot it (`pareto.png`), write `pareto.md`, `summary.json` and recipe YAMLs."""
    import optuna
    from ultralytics.utils import YAML

    from yolo_opt.files import atomic_write_bytes

    run_dir = Path(run_dir)
    trials = st.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pareto = sorted(st.best_trials if complete else [], key=lambda t: -t.values[0])
    first, second = _objective_names(objectives)
    unit = "ms" if second == "latency_ms" else "GFLOPs"
    lines = [
        f"Study '{st.study_name}': {len(trials)} trials ({', '.join(f'{k} {v}' for k, v in sorted(states.items()))})",
        "",
        f"| trial | mAP50-95 | {second} | GFLOPs | params | keys |",
        "|---|---|---|---|---|---|",
    ]
    front = []
    for t in pareto:
        keys = t.user_attrs.get("train_keys", t.params)
        lines.append(
            f"| {t.number} | {t.values[0]:.4f} | {t.values[1]:.4g} | {t.user_attrs.get('gflops', float('nan')):.3f} | "
            f"{int(t.user_attrs.get('params', 0))} | {' '.join(f'{k}={v}' for k, v in keys.items())} |"
        )
        front.append({"trial": t.number, first: t.values[0], second: t.values[1], "keys": keys,
                      "weights": t.user_attrs.get("weights")})
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    if failed:
        lines += ["", "Failed trials:"] + [f"- {t.number}: {t.user_attrs.get('error', 'no heartbeat (worker killed?)')}" for t in failed]
    text = "\n".join(lines) + "\n"
    print(text)
    atomic_write_bytes(run_dir / "pareto.md", text.encode())
    recipes = []
    for entry in front[:top]:
        path = run_dir / "recipes" / f"trial_{entry['trial']:04d}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        YAML.save(path, dict(entry["keys"]), header=(
            f"# yolo-opt tune: study '{st.study_name}', trial {entry['trial']} (Pareto-optimal)\n"
            f"# {first}={entry[first]:.4f} {second}={entry[second]:.4g} {unit}\n"
            "# use: yolo-opt train model=best.pt data=data.yaml <these key=value pairs>\n"
        ))
        recipes.append(str(path))
    if complete:
        plot_pareto(complete, pareto, run_dir / "pareto.png", second)
    summary = {"study": st.study_name, "run_dir": str(run_dir), "states": states, "pareto": front,
               "recipes": recipes, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_bytes(run_dir / "summary.json", json.dumps(summary, indent=1, default=str).encode())
    return summary


def plot_pareto(complete: list, pareto: list, path: Path, second: str) -> Path:
    """PNG: every complete trial (mAP vs latency/GFLOPs), the Pareto front joined and labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    ax.scatter([t.values[1] for t in complete], [t.values[0] for t in complete], c="0.6", s=18, label="trials")
    front = sorted(pareto, key=lambda t: t.values[1])
    ax.plot([t.values[1] for t in front], [t.values[0] for t in front], "o-", c="tab:red", label="Pareto front")
    for t in front:
        ax.annotate(str(t.number), (t.values[1], t.values[0]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(xlabel="ONNX Runtime CPU latency (ms)" if second == "latency_ms" else "GFLOPs", ylabel="mAP50-95",
           title="yolo-opt tune: mAP vs cost")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    from yolo_opt.files import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
