"""The latency table behind `prune_latency=`: each convolution of a model timed alone on the runtime it will ship on,
at the widths pruning can leave it, and the predictor that sums the table for a candidate allocation.

GFLOPs are a poor proxy for time where it matters most: a 3x3 convolution on a 160x160 map is bound by memory
traffic, so halving its channels saves far less time than its GFLOPs say, and the kernels block channels (8, 16,
32, 64), so time moves in steps. So the allocation's cost is measured time (as HALP does): every convolution of the
prunable model (its activation included, as exported) is built as a one-node ONNX graph per (input, output) width
on a grid of the widths pruning can reach (multiples of `prune_round`, 1/8 to 8/8 of the layer), timed batch 1 in a
process of the runtime's own, and a candidate's time is the sum over its convolutions (bilinear between grid
points), scaled to the unpruned model's measured time (the rest of the model, concatenations, upsampling and
elementwise ops, moves the same maps and shrinks with them). Entries are cached per machine, runtime, threads and shape
(`$XDG_CACHE_HOME/yolo-opt/latency_table.json`), so a second run, or another model sharing shapes, reuses them.

    python -m yolo_opt.bench.layer_latency < request.json   # what `measure_entries` runs
"""

from __future__ import annotations

import bisect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from yolo_opt.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from yolo_opt.prune.targets import MacsModel

# where `prune_latency=` times a model: ONNX Runtime and OpenVINO on this CPU, PyTorch FP16 on a CUDA GPU, TensorRT
LAT_RUNTIMES = ("onnx", "openvino", "torch-cuda", "tensorrt")
FRACTIONS = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)  # the grid of widths, of the layer's full width
MIN_SECONDS = 0.03  # each entry is timed for at least this long (and at least MIN_RUNS calls), after warm-up
MIN_RUNS = 10


def check_runtime(runtime: str) -> None:
    """The runtime can be timed here, or one line naming what is missing."""
    if runtime == "tensorrt":
        import importlib.util

        if importlib.util.find_spec("tensorrt") is None:
            raise ConfigError("lat_runtime=tensorrt needs TensorRT, which is not installed here; time on "
                              "lat_runtime=onnx or openvino here, or torch-cuda on a CUDA GPU")
        raise ConfigError("lat_runtime=tensorrt: timing TensorRT engines per layer is not built yet; use "
                          "lat_runtime=torch-cuda on this GPU (PyTorch FP16), or onnx/openvino on the CPU")
    if runtime == "torch-cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("lat_runtime=torch-cuda times PyTorch FP16 on a CUDA GPU, and torch sees none here; "
                              "use lat_runtime=onnx or openvino")
    if runtime == "openvino":
        from yolo_opt.io.openvino import require

        require("openvino")
    if runtime not in LAT_RUNTIMES:
        raise ConfigError(f"unknown lat_runtime '{runtime}'; choose one of: {', '.join(LAT_RUNTIMES)}")


@dataclass(frozen=True)
class ConvShape:
    """What a convolution's time depends on besides its widths."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int  # 0: depthwise (one group per channel, input width = output width)
    h: int  # input size
    w: int
    act: bool  # followed by SiLU (Sigmoid + Mul once exported)

    def key(self, cin: int, cout: int) -> str:
        k, s, p, d = self.kernel, self.stride, self.padding, self.dilation
        return (f"k{k[0]}x{k[1]} s{s[0]}x{s[1]} p{p[0]}x{p[1]} d{d[0]}x{d[1]} g{self.groups} {self.h}x{self.w} "
                f"{'silu' if self.act else 'linear'} {cin}>{cout}")


def grid(full: int, prunable: bool, round_to: int | None) -> list[int]:
    """The widths a side of a convolution is timed at: multiples of `round_to` from 1/8 to all of `full`."""
    if not prunable or full <= (round_to or 1):
        return [full]
    step = round_to or 1
    return sorted({min(full, max(step, int(round(full * f / step)) * step)) for f in FRACTIONS})


@dataclass
class ConvEntry:
    """One convolution of the model: its shape and the grid of (input, output) widths it is timed at."""

    shape: ConvShape
    cin: list[int]
    cout: list[int]

    def cases(self) -> list[tuple[int, int]]:
        if self.shape.groups == 0:  # depthwise: the widths move together
            return [(c, c) for c in self.cout]
        return [(i, o) for i in self.cin for o in self.cout]


def conv_entries(estimate: MacsModel, imgsz: int) -> dict[str, ConvEntry]:
    """The convolutions of `estimate`'s model at `imgsz` (its trace was at `estimate.imgsz`; every size is a multiple
    of the stride, so maps scale exactly) and the widths each is timed at."""
    scale = imgsz / estimate.imgsz
    sides = estimate.prunable_sides()
    out = {}
    for lname, (conv, _) in estimate.convs.items():
        h, w = estimate.input_hw[lname]
        depthwise = conv.groups > 1 and conv.groups == conv.in_channels
        shape = ConvShape(tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation),
                          0 if depthwise else conv.groups, max(1, round(h * scale)), max(1, round(w * scale)),
                          estimate.activated[lname])
        cin_in, cout_in = sides[lname]
        plain = conv.groups == 1  # a grouped (not depthwise) convolution is timed at its full widths only
        out[lname] = ConvEntry(shape, grid(conv.in_channels, cin_in and plain, estimate.round_to),
                               grid(conv.out_channels, (cout_in and plain) or (depthwise and (cin_in or cout_in)),
                                    estimate.round_to))
    return out


def machine_key(runtime: str, threads: int, precision: str | None) -> str:
    from yolo_opt.bench.latency import machine

    return f"{machine()} | {runtime} | threads {threads} | {precision or 'default'}"


def cache_file() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "yolo-opt" / "latency_table.json"


def build_table(entries: dict[str, ConvEntry], runtime: str, *, threads: int | None = None,
                precision: str | None = None, use_cache: bool = True,
                progress: bool = True) -> tuple[dict[str, float], dict[str, Any]]:
    """Milliseconds of every (shape, width) case of `entries` on `runtime` here: cached ones reused, the rest timed.

    Returns:
        ({case key: ms}, {"seconds": time spent timing, "timed": new cases, "reused": cached cases, "overhead_ms"}).
    """
    from yolo_opt.io.files import atomic_write_bytes

    threads = threads or os.cpu_count() or 1
    where = machine_key(runtime, threads, precision)
    path = cache_file()
    try:
        cache = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        cache = {}  # a cache that does not parse is rebuilt, never trusted
    known = cache.get(where, {}) if use_cache else {}
    wanted = {e.shape.key(i, o): (e.shape, i, o) for e in entries.values() for i, o in e.cases()}
    missing = {k: v for k, v in wanted.items() if k not in known}
    start = time.perf_counter()
    timed: dict[str, float] = {}
    if missing:
        timed = measure_entries(list(missing.values()), runtime, threads=threads, precision=precision,
                                progress=progress)
        try:
            cache = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            cache = {}
        cache.setdefault(where, {}).update(timed)
        atomic_write_bytes(path, json.dumps(cache).encode())
    table = {k: (timed[k] if k in timed else known[k]) for k in wanted}
    return table, {"seconds": round(time.perf_counter() - start, 1), "timed": len(missing),
                   "reused": len(wanted) - len(missing), "machine": where}


def measure_entries(cases: list[tuple[ConvShape, int, int]], runtime: str, *, threads: int,
                    precision: str | None = None, progress: bool = True) -> dict[str, float]:
    """Time each case on `runtime`: CPU runtimes in a fresh process of their own (OpenVINO's thread pool spins after
    a call; nothing else loaded there), PyTorch CUDA here."""
    request = {"cases": [[asdict(s), i, o] for s, i, o in cases], "runtime": runtime, "threads": threads,
               "precision": precision}
    if runtime == "torch-cuda":
        return _measure(request, progress=progress)
    from yolo_opt.errors import DeployError

    r = subprocess.run([sys.executable, "-m", "yolo_opt.bench.layer_latency"], input=json.dumps(request),
                       stdout=subprocess.PIPE, stderr=None if progress else subprocess.PIPE, text=True,
                       env={**os.environ, "YOLO_OFFLINE": "1"})
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        raise DeployError(f"timing the latency table on {runtime} failed (exit {r.returncode}): "
                          f"{((r.stderr or '').strip().splitlines() or ['see the log above'])[-1][:300]}")
    return json.loads(lines[-1])


def conv_onnx(shape: ConvShape, cin: int, cout: int):
    """A one-convolution ONNX model (weights random: time does not depend on them), SiLU after it where the model
    has one."""
    from onnx import TensorProto, helper, numpy_helper

    groups = cin if shape.groups == 0 else shape.groups
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((cout, cin // groups, *shape.kernel)).astype(np.float32) * 0.05
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = shape.kernel, shape.stride, shape.padding, shape.dilation
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[kh, kw], strides=[sh, sw],
                              pads=[ph, pw, ph, pw], dilations=[dh, dw], group=groups)]
    out = "y"
    if shape.act:
        nodes += [helper.make_node("Sigmoid", ["y"], ["s"]), helper.make_node("Mul", ["y", "s"], ["z"])]
        out = "z"
    ho = (shape.h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (shape.w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, shape.h, shape.w])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, cout, ho, wo])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.zeros(cout, np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _median_ms(fn) -> float:
    for _ in range(3):
        fn()
    samples, spent = [], 0.0
    while len(samples) < MIN_RUNS or spent < MIN_SECONDS:
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        samples.append(dt * 1000)
        spent += dt
        if len(samples) >= 200:
            break
    return statistics.median(samples)


def _cpu_timer(runtime: str, threads: int, precision: str | None):
    """(model bytes, input) -> median ms of one call on ONNX Runtime or OpenVINO."""
    if runtime == "onnx":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

        def time_onnx(model: bytes, x: np.ndarray) -> float:
            session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            return _median_ms(lambda: session.run(None, {name: x}))

        return time_onnx
    import openvino as ov

    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision

    def time_openvino(model: bytes, x: np.ndarray) -> float:
        with tempfile.TemporaryDirectory(prefix="yolo-opt-table.") as tmp:
            file = Path(tmp) / "conv.onnx"
            file.write_bytes(model)
            compiled = core.compile_model(core.read_model(str(file)), "CPU", config)
        request = compiled.create_infer_request()
        return _median_ms(lambda: request.infer({0: x}))

    return time_openvino


def _measure(request: dict[str, Any], progress: bool = True) -> dict[str, float]:
    """Time every case of `request` in this process. CPU entries have one call's fixed cost (an identity graph's
    time) taken off: the whole model pays it once, not once per convolution."""
    from ultralytics.utils import TQDM

    runtime, threads, precision = request["runtime"], request["threads"], request.get("precision")
    cases = [(ConvShape(**{k: tuple(v) if isinstance(v, list) else v for k, v in s.items()}), i, o)
             for s, i, o in request["cases"]]
    out: dict[str, float] = {}
    bar = TQDM(cases, desc=f"yolo-opt: latency table on {runtime}", disable=not progress)
    if runtime == "torch-cuda":
        for shape, cin, cout in bar:
            out[shape.key(cin, cout)] = _cuda_ms(shape, cin, cout)
        return out
    timer = _cpu_timer(runtime, threads, precision)
    from onnx import TensorProto, helper

    identity = helper.make_model(helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, 1])]),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    overhead = timer(identity.SerializeToString(), np.zeros((1, 1, 1, 1), np.float32))
    rng = np.random.default_rng(0)
    for shape, cin, cout in bar:
        model = conv_onnx(shape, cin, cout)
        x = rng.random((1, cin, shape.h, shape.w), dtype=np.float32)
        out[shape.key(cin, cout)] = max(timer(model.SerializeToString(), x) - overhead, 0.0)
    return out


def _cuda_ms(shape: ConvShape, cin: int, cout: int) -> float:
    """One convolution (+ SiLU) in PyTorch FP16 on the GPU, as an eager model runs it: ms per call, from CUDA events
    over back-to-back calls."""
    import torch

    torch.backends.cudnn.benchmark = True
    groups = cin if shape.groups == 0 else shape.groups
    layers = [torch.nn.Conv2d(cin, cout, shape.kernel, shape.stride, shape.padding, shape.dilation, groups)]
    if shape.act:
        layers.append(torch.nn.SiLU())
    net = torch.nn.Sequential(*layers).cuda().half().eval()
    x = torch.randn(1, cin, shape.h, shape.w, device="cuda", dtype=torch.half)
    with torch.inference_mode():
        for _ in range(10):
            net(x)
        return statistics.median(cuda_call_ms(net, x) for _ in range(5))


def cuda_call_ms(net, x, calls: int = 20) -> float:
    """Milliseconds of one call of `net(x)` on the GPU: CUDA events around `calls` back-to-back calls (no host sync
    between them, as a model's layers run), divided by `calls`."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        net(x)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / calls


def _interp(xs: list[int], x: float) -> tuple[int, int, float]:
    """Indices around `x` in the sorted grid `xs` and the weight of the upper one (linear; clamped at the ends,
    extrapolated below the smallest width along the first segment)."""
    if len(xs) == 1:
        return 0, 0, 0.0
    j = min(max(bisect.bisect_left(xs, x), 1), len(xs) - 1)
    return j - 1, j, (x - xs[j - 1]) / (xs[j] - xs[j - 1])


class LatencyEstimate:
    """Predicted time of a model pruned with per-group ratios: its convolutions from the table, on the measured
    scale of the unpruned model."""

    def __init__(self, estimate: MacsModel, entries: dict[str, ConvEntry], table: dict[str, float]):
        self.estimate, self.entries, self.table = estimate, entries, table
        self.scale = 1.0
        self.conv_ms = self.convs_ms({})

    def calibrate(self, measured_ms: float) -> None:
        """Put the prediction on the unpruned model's measured time: the table's sum scaled to it. The rest of the
        model (concatenations, upsampling, elementwise ops: they move the same maps the convolutions do) shrinks with
        it; held constant, it made YOLO11n's allocation cut to 0.18x GFLOPs for a predicted 0.50x that measured 0.30x
        (its convolutions summed to 0.69 of its time), while timed alone the convolutions of YOLOv8n sum to more than
        the whole model (the runtime fuses what the table times apart)."""
        self.scale = measured_ms / self.conv_ms

    def _conv(self, entry: ConvEntry, cin: float, cout: float) -> float:
        def at(i: int, o: int) -> float:
            return self.table[entry.shape.key(i, o)]

        if entry.shape.groups == 0:
            a, b, t = _interp(entry.cout, cout)
            return at(entry.cout[a], entry.cout[a]) * (1 - t) + at(entry.cout[b], entry.cout[b]) * t
        ia, ib, ti = _interp(entry.cin, cin)
        oa, ob, to = _interp(entry.cout, cout)
        low = at(entry.cin[ia], entry.cout[oa]) * (1 - to) + at(entry.cin[ia], entry.cout[ob]) * to
        high = at(entry.cin[ib], entry.cout[oa]) * (1 - to) + at(entry.cin[ib], entry.cout[ob]) * to
        return max(low * (1 - ti) + high * ti, 0.0)

    def convs_ms(self, ratios: dict[str, float]) -> float:
        widths = self.estimate.widths(ratios)
        return sum(self._conv(e, *widths[name]) for name, e in self.entries.items())

    def ms(self, ratios: dict[str, float]) -> float:
        """Predicted ms of the model pruned at `ratios` (after `calibrate`: on the measured scale)."""
        return self.convs_ms(ratios) * self.scale

    def ratio(self, ratios: dict[str, float]) -> float:
        return self.ms(ratios) / self.ms({})

    def model_ms(self, model: nn.Module) -> float:
        """Predicted ms of `model`, a pruned (and maybe trained) descendant of the table's model: each convolution
        of the table at the widths `model` has for it (a tuning trial's latency without an export and a timing).

        Raises:
            KeyError: `model` lacks a convolution of the table (another architecture): time it instead.
        """
        import copy

        from torch import nn

        from yolo_opt.arch import adapter

        net = copy.deepcopy(model).float().cpu()
        adapter(net).make_prunable()  # the table's names are those of the prunable layout
        convs = dict(net.named_modules())
        total = 0.0
        for name, entry in self.entries.items():
            conv = convs.get(name)
            if not isinstance(conv, nn.Conv2d):
                raise KeyError(f"{name} is not a convolution of this model")
            total += self._conv(entry, conv.in_channels, conv.out_channels)
        return total * self.scale


def _main() -> None:
    print(json.dumps(_measure(json.loads(sys.stdin.read()))))


if __name__ == "__main__":
    _main()
