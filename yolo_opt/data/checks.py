"""Dataset checks, in one place: a data.yaml that exists and parses, its splits' images, its classes vs a model's.

Every command that reads a dataset goes through `read_dataset` first, so a missing or malformed dataset is one
clear `DataError` before Ultralytics tries to download anything or a run folder is created.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yolo_opt.errors import DataError

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
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
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


def dataset_images(data: Any, split: str = "train") -> list[Path]:
    """Image files of one split of a data.yaml.

    Raises:
        DataError: No data given, missing/malformed yaml, or the split has no images.
    """
    files = split_images(read_dataset(data), split)
    if not files:
        raise DataError(f"no images found in the '{split}' split of {data}; check its '{split}:' path")
    return files


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
