"""The torch-pruning glue every pruning module builds on: the pruner yolo-opt uses, channel rounding, what is left
alone, and the context in which a model is traced (eval mode, every parameter visible to autograd, no hooks).

Pruning decisions are ratios (of channels, of GFLOPs), so models are traced and their GFLOPs searched at one small
image size, `SEARCH_IMGSZ`: convolution MACs scale with the image area at every layer, so a GFLOPs *ratio* is the
same at any multiple of the stride, and a small image makes each trace and count cheap. This module owns that size.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch_pruning as tp
from torch import nn

from yolo_opt.arch import adapter
from yolo_opt.errors import PruneError
from yolo_opt.prune.importance import importance

SEARCH_IMGSZ = 128  # the image size of every trace, GFLOPs search and estimate (ratios do not depend on it)
MAX_RATIO = 0.9  # torch-pruning's max_pruning_ratio: no group loses more than this
# The most memory a pruning trace may add before it is stopped (GiB); default: 3/4 of what is free when it starts.
# A layer DepGraph cannot follow can make it grow without bound (docs/benchmarks.md#pruning-trace-memory): the run
# then ends with one clear error instead of the kernel's OOM kill.
MEMORY_ENV = "YOLO_OPT_PRUNE_MEMORY_GB"


def round_kept(kept: float, channels: int, round_to: int | None) -> int:
    """Kept channels rounded to the *nearest* multiple of `round_to` (at least one multiple, at most all)."""
    if not round_to:
        return int(kept)
    return min(max(round_to, int(round(kept / round_to)) * round_to), channels)


def n_pruned(channels: int, ratio: float, round_to: int | None) -> int:
    """Channels the pruner removes from a `channels`-wide group at `ratio` (torch-pruning + nearest rounding)."""
    ratio = min(ratio, MAX_RATIO)
    n = channels - int(channels * (1 - ratio))
    if n <= 0:
        return 0
    return max(channels - round_kept(channels - n, channels, round_to), 0)


def ignored_layers(model: nn.Module) -> list[nn.Module]:
    """Layers whose output channels stay intact (`yolo_opt.arch`: the head's outputs, attention, the other half of a
    twin whose halves must stay equal)."""
    return adapter(model).keep()


def memory_budget() -> float:
    """Bytes a pruning trace may add: `YOLO_OPT_PRUNE_MEMORY_GB`, else 3/4 of the memory free now."""
    import os

    import psutil

    from yolo_opt.errors import ConfigError

    value = os.environ.get(MEMORY_ENV, "").strip()
    if not value:
        return 0.75 * psutil.virtual_memory().available
    try:
        gb = float(value)
        if gb <= 0:
            raise ValueError
    except ValueError:
        raise ConfigError(f"{MEMORY_ENV}={value!r} must be a positive number of GiB, e.g. {MEMORY_ENV}=8") from None
    return gb * 2**30


@contextmanager
def memory_guard(what: str) -> Iterator[None]:
    """Stop `what` with a PruneError once this process has grown by more than `memory_budget()`.

    A watcher thread samples the resident memory every 20 ms and interrupts the main thread (as Ctrl-C would) when
    the budget is spent; the interrupt becomes the error here, and never escapes as a KeyboardInterrupt later.
    """
    import _thread
    import threading

    import psutil

    if threading.current_thread() is not threading.main_thread():  # only the main thread can be interrupted
        yield
        return
    process, budget = psutil.Process(), memory_budget()
    base = process.memory_info().rss
    lock, done, fired = threading.Lock(), threading.Event(), []

    def watch() -> None:
        while not done.wait(0.02):
            grown = process.memory_info().rss - base
            if grown > budget:
                with lock:
                    if not done.is_set():
                        fired.append(grown)
                        _thread.interrupt_main()
                return

    watcher = threading.Thread(target=watch, name="yolo-opt-memory-guard", daemon=True)
    watcher.start()
    try:
        yield
    except KeyboardInterrupt:
        if not fired:
            raise
    finally:
        with lock:
            done.set()
        watcher.join()
        if fired:
            _absorb_pending_interrupt()
    if fired:
        raise PruneError(f"{what} needed more than {budget / 2**30:.3g} GiB of memory and was stopped (a layer the "
                         f"pruner cannot trace?); set {MEMORY_ENV} to allow more, or report the model")


def _absorb_pending_interrupt() -> None:
    """The watcher's interrupt may still be pending (delivered at the next bytecode): take it here."""
    import time

    try:
        for _ in range(100):
            time.sleep(0.001)
    except KeyboardInterrupt:
        pass


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Trace and measure in eval mode (no BN statistics updates), then restore each module's mode."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.train(mode)


@contextmanager
def no_forward_hooks(model: nn.Module) -> Iterator[nn.Module]:
    """Detach forward hooks (e.g. a distillation wrapper's feature capture) while the model is copied or traced."""
    saved = {m: m._forward_hooks for m in model.modules() if m._forward_hooks}
    for m in saved:
        m._forward_hooks = OrderedDict()
    try:
        yield model
    finally:
        for m, hooks in saved.items():
            m._forward_hooks = hooks


@contextmanager
def traceable(model: nn.Module) -> Iterator[nn.Module]:
    """Every float parameter requires grad while tracing, then restored.

    DepGraph follows autograd: in a released (frozen) checkpoint the first layers, reached only by an input that
    needs no grad, are invisible to it and form no group (yolov8n: model.0 and model.1). The trainer's model is
    trainable, so tracing this way gives the groups the trainer sees.
    """
    params = [p for p in model.parameters() if p.is_floating_point()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    try:
        yield model
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


def example_input(model: nn.Module, imgsz: int = SEARCH_IMGSZ) -> torch.Tensor:
    """A random image batch of one at `imgsz`, on the model's device and dtype."""
    p = next(model.parameters())
    ch = model.yaml.get("ch", 3) if isinstance(getattr(model, "yaml", None), dict) else 3
    return torch.rand(1, ch, imgsz, imgsz, device=p.device, dtype=p.dtype)


def layer_name(names: dict[nn.Module, str], module: nn.Module) -> str:
    """A group's name: its root layer, without the `.conv` of Ultralytics' Conv wrapper."""
    name = names[module]
    return name[: -len(".conv")] if name.endswith(".conv") else name


def group_root(model: nn.Module, name: str) -> nn.Module:
    """The torch-pruning root layer named `name` (an Ultralytics `Conv` wrapper resolves to its `nn.Conv2d`)."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise PruneError(
            f"layer '{name}' is not in this model; per-layer ratios (sensitivity=) must come from the same model"
        ) from None
    return module.conv if isinstance(getattr(module, "conv", None), nn.Conv2d) else module


class NearestRoundPruner(tp.pruner.MetaPruner):
    """MetaPruner that rounds kept channels to the *nearest* multiple of `round_to` (torch-pruning floors it).

    Flooring keeps 8 of 16 channels at a 25% ratio; nearest-rounding keeps the achieved ratio close to the
    asked one, so GFLOPs targets can be met precisely while channel counts stay hardware friendly.
    """

    def _round_to(self, n_pruned, current_channels, round_to):
        return current_channels - round_kept(current_channels - n_pruned, current_channels, round_to)


def build_pruner(
    model: nn.Module,
    ratio: float,
    prune_method: str,
    prune_round: int | None,
    *,
    prune_global: bool = False,
    layer_ratios: dict[str, float] | None = None,
    imgsz: int = SEARCH_IMGSZ,
) -> tp.pruner.MetaPruner:
    """The torch-pruning pruner yolo-opt uses (nearest rounding, what the adapter keeps left alone), tracing every
    output of the model (both heads of an end-to-end model, training-only branches) at `imgsz`."""
    arch = adapter(model)
    ratio_dict = {group_root(model, name): float(r) for name, r in (layer_ratios or {}).items()}
    return NearestRoundPruner(
        model,
        example_input(model, imgsz),
        importance=importance(prune_method),
        pruning_ratio=ratio,
        global_pruning=prune_global,
        max_pruning_ratio=MAX_RATIO,
        ignored_layers=arch.keep(),
        unwrapped_parameters=arch.unwrapped() or None,
        round_to=prune_round,
        forward_fn=lambda m, x: arch.trace(x),
        pruning_ratio_dict=ratio_dict or None,
    )
