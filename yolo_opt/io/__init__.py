"""Model and file I/O: checkpoints (load, save, metadata), ONNX files, atomic writes."""

from yolo_opt.io.checkpoint import load_model, meta, save_model
from yolo_opt.io.files import atomic_path, atomic_write_bytes
from yolo_opt.io.onnx import load_onnx, onnx_io, onnx_metadata

__all__ = ["atomic_path", "atomic_write_bytes", "load_model", "load_onnx", "meta", "onnx_io", "onnx_metadata",
           "save_model"]
