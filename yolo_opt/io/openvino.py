"""OpenVINO files and runtime: import it with one clear error, name a device, find a model's `.xml`, and give
Ultralytics a folder it recognises as OpenVINO (it tells formats by folder name).

OpenVINO is the optional extra `yolo-opt[openvino]`, imported only inside these functions.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from yolo_opt.errors import ConfigError, DeployError, ModelError, OpenVINOMissing

INSTALL = 'pip install "yolo-opt[openvino]"'


def require(module: str = "openvino"):
    """Import `openvino` or `nncf`, or raise the one-line error naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise OpenVINOMissing(f"{module} is not installed; {INSTALL}") from None


def openvino_device(device: str | None = None) -> str:
    """OpenVINO's name of `device` (cpu, gpu, npu, auto, intel:gpu, GPU.1, ...), refused when absent here."""
    ov = require("openvino")
    name = str(device or "CPU").strip()
    name = (name.partition(":")[2] if name.lower().startswith("intel:") else name).upper() or "CPU"
    available = list(ov.Core().available_devices)
    if name != "AUTO" and not any(d == name or d.startswith(f"{name}.") for d in available):
        raise DeployError(f"OpenVINO device '{name}' is not available here; available: {', '.join(available)} "
                          "(or AUTO)")
    return name


def model_xml(path: str | Path) -> Path:
    """The `.xml` of an OpenVINO model given as the file or as its folder (`*_openvino_model/`)."""
    path = Path(path)
    if path.is_dir():
        xmls = sorted(path.glob("*.xml"))
        if len(xmls) != 1:
            raise ConfigError(f"{path} must hold exactly one OpenVINO .xml model (found {len(xmls)})")
        path = xmls[0]
    if path.suffix != ".xml" or not path.exists() or not path.with_suffix(".bin").exists():
        raise ModelError(f"OpenVINO model not found: {path} (needs the .xml and its .bin)")
    return path


@contextlib.contextmanager
def openvino_folder(model: str | Path) -> Iterator[Path]:
    """A folder Ultralytics loads as OpenVINO (its name ends in `_openvino_model`) holding the model's .xml, .bin and
    the metadata.yaml beside them: the model's own folder when so named, else a temporary one of links.

    `model` is the `.xml` or the folder holding it (any folder name: `out=my_ir` is a valid OpenVINO output).
    """
    xml = model_xml(model).resolve()
    if xml.parent.name.endswith("_openvino_model"):
        yield xml.parent
        return
    with tempfile.TemporaryDirectory(prefix="yolo-opt-ov.") as tmp:
        folder = Path(tmp) / f"{xml.stem}_openvino_model"
        folder.mkdir()
        for src in (xml, xml.with_suffix(".bin"), xml.parent / "metadata.yaml"):
            if src.exists():
                (folder / src.name).symlink_to(src)
        yield folder
