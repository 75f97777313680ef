"""yolo-opt's own arguments: one table with name, type, default, range and help.

Every other `key=value` goes to Ultralytics unchanged (and Ultralytics rejects what it does not know).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from yolo_opt.errors import ConfigError


@dataclass(frozen=True)
class Arg:
    """One yolo-opt argument."""

    name: str
    type: type
    default: Any
    help: str
    modes: tuple[str, ...]
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None

    def describe_range(self) -> str:
        """Human-readable valid range."""
        if self.choices:
            return "|".join(self.choices)
        if self.low is None and self.high is None:
            return ""
        lo = "" if self.low is None else f"{self.low} {'<' if self.low_open else '<='} "
        hi = "" if self.high is None else f" {'<' if self.high_open else '<='} {self.high}"
        return f"{lo}x{hi}"


PRUNE_MODES = ("train", "prune")
ARGS: tuple[Arg, ...] = (
    Arg("prune", float, 0.0, "fraction of prunable channels to remove", PRUNE_MODES, 0, 1, high_open=True),
    Arg("prune_target", float, None, "target GFLOPs ratio to keep (0.5 = half); the ratio is searched",
        PRUNE_MODES, 0, 1, low_open=True),
    Arg("prune_method", str, "l2", "channel importance criterion", PRUNE_MODES,
        choices=("l2", "l1", "bn", "taylor", "random")),
    Arg("prune_steps", int, 1, "iterative pruning: prune a share, fine-tune, repeat (train mode)", ("train",), 1, 100),
    Arg("prune_round", int, 8, "round kept channels to a multiple of this (8 suits TensorRT/VNNI)", PRUNE_MODES, 1, 256),
    Arg("prune_global", bool, False, "rank channels across layers instead of one ratio per layer", PRUNE_MODES),
    Arg("prune_batches", int, 8, "training batches scored by prune_method=taylor", PRUNE_MODES, 1, 10000),
    Arg("sparsity", float, 0.0, "L1 penalty on BN scales during a sparsity phase before the first prune step",
        ("train",), 0, 1),
    Arg("sparsity_epochs", int, 0, "length of the sparsity phase in epochs (0: a third of the epochs)", ("train",),
        0, 100000),
    Arg("qat", bool, False, "INT8 quantization-aware fine-tuning (after pruning and recovery when prune is set); "
        "writes a QDQ ONNX", ("train",)),
    Arg("qat_epochs", int, 3, "epochs of the QAT phase that follows pruning + recovery", ("train",), 1, 10000),
    Arg("qat_lr0", float, 1e-4, "learning rate of the QAT phase (AdamW)", ("train",), 0, 1, low_open=True),
    Arg("distill", bool, False, "recover by distillation from the unpruned model (or teacher=)", ("train",)),
    Arg("teacher", str, None, "teacher checkpoint for distill (default: the model before pruning)", ("train",)),
    Arg("out", str, None, "output path (.pt for prune, a folder for data, demo and bundle, the INT8 .onnx/.engine "
        "for export)", ("prune", "data", "demo", "export", "bundle")),
    Arg("seed", int, 0, "dataset seed (same seed, same bytes)", ("data",), 0, 2**31 - 1),
    Arg("n_train", int, 300, "number of training images", ("data", "demo"), 1, 1000000),
    Arg("n_val", int, 80, "number of validation images", ("data", "demo"), 1, 1000000),
    Arg("base_epochs", int, 30, "epochs of the demo's baseline training", ("demo",), 1, 10000),
    Arg("arch", str, "yolov8n", "Ultralytics model yaml stem the demo trains (yolov8n, yolo11n, ...)", ("demo",)),
    Arg("lat_imgsz", int, None, "image size of .pt latency (default: imgsz; an ONNX is timed at its own input size)",
        ("demo", "optimize", "benchmark"), 32, 4096),
    Arg("recipe", str, "cpu-onnx", "pipeline recipe: a shipped name (cpu-onnx, jetson-int8, accuracy-first) or a "
        ".yaml path", ("optimize", "demo")),
    Arg("max_objects", int, 6, "most objects per image", ("data",), 1, 100),
    # sensitivity analysis and per-layer ratios (yolo_opt.prune.sensitivity)
    Arg("prune_ratios", str, "uniform", "per-layer ratios: one ratio everywhere, or allocated from sensitivity=",
        PRUNE_MODES, choices=("uniform", "sensitivity")),
    Arg("sensitivity", str, None, "sensitivity.json from 'yolo-opt sensitivity' (for prune_ratios=sensitivity)",
        PRUNE_MODES),
    Arg("ratios", str, "0.25,0.5,0.75", "pruning ratios tried on each group, comma-separated", ("sensitivity",)),
    Arg("max_images", int, None, "score only the first N val images (faster, noisier)", ("sensitivity",), 1, 10**9),
    Arg("groups", str, None, "only these groups (comma-separated root layer names, e.g. model.4.cv0)",
        ("sensitivity",)),
    # Optuna compression search (yolo_opt.tune)
    Arg("trials", int, 20, "total trials of the study (a resumed study runs only the missing ones)", ("tune",),
        1, 100000),
    Arg("storage", str, None, "Optuna storage URL (default: SQLite study.db in the run folder; "
        "postgresql://user:pw@host/db to share a study between machines)", ("tune",)),
    Arg("study", str, "tune", "study name (also the run folder runs/opt/tune/<study>)", ("tune",)),
    Arg("objectives", str, "map,latency", "what to optimize: map and one of latency (ONNX Runtime ms) or gflops",
        ("tune",), choices=("map,latency", "map,gflops")),
    Arg("max_epochs", int, 10, "largest fine-tuning epochs a trial may draw (fix it with epochs=)", ("tune",),
        1, 10000),
    Arg("top", int, 3, "Pareto-optimal trials written as recipe YAML files", ("tune",), 0, 1000),
    Arg("heartbeat", int, 60, "seconds between trial heartbeats; a trial silent for 2x this becomes FAIL",
        ("tune",), 1, 86400),
)
DEPLOY_MODES = ("export", "bundle")
ARGS += (
    Arg("calib", str, "minmax", "INT8 calibration (legacy: TensorRT's implicit calibrator, format=engine)",
        DEPLOY_MODES, choices=("minmax", "entropy", "percentile", "legacy")),
    Arg("calib_images", int, 256, "train images used for INT8 calibration", DEPLOY_MODES, 1, 100000),
    Arg("per_channel", bool, True, "per-output-channel INT8 weight scales", DEPLOY_MODES),
    Arg("max_map_drop", float, None, "largest accepted absolute mAP50-95 drop of INT8 vs FP32; sensitive layers are "
        "kept in float to meet it", DEPLOY_MODES, 0, 1, high_open=True),
)
ARG_BY_NAME = {a.name: a for a in ARGS}


def _parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "1", "yes"}:
        return True
    if text in {"false", "0", "no"}:
        return False
    raise ConfigError(f"{name}={value!r} must be True or False")


def coerce(name: str, value: Any) -> Any:
    """Convert and range-check one of our arguments; raise ConfigError naming the fix."""
    arg = ARG_BY_NAME[name]
    if value is None or (isinstance(value, str) and value.lower() == "none"):
        if arg.default is None:
            return None
        raise ConfigError(f"{name} needs a value ({arg.help})")
    if arg.type is bool:
        return _parse_bool(name, value)
    try:
        if arg.type is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        out = arg.type(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} must be {arg.type.__name__} ({arg.help})") from None
    if arg.choices and out not in arg.choices:
        raise ConfigError(f"unknown {name} '{out}'; choose one of: {', '.join(arg.choices)}")
    bad_low = arg.low is not None and (out <= arg.low if arg.low_open else out < arg.low)
    bad_high = arg.high is not None and (out >= arg.high if arg.high_open else out > arg.high)
    if bad_low or bad_high:
        raise ConfigError(f"{name}={value} is out of range; use {arg.describe_range().replace('x', name)}")
    return out


def split_args(mode: str, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split `kwargs` into (ours, validated with defaults for `mode`; the rest for Ultralytics)."""
    ours = {a.name: a.default for a in ARGS if mode in a.modes}
    rest = {}
    for key, value in kwargs.items():
        arg = ARG_BY_NAME.get(key)
        if arg is None or (mode not in arg.modes and _is_ultralytics_key(key)):
            rest[key] = value
        elif mode not in arg.modes:
            raise ConfigError(f"'{key}' does not apply to 'yolo-opt {mode}' (it is for: {', '.join(arg.modes)})")
        else:
            ours[key] = coerce(key, value)
    return ours, rest


def _is_ultralytics_key(key: str) -> bool:
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return key in DEFAULT_CFG_DICT


def help_table() -> str:
    """The table `yolo-opt help` prints."""
    rows = [("key", "type", "default", "range", "modes", "help")]
    rows += [
        (a.name, a.type.__name__, str(a.default), a.describe_range(), ",".join(a.modes), a.help) for a in ARGS
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5] for r in rows)
