"""OpenVINO IR from an Ultralytics `.pt` (pruned ones too): Ultralytics' exporter for FP32, NNCF for INT8.

INT8 is NNCF's post-training quantization of the FP32 IR, calibrated on the train split as our ONNX PTQ is, with
the Detect head's own ops (box decode, DFL, sigmoid: the float tail) kept in float as Ultralytics does. With
`max_map_drop` it is NNCF's `quantize_with_accuracy_control(max_drop=)`, scored by mAP50-95 from the Ultralytics
validator's own pre/post-processing and metrics, so layers go back to float until INT8 is within the bound
(NNCF's plain INT8 can lose more: docs/benchmarks.md#openvino-int8).

OpenVINO and NNCF are the optional extra `yolo-opt[openvino]`, imported only inside these functions.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolo_opt.errors import ConfigError, DeployError
from yolo_opt.io.openvino import model_xml, openvino_device, require
from yolo_opt.options import DEFAULT_IMGSZ


@dataclass
class OpenVINOResult:
    """What `export_openvino` wrote and measured."""

    path: Path  # the model folder (Ultralytics layout: <stem>.xml, <stem>.bin, metadata.yaml)
    precision: str  # "fp32" or "int8"
    device: str
    fp32_map: float | None = None
    int8_map: float | None = None
    fp32_mask_map: float | None = None  # segmentation models: the masks' mAP50-95
    int8_mask_map: float | None = None
    calib_images: int = 0
    float_ops: list[str] = field(default_factory=list)  # ops kept in float by the ignored scope
    max_map_drop: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (paths as str)."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}

    def maps(self) -> dict[str, float | None]:
        """The mAP50-95 figures measured (boxes; masks of a segmentation model), FP32 and INT8."""
        keys = ("fp32_map", "int8_map") + (("fp32_mask_map", "int8_mask_map") if self.fp32_mask_map is not None else ())
        return {k: getattr(self, k) for k in keys}


def _ultralytics_fp32(model: Path, folder: Path, imgsz: int, head: dict[str, Any]) -> Path:
    """Ultralytics' OpenVINO export of `model` into `folder` (`head`: `ModelAdapter.exporter_args`); returns the
    folder Ultralytics says it wrote."""
    from ultralytics import YOLO

    from yolo_opt.io.files import hints_outside

    yolo = YOLO(str(model))  # its task from the checkpoint
    yolo.model.pt_path = str(folder / model.name)  # Ultralytics writes next to pt_path
    try:
        with hints_outside(folder):
            written = Path(yolo.export(format="openvino", imgsz=imgsz, batch=1, dynamic=False, half=False, int8=False,
                                       device="cpu", **head))
    except Exception as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise DeployError(f"Ultralytics OpenVINO export of {model} failed: {first}") from e
    model_xml(written)
    return written


def head_scope(ov_model) -> list[str]:
    """Names of the Detect head's own ops (decode, DFL, sigmoid) that INT8 keeps in float, as Ultralytics does."""
    ops = ov_model.get_ordered_ops()
    sigmoids = [op.get_friendly_name() for op in ops if op.get_type_name() == "Sigmoid"]
    if not sigmoids:
        return []
    scope = sigmoids[-1].split("/", 1)[0]  # e.g. __module.model.22
    return [op.get_friendly_name() for op in ops
            if op.get_type_name() == "Sigmoid" or op.get_friendly_name().startswith((f"{scope}/", f"{scope}.dfl"))]


def map_validation(data: str | Path, imgsz: int, names: dict[int, str], *, end2end: bool = False,
                   task: str = "detect"):
    """(val batches, fn(compiled_model, batches) -> (mAP50-95, None)): NNCF's validation, the Ultralytics way.

    The batches are the Ultralytics val loader at batch 1 (fixed-shape letterbox, as the validator feeds an
    exported model); `fn` runs the compiled OpenVINO model and scores it with the task's validator (its NMS and
    metrics). The score is the task's leading mAP50-95: the masks' for a segmentation model (the box mAP is checked
    after NNCF, by the validator on the saved IR).
    """
    from types import SimpleNamespace

    import torch
    from ultralytics.data.utils import check_det_dataset

    from yolo_opt.arch import load_class, task_named

    spec = task_named(task)
    args = {"data": str(data), "imgsz": imgsz, "batch": 1, "rect": False, "plots": False, "verbose": False,
            "device": "cpu", "workers": 0, "task": task, "mode": "val", "split": "val"}
    v = load_class(spec.validator)(args=args)
    v.data = check_det_dataset(str(data))
    v.stride, v.names, v.device = 32, names, torch.device("cpu")
    v.dataloader = v.get_dataloader(v.data["val"], 1)
    stub = SimpleNamespace(names=names, end2end=end2end)
    key = spec.metrics[spec.primary]

    def fn(compiled, batches) -> tuple[float, None]:
        v.init_metrics(stub)
        for batch in batches:
            batch = v.preprocess(batch)
            result = compiled(batch["img"].numpy())
            outputs = [torch.from_numpy(result[port]) for port in compiled.outputs]
            v.update_metrics(v.postprocess(outputs if len(outputs) > 1 else outputs[0]), batch)
        return float(v.get_stats()[key]), None

    return v.dataloader, fn


def quantize_openvino(fp32_xml: Path, out_xml: Path, data: str | Path, imgsz: int, *, calib_images: int = 256,
                      max_map_drop: float | None = None, device: str = "CPU", names: dict[int, str] | None = None,
                      end2end: bool = False, progress: bool = True, task: str = "detect") -> dict[str, Any]:
    """NNCF INT8 of an FP32 IR: plain `nncf.quantize`, or `quantize_with_accuracy_control` under `max_map_drop`."""
    ov, nncf = require("openvino"), require("nncf")
    from yolo_opt.data.calib import calibration_files, load_batches

    files = calibration_files(data, calib_images)
    calib = nncf.Dataset(load_batches(files, imgsz, progress=progress))
    model = ov.Core().read_model(str(fp32_xml))
    ignored = head_scope(model)
    common = {"preset": nncf.QuantizationPreset.MIXED, "subset_size": len(files),
              "target_device": getattr(nncf.TargetDevice, device.split(".")[0], nncf.TargetDevice.ANY),
              "ignored_scope": nncf.IgnoredScope(names=ignored) if ignored else None}
    if max_map_drop is None:
        quantized = nncf.quantize(model, calib, **common)
    else:
        if names is None:
            raise ConfigError("max_map_drop needs the model's class names")
        loader, fn = map_validation(data, imgsz, names, end2end=end2end, task=task)
        quantized = nncf.quantize_with_accuracy_control(
            model, calib, nncf.Dataset(loader), fn, max_drop=max_map_drop, drop_type=nncf.DropType.ABSOLUTE, **common)
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    return {"calib_images": len(files), "float_ops": ignored}


def export_openvino(model: str | Path, out: str | Path | None = None, imgsz: int = DEFAULT_IMGSZ, *,
                    int8: bool = False, data: str | Path | None = None, calib_images: int = 256, max_map_drop: float | None = None,
                    device: str | None = None, validate: bool = True, progress: bool = True,
                    fp32: str | Path | None = None, end2end: bool | None = None) -> OpenVINOResult:
    """OpenVINO IR folder of an Ultralytics `.pt`: FP32 from Ultralytics' exporter, INT8 from NNCF.

    The folder (`<stem>_openvino_model/` or `<stem>_int8_openvino_model/` next to the model by default) has
    Ultralytics' layout, so `YOLO(folder)` loads it; it is built in a temporary folder and renamed into place.

    Args:
        model: Ultralytics `.pt` checkpoint (pruned or not).
        out: Output folder (an existing OpenVINO model folder is replaced; any other non-empty folder is refused).
        imgsz: Static input size.
        int8: NNCF INT8 (needs `data`: its train split calibrates).
        data: data.yaml; its val split validates (and scores accuracy control).
        calib_images: Train images for calibration.
        max_map_drop: Largest accepted absolute mAP50-95 drop of INT8 vs FP32 (NNCF accuracy control).
        device: OpenVINO device (CPU, GPU, NPU, AUTO; `intel:gpu` also accepted) the model is validated on and
            quantized for.
        validate: Measure mAP50-95 (FP32 and INT8) with the Ultralytics validator when `data` is given.
        progress: Show progress bars.
        fp32: An FP32 folder this function wrote before for the same model, quantized instead of exporting again.
        end2end: The NMS-free output of an end-to-end model (None: where the head has it; False: one-to-many).
    """
    from yolo_opt.arch import adapter
    from yolo_opt.data.calib import calibration_files
    from yolo_opt.io.checkpoint import load_model
    from yolo_opt.io.files import atomic_folder, owned_folder, temporary_dir
    from yolo_opt.validation import validate as val

    require("openvino")
    if int8:
        require("nncf")
    dev = openvino_device(device)
    model = Path(model)
    net = load_model(model)  # one clear error for missing/corrupt/untrusted checkpoints
    arch = adapter(net)
    if int8:
        calibration_files(data, calib_images)  # fail before exporting anything
    elif max_map_drop is not None:
        raise ConfigError("max_map_drop bounds the INT8 loss: add int8=True")
    out = Path(out) if out else model.with_name(f"{model.stem}_{'int8_' if int8 else ''}openvino_model")
    owned_folder(out, "OpenVINO model folder")  # a folder of the user's is refused before any work (and again before the swap)
    result = OpenVINOResult(out, "int8" if int8 else "fp32", dev, max_map_drop=max_map_drop)
    ov_device = f"intel:{dev.lower()}"
    work = temporary_dir(out.with_name(f"{out.name}-work"))
    try:
        fp32 = Path(fp32) if fp32 else _ultralytics_fp32(model, work, imgsz, arch.exporter_args(end2end))
        if validate and data:
            scores = val(fp32, data, imgsz, device=ov_device)
            result.fp32_map, result.fp32_mask_map = scores["map"], scores.get("mask_map")
        with atomic_folder(out, "OpenVINO model folder") as tmp:
            xml = model_xml(fp32)
            if int8:
                import yaml

                meta = yaml.safe_load((fp32 / "metadata.yaml").read_text()) or {}
                info = quantize_openvino(xml, tmp / xml.name, data, imgsz, calib_images=calib_images,
                                         max_map_drop=max_map_drop, device=dev,
                                         names={int(k): v for k, v in net.names.items()},
                                         end2end=bool(meta.get("end2end", False)), progress=progress,
                                         task=arch.task.name)
                result.calib_images, result.float_ops = info["calib_images"], info["float_ops"]
                shutil.copyfile(fp32 / "metadata.yaml", tmp / "metadata.yaml")
                if validate and data:
                    scores = val(tmp, data, imgsz, device=ov_device)
                    result.int8_map, result.int8_mask_map = scores["map"], scores.get("mask_map")
                    _check_drop(result)  # before the folder is renamed into place: a miss writes nothing
            else:
                for f in fp32.iterdir():
                    shutil.copyfile(f, tmp / f.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _check_drop(result: OpenVINOResult) -> None:
    """The ONNX path's rule for OpenVINO too: INT8 beyond `max_map_drop` of FP32 (the Ultralytics validator's mAP,
    not NNCF's own scoring) is an error, not a warning."""
    if result.max_map_drop is None or result.int8_map is None or result.fp32_map is None:
        return
    drops = [result.fp32_map - result.int8_map]
    if result.fp32_mask_map is not None and result.int8_mask_map is not None:
        drops.append(result.fp32_mask_map - result.int8_mask_map)  # the masks' bound too
    drop = max(drops)
    if drop > result.max_map_drop + 1e-9:
        raise DeployError(f"OpenVINO INT8 mAP50-95 {result.int8_map:.4f} is {drop:.4f} below FP32 {result.fp32_map:.4f} "
                          f"(max_map_drop={result.max_map_drop}; NNCF met it on its own scoring only); raise "
                          "max_map_drop or calib_images")
