"""`yolo-opt MODE key=value ...`: the `yolo` CLI grammar plus yolo-opt's keys (see `yolo-opt help`).

The CLI parses `key=value` pairs into the option objects of `yolo_opt.options` (which validate them) and calls
the Python API; it decides nothing else. Nothing imports it.
"""

from __future__ import annotations

import difflib
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from yolo_opt.errors import ConfigError, DeployError, ModelError, YoloOptError
from yolo_opt.options import DEFAULT_IMGSZ

MODES = {
    "train": "fine-tune with Ultralytics, pruning as asked (prune=, prune_target=, prune_steps=, ...)",
    "prune": "one-shot pruning without training: model=best.pt prune=0.5 out=pruned.pt",
    "val": "Ultralytics validation of any model (pruned ones too)",
    "predict": "Ultralytics prediction",
    "export": "Ultralytics export; int8=True or format=engine|jetson|openvino: INT8 QDQ ONNX / TensorRT / bundle / "
              "OpenVINO IR (NNCF INT8, device=CPU|GPU|NPU)",
    "bundle": "device folder: Jetson (ONNX FP32+INT8, build_engine.py/.sh, infer.py) or format=openvino (IR FP32+INT8, "
              "infer.py): model= data= out=",
    "optimize": "the whole pipeline from a recipe: model=best.pt data=data.yaml recipe=jetson-int8 [name= key=...]",
    "benchmark": "measure models side by side: model=a.pt,b.onnx,... data=data.yaml [reference=ref.pt imgsz= lat_imgsz= name=]",
    "deploy": "the fastest deployable form on this machine, chosen by measurement: model=pruned.pt,best.pt "
              "data=data.yaml out=DIR [target=cpu|jetson|gpu max_map_drop=0.01 reference=ref.pt runtimes=onnx,openvino]",
    "data": "write the generated demo dataset: out=DIR [seed= n_train= n_val= imgsz= task=detect|segment]",
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


HELP = ("help", "--help", "-h")


def parse_argv(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Split `MODE key=value ...` into the mode and a dict; bare flags (e.g. `resume`) mean True. `--help`, `-h` and
    `MODE help` (or `MODE --help`) are the help, of one mode in the last two."""
    if not argv or argv[0] in HELP:
        return "help", {}
    if argv[0] in MODES and any(token in HELP for token in argv[1:]):
        return "help", {"mode": argv[0]}
    mode, kwargs = argv[0], {}
    if "=" in mode:
        raise ConfigError(f"first argument must be a mode ({', '.join(MODES)}), got '{mode}'")
    for token in argv[1:]:
        key, sep, value = token.partition("=")
        key = key.strip()
        if sep and (not key or not value):
            raise ConfigError(f"'{token}' is not key=value (no spaces around '=')")
        if key in kwargs:
            raise ConfigError(f"'{key}' is given twice; give each key once")
        kwargs[key] = parse_value(value.strip()) if sep else True
    if mode not in MODES:
        close = difflib.get_close_matches(mode, MODES, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown mode '{mode}'{hint} Modes: {', '.join(MODES)}")
    return mode, kwargs


def _ultralytics_keys() -> set[str]:
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return set(DEFAULT_CFG_DICT)


def check_known(kwargs: dict[str, Any], mode: str) -> None:
    """Reject keys neither yolo-opt nor Ultralytics knows (one line, with a suggestion); ours in the wrong mode."""
    from yolo_opt.options import our_keys

    ours = our_keys()
    known = _ultralytics_keys() | set(ours) | {"cfg"}
    for key in kwargs:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown argument '{key}'{hint} See 'yolo-opt help' and 'yolo cfg'")
        if key in ours and key not in _ultralytics_keys() and mode not in ours[key][0].modes:
            hint = " (INT8 export: add int8=True)" if mode == "export" else ""
            raise ConfigError(f"'{key}' is a yolo-opt key that 'yolo-opt {mode}' does not use{hint}; see 'yolo-opt help'")


def refuse_rest(kwargs: dict[str, Any], mode: str) -> None:
    """Nothing may be left once a mode took its keys."""
    if kwargs:
        check_known(kwargs, mode)
        raise ConfigError(f"unknown argument(s) for 'yolo-opt {mode}': {', '.join(kwargs)}; see 'yolo-opt help'")


def need(kwargs: dict[str, Any], key: str, example: str) -> Any:
    """Pop a required key, with a one-line error naming an example."""
    value = kwargs.pop(key, None)
    if value is None or value == "":
        raise (ModelError if key == "model" else ConfigError)(f"{key}= is required, e.g. {key}={example}")
    return value


def run_train(kwargs: dict[str, Any]) -> None:
    from yolo_opt.options import DeployOptions, TrainOptions
    from yolo_opt.training import train

    check_known(kwargs, "train")
    opts = TrainOptions.take(kwargs, "train")
    round_for = DeployOptions.take(kwargs, "train").round_for
    model = need(kwargs, "model", "best.pt")
    if round_for:
        from yolo_opt.training.rounding import round_for as measured

        prune, _ = measured(model, opts.prune, round_for, imgsz=int(kwargs.get("imgsz", DEFAULT_IMGSZ)),
                            data=kwargs.get("data"))
        opts = opts.replace(prune=prune)
    resume = kwargs.get("resume")
    if isinstance(resume, str):  # yolo grammar: resume=path/to/last.pt
        model, kwargs["resume"] = resume, True
    result = train(model, opts, **kwargs)
    print(f"yolo-opt: trained model {result['best']}")
    if result.get("latency"):
        from yolo_opt.bench.latency_target import latency_line

        print(f"yolo-opt: {latency_line(result['latency'])}")
    if result.get("qat_onnx"):
        print(f"yolo-opt: QDQ INT8 ONNX from QAT {result['qat_onnx']}")


def run_prune(kwargs: dict[str, Any]) -> None:
    from yolo_opt.options import PruneOptions, check_imgsz
    from yolo_opt.training import prune_checkpoint

    opts = PruneOptions.take(kwargs, "prune")
    model, out = need(kwargs, "model", "best.pt"), need(kwargs, "out", "pruned.pt")
    imgsz = check_imgsz(kwargs.pop("imgsz", DEFAULT_IMGSZ))
    data = kwargs.pop("data", None)
    refuse_rest(kwargs, "prune")
    summary = prune_checkpoint(model, out, opts, imgsz=imgsz, data=data)
    print(
        f"pruned {model} -> {summary['out']}: "
        f"{'per-layer ratios' if summary['layer_ratios'] else 'ratio ' + format(summary['ratio'], '.3f')} ({summary['method']}), "
        f"params {summary['params_ratio']:.3f}x, GFLOPs {summary['gflops']:.2f} ({summary['gflops_ratio']:.3f}x) "
        f"at imgsz={summary['imgsz']}"
    )
    if summary.get("latency"):
        from yolo_opt.bench.latency_target import latency_line

        print(latency_line(summary["latency"]))


def run_ultralytics(mode: str, kwargs: dict[str, Any]) -> None:
    from ultralytics import YOLO

    from yolo_opt.data.checks import check_source, check_val_inputs
    from yolo_opt.io.checkpoint import check_model_file
    from yolo_opt.options import check_ultralytics_args

    check_known(kwargs, mode)
    ours = [k for k in kwargs if k not in _ultralytics_keys()]
    if ours:
        raise ConfigError(f"'{ours[0]}' is a yolo-opt key that 'yolo-opt {mode}' does not use; see 'yolo-opt help'")
    model = str(need(kwargs, "model", "best.pt"))
    check_ultralytics_args(kwargs, mode)
    ckpt = check_model_file(model)  # the clear error for a missing, corrupt, untrusted or foreign file
    if mode == "val":  # Ultralytics' own dataset check would download (run `download:`) what is missing
        kwargs["data"] = str(check_val_inputs(kwargs.get("data"), ckpt, kwargs.get("split", "val")))
    elif mode == "predict":
        check_source(kwargs.get("source"))
    task = ckpt.get("task") if ckpt else None
    getattr(YOLO(model, task=task or "detect"), mode)(**kwargs)


def run_optimize(kwargs: dict[str, Any]) -> None:
    from yolo_opt.options import DEFAULT_RECIPE
    from yolo_opt.pipeline import optimize

    model, data = need(kwargs, "model", "best.pt"), need(kwargs, "data", "data.yaml")
    recipe = kwargs.pop("recipe", DEFAULT_RECIPE)
    name, project = kwargs.pop("name", None), kwargs.pop("project", "runs/opt")
    optimize(model, data, recipe, name=name, project=project, **kwargs)


def run_benchmark(kwargs: dict[str, Any]) -> None:
    from yolo_opt.bench.report import benchmark, markdown_table
    from yolo_opt.data.checks import check_data_arg
    from yolo_opt.options import BenchOptions, check_imgsz

    bench = BenchOptions.take(kwargs, "benchmark")
    models = need(kwargs, "model", "best.pt,pruned.pt,pruned_int8.onnx")
    data = check_data_arg(need(kwargs, "data", "data.yaml"))
    imgsz = check_imgsz(kwargs.pop("imgsz", DEFAULT_IMGSZ))
    out = Path(str(kwargs.pop("project", "runs/opt"))) / str(kwargs.pop("name", "benchmark"))
    refuse_rest(kwargs, "benchmark")
    rows = benchmark(str(models).split(","), data, imgsz, out=out, lat_imgsz=bench.lat_imgsz, reference=bench.reference,
                     ov_precision=bench.ov_precision)
    print(markdown_table(rows))
    print(f"report: {out / 'report.md'}, plot: {out / 'report.png'}, figures: {out / 'results.json'}")


def run_select(kwargs: dict[str, Any]) -> None:
    from yolo_opt.data.checks import check_data_arg
    from yolo_opt.deploy.select import model_labels, select_with
    from yolo_opt.options import BenchOptions, DeployOptions, PTQOptions, check_imgsz

    opts = DeployOptions.take(kwargs, "deploy")
    bench = BenchOptions.take(kwargs, "deploy")
    ptq = PTQOptions.take(kwargs, "deploy")
    models = str(need(kwargs, "model", "pruned.pt,best.pt")).split(",")
    data = check_data_arg(need(kwargs, "data", "data.yaml"))
    out = need(kwargs, "out", "deploy")
    imgsz = check_imgsz(kwargs.pop("imgsz")) if "imgsz" in kwargs else None  # None: the input's training size
    refuse_rest(kwargs, "deploy")
    result = select_with(model_labels(models), data, out, imgsz, deploy=opts, ptq=ptq, lat_imgsz=bench.lat_imgsz,
                         reference=bench.reference)
    if result["measured"]:
        print((Path(result["out"]) / "selection.md").read_text())
        if result["selected"] is None:
            raise DeployError(f"nothing deployed: {result['verdict'] or 'no form is within the bound'} (the table: "
                              f"{Path(result['out']) / 'selection.md'})")
    print(f"deployed: {result.get('model') or result['bundle']} ({result.get('selected_label') or result['note']})")


def wants_deploy(mode: str, kwargs: dict[str, Any]) -> bool:
    """True when `export` needs yolo-opt's deploy path (ONNX, INT8, TensorRT engine, OpenVINO, Jetson bundle).

    An FP32 ONNX goes through it too: our export adds the DFL rewrite (`last_axis_dfl`, faster on ONNX Runtime:
    docs/benchmarks.md#dfl-rewrite), writes atomically and takes `out=`. Other formats are Ultralytics' own.
    """
    if mode == "bundle":
        return True
    if mode != "export":
        return False
    int8 = kwargs.get("int8") is True or str(kwargs.get("quantize")).lower() in {"8", "int8"}
    return int8 or str(kwargs.get("format", "")).lower() in {"onnx", "engine", "jetson", "openvino"}


def run_deploy(mode: str, kwargs: dict[str, Any]) -> None:
    """`export` with int8/engine/jetson and `bundle`."""
    from yolo_opt.deploy import export
    from yolo_opt.options import ExportOptions, PTQOptions, check_ultralytics_args

    if "quantize" in kwargs and "int8" in kwargs:  # one key, two spellings: given twice
        raise ConfigError("give int8=True or quantize=8, not both")
    if "nms" in kwargs and kwargs["nms"] is not True:  # Ultralytics' spelling: nms=False is the NMS-free head
        nms = kwargs.pop("nms")
        if nms is False and kwargs.get("end2end") is False:
            raise ConfigError("nms=False selects the NMS-free head and end2end=False the one-to-many one: give one")
        if nms is False:
            kwargs["end2end"] = True
    if str(kwargs.pop("quantize", None)).lower() in {"8", "int8"}:  # Ultralytics' spelling of int8=True
        kwargs["int8"] = True
    if mode == "bundle":
        kwargs["format"] = kwargs.get("format", "jetson")
        if kwargs["format"] not in ("jetson", "openvino"):
            raise ConfigError(f"bundle format={kwargs['format']!r}: choose jetson (TensorRT) or openvino")
        need(dict(kwargs), "out", f"{kwargs['format']}_bundle")
    calib_keys = [k for k in PTQOptions.specs() if k in kwargs]
    opts = ExportOptions.take(kwargs, mode)
    if mode == "export" and not opts.int8 and opts.format in ("onnx", "engine") and calib_keys:
        raise ConfigError(f"'{calib_keys[0]}' sets up INT8 quantization, which this FP32 export does not do: add "
                          f"int8=True or drop {calib_keys[0]}=")
    model, data = need(kwargs, "model", "best.pt"), kwargs.pop("data", None)
    onnx_args = {}
    if mode == "export" and opts.format == "onnx" and not opts.int8:  # Ultralytics' ONNX keys (opset=, dynamic=, ...)
        onnx_args = {k: kwargs.pop(k) for k in list(kwargs) if k in _ultralytics_keys()}
        check_ultralytics_args(onnx_args, mode)
    refuse_rest(kwargs, mode)  # what is left: typos, and yolo-opt keys of other modes (one line each)
    report = export(model, opts, data, bundle=mode == "bundle", onnx_args=onnx_args)
    written = next(report[k] for k in ("bundle", "engine", "openvino", "path", "fp32") if report.get(k))
    print(f"yolo-opt: wrote {written}")  # the last line names what exists


def run_data(kwargs: dict[str, Any]) -> None:
    from yolo_opt.data import make_dataset
    from yolo_opt.options import DataOptions

    opts = DataOptions.take(kwargs, "data")
    refuse_rest(kwargs, "data")
    path = make_dataset(opts.out, seed=opts.seed, n_train=opts.n_train, n_val=opts.n_val, imgsz=opts.imgsz,
                        max_objects=opts.max_objects, task=opts.task, kind=opts.kind)
    print(f"dataset written: {path}")


def run_sensitivity(kwargs: dict[str, Any]) -> None:
    from yolo_opt.options import PruneOptions, SensitivityOptions, check_imgsz, check_ultralytics_args
    from yolo_opt.prune.sensitivity import pruning_sensitivity

    prune = PruneOptions.take(kwargs, "sensitivity")
    opts = SensitivityOptions.take(kwargs, "sensitivity")
    model, data = need(kwargs, "model", "best.pt"), need(kwargs, "data", "data.yaml")
    imgsz = check_imgsz(kwargs.pop("imgsz", DEFAULT_IMGSZ))
    out = Path(str(kwargs.pop("project", "runs/opt/sensitivity"))) / str(kwargs.pop("name", "exp"))
    check_known(kwargs, "sensitivity")  # what is left are `yolo val` arguments (batch=, workers=, conf=, ...)
    check_ultralytics_args(kwargs, "val")
    report = pruning_sensitivity(model, data, opts, imgsz, prune_method=prune.prune_method,
                                 prune_round=prune.prune_round, out=out, val_args=kwargs)
    print((out / "sensitivity.md").read_text())
    print(f"sensitivity of {len(report['groups'])} groups in {report['seconds']}s: {out}/sensitivity.json, .md, .png")


def run_tune(kwargs: dict[str, Any]) -> None:
    from yolo_opt.options import TuneOptions, check_ultralytics_args
    from yolo_opt.tuning import tune

    opts = TuneOptions.take(kwargs, "tune")
    model, data = need(kwargs, "model", "best.pt"), need(kwargs, "data", "data.yaml")
    check_ultralytics_args(kwargs, "train")  # every trial trains with them
    summary = tune(model, data, opts, project=kwargs.pop("project", "runs/opt/tune"), **kwargs)
    print(f"study '{summary['study']}' ({summary['storage']}): {summary['states']}; recipes: {summary['recipes']}")


def run_demo(kwargs: dict[str, Any]) -> None:
    from yolo_opt.options import DemoOptions
    from yolo_opt.pipeline.demo import run_demo as demo

    demo(DemoOptions.take(kwargs, "demo"), **kwargs)


def run_help(kwargs: dict[str, Any]) -> None:
    from yolo_opt.options import TRUST_ENV, help_table

    mode = kwargs.pop("mode", None)
    refuse_rest(kwargs, "help")
    if mode is not None and mode not in ("help", "version"):
        print(f"usage: yolo-opt {mode} key=value ...\n\n  {MODES[mode]}\n")
        table = help_table(mode)
        print(f"yolo-opt keys of '{mode}':\n{table}" if "\n" in table else f"'{mode}' has no yolo-opt keys of its own.")
        if mode not in ("data", "demo", "sensitivity", "deploy", "benchmark", "prune"):
            print("\nevery other key is an Ultralytics argument of this mode, see 'yolo cfg'")
        return
    print("usage: yolo-opt MODE key=value ...   (yolo-opt MODE help: that mode's keys)\n\nmodes:")
    width = max(map(len, MODES))
    for mode, text in MODES.items():
        print(f"  {mode:<{width}}  {text}")
    print("\nyolo-opt keys (every other key is an Ultralytics argument, see 'yolo cfg'):")
    print(help_table())
    print(f"\nenvironment: {TRUST_ENV}=1 loads checkpoints with full pickle, which runs code inside them (only for "
          "files you trust);\n  by default only Ultralytics and yolo-opt model classes are unpickled")


def run_version(kwargs: dict[str, Any]) -> None:
    import ultralytics

    from yolo_opt import __version__

    print(f"yolo-opt {__version__} (ultralytics {ultralytics.__version__})")


HANDLERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "help": run_help, "version": run_version, "train": run_train, "prune": run_prune, "data": run_data,
    "optimize": run_optimize, "benchmark": run_benchmark, "sensitivity": run_sensitivity, "tune": run_tune,
    "demo": run_demo, "deploy": run_select,
}


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM (kill, systemd, Docker, CI) unwinds like Ctrl-C, so every temporary is removed on the way out."""
    signal.signal(signum, signal.SIG_DFL)  # a second one ends the process at once
    global _signalled
    _signalled = signum
    raise KeyboardInterrupt


_signalled = signal.SIGINT


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `yolo-opt` command; returns the exit code (2: bad input, 128 + N: stopped by signal N)."""
    argv = sys.argv[1:] if argv is None else argv
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        return _dispatch(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _dispatch(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _dispatch(argv: list[str]) -> int:
    global _signalled
    _signalled = signal.SIGINT
    try:
        mode, kwargs = parse_argv(argv)
        if wants_deploy(mode, kwargs):
            run_deploy(mode, kwargs)
        elif mode in HANDLERS:
            HANDLERS[mode](kwargs)
        else:
            run_ultralytics(mode, kwargs)
    except YoloOptError as e:
        text = str(e).replace("\r", "\\r").replace("\n", "\\n")  # one line, even for a path holding a newline
        print(f"yolo-opt: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"yolo-opt: interrupted ({signal.Signals(_signalled).name})", file=sys.stderr)
        return 128 + _signalled
    return 0


def entrypoint() -> None:
    """Console-script wrapper."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    sys.exit(main())
