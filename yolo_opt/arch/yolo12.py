"""YOLO12: area attention (`AAttn` inside `A2C2f`), left intact like YOLO11's attention.

Tracing AAttn's area reshapes for pruning grows without bound; left alone, the trace takes seconds
(docs/benchmarks.md#pruning-trace-memory). The large scales' A2C2f scale their output by a bare parameter (`gamma`), pruned with its channels.
"""

from __future__ import annotations

from ultralytics.nn.modules.block import A2C2f, AAttn

from yolo_opt.arch.base import Family, has_layer, modules_of, register_family


def _gammas(model):
    return [(m.gamma, 0) for m in model.modules() if isinstance(m, A2C2f) and m.gamma is not None]


YOLO12 = register_family(Family(
    name="YOLO12", order=12, recognise=has_layer("A2C2f"), keep=modules_of(AAttn), unwrapped=_gammas,
))
