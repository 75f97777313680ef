"""Activation ranges from ONNX Runtime's calibrators (minmax, entropy, percentile), in bounded memory."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from yolo_opt.errors import ConfigError, DeployError, first_line
from yolo_opt.options import CALIB_METHODS

CALIB_CHUNK = 8  # images per calibrator call: bounds memory at any image size


def calibration_method(name: str):
    """Map a `calib=` name to ONNX Runtime's CalibrationMethod, or raise ConfigError naming the choices."""
    from onnxruntime.quantization import CalibrationMethod

    table = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    key = str(name).lower()
    if key not in table:
        raise ConfigError(f"unknown calib '{name}'; choose one of: {', '.join(CALIB_METHODS)} (legacy: format=engine)")
    return table[key]


def calibrate(model_path: str | Path, reader, method: str = "minmax", workdir: str | Path | None = None,
              symmetric: bool = True):
    """Collect activation ranges of every tensor with ONNX Runtime's calibrator (`symmetric`: [-a, a], as TensorRT
    wants; else [min, max]).

    Returns:
        onnxruntime.quantization.calibrate.TensorsData.
    """
    import onnx
    from onnxruntime.quantization.calibrate import create_calibrator

    cm = calibration_method(method)
    ops = sorted({n.op_type for n in onnx.load(str(model_path)).graph.node})
    options: dict[str, Any] = {"symmetric": symmetric}
    if cm.name == "Entropy":  # ORT's default 128 bins == 128 quantized bins always picks the full range (= minmax)
        options.update(num_bins=512, num_quantized_bins=128)  # 2048 (TensorRT's) is minutes slower in ORT's search
    with tempfile.TemporaryDirectory(prefix="yolo-opt-calib.", dir=workdir) as tmp:
        calibrator = create_calibrator(
            Path(model_path), ops, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=cm, extra_options=options,
        )
        try:
            # ONNX Runtime keeps every activation of every image it is given before reducing them to ranges or
            # histograms (yolov8n at 640 px: ~190 MB an image), so feed it a chunk at a time; both calibrator
            # kinds merge what successive calls collect.
            for start in range(0, len(reader), CALIB_CHUNK):
                reader.set_range(start, min(len(reader), start + CALIB_CHUNK))
                calibrator.collect_data(reader)
            ranges = calibrator.compute_data()
        except ValueError as e:  # numpy histogram of a degenerate (constant/near-zero) activation range
            raise DeployError(f"calib={method} failed on this model ({first_line(e, 120)}); "
                              "use calib=minmax or a trained model") from e
        del calibrator
    return ranges


