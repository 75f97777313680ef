"""Typed option objects: the one home of every yolo-opt key, its type, default, range and help.

Each object is frozen and validated once, on construction (types coerced, ranges and combinations checked,
`ConfigError` naming the fix otherwise), so the layers below take them as given. The CLI's parsing and the
`yolo-opt help` table are generated from these fields. Python callers build them directly
(`PruneOptions(prune_target=0.5)`) or pass keyword shortcuts that the verbs turn into them (`from_kwargs`).

This module imports no torch/Ultralytics: the CLI parses with it before anything heavy is loaded.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from yolo_opt.errors import ConfigError

# Channel importance criteria (`prune_method`); yolo_opt.prune.importance maps each name to a torch-pruning object.
PRUNE_METHODS = {
    "l2": "group L2 magnitude of the weights of each channel group",
    "l1": "group L1 magnitude of the weights of each channel group",
    "bn": "BatchNorm scale |gamma| (network slimming; pair with sparsity=)",
    "taylor": "first-order Taylor |w * dL/dw| on training batches (needs data)",
    "random": "random channels (a baseline for comparisons)",
}
NEEDS_DATA = ("taylor",)  # criteria scored from gradients on training batches
CALIB_METHODS = ("minmax", "entropy", "percentile")  # ONNX Runtime calibration; "legacy" is TensorRT's own
DEPLOY_FORMATS = ("onnx", "engine", "jetson", "openvino")
OV_PRECISIONS = ("f32", "bf16", "f16")  # OpenVINO's CPU INFERENCE_PRECISION_HINT values
# TensorRT builder workspace (GiB) for engines and bundles: Jetson Orin Nano/NX share 4-8 GiB with the CPU
TRT_WORKSPACE_GIB = 2.0
SENS_SCORES = ("map", "err")  # sensitivity: the validator's mAP (and err), or only the head-output change err
DEFAULT_RECIPE = "cpu-onnx"  # what `optimize` and `demo` run unless told otherwise
DEFAULT_IMGSZ = 640  # Ultralytics' default image size, where neither the user nor a checkpoint says another


@dataclass(frozen=True)
class Spec:
    """What the CLI and `help` know of one key."""

    type: type
    help: str
    modes: tuple[str, ...]
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    ultralytics: bool = False  # an Ultralytics argument that this object also reads (not listed as ours in help)

    def describe_range(self) -> str:
        """Human-readable valid range, e.g. '0 <= x < 1' or 'a|b|c'."""
        if self.choices:
            return "|".join(self.choices)
        if self.low is None and self.high is None:
            return ""
        lo = "" if self.low is None else f"{_num(self.low)} {'<' if self.low_open else '<='} "
        hi = "" if self.high is None else f" {'<' if self.high_open else '<='} {_num(self.high)}"
        return f"{lo}x{hi}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def key(default: Any, type_: type, help: str, modes: tuple[str, ...], **limits: Any) -> Any:  # noqa: A002
    """A dataclass field carrying its CLI spec."""
    return field(default=default, metadata={"spec": Spec(type_, help, tuple(modes), **limits)})


def parse_bool(name: str, value: Any) -> bool:
    """True/False from a bool or the strings the `yolo` CLI accepts."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "1", "yes"}:
        return True
    if text in {"false", "0", "no"}:
        return False
    raise ConfigError(f"{name}={value!r} must be True or False")


def coerce(name: str, spec: Spec, value: Any, default: Any) -> Any:
    """Convert and range-check one value; raise ConfigError naming the fix."""
    if value is None or (isinstance(value, str) and value.lower() == "none"):
        if default is None:
            return None
        raise ConfigError(f"{name} needs a value ({spec.help})")
    if spec.type is bool:
        return parse_bool(name, value)
    try:
        if spec.type in (int, float) and isinstance(value, bool):
            raise ValueError
        if spec.type is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        out = spec.type(value)
    except (TypeError, ValueError):
        example = spec.describe_range().replace("x", name) or f"{name}=<{spec.type.__name__}>"
        raise ConfigError(f"{name}={value!r} must be {spec.type.__name__} ({example})") from None
    if spec.type is float and not math.isfinite(out):  # NaN compares False with every bound: refuse it here, once
        example = spec.describe_range().replace("x", name) or f"a finite {name}="
        raise ConfigError(f"{name}={value} is not a finite number; use {example}")
    if spec.choices and out not in spec.choices:
        raise ConfigError(f"unknown {name} '{out}'; choose one of: {', '.join(spec.choices)}")
    bad_low = spec.low is not None and (out <= spec.low if spec.low_open else out < spec.low)
    bad_high = spec.high is not None and (out >= spec.high if spec.high_open else out > spec.high)
    if bad_low or bad_high:
        raise ConfigError(f"{name}={value} is out of range; use {spec.describe_range().replace('x', name)}")
    return out


def check_imgsz(value: Any, name: str = "imgsz") -> int:
    """An image size: an integer >= 32 and a multiple of the YOLO stride 32 (else one line naming the fix)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 32:
        raise ConfigError(f"{name}={value!r} must be an integer multiple of 32, e.g. {name}=640")
    if value % 32:
        raise ConfigError(f"{name}={value} must be a multiple of the model stride 32, e.g. {name}={(value + 31) // 32 * 32}")
    return value


SPLITS = ("train", "val", "test")


def check_ultralytics_args(args: dict[str, Any], mode: str) -> None:
    """Ultralytics' own check of its arguments (`get_cfg`), and the few it leaves to the middle of a run, before any
    work: a bad value is one ConfigError here instead of a traceback after a run folder exists.

    Only the keys Ultralytics knows are checked (ours are the option objects' job); `args` is not changed.
    """
    from ultralytics.cfg import DEFAULT_CFG_DICT, get_cfg

    given = {k: v for k, v in args.items() if k in DEFAULT_CFG_DICT and k not in {"model", "data", "source", "cfg"}}
    for name, value in given.items():  # get_cfg lets NaN through the keys that have no range
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name}={value} is not a finite number")
    try:
        get_cfg(overrides=dict(given))  # its type and range checks (epochs=abc, epochs=0, lr0=nan, conf=abc, ...)
    except (TypeError, ValueError, SyntaxError) as e:
        from yolo_opt.errors import first_line

        raise ConfigError(first_line(e)) from None
    imgsz = given.get("imgsz")
    sizes = imgsz if isinstance(imgsz, (list, tuple)) else [imgsz]
    if imgsz is not None and (not 1 <= len(sizes) <= 2 or
                              any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes)):
        raise ConfigError(f"imgsz={imgsz} must be a positive integer, e.g. imgsz=640")
    if mode == "val" and given.get("split", "val") not in SPLITS:
        raise ConfigError(f"split={given['split']} is not a dataset split; choose one of: {', '.join(SPLITS)}")
    if mode == "export" and "format" in given:
        from ultralytics.engine.exporter import export_formats

        formats = [f for f in export_formats()["Argument"] if f != "-"]
        if str(given["format"]).lower() not in formats:
            raise ConfigError(f"unknown export format={given['format']}; choose one of: {', '.join(formats)}")
    if given.get("opset") is not None:
        import onnx
        import torch.onnx._constants as onnx_constants

        top = min(onnx.defs.onnx_opset_version(), onnx_constants.ONNX_MAX_OPSET)
        if not 7 <= given["opset"] <= top:
            raise ConfigError(f"opset={given['opset']} is not an ONNX opset this torch exports; use 7 <= opset <= "
                              f"{top}, or leave it out (the best one is chosen)")
    device = given.get("device")
    if device not in (None, "", "cpu") and not (mode in ("export", "bundle") and given.get("format") == "openvino"):
        from ultralytics.utils.torch_utils import select_device

        try:
            select_device(str(device), verbose=False)
        except (TypeError, ValueError) as e:
            from yolo_opt.errors import first_line

            raise ConfigError(f"device={device}: {first_line(e)}") from None


# The one opt-in for checkpoints outside the safe-load allow-list (an environment variable, so it reaches every
# process: the CLI, the Python API, DDP workers and tuning trials alike).
TRUST_ENV = "YOLO_OPT_TRUST"


def trust_checkpoints() -> bool:
    """Whether `YOLO_OPT_TRUST=1`: load checkpoints with full pickle (runs code inside them; trusted files only)."""
    import os

    value = os.environ.get(TRUST_ENV, "").strip()
    if value == "":
        return False
    try:
        return parse_bool(TRUST_ENV, value)
    except ConfigError:
        raise ConfigError(f"{TRUST_ENV}={value!r} must be 1 (trust every checkpoint: full pickle) or 0 (safe "
                          "loading, the default)") from None


@dataclass(frozen=True)
class Options:
    """Base of the option objects: every field coerced and checked on construction, then `check()`."""

    def __post_init__(self) -> None:
        for f in fields(self):
            spec = f.metadata.get("spec")
            if spec is not None:
                object.__setattr__(self, f.name, coerce(f.name, spec, getattr(self, f.name), f.default))
        self.check()

    def check(self) -> None:
        """Rules between fields (override)."""

    @classmethod
    def specs(cls) -> dict[str, tuple[Spec, Any]]:
        """Key name -> (spec, default) of this object's own keys."""
        return {f.name: (f.metadata["spec"], f.default) for f in fields(cls) if "spec" in f.metadata}

    @classmethod
    def take(cls, kwargs: dict[str, Any], mode: str | None = None, **extra: Any):
        """Build from the keys of `kwargs` this class knows, removing them from `kwargs`.

        A key of this class that does not apply to `mode` is refused (e.g. prune_steps= for one-shot pruning).
        """
        mine = {}
        for name, (spec, _) in cls.specs().items():
            if name in kwargs:
                if mode is not None and mode not in spec.modes:
                    raise ConfigError(f"'{name}' does not apply to 'yolo-opt {mode}' (it is for: {', '.join(spec.modes)})")
                mine[name] = kwargs.pop(name)
        return cls(**mine, **extra)

    @classmethod
    def resolve(cls, opts: Options | None, kwargs: dict[str, Any], mode: str | None = None) -> tuple[Any, dict[str, Any]]:
        """The one rule of every verb: its option object as given, or built from keyword shortcuts, never both.

        Returns:
            (the option object, the keys of `kwargs` that are not this object's: for the verb's other arguments).

        Raises:
            ConfigError: `opts` is not a `cls`, a shortcut is invalid, or `opts` and shortcuts are both given.
        """
        rest = dict(kwargs)
        built = cls.take(rest, mode)  # validates the shortcuts even when they conflict: the clearer error first
        if opts is None:
            return built, rest
        if not isinstance(opts, cls):
            raise ConfigError(f"expected {cls.__name__}, got {type(opts).__name__}")
        given = [k for k in kwargs if k not in rest]
        if given:
            raise ConfigError(f"give {cls.__name__} or its keyword shortcuts, not both ({', '.join(given)})")
        return opts, rest

    @classmethod
    def from_kwargs(cls, opts: Options | None = None, **kwargs: Any):
        """`resolve` for a verb that takes nothing else: unknown keys raise ConfigError."""
        out, rest = cls.resolve(opts, kwargs)
        if rest:
            raise ConfigError(f"unknown {cls.__name__} key(s): {', '.join(rest)}; see 'yolo-opt help'")
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of this object's keys (what is saved in checkpoints and recipes)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if "spec" in f.metadata}

    def replace(self, **changes: Any):
        """A copy with some keys changed (validated again)."""
        return dataclasses.replace(self, **changes)


TRAIN = ("train",)
PRUNE_MODES = ("train", "prune")


@dataclass(frozen=True)
class PruneOptions(Options):
    """Structured channel pruning: how much, by which criterion, in how many steps (train) or at once (prune)."""

    prune: float = key(0.0, float, "fraction of prunable channels to remove", PRUNE_MODES, low=0, high=1, high_open=True)
    prune_target: float | None = key(None, float, "target GFLOPs ratio to keep (0.5 = half); the ratio is searched",
                                     PRUNE_MODES, low=0, high=1, low_open=True)
    prune_latency: float | None = key(None, float, "target latency ratio to keep (0.5 = half the unpruned model's time), "
                                      "measured on lat_runtime at lat_imgsz: ratios allocated from a latency table "
                                      "timed here, checked by timing the pruned model", PRUNE_MODES, low=0, high=1,
                                      low_open=True, high_open=True)
    lat_runtime: str = key("onnx", str, "where prune_latency= is timed: onnx (ONNX Runtime CPU), openvino (its default "
                           "precision), torch-cuda (PyTorch FP16 on a CUDA GPU); tensorrt is refused (not built yet)",
                           PRUNE_MODES, choices=("onnx", "openvino", "torch-cuda", "tensorrt"))
    lat_imgsz: int | None = key(None, int, "image size prune_latency= is timed at (the size the model is deployed at; "
                                "default: imgsz)", PRUNE_MODES, low=32, high=4096)
    lat_rounds: int = key(3, int, "timing rounds of prune_latency='s check (the pruned copy and the unpruned model "
                          "timed in turn, each in a process of its own; more on a noisy machine)", PRUNE_MODES,
                          low=1, high=50)
    prune_method: str = key("l2", str, "channel importance criterion", PRUNE_MODES + ("sensitivity",),
                            choices=tuple(PRUNE_METHODS))
    prune_steps: int = key(1, int, "iterative pruning: prune a share, fine-tune, repeat", TRAIN, low=1, high=100)
    prune_round: int = key(8, int, "round kept channels to a multiple of this (8 suits TensorRT/VNNI)",
                           PRUNE_MODES + ("sensitivity",), low=1, high=256)
    prune_global: bool = key(False, bool, "rank channels across layers instead of one ratio per layer", PRUNE_MODES)
    prune_batches: int = key(8, int, "training batches scored by prune_method=taylor", PRUNE_MODES, low=1, high=10000)
    prune_ratios: str = key("auto", str, "per-layer ratios: sensitivity = allocated from a per-group sensitivity "
                            "analysis (sensitivity=, or made on the model before pruning), uniform = one ratio "
                            "everywhere; auto = sensitivity for prune_target= runs (data-free prune_method, one ratio "
                            "per layer), uniform otherwise", PRUNE_MODES, choices=("auto", "uniform", "sensitivity"))
    sensitivity: str | None = key(None, str, "sensitivity.json from 'yolo-opt sensitivity' for per-layer ratios "
                                  "(default: yolo-opt makes one, score=err, in the run folder)", PRUNE_MODES)
    prune_native: bool = key(False, bool, "save Ultralytics' own C2f/C3k2/C2PSA classes (the .pt then loads without "
                             "yolo-opt, ULTRALYTICS_SAFE_LOAD=1 too); a C2PSA's bypass half stays unpruned",
                             ("prune",))
    sparsity: float = key(0.0, float, "L1 penalty on BN scales during a sparsity phase before the first prune step",
                          TRAIN, low=0, high=1)
    sparsity_epochs: int = key(0, int, "length of the sparsity phase in epochs (0: a third of the epochs)", TRAIN,
                               low=0, high=100000)

    def check(self) -> None:
        """One of prune / prune_target; per-layer ratios need per-layer ranking and a data-free criterion."""
        goals = [k for k in ("prune", "prune_target", "prune_latency") if getattr(self, k)]
        if len(goals) > 1:
            raise ConfigError(f"give one of prune=<channel fraction>, prune_target=<GFLOPs ratio> or "
                              f"prune_latency=<latency ratio>, not both ({' and '.join(goals)})")
        if self.prune_latency is None:
            unused = [k for k in ("lat_runtime", "lat_imgsz", "lat_rounds")
                      if getattr(self, k) != PruneOptions.specs()[k][1]]
            if unused:
                raise ConfigError(f"{unused[0]}= sets how prune_latency= is timed: add prune_latency=<ratio>")
        elif self.prune_global or self.prune_native:
            raise ConfigError("prune_latency= allocates a ratio per group from a latency table: it cannot be combined "
                              f"with {'prune_global' if self.prune_global else 'prune_native'}=True")
        if self.lat_imgsz is not None and self.lat_imgsz % 32:
            raise ConfigError(f"lat_imgsz={self.lat_imgsz} must be a multiple of the model stride 32, e.g. "
                              f"lat_imgsz={(self.lat_imgsz + 31) // 32 * 32}")
        if self.prune_ratios == "sensitivity":
            if self.prune_global:
                raise ConfigError("prune_ratios=sensitivity sets one ratio per group; it cannot be combined with "
                                  "prune_global=True")
            if self.prune_method in NEEDS_DATA and not self.sensitivity:
                raise ConfigError(f"the sensitivity analysis behind prune_ratios=sensitivity masks channels without "
                                  f"data; prune_method={self.prune_method} needs prune_ratios=uniform or sensitivity=")
        if self.prune_native and (self.prune_global or self.prune_ratios == "sensitivity"):
            raise ConfigError("prune_native=True needs the two halves of each block equally wide: use one ratio per "
                              "layer (not prune_global=True or prune_ratios=sensitivity)")

    @property
    def per_layer(self) -> bool:
        """Whether ratios are allocated per group from a sensitivity analysis (prune_ratios, with auto resolved)."""
        if self.prune_ratios == "auto":
            return ((self.prune_target is not None or self.prune_latency is not None) and not self.prune_global
                    and not self.prune_native and self.prune_method not in NEEDS_DATA)
        return self.prune_ratios == "sensitivity"

    @property
    def by_group(self) -> bool:
        """Whether the run prunes with one ratio per group, allocated once (per-layer ratios, or a latency target)."""
        return self.per_layer or self.prune_latency is not None

    @property
    def active(self) -> bool:
        """Whether anything is pruned."""
        return bool(self.prune) or self.prune_target is not None or self.prune_latency is not None


@dataclass(frozen=True)
class DistillOptions(Options):
    """Recovery by distillation from the model before pruning (or `teacher=`): on when asked for."""

    distill: bool | None = key(None, bool, "distil the pruned model from the model before pruning (or teacher=) while "
                               "it recovers; None (auto): on when teacher= or another distill_* setting is given "
                               "(pruning alone recovers as well or better without it, and faster)", TRAIN)
    teacher: str | None = key(None, str, "teacher checkpoint for distill (default: the model before pruning)", TRAIN)
    distill_weight: float = key(1.0, float, "weight of the output distillation (class scores + DFL boxes) relative to "
                                "the labels' loss", TRAIN, low=0, high=100)
    distill_schedule: str = key("constant", str, "the output distillation's weight over the epochs: constant; "
                                "linear (distill_weight at the first epoch, falling to 0 at the last); or "
                                "while_behind (distill_weight until the first validation after the last pruning step "
                                "where the student's mAP reaches the teacher's, then 0: a student is not held back by "
                                "a teacher it has caught up with)", TRAIN,
                                choices=("constant", "linear", "while_behind"))
    distill_features: float = key(0.0, float, "weight of Ultralytics' feature distillation (neck features through a "
                                  "projector); 0 = off", TRAIN, low=0, high=100)


@dataclass(frozen=True)
class QATOptions(Options):
    """Quantization-aware fine-tuning (Ultralytics' ModelOpt fake-quant), a phase after pruning + recovery."""

    qat: bool = key(False, bool, "INT8 quantization-aware fine-tuning (after pruning and recovery when prune is set); "
                    "writes a QDQ ONNX", TRAIN + ("optimize",))
    qat_epochs: int = key(3, int, "epochs of the QAT phase that follows pruning + recovery", TRAIN + ("optimize",),
                          low=1, high=10000)
    qat_lr0: float = key(1e-4, float, "learning rate of the QAT phase (AdamW, no warm-up)", TRAIN + ("optimize",),
                         low=0, high=1, low_open=True)

    # the phase's fixed Ultralytics settings: small steps from a converged float model
    optimizer: ClassVar[str] = "AdamW"
    warmup_epochs: ClassVar[int] = 0

    def phase_args(self) -> dict[str, Any]:
        """Ultralytics train arguments of the QAT phase."""
        return {"quantize": 8, "epochs": self.qat_epochs, "lr0": self.qat_lr0, "optimizer": self.optimizer,
                "warmup_epochs": self.warmup_epochs}


@dataclass(frozen=True)
class TrainOptions(Options):
    """Everything yolo-opt adds to `yolo train`: pruning, distillation and QAT (each its own object)."""

    prune: PruneOptions = field(default_factory=PruneOptions)
    distill: DistillOptions = field(default_factory=DistillOptions)
    qat: QATOptions = field(default_factory=QATOptions)

    PARTS: ClassVar[tuple[type[Options], ...]] = (PruneOptions, DistillOptions, QATOptions)

    @classmethod
    def specs(cls) -> dict[str, tuple[Spec, Any]]:
        """The keys of all parts."""
        return {k: v for part in cls.PARTS for k, v in part.specs().items()}

    @classmethod
    def take(cls, kwargs: dict[str, Any], mode: str | None = None, **extra: Any) -> TrainOptions:
        """Each part takes its keys from `kwargs`."""
        return cls(PruneOptions.take(kwargs, mode), DistillOptions.take(kwargs, mode), QATOptions.take(kwargs, mode))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainOptions:
        """From a flat dict (checkpoint metadata, DDP arguments); unknown keys are refused."""
        rest = dict(values)
        out = cls.take(rest)
        if rest:
            raise ConfigError(f"unknown training option(s): {', '.join(rest)}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """One flat dict of all parts (key names are unique across them)."""
        return {**self.prune.to_dict(), **self.distill.to_dict(), **self.qat.to_dict()}

    @property
    def distilling(self) -> bool:
        """Distillation runs when asked: `distill=True`, or (auto) a named teacher or a distillation setting away from
        its default. Not for pruning alone: from the model before pruning it recovered no better than the labels
        alone, at a higher epoch cost (measured: docs/benchmarks.md#distillation)."""
        d = self.distill
        if d.distill is None:  # auto: any other key of DistillOptions away from its default (teacher= included)
            return any(getattr(d, k) != default for k, (_, default) in d.specs().items() if k != "distill")
        return d.distill


@dataclass(frozen=True)
class PTQOptions(Options):
    """Post-training INT8 quantization of an ONNX model, calibrated on the train split."""

    calib: str = key("minmax", str, "INT8 calibration (legacy: TensorRT's implicit calibrator, format=engine)",
                     ("export", "bundle", "optimize"), choices=(*CALIB_METHODS, "legacy"))
    calib_images: int = key(256, int, "train images used for INT8 calibration", ("export", "bundle", "optimize",
                                                                                  "deploy"), low=1, high=100000)
    per_channel: bool = key(True, bool, "per-output-channel INT8 weight scales", ("export", "bundle", "optimize"))
    symmetric: bool | None = key(None, bool, "symmetric INT8 activations (zero point 0), the only kind TensorRT runs "
                                 "(format=engine, format=jetson, bundle and a recipe's engine stage always use them); "
                                 "unset: where the INT8 model is validated (data=), both kinds are measured and the "
                                 "more accurate kept (the same speed on ONNX Runtime), else asymmetric",
                                 ("export", "bundle", "optimize"))
    max_map_drop: float | None = key(None, float, "largest accepted absolute mAP50-95 drop of INT8 vs FP32 (boxes, and "
                                     "masks); sensitive layers are kept in float to meet it; deploy: below the best "
                                     "unpruned model, input or reference (0.01 by default)", ("export", "bundle", "optimize", "deploy"),
                                     low=0, high=1, high_open=True)


EXPORT_MODES = ("export", "bundle")


@dataclass(frozen=True)
class ExportOptions(Options):
    """`yolo-opt export` with int8/engine/jetson and `yolo-opt bundle`: the format and where it goes."""

    format: str = key("onnx", str, "export format", EXPORT_MODES, choices=DEPLOY_FORMATS, ultralytics=True)
    int8: bool = key(False, bool, "INT8 quantization", EXPORT_MODES, ultralytics=True)
    imgsz: int | None = key(None, int, "export image size (default: the size the checkpoint was trained at, as "
                            "`yolo export`)", EXPORT_MODES, low=32, high=8192, ultralytics=True)
    workspace: float = key(TRT_WORKSPACE_GIB, float, "TensorRT builder workspace (GiB)", EXPORT_MODES, low=0,
                           high=1024, low_open=True, ultralytics=True)
    out: str | None = key(None, str, "output path (.pt for prune, a folder for data, demo, bundle and deploy, the INT8 "
                          ".onnx/.engine or the OpenVINO folder for export)",
                          ("prune", "data", "demo", "export", "bundle", "deploy"))
    device: str | None = key(None, str, "OpenVINO device of format=openvino: CPU, GPU, NPU or AUTO (intel:gpu also "
                             "accepted)", EXPORT_MODES, ultralytics=True)
    end2end: bool | None = key(None, bool, "the NMS-free one-to-one output of an end-to-end model (YOLO26, YOLOv10: "
                               "the default); False: its one-to-many output, which needs NMS", EXPORT_MODES)
    ptq: PTQOptions = field(default_factory=PTQOptions)

    def check(self) -> None:
        """legacy calibration only builds engines; device= and NNCF's own calibration belong to OpenVINO."""
        if self.ptq.calib == "legacy" and self.format != "engine":
            raise ConfigError("calib=legacy is TensorRT's implicit calibrator: use it with format=engine")
        if self.device is not None and self.format != "openvino":
            raise ConfigError(f"device= picks the OpenVINO device of format=openvino; format={self.format} does not "
                              "take it (drop device=)")
        if self.format == "openvino" and (self.ptq.calib != "minmax" or not self.ptq.per_channel):
            raise ConfigError("calib= and per_channel= choose ONNX Runtime's calibration; NNCF calibrates "
                              "format=openvino itself (drop them)")
        if self.imgsz is not None:
            check_imgsz(self.imgsz)

    @classmethod
    def take(cls, kwargs: dict[str, Any], mode: str | None = None, **extra: Any) -> ExportOptions:
        """The PTQ keys go to the nested PTQOptions."""
        ptq = PTQOptions.take(kwargs, mode)
        return super().take(kwargs, mode, ptq=ptq, **extra)


@dataclass(frozen=True)
class DataOptions(Options):
    """`yolo-opt data`: the generated dataset."""

    out: str = key("datasets/yolo-opt", str, "output folder of the dataset", ("data",))
    seed: int = key(0, int, "dataset seed (same seed, same bytes)", ("data",), low=0, high=2**31 - 1)
    n_train: int = key(300, int, "number of training images", ("data", "demo"), low=1, high=1000000)
    n_val: int = key(80, int, "number of validation images", ("data", "demo"), low=1, high=1000000)
    imgsz: int | None = key(None, int, "image side in pixels (default: 160 for shapes, 640 for the hard sets)",
                            ("data",), low=32, high=4096, ultralytics=True)
    max_objects: int | None = key(None, int, "most objects per image (default: 6 for shapes, 30 for the hard sets)",
                                  ("data",), low=1, high=100)
    task: str = key("detect", str, "labels: detect (boxes) or segment (instance polygons, the same images)", ("data",),
                    choices=("detect", "segment"), ultralytics=True)
    kind: str = key("shapes", str, "shapes (5 classes, small and fast), hard (36 classes told apart by small markings, "
                    "crowded, small objects, photographs and textures) or transfer (12 other classes, the same scenes)",
                    ("data",), choices=("shapes", "hard", "transfer"))


@dataclass(frozen=True)
class BenchOptions(Options):
    """How models are measured in reports."""

    lat_imgsz: int | None = key(None, int, "image size of .pt latency (default: imgsz; an ONNX is timed at its own "
                                "input size; deploy: the size its candidates are timed at)",
                                ("demo", "optimize", "benchmark", "deploy"), low=32, high=4096)
    reference: str | None = key(None, str, "the reference model (the input trained as many extra epochs as the "
                                "compressed ones, unpruned): adds mAP 'vs reference' (optimize trains its own: stage "
                                "'reference'); deploy: a candidate, and the bar where it scores above the input", ("benchmark", "deploy"))
    ov_precision: str | None = key(None, str, "OpenVINO CPU inference precision of latency: f32, bf16 or f16 "
                                   "(default: OpenVINO's own: bf16 on CPUs with AVX512-BF16 or AMX; the runtime column "
                                   "names it)", ("demo", "optimize", "benchmark"), choices=OV_PRECISIONS)


RUNTIMES = ("onnx", "openvino")  # the CPU runtimes `deploy` measures


@dataclass(frozen=True)
class DeployOptions(Options):
    """`yolo-opt deploy` and the `select` stage: where the model will run, and which runtimes may serve it there."""

    target: str = key("cpu", str, "where the model runs: cpu (every form measured here, the fastest within "
                      "max_map_drop delivered) or jetson/gpu (TensorRT: not measurable here; the bundle is written)",
                      ("deploy", "optimize"), choices=("cpu", "jetson", "gpu"))
    runtimes: str = key("auto", str, "CPU runtimes deploy may choose from: onnx (ONNX Runtime), openvino, "
                        "comma-separated; auto: both where OpenVINO is installed (the extra yolo-opt[openvino])",
                        ("deploy", "optimize"))
    throughput_batch: int = key(8, int, "batch of deploy's throughput column (images/s); ONNX forms are exported "
                                "again at it; 0 skips the column", ("deploy", "optimize"), low=0, high=256)
    rounds: int = key(3, int, "timing rounds of deploy: each candidate timed once a round, in a fresh process, the "
                      "median kept (more: steadier figures on a busy machine)", ("deploy", "optimize"), low=1, high=50)
    keep_candidates: bool = key(False, bool, "keep every candidate form deploy measured under out/candidates/ (by "
                                "default removed once measured: the table keeps their figures)", ("deploy", "optimize"))
    round_for: str | None = key(None, str, "choose prune_round by timing pruned copies on this runtime here (8, 16 or "
                                "32: the fastest at the prune_target; cached per machine)", ("train", "optimize"),
                                choices=RUNTIMES)

    def check(self) -> None:
        """Known runtimes only."""
        self.runtime_list()

    def runtime_list(self) -> tuple[str, ...]:
        """The runtimes asked for (`auto`: ONNX Runtime, and OpenVINO when it and NNCF are installed)."""
        if self.runtimes == "auto":
            import importlib.util

            return ("onnx",) + (("openvino",) if all(importlib.util.find_spec(m) for m in ("openvino", "nncf")) else ())
        names = tuple(dict.fromkeys(r for r in self.runtimes.replace(" ", "").split(",") if r))
        bad = [r for r in names if r not in RUNTIMES]
        if bad or not names:
            raise ConfigError(f"runtimes={self.runtimes!r}: choose from {', '.join(RUNTIMES)}, comma-separated")
        return names


@dataclass(frozen=True)
class DemoOptions(Options):
    """`yolo-opt demo`: generated data -> small CPU-trained baseline -> a recipe."""

    out: str = key("runs/opt/demo", str, "output folder of the demo", ("demo",))
    n_train: int = key(300, int, "number of training images", ("data", "demo"), low=1, high=1000000)
    n_val: int = key(80, int, "number of validation images", ("data", "demo"), low=1, high=1000000)
    base_epochs: int = key(30, int, "epochs of the demo's baseline training", ("demo",), low=1, high=10000)
    arch: str = key("yolov8n", str, "Ultralytics model yaml stem the demo trains (yolov8n, yolo11n, ...)", ("demo",))
    recipe: str = key(DEFAULT_RECIPE, str, "pipeline recipe: a shipped name (cpu-onnx, jetson-int8, intel-openvino, "
                      "accuracy-first) or a .yaml path", ("optimize", "demo"))
    imgsz: int = key(160, int, "training and validation image size", ("demo",), low=32, high=4096, ultralytics=True)


@dataclass(frozen=True)
class SensitivityOptions(Options):
    """`yolo-opt sensitivity`: per-group pruning sensitivity without fine-tuning."""

    ratios: str = key("0.25,0.5,0.75", str, "pruning ratios tried on each group, comma-separated", ("sensitivity",))
    max_images: int | None = key(None, int, "score only the first N val images (faster, noisier)", ("sensitivity",),
                                 low=1, high=10**9)
    groups: str | None = key(None, str, "only these groups (comma-separated root layer names, e.g. model.4.cv0)",
                             ("sensitivity",))
    score: str = key("map", str, "what scores each case: map (the validator's mAP on the val split, and err) or err "
                     "(relative change of the head outputs on 16 val images: no validator, ~20x faster)",
                     ("sensitivity",), choices=SENS_SCORES)

    def ratio_list(self) -> list[float]:
        """The ratios as sorted unique fractions 0 < r < 1."""
        try:
            values = [float(r) for r in self.ratios.replace(" ", "").split(",") if r]
        except ValueError:
            raise ConfigError(f"ratios={self.ratios!r} must be comma-separated fractions, e.g. "
                              "ratios=0.25,0.5,0.75") from None
        if not values or any(not 0 < r < 1 for r in values):
            raise ConfigError(f"ratios={self.ratios!r}: give fractions 0 < r < 1, e.g. ratios=0.25,0.5,0.75")
        return sorted(set(values))

    def check(self) -> None:
        """The ratios parse."""
        self.ratio_list()


@dataclass(frozen=True)
class TuneOptions(Options):
    """`yolo-opt tune`: an Optuna multi-objective compression search."""

    OBJECTIVES: ClassVar[dict[str, tuple[str, str]]] = {"map,latency": ("map", "latency_ms"),
                                                        "map,gflops": ("map", "gflops")}

    trials: int = key(20, int, "total trials of the study (a resumed study runs only the missing ones)", ("tune",),
                      low=1, high=100000)
    storage: str | None = key(None, str, "Optuna storage URL (default: SQLite study.db in the run folder; "
                              "postgresql://user:pw@host/db to share a study between machines)", ("tune",))
    study: str = key("tune", str, "study name (also the run folder runs/opt/tune/<study>)", ("tune",))
    objectives: str = key("map,latency", str, "what to optimize: map and one of latency (ONNX Runtime ms) or gflops",
                          ("tune",), choices=("map,latency", "map,gflops"))
    lat_source: str = key("measured", str, "each trial's latency: measured (exported and timed) or table (predicted "
                          "from the latency table, built once; the Pareto front is then measured)", ("tune",),
                          choices=("measured", "table"))
    max_epochs: int = key(10, int, "largest fine-tuning epochs a trial may draw (fix it with epochs=)", ("tune",),
                          low=1, high=10000)
    top: int = key(3, int, "Pareto-optimal trials written as recipe YAML files", ("tune",), low=0, high=1000)
    heartbeat: int = key(60, int, "seconds between trial heartbeats; a trial silent for 2x this becomes FAIL",
                         ("tune",), low=1, high=86400)

    def check(self) -> None:
        """The study name names a folder."""
        import re

        # one folder inside the project: no separator, and no leading dot ('..' would climb out of it)
        if not re.fullmatch(r"\w[\w.-]*", self.study):
            raise ConfigError(f"study={self.study!r}: start with a letter, digit or '_', then use those, '.' or '-' "
                              "(it names the run folder)")
        if self.lat_source == "table" and self.objectives != "map,latency":
            raise ConfigError("lat_source=table predicts latency: use it with objectives=map,latency")


# Every object whose keys the CLI knows, in the order `help` lists them.
ALL_OPTIONS: tuple[type[Options], ...] = (
    PruneOptions, DistillOptions, QATOptions, PTQOptions, ExportOptions, DataOptions, DemoOptions, BenchOptions,
    DeployOptions, SensitivityOptions, TuneOptions,
)


def our_keys() -> dict[str, tuple[Spec, Any]]:
    """Every yolo-opt key (not the Ultralytics ones some objects read) -> (spec, default), modes merged."""
    out: dict[str, tuple[Spec, Any]] = {}
    for cls in ALL_OPTIONS:
        for name, (spec, default) in cls.specs().items():
            if spec.ultralytics:
                continue
            if name in out:
                known = out[name][0]
                spec = dataclasses.replace(known, modes=tuple(dict.fromkeys(known.modes + spec.modes)))
                default = out[name][1]
            out[name] = (spec, default)
    return out


def help_table(mode: str | None = None) -> str:
    """The table `yolo-opt help` prints: key, type, default, range, modes, help (`mode`: that mode's keys only)."""
    rows = [("key", "type", "default", "range", "modes", "help")]
    rows += [(name, spec.type.__name__, str(default), spec.describe_range(), ",".join(spec.modes), spec.help)
             for name, (spec, default) in our_keys().items() if mode is None or mode in spec.modes]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5] for r in rows)
