"""ONNX Runtime CPU latency: warm-up, then the median of timed batch-1 runs."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np


def ort_latency(path: str | Path, runs: int = 30, warmup: int = 5, threads: int = 0) -> dict[str, float]:
    """Median batch-1 latency (ms) of an ONNX model on ONNX Runtime's CPU provider.

    Args:
        path: ONNX model with a static input shape.
        runs: Timed runs (>= 20 per the benchmark protocol).
        warmup: Untimed runs first.
        threads: intra-op threads (0: ONNX Runtime's default, one per physical core).

    Returns:
        {"median_ms", "p90_ms", "threads"}.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    for _ in range(warmup):
        sess.run(None, {inp.name: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {inp.name: x})
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[int(0.9 * (len(times) - 1))], "threads": threads}
