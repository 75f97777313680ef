"""TensorRT engines from the QDQ ONNX (explicit quantization) or, for old JetPacks, with a legacy calibrator.

`tensorrt` is imported lazily: everything else in yolo-opt works without it, and this module raises one clear
`DeployError` when it is missing.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from yolo_opt.errors import ConfigError, DeployError, TensorRTMissing

CACHE_HEADER = "TRT-{version}-EntropyCalibration2"


def import_tensorrt():
    """Import TensorRT or raise DeployError saying how to get an engine without it."""
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTMissing(
            "TensorRT is not installed here (pip/JetPack 'tensorrt'); build the engine on the device instead: "
            "'yolo-opt bundle model=best.pt data=data.yaml out=DIR', then run DIR/build_engine.sh there"
        ) from None
    return trt


def format_calibration_cache(scales: dict[str, float], version: str = "100300") -> bytes:
    """Serialize per-tensor scales in TensorRT's calibration-cache text format.

    Line 1 is `TRT-<version>-EntropyCalibration2`; then one `tensor: <hex>` line per tensor, where `<hex>` is the
    big-endian IEEE-754 float32 bit pattern of the scale (amax / 127), as TensorRT writes and reads it.
    """
    lines = [CACHE_HEADER.format(version=version)]
    for name, scale in scales.items():
        if not np.isfinite(scale) or scale <= 0:
            raise ConfigError(f"calibration scale of {name} must be a positive number, got {scale}")
        lines.append(f"{name}: {struct.pack('>f', float(scale)).hex()}")
    return ("\n".join(lines) + "\n").encode()


def parse_calibration_cache(payload: bytes) -> tuple[str, dict[str, float]]:
    """Inverse of `format_calibration_cache`: (header, {tensor: scale})."""
    text = payload.decode()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("TRT-"):
        raise ConfigError("not a TensorRT calibration cache (first line must start with 'TRT-')")
    scales = {}
    for ln in lines[1:]:
        name, _, hexval = ln.rpartition(": ")
        scales[name] = struct.unpack(">f", bytes.fromhex(hexval.strip()))[0]
    return lines[0], scales


def scales_from_ranges(ranges) -> dict[str, float]:
    """TensorRT scales (amax / 127) from ONNX Runtime calibration ranges (TensorsData)."""
    out = {}
    for name, td in ranges.items():
        lo, hi = td.range_value
        amax = max(abs(float(np.min(lo))), abs(float(np.max(hi))))
        out[name] = max(amax, 1e-8) / 127.0
    return out


def _make_calibrator(trt, batches: list[np.ndarray], cache: Path):
    """An IInt8EntropyCalibrator2 over preprocessed batches, reading/writing `cache` (CUDA via ctypes cudart)."""
    import ctypes

    from yolo_opt.io.files import atomic_path

    cudart = None
    for lib in ("libcudart.so", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so.13"):
        try:
            cudart = ctypes.CDLL(lib)
            break
        except OSError:
            continue
    if cudart is None:
        raise DeployError("CUDA runtime (libcudart.so) not found; the legacy INT8 calibrator needs a CUDA GPU")

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self.batches, self.i = batches, 0
            self.nbytes = batches[0].nbytes
            self.ptr = ctypes.c_void_p()
            if cudart.cudaMalloc(ctypes.byref(self.ptr), ctypes.c_size_t(self.nbytes)) != 0:
                raise DeployError("cudaMalloc failed for the calibration batch")

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names):  # noqa: ARG002
            if self.i >= len(self.batches):
                return None
            host = np.ascontiguousarray(self.batches[self.i], dtype=np.float32)
            self.i += 1
            cudart.cudaMemcpy(self.ptr, host.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(self.nbytes), 1)
            return [int(self.ptr.value)]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.exists() else None

        def write_calibration_cache(self, payload) -> None:
            with atomic_path(cache) as tmp:
                tmp.write_bytes(bytes(payload))

    return EntropyCalibrator()


def build_engine(
    onnx_path: str | Path,
    out: str | Path | None = None,
    int8: bool = True,
    fp16: bool = True,
    workspace: float | None = 4.0,
    calib: str | None = None,
    data: str | Path | None = None,
    calib_images: int = 256,
    imgsz: int | list[int] | None = None,
    cache: str | Path | None = None,
) -> Path:
    """Build a serialized TensorRT engine from an ONNX model with the TensorRT Python API.

    With a QDQ ONNX (from `quantize_onnx`) the INT8 precisions come from its Q/DQ scales (explicit quantization;
    the model is first rewritten to INT8 zero-point-0 Q/DQ by `to_tensorrt_qdq`). With `calib="legacy"` and an FP32
    ONNX, TensorRT's IInt8EntropyCalibrator2 calibrates on `calib_images` train images of `data` and writes `cache`.

    Args:
        onnx_path: FP32 or QDQ ONNX model.
        out: Engine path (default: ONNX path with `.engine`).
        int8: Enable INT8 kernels.
        fp16: Enable FP16 kernels (for the layers kept in float).
        workspace: Builder workspace in GiB (None: TensorRT's default).
        calib: None (explicit QDQ) or "legacy" (implicit calibration, deprecated since TensorRT 10.1).
        data: data.yaml for `calib="legacy"`.
        calib_images: Number of calibration images for `calib="legacy"`.
        imgsz: Calibration image size (default: the ONNX input shape).
        cache: Calibration cache path (default: engine path with `.cache`).

    Returns:
        Path of the engine.

    Raises:
        DeployError: TensorRT missing, or the ONNX parse/build failed.
    """
    import tempfile

    from yolo_opt.io.files import atomic_path
    from yolo_opt.io.onnx import load_onnx, onnx_io
    from yolo_opt.quant.qdq import to_tensorrt_qdq

    if calib not in (None, "legacy"):
        raise ConfigError(f"unknown calib '{calib}' for format=engine; use a QDQ ONNX (default) or calib=legacy")
    onnx_path = Path(onnx_path)
    model = load_onnx(onnx_path, check=False)
    is_qdq = any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    if calib == "legacy" and is_qdq:
        raise ConfigError("calib=legacy needs the FP32 ONNX, not a QDQ model (it already carries its INT8 scales)")
    batches: list[np.ndarray] = []
    if calib == "legacy":
        from yolo_opt.data.calib import calibration_files, load_batches

        shape = onnx_io(model)["inputs"][0]["shape"]
        batches = load_batches(calibration_files(data, calib_images), imgsz or [int(shape[2]), int(shape[3])])
    trt = import_tensorrt()
    out = Path(out) if out else onnx_path.with_suffix(".engine")
    cache = Path(cache) if cache else out.with_suffix(".cache")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt, "NetworkDefinitionCreationFlag") and hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)  # TensorRT < 10
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    with tempfile.TemporaryDirectory(prefix="yolo-opt-trt.") as tmp:
        src = onnx_path
        if is_qdq:
            src = to_tensorrt_qdq(onnx_path, Path(tmp) / "model_trt.onnx")
        if not parser.parse(Path(src).read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise DeployError(f"TensorRT cannot parse {onnx_path}: {errors[:300]}")
    config = builder.create_builder_config()
    if workspace:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace * (1 << 30)))
    if fp16 and getattr(builder, "platform_has_fast_fp16", True):
        config.set_flag(trt.BuilderFlag.FP16)
    if int8:
        config.set_flag(trt.BuilderFlag.INT8)
        if calib == "legacy":
            config.int8_calibrator = _make_calibrator(trt, batches, cache)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise DeployError(f"TensorRT failed to build an engine from {onnx_path}; see the TensorRT log above")
    with atomic_path(out) as tmp:
        tmp.write_bytes(bytes(engine))
    return out


def engine_info() -> dict[str, Any]:
    """TensorRT version if importable, else {"tensorrt": None}."""
    try:
        import tensorrt as trt

        return {"tensorrt": trt.__version__}
    except ImportError:
        return {"tensorrt": None}
