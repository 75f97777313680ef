"""Dataset checks, in one place: a data.yaml that exists and parses, its splits' images, its classes vs a model's.

Every command that reads a dataset goes through `read_dataset` first, so a missing or malformed dataset is one
clear `DataError` before Ultralytics tries to download anything or a run folder is created.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yolo_opt.errors import DataError, first_line

NO_POLYGONS = "boxes only, no polygons"
IMG_SUFFIXES = {".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp"}


def check_data_arg(data: Any) -> Path:
    """The `data=` argument as a path to an existing yaml (no download of named datasets)."""
    if data is None or str(data) == "":
        raise DataError("data= is required, e.g. data=data.yaml (make one with 'yolo-opt data out=DIR')")
    path = Path(str(data))
    if path.suffix not in {".yaml", ".yml"}:
        raise DataError(f"data={data} must be a dataset .yaml file, e.g. data=data.yaml")
    if not path.exists():
        raise DataError(f"dataset file not found: {path}; pass data=path/to/data.yaml")
    return path


def read_dataset(data: Any) -> dict[str, Any]:
    """Ultralytics' parsed dataset dict (`check_det_dataset`, no download), or one clear DataError."""
    from ultralytics.data.utils import check_det_dataset

    path = check_data_arg(data)
    try:
        return check_det_dataset(str(path), autodownload=False)
    except Exception as e:  # Ultralytics raises FileNotFoundError/SyntaxError/... for bad yamls
        first = first_line(e)
        raise DataError(f"cannot read dataset {path}: {first}") from e


def split_images(info: dict[str, Any], split: str) -> list[Path]:
    """Image files of one split of a parsed dataset (folders or list files), sorted and unique."""
    roots = info.get(split) or info.get("val")
    roots = roots if isinstance(roots, list) else [roots]
    files: list[Path] = []
    for root in roots:
        root = Path(str(root))
        if root.is_dir():
            files += [p for p in root.rglob("*") if p.suffix.lower() in IMG_SUFFIXES]
        elif root.suffix == ".txt" and root.exists():  # list file of image paths
            for line in root.read_text().splitlines():
                p = Path(line.strip())
                p = p if p.is_absolute() else root.parent / p
                if p.suffix.lower() in IMG_SUFFIXES and p.exists():
                    files.append(p)
    return sorted(set(files))


def _first_usable(files: list[Path], classes: int, task: str = "detect") -> str | None:
    """None once one image (and its label) passes Ultralytics' own check, else the reason the first one failed.

    Ultralytics drops corrupt images when it builds a dataset and fails with a traceback when none is left; the
    same check (`verify_image_label`) stops at the first good image, so a usable split costs one image read. A
    segmentation model needs an image with polygons: box-only labels fail in Ultralytics' mask loss or metrics.
    """
    from ultralytics.data.utils import img2label_paths, verify_image_label

    reason = None
    for im, lb in zip(files, img2label_paths([str(f) for f in files]), strict=True):
        _, _, _, segments, *_, corrupt, msg = verify_image_label((str(im), lb, "", False, classes, 0, 0, False))
        if not corrupt and (task != "segment" or segments):
            return None
        if not corrupt:
            reason = reason or f"{im.name}: {NO_POLYGONS}"
            continue
        if reason is None:
            why = msg.split("ignoring corrupt image/label: ", 1)[-1].strip()
            reason = f"{im.name}: {'not a readable image' if why.startswith('No module named') else first_line(why, 80)}"
    return reason


def dataset_images(data: Any, split: str = "train", info: dict[str, Any] | None = None,
                   task: str = "detect") -> list[Path]:
    """Image files of one split of a data.yaml, of which at least one is usable.

    Raises:
        DataError: No data given, missing/malformed yaml, the split has no images, or none of them is usable.
    """
    info = info or read_dataset(data)
    files = split_images(info, split)
    if not files:
        raise DataError(f"no images found in the '{split}' split of {data}; check its '{split}:' path")
    reason = _first_usable(files, len(info["names"]), task)
    if reason is not None and reason.endswith(NO_POLYGONS):
        raise DataError(f"the '{split}' split of {data} has box labels only: a segmentation model needs polygon labels "
                        "(a segment dataset)")
    if reason is not None:
        raise DataError(f"none of the {len(files)} images of the '{split}' split of {data} is usable (corrupt image "
                        f"or label, e.g. {reason}); fix or replace them")
    return files


def check_dataset(data: Any, names: dict[int, str] | None, splits: tuple[str, ...] = ("train", "val"),
                  what: str = "the model", task: str = "detect") -> dict[str, Any]:
    """The parsed dataset, after checking its classes against `names` and that each of `splits` has usable images
    (with polygons for `task="segment"`)."""
    info = check_classes(data, names, what)
    for split in splits:
        dataset_images(data, split, info, task)
    return info


def check_val_inputs(data: Any, model: dict[str, Any], split: str = "val") -> Path:
    """The dataset `val` scores a model on, checked as `train` checks it; returns its path.

    `model` is what `check_model_file` read from a .pt (its classes, task and training dataset): without `data=`,
    Ultralytics validates on the dataset the model was trained on, which must then be a file here (never a
    download, never a data.yaml's `download:` script).
    """
    data = data if data not in (None, "") else model.get("data")
    if data in (None, ""):
        raise DataError("data= is required, e.g. data=data.yaml (the model does not name its dataset)")
    check_dataset(data, model.get("names"), (split,), task=model.get("task") or "detect")
    return check_data_arg(data)


def check_source(source: Any) -> None:
    """A `predict` source that exists and holds images or videos (URLs, streams and webcams are Ultralytics' own).

    Ultralytics' default source (None: its bundled sample images) is left alone.
    """
    from ultralytics.data.utils import IMG_FORMATS, VID_FORMATS

    if source is None or isinstance(source, int) or "://" in str(source) or str(source).isdigit():
        return
    text = str(source)
    media = IMG_FORMATS | VID_FORMATS
    if any(c in text for c in "*?["):  # a glob pattern
        import glob

        if not any(Path(p).suffix[1:].lower() in media for p in glob.glob(text, recursive=True)):
            raise DataError(f"source={text} matches no image or video; check the pattern")
        return
    path = Path(text)
    if not path.exists():
        raise DataError(f"source not found: {path}; pass source=path/to/images (a folder, an image or a video)")
    if path.is_dir():
        if not any(p.suffix[1:].lower() in media for p in path.iterdir() if p.is_file()):
            raise DataError(f"source={path} holds no images or videos; pass a folder of images")
        return
    if path.suffix == ".txt":  # Ultralytics' list of sources, one a line
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if not lines or not all(Path(line).suffix[1:].lower() in media and Path(line).exists() for line in lines):
            raise DataError(f"source={path} is a text file but not a list of existing image/video paths (one a line)")
        return
    if path.suffix[1:].lower() not in media:
        raise DataError(f"source={path} is not an image or video ({path.suffix or 'no suffix'}); pass an image, a "
                        "video or a folder of them")


def check_classes(data: Any, names: dict[int, str] | None, what: str = "the model") -> dict[str, Any]:
    """The parsed dataset, after checking it has the classes `what` predicts (count and names)."""
    info = read_dataset(data)
    if names:
        theirs = [str(v) for v in (names.values() if isinstance(names, dict) else names)]
        ours = [str(v) for v in dict(info["names"]).values()]
        if len(theirs) != len(ours):
            raise DataError(f"dataset {data} has {len(ours)} classes but {what} predicts {len(theirs)}; use the "
                            f"dataset {what} was trained on")
        if theirs != ours:
            raise DataError(f"dataset {data} names its classes {ours[:5]} but {what} predicts {theirs[:5]}; use the "
                            f"dataset {what} was trained on")
    return info
