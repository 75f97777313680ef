"""Calibration images: a seeded sample of the dataset's train split, letterboxed exactly as Ultralytics validates."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from yolo_opt.data.checks import dataset_images
from yolo_opt.errors import ConfigError, DataError


def _as_hw(imgsz: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(imgsz, (list, tuple)):
        h, w = (int(imgsz[0]), int(imgsz[-1]))
    else:
        h = w = int(imgsz)
    if h < 1 or w < 1:
        raise ConfigError(f"imgsz={imgsz} must be positive, e.g. imgsz=640")
    return h, w


def letterbox(image: np.ndarray, imgsz: int | tuple[int, int]) -> np.ndarray:
    """Resize keeping aspect ratio and pad to `imgsz` with grey 114, centred (Ultralytics' LetterBox)."""
    from ultralytics.data.augment import LetterBox

    return LetterBox(new_shape=_as_hw(imgsz), auto=False, scaleup=True, center=True)(image=image)


def preprocess(image_bgr: np.ndarray, imgsz: int | tuple[int, int]) -> np.ndarray:
    """BGR uint8 HWC image -> float32 NCHW RGB in [0, 1] at `imgsz`, batch 1."""
    im = letterbox(image_bgr, imgsz)
    im = im[..., ::-1].transpose(2, 0, 1)
    return np.ascontiguousarray(im, dtype=np.float32)[None] / 255.0


def calibration_files(data: str | Path | None, n: int, seed: int = 0) -> list[Path]:
    """Pick `n` train images (a seeded sample; all of them when there are fewer)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"calib_images={n!r} must be an integer >= 1, e.g. calib_images=256")
    files = dataset_images(data, "train")
    if len(files) > n:
        files = sorted(random.Random(seed).sample(files, n))
    return files


def load_batches(files: list[Path], imgsz: int | tuple[int, int], progress: bool = True) -> list[np.ndarray]:
    """Read and letterbox `files` into a list of (1, 3, H, W) float32 arrays, with a progress bar."""
    import cv2
    from ultralytics.utils.tqdm import TQDM as tqdm  # noqa: N813 (Ultralytics ships its own tqdm)

    out = []
    for f in tqdm(files, desc="calibration images", unit="img", disable=not progress, leave=False):
        im = cv2.imread(str(f))
        if im is None:
            raise DataError(f"cannot read image {f}; remove it or fix the file")
        out.append(preprocess(im, imgsz))
    return out


def stack_batches(batches: list[np.ndarray], n: int) -> list[np.ndarray]:
    """Images in batches of `n` for a model with a static batch of `n`; the last batch is filled with the first
    images again (ranges and histograms then see every image, a few twice)."""
    if n <= 1:
        return batches
    out = []
    for start in range(0, len(batches), n):
        group = batches[start:start + n]
        group += [batches[j % len(batches)] for j in range(n - len(group))]
        out.append(np.concatenate(group))
    return out


class CalibrationReader:
    """ONNX Runtime `CalibrationDataReader` over preprocessed batches (re-iterable, with a progress bar)."""

    def __init__(self, batches: list[np.ndarray], input_name: str, progress: bool = True, desc: str = "calibrating"):
        self.batches, self.input_name, self.progress, self.desc = batches, input_name, progress, desc
        self._it: Iterator[dict] | None = None

    def _iter(self) -> Iterator[dict]:
        from ultralytics.utils.tqdm import TQDM as tqdm  # noqa: N813 (Ultralytics ships its own tqdm)

        for b in tqdm(self.batches, desc=self.desc, unit="batch", disable=not self.progress, leave=False):
            yield {self.input_name: b}

    def get_next(self) -> dict | None:
        if self._it is None:
            self._it = self._iter()
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = None

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Serve only batches [start_index, end_index) until the next rewind or set_range."""
        if self.progress and start_index == 0:
            from ultralytics.utils.tqdm import TQDM as tqdm  # noqa: N813

            self._bar = tqdm(total=len(self.batches), desc=self.desc, unit="batch", leave=False)
        bar = getattr(self, "_bar", None)

        def chunk() -> Iterator[dict]:
            for b in self.batches[start_index:end_index]:
                yield {self.input_name: b}
                if bar is not None:
                    bar.update(1)
            if bar is not None and end_index >= len(self.batches):
                bar.close()

        self._it = chunk()
