"""`yolo-opt MODE key=value ...`: the `yolo` CLI grammar plus yolo-opt's keys (see `yolo-opt help`).

The CLI only parses, validates and delegates to the Python API.
"""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path
from typing import Any

from yolo_opt.errors import ConfigError, DataError, ModelError, YoloOptError

MODES = {
    "train": "fine-tune with Ultralytics, pruning as asked (prune=, prune_target=, prune_steps=, ...)",
    "prune": "one-shot pruning without training: model=best.pt prune=0.5 out=pruned.pt",
    "val": "Ultralytics validation of any model (pruned ones too)",
    "predict": "Ultralytics prediction",
    "export": "Ultralytics export; int8=True or format=engine|jetson: INT8 QDQ ONNX / TensorRT / bundle (calib=, ...)",
    "bundle": "Jetson folder (ONNX FP32+INT8, metadata, build_engine.py/.sh, infer.py): model= data= out=",
    "optimize": "the whole pipeline from a recipe: model=best.pt data=data.yaml recipe=jetson-int8 [name= key=...]",
    "benchmark": "measure models side by side: model=a.pt,b.onnx,... data=data.yaml [imgsz= lat_imgsz= name=]",
    "data": "write the generated demo dataset: out=DIR [seed= n_train= n_val= imgsz=]",
    "demo": "generated data -> small CPU-trained baseline -> the default recipe (prune, INT8 ONNX), with a table",
    "sensitivity": "per-layer pruning sensitivity table + plot: model=best.pt data=data.yaml [ratios=0.25,0.5,0.75]",
    "tune": "Optuna search, mAP vs latency: model=best.pt data=data.yaml trials=20 [storage=... study=...]",
    "help": "this help and the table of yolo-opt keys",
    "version": "print versions",
}


def parse_value(text: str) -> Any:
    """Turn a CLI string into None/bool/int/float/str like the `yolo` CLI does."""
    lower = text.lower()
    if lower == "none":
        return None
    if lower in {"true", "false"}:
        return lower == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_argv(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Split `MODE key=value ...` into the mode and a dict; bare flags (e.g. `resume`) mean True."""
    if not argv:
        return "help", {}
    mode, kwargs = argv[0], {}
    if "=" in mode:
        raise ConfigError(f"first argument must be a mode ({', '.join(MODES)}), got '{mode}'")
    for token in argv[1:]:
        if "=" in token:
            key, _, value = token.partition("=")
            key = key.strip()
            if not key or not value:
                raise ConfigError(f"'{token}' is not key=value (no spaces around '=')")
            kwargs[key] = parse_value(value.strip())
        else:
            kwargs[token] = True
    if mode not in MODES:
        close = difflib.get_close_matches(mode, MODES, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown mode '{mode}'{hint} Modes: {', '.join(MODES)}")
    return mode, kwargs


def check_ultralytics_keys(kwargs: dict[str, Any]) -> None:
    """Reject keys neither yolo-opt nor Ultralytics knows, in one line with a suggestion."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    from yolo_opt.config import ARG_BY_NAME

    known = set(DEFAULT_CFG_DICT) | set(ARG_BY_NAME) | {"cfg"}
    for key in kwargs:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown argument '{key}'{hint} See 'yolo-opt help' and 'yolo cfg'")


def int_arg(kwargs: dict[str, Any], key: str, default: int | None) -> int | None:
    """Pop an integer argument (imgsz, batch, ...) with a one-line error for a non-integer value."""
    value = kwargs.pop(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}={value!r} must be a positive integer, e.g. {key}={default or 640}")
    return value


def check_data(data: Any) -> None:
    """Clear error for a missing dataset yaml before Ultralytics tries to download it."""
    if data is None:
        raise DataError("data= is required, e.g. data=data.yaml (make one with 'yolo-opt data out=DIR')")
    path = Path(str(data))
    if path.suffix in {".yaml", ".yml"} and not path.exists():
        raise DataError(f"dataset file not found: {path}; pass data=path/to/data.yaml")


def check_model_arg(kwargs: dict[str, Any], required: bool = True) -> str | None:
    """Validate model= for modes that load a checkpoint."""
    model = kwargs.get("model")
    if model is None:
        if required:
            raise ModelError("model= is required, e.g. model=best.pt")
        return None
    model = str(model)
    if model.endswith(".pt"):
        from yolo_opt.prune.io import load_model

        load_model(model)
    elif not model.endswith((".yaml", ".yml", ".onnx", ".engine")) and not Path(model).exists():
        raise ModelError(f"model file not found: {model}")
    return model


def run_train(kwargs: dict[str, Any]) -> None:
    from yolo_opt.callbacks import train

    check_ultralytics_keys(kwargs)
    resume = kwargs.get("resume")
    if not resume:
        check_data(kwargs.get("data"))
    model = kwargs.pop("model", None)
    if model is None:
        raise ModelError("model= is required, e.g. model=best.pt")
    if isinstance(resume, str):
        model, kwargs["resume"] = resume, True
    result = train(model, **kwargs)
    print(f"yolo-opt: trained model {result['best']}")
    if result.get("qat_onnx"):
        print(f"yolo-opt: QDQ INT8 ONNX from QAT {result['qat_onnx']}")


def run_prune(kwargs: dict[str, Any]) -> None:
    from yolo_opt.config import split_args
    from yolo_opt.prune.io import prune_checkpoint

    ours, rest = split_args("prune", kwargs)
    model = rest.pop("model", None)
    imgsz = int_arg(rest, "imgsz", 640)
    data = rest.pop("data", None)
    if rest:
        raise ConfigError(f"unknown argument(s) for 'yolo-opt prune': {', '.join(rest)}; see 'yolo-opt help'")
    if model is None:
        raise ModelError("model= is required, e.g. model=best.pt")
    if not ours["out"]:
        raise ConfigError("out= is required, e.g. out=pruned.pt")
    if data is not None:
        check_data(data)
    target = ours["prune_target"]
    summary = prune_checkpoint(
        model, ours["out"], prune=None if target is not None else ours["prune"], prune_target=target,
        prune_method=ours["prune_method"], round_to=ours["prune_round"], prune_global=ours["prune_global"],
        imgsz=imgsz, data=data, batches=ours["prune_batches"],
        prune_ratios=ours["prune_ratios"], sensitivity=ours["sensitivity"],
    )
    print(
        f"pruned {model} -> {summary['out']}: ratio {summary['ratio']:.3f} ({summary['method']}), "
        f"params {summary['params_ratio']:.3f}x, GFLOPs {summary['gflops']:.2f} ({summary['gflops_ratio']:.3f}x) "
        f"at imgsz={summary['imgsz']}"
    )


def run_ultralytics(mode: str, kwargs: dict[str, Any]) -> None:
    from ultralytics import YOLO

    check_ultralytics_keys(kwargs)
    from ultralytics.cfg import DEFAULT_CFG_DICT

    ours = [k for k in kwargs if k not in DEFAULT_CFG_DICT]
    if ours:
        hint = " (INT8 export: add int8=True)" if mode == "export" else ""
        raise ConfigError(f"'{ours[0]}' is a yolo-opt key that 'yolo-opt {mode}' does not use{hint}; see 'yolo-opt help'")
    model = check_model_arg(kwargs)
    if mode == "val":
        check_data(kwargs.get("data"))
    kwargs.pop("model")
    getattr(YOLO(model, task="detect"), mode)(**kwargs)


def run_optimize(kwargs: dict[str, Any]) -> None:
    from yolo_opt.pipeline import DEFAULT_RECIPE, optimize

    model = kwargs.pop("model", None)
    if model is None:
        raise ModelError("model= is required, e.g. model=best.pt")
    data = kwargs.pop("data", None)
    check_data(data)
    recipe = kwargs.pop("recipe", DEFAULT_RECIPE)
    name = kwargs.pop("name", None)
    project = kwargs.pop("project", "runs/opt")
    optimize(model, data, recipe, name=name, project=project, **kwargs)


def run_benchmark(kwargs: dict[str, Any]) -> None:
    from yolo_opt.bench.report import benchmark, markdown_table

    models = kwargs.pop("model", None)
    if not models:
        raise ModelError("model= is required: a comma-separated list, e.g. model=best.pt,pruned.pt,pruned_int8.onnx")
    data = kwargs.pop("data", None)
    check_data(data)
    imgsz = int_arg(kwargs, "imgsz", 640)
    lat_imgsz = int_arg(kwargs, "lat_imgsz", None)
    out = Path(str(kwargs.pop("project", "runs/opt"))) / str(kwargs.pop("name", "benchmark"))
    if kwargs:
        raise ConfigError(f"unknown argument(s) for 'yolo-opt benchmark': {', '.join(kwargs)}; see 'yolo-opt help'")
    rows = benchmark(str(models).split(","), data, imgsz, out=out, lat_imgsz=lat_imgsz)
    print(markdown_table(rows))
    print(f"report: {out / 'report.md'}, plot: {out / 'report.png'}, figures: {out / 'results.json'}")


def run_deploy(mode: str, kwargs: dict[str, Any]) -> None:
    """`export` with int8/engine/jetson and `bundle`: parse, validate, delegate to yolo_opt.deploy."""
    from yolo_opt.config import split_args
    from yolo_opt.deploy import export

    ours, rest = split_args(mode, kwargs)
    int8 = rest.pop("int8", None)
    quantize = rest.pop("quantize", None)
    int8 = bool(int8) or str(quantize).lower() in {"8", "int8"}
    fmt = "jetson" if mode == "bundle" else str(rest.pop("format", "onnx"))
    model, data = rest.pop("model", None), rest.pop("data", None)
    imgsz, workspace = rest.pop("imgsz", 640), rest.pop("workspace", None)
    if rest:
        raise ConfigError(f"unknown argument(s) for 'yolo-opt {mode}': {', '.join(rest)}; see 'yolo-opt help'")
    if model is None:
        raise ModelError("model= is required, e.g. model=best.pt")
    if mode == "bundle" and not ours["out"]:
        raise ConfigError("out= is required, e.g. out=jetson_bundle")
    if data is not None:
        check_data(data)
    export(model, fmt, int8, data, imgsz, ours["calib"], ours["calib_images"], ours["per_channel"],
           ours["max_map_drop"], ours["out"], workspace=float(workspace) if workspace else 4.0)


def wants_deploy(mode: str, kwargs: dict[str, Any]) -> bool:
    """True when `export` needs yolo-opt's deploy path (INT8, TensorRT engine, Jetson bundle)."""
    if mode == "bundle":
        return True
    if mode != "export":
        return False
    int8 = kwargs.get("int8") is True or str(kwargs.get("quantize")).lower() in {"8", "int8"}
    return int8 or str(kwargs.get("format", "")).lower() in {"engine", "jetson"}


def run_data(kwargs: dict[str, Any]) -> None:
    from yolo_opt.config import split_args
    from yolo_opt.data import make_dataset

    ours, rest = split_args("data", kwargs)
    imgsz = int_arg(rest, "imgsz", 160)
    if rest:
        raise ConfigError(f"unknown argument(s) for 'yolo-opt data': {', '.join(rest)}; see 'yolo-opt help'")
    out = ours["out"] or "datasets/yolo-opt"
    path = make_dataset(out, ours["seed"], ours["n_train"], ours["n_val"], imgsz, ours["max_objects"])
    print(f"dataset written: {path}")


def run_sensitivity(kwargs: dict[str, Any]) -> None:
    from yolo_opt.config import coerce, split_args
    from yolo_opt.prune.sensitivity import layer_sensitivity

    method = coerce("prune_method", kwargs.pop("prune_method", "l2"))
    round_to = coerce("prune_round", kwargs.pop("prune_round", 8))
    ours, rest = split_args("sensitivity", kwargs)
    model, data = rest.pop("model", None), rest.pop("data", None)
    imgsz, batch = int_arg(rest, "imgsz", 640), int_arg(rest, "batch", 16)
    out = Path(str(rest.pop("project", "runs/opt/sensitivity"))) / str(rest.pop("name", "exp"))
    if rest:
        raise ConfigError(f"unknown argument(s) for 'yolo-opt sensitivity': {', '.join(rest)}; see 'yolo-opt help'")
    if model is None:
        raise ModelError("model= is required, e.g. model=best.pt")
    check_data(data)
    report = layer_sensitivity(model, data, ours["ratios"], imgsz, method, round_to, ours["max_images"],
                               ours["groups"], batch, out)
    print((out / "sensitivity.md").read_text())
    print(f"sensitivity of {len(report['groups'])} groups in {report['seconds']}s: {out}/sensitivity.json, .md, .png")


def run_tune(kwargs: dict[str, Any]) -> None:
    from yolo_opt.config import ARGS, split_args
    from yolo_opt.tune import tune

    tune_keys = {a.name for a in ARGS if "tune" in a.modes}
    ours, _ = split_args("tune", {k: v for k, v in kwargs.items() if k in tune_keys})
    rest = {k: v for k, v in kwargs.items() if k not in tune_keys}
    model, data = rest.pop("model", None), rest.pop("data", None)
    project = rest.pop("project", "runs/opt/tune")
    if model is None:
        raise ModelError("model= is required, e.g. model=best.pt")
    summary = tune(model, data, project=project, **ours, **rest)
    print(f"study '{summary['study']}' ({summary['storage']}): {summary['states']}; recipes: {summary['recipes']}")


def run_help() -> None:
    from yolo_opt.config import help_table

    print("usage: yolo-opt MODE key=value ...\n\nmodes:")
    width = max(map(len, MODES))
    for mode, text in MODES.items():
        print(f"  {mode:<{width}}  {text}")
    print("\nyolo-opt keys (every other key is an Ultralytics argument, see 'yolo cfg'):")
    print(help_table())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `yolo-opt` command; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        mode, kwargs = parse_argv(argv)
        if mode == "help":
            run_help()
        elif mode == "version":
            import ultralytics

            from yolo_opt import __version__

            print(f"yolo-opt {__version__} (ultralytics {ultralytics.__version__})")
        elif mode == "train":
            run_train(kwargs)
        elif mode == "prune":
            run_prune(kwargs)
        elif mode == "data":
            run_data(kwargs)
        elif mode == "optimize":
            run_optimize(kwargs)
        elif mode == "benchmark":
            run_benchmark(kwargs)
        elif wants_deploy(mode, kwargs):
            run_deploy(mode, kwargs)
        elif mode == "sensitivity":
            run_sensitivity(kwargs)
        elif mode == "tune":
            run_tune(kwargs)
        elif mode == "demo":
            from yolo_opt.demo import run_demo

            run_demo(**kwargs)
        else:
            run_ultralytics(mode, kwargs)
    except YoloOptError as e:
        print(f"yolo-opt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("yolo-opt: interrupted", file=sys.stderr)
        return 130
    return 0


def entrypoint() -> None:
    """Console-script wrapper."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
