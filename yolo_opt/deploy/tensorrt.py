"""TensorRT engines from the QDQ ONNX (explicit quantization) or, for TensorRT 8.x/10.x, with a legacy calibrator.

`tensorrt` is imported lazily: everything else in yolo-opt works without it, and this module raises one clear
`DeployError` when it is missing. The version-dependent build (network flags, precision flags or strong typing) is
the bundle's own `templates/build_engine.py`, imported from here, so the host and the device build the same way:
8.x explicit batch + INT8/FP16 flags; 10.x no batch flag, the same precision flags; 11.x strongly typed only (no
precision flags, no calibrator: INT8 from Q/DQ nodes, FP16 from an FP16-typed ONNX).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np

from yolo_opt.deploy.templates.build_engine import BuildError, build_serialized, tensorrt_major
from yolo_opt.errors import ConfigError, DeployError, TensorRTMissing

CACHE_HEADER = "TRT-{version}-EntropyCalibration2"
CUDART = ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0")


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


def tensorrt_version_number(version: str) -> int:
    """TensorRT's integer version (NV_TENSORRT_VERSION), as in calibration-cache headers and trtexec's banner.

    8.x: major*1000 + minor*100 + patch ('8.6.1' -> 8601); 10.x and later: major*10000 + minor*100 + patch
    ('10.3.0.26' -> 100300).
    """
    parts = [int(p) for p in re.findall(r"\d+", str(version))[:3]]
    if not parts:
        raise ConfigError(f"not a TensorRT version: {version!r}")
    major, minor, patch = (parts + [0, 0])[:3]
    return major * (1000 if major < 10 else 10000) + minor * 100 + patch


def format_calibration_cache(scales: dict[str, float], version: str | None = None) -> bytes:
    """Serialize per-tensor scales in TensorRT's calibration-cache text format.

    Line 1 is `TRT-<version number>-EntropyCalibration2`; TensorRT ignores a cache whose number is not its own, so
    it is derived from `version` (a TensorRT version string; default: the installed `tensorrt.__version__`). Then one
    `tensor: <hex>` line per tensor, where `<hex>` is the big-endian IEEE-754 float32 bit pattern of the scale
    (TensorRT's calibrators write amax / 127), as TensorRT writes and reads it.

    Raises:
        TensorRTMissing: No `version` given and TensorRT is not installed.
        ConfigError: A scale is not a positive finite number.
    """
    number = tensorrt_version_number(version if version is not None else import_tensorrt().__version__)
    lines = [CACHE_HEADER.format(version=number)]
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


def _cudart():
    import ctypes

    for lib in CUDART:
        try:
            return ctypes.CDLL(lib)
        except OSError:
            continue
    raise DeployError("CUDA runtime (libcudart.so) not found; the legacy INT8 calibrator needs a CUDA GPU")


def _make_calibrator(trt, major: int, batches: list[np.ndarray], cache: Path):
    """An IInt8EntropyCalibrator2 over preprocessed batches, reading/writing `cache` (CUDA via ctypes cudart).

    TensorRT 8.x and 10.x only (deprecated in 10.1, removed in 11).
    """
    if major >= 11:
        raise DeployError(f"calib=legacy uses TensorRT's IInt8EntropyCalibrator2, removed in TensorRT 11 (installed: "
                          f"{trt.__version__}); use the default explicit quantization (the QDQ ONNX) instead")
    import ctypes

    from yolo_opt.io.files import atomic_path

    cudart = _cudart()
    header = CACHE_HEADER.format(version=tensorrt_version_number(trt.__version__))

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
            if host.nbytes != self.nbytes:  # never copy another size than the engine input's buffer
                raise DeployError(f"calibration batch of {host.nbytes} bytes, expected {self.nbytes}")
            code = cudart.cudaMemcpy(self.ptr, host.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(self.nbytes), 1)
            if code != 0:
                raise DeployError(f"cudaMemcpy failed (CUDA error {code}) while calibrating")
            return [int(self.ptr.value)]

        def read_calibration_cache(self):
            if not cache.exists():
                return None
            payload = cache.read_bytes()
            if not payload.startswith(header.encode()):  # another TensorRT's cache: TensorRT would skip it
                from ultralytics.utils import LOGGER

                LOGGER.info(f"yolo-opt: {cache} is not a TensorRT {trt.__version__} cache; calibrating again")
                return None
            return payload

        def write_calibration_cache(self, payload) -> None:
            with atomic_path(cache) as tmp:
                tmp.write_bytes(bytes(payload))

        def free(self) -> None:
            if self.ptr.value:
                cudart.cudaFree(self.ptr)
                self.ptr = ctypes.c_void_p()

    return EntropyCalibrator()


def _has_fp16(model) -> bool:
    """Does an ONNX model compute in FP16 anywhere (an FP16 initializer or a Cast to FP16)?"""
    import onnx

    half = onnx.TensorProto.FLOAT16
    if any(i.data_type == half for i in model.graph.initializer):
        return True
    return any(n.op_type == "Cast" and any(a.name == "to" and a.i == half for a in n.attribute)
               for n in model.graph.node)


def _legacy_batches(model, data, calib_images: int, imgsz) -> list[np.ndarray]:
    """Calibration batches at exactly the ONNX input size (the calibrator copies one input-sized buffer)."""
    from yolo_opt.data.calib import _as_hw, calibration_files, load_batches
    from yolo_opt.io.onnx import onnx_io

    shape = onnx_io(model)["inputs"][0]["shape"]
    if len(shape) != 4 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ConfigError(f"calib=legacy needs a static input shape, the ONNX has {shape}; export with dynamic=False")
    if shape[0] != 1:
        raise ConfigError(f"calib=legacy calibrates batch 1, the ONNX input batch is {shape[0]}; export with batch=1")
    hw = (int(shape[2]), int(shape[3]))
    if imgsz is not None and _as_hw(imgsz) != hw:
        raise ConfigError(f"imgsz={imgsz} differs from the ONNX input {hw[0]}x{hw[1]}; calibration images must have "
                          "the engine's input size (drop imgsz= or re-export the ONNX at that size)")
    return load_batches(calibration_files(data, calib_images), list(hw))


def build_engine(
    onnx_path: str | Path,
    out: str | Path | None = None,
    *,
    int8: bool = True,
    fp16: bool = True,
    workspace: float | None = 4.0,
    calib: str | None = None,
    data: str | Path | None = None,
    calib_images: int = 256,
    imgsz: int | list[int] | None = None,
    cache: str | Path | None = None,
) -> Path:
    """Build a serialized TensorRT engine from an ONNX model with the TensorRT Python API (8.x, 10.x or 11.x).

    With a QDQ ONNX (from `quantize_onnx`, or a QAT export) the INT8 precisions come from its Q/DQ scales (explicit
    quantization; the model is first rewritten to its TensorRT form by `to_tensorrt_qdq`). With `calib="legacy"` and
    an FP32 ONNX, TensorRT's IInt8EntropyCalibrator2 calibrates on `calib_images` train images of `data` and writes
    `cache` (TensorRT 8.x/10.x; removed in 11). On TensorRT 11 (strongly typed networks) `fp16` cannot turn on FP16
    kernels: an FP32 model with `int8=False, fp16=True` is refused, and a QDQ model keeps its float layers in FP32.

    Args:
        onnx_path: FP32 or QDQ ONNX model.
        out: Engine path (default: ONNX path with `.engine`).
        int8: INT8 engine: needs a QDQ model or `calib="legacy"`; a QDQ model needs it.
        fp16: FP16 kernels for the layers not in INT8 (TensorRT 8.x/10.x).
        workspace: Builder workspace in GiB (None: TensorRT's default).
        calib: None (explicit QDQ) or "legacy" (implicit calibration, deprecated since TensorRT 10.1).
        data: data.yaml for `calib="legacy"`.
        calib_images: Number of calibration images for `calib="legacy"`.
        imgsz: Calibration image size; must equal the ONNX input size (the default).
        cache: Calibration cache path (default: engine path with `.cache`).

    Returns:
        Path of the engine.

    Raises:
        ConfigError: Bad calib/int8/imgsz combination.
        TensorRTMissing: TensorRT is not installed.
        DeployError: The ONNX parse/build failed, or the installed TensorRT cannot give the asked precision.
    """
    import tempfile

    from yolo_opt.io.files import atomic_path
    from yolo_opt.io.onnx import load_onnx
    from yolo_opt.quant.tensorrt import to_tensorrt_qdq

    if calib not in (None, "legacy"):
        raise ConfigError(f"unknown calib '{calib}' for format=engine; use a QDQ ONNX (default) or calib=legacy")
    onnx_path = Path(onnx_path)
    model = load_onnx(onnx_path, check=False)
    is_qdq = any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    if calib == "legacy" and is_qdq:
        raise ConfigError("calib=legacy needs the FP32 ONNX, not a QDQ model (it already carries its INT8 scales)")
    if calib == "legacy" and not int8:
        raise ConfigError("calib=legacy calibrates INT8; use it with int8=True")
    if is_qdq and not int8:
        raise ConfigError(f"{onnx_path} is an INT8 Q/DQ model; build it with int8=True or pass the FP32 ONNX")
    if int8 and not is_qdq and calib != "legacy":
        raise ConfigError(f"int8=True needs a QDQ ONNX (yolo-opt export int8=True) or calib=legacy; {onnx_path} "
                          "has no Q/DQ nodes")
    batches = _legacy_batches(model, data, calib_images, imgsz) if calib == "legacy" else []
    trt = import_tensorrt()
    major = tensorrt_major(trt.__version__)
    if major >= 11 and fp16 and not int8 and not _has_fp16(model):
        raise DeployError(f"TensorRT {trt.__version__} builds strongly typed networks: FP16 needs an FP16 ONNX "
                          "(ModelOpt AutoCast: python -m modelopt.onnx.autocast --onnx_path MODEL.onnx), or fp16=False")
    out = Path(out) if out else onnx_path.with_suffix(".engine")
    cache = Path(cache) if cache else out.with_suffix(".cache")
    calibrator = _make_calibrator(trt, major, batches, cache) if calib == "legacy" else None
    try:
        with tempfile.TemporaryDirectory(prefix="yolo-opt-trt.") as tmp:
            src = to_tensorrt_qdq(onnx_path, Path(tmp) / "model_trt.onnx") if is_qdq else onnx_path
            plan = build_serialized(trt, Path(src).read_bytes(), int8=int8, fp16=fp16, workspace_gib=workspace,
                                    calibrator=calibrator)
    except BuildError as e:
        raise DeployError(f"{onnx_path}: {e}") from None
    finally:
        if calibrator is not None:
            calibrator.free()
    with atomic_path(out) as tmp:
        tmp.write_bytes(plan)
    return out

