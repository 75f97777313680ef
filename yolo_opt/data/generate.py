"""Generate a detection or instance-segmentation dataset: same seed, same bytes. `kind="shapes"` (the default: small
and fast, for the demo and tests) or the hard sets of `yolo_opt.data.hard` (`kind="hard"`, `"transfer"`).

Shapes: objects are filled shapes (circle, square, triangle, cross, ring) of varied size, colour and aspect on a
textured background with distractor strokes, so a detector must learn shape, not colour or position. With
`task="segment"` the same images get each object's instance mask as a polygon label (the outline of what is visible
of it: a later object drawn over it hides that part; a ring's mask is its outer outline).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from yolo_opt.errors import ConfigError
from yolo_opt.io.files import atomic_folder

CLASS_NAMES = ("circle", "square", "triangle", "cross", "ring")
TASKS = ("detect", "segment")
KINDS = ("shapes", "hard", "transfer")
DEFAULTS = {"shapes": (160, 6), "hard": (640, 30), "transfer": (640, 30)}  # imgsz, max_objects


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth colour gradient plus low-frequency blobs and pixel noise."""
    base = rng.uniform(40, 200, 3)
    tilt = rng.uniform(-60, 60, (2, 3))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = base + xx[..., None] * tilt[0] + yy[..., None] * tilt[1]
    coarse = rng.normal(0, 25, (6, 6, 3)).astype(np.float32)
    img += cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _clutter(rng: np.random.Generator, img: np.ndarray) -> None:
    """Distractor lines and arcs that are not objects."""
    size = img.shape[0]
    for _ in range(int(rng.integers(2, 7))):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        p1, p2 = tuple(int(v) for v in rng.integers(0, size, 2)), tuple(int(v) for v in rng.integers(0, size, 2))
        if rng.random() < 0.5:
            cv2.line(img, p1, p2, color, int(rng.integers(1, 3)), cv2.LINE_AA)
        else:
            axes = tuple(int(v) for v in rng.integers(size // 12, size // 4, 2))
            start = int(rng.integers(0, 360))
            cv2.ellipse(img, p1, axes, 0, start, start + int(rng.integers(40, 140)), color, 1, cv2.LINE_AA)


def _contrasting_color(rng: np.random.Generator, img: np.ndarray, box: tuple[int, int, int, int]) -> tuple:
    x1, y1, x2, y2 = box
    mean = img[y1:y2, x1:x2].reshape(-1, 3).mean(0)
    for _ in range(20):
        color = rng.integers(0, 256, 3)
        if np.abs(color - mean).sum() > 180:
            break
    return tuple(int(c) for c in color)


def _draw(img: np.ndarray, cls: int, box: tuple[int, int, int, int], color: tuple) -> None:
    x1, y1, x2, y2 = box
    cx, cy, w, h = (x1 + x2) // 2, (y1 + y2) // 2, x2 - x1, y2 - y1
    if cls == 0:  # circle / ellipse
        cv2.ellipse(img, (cx, cy), (w // 2, h // 2), 0, 0, 360, color, -1, cv2.LINE_AA)
    elif cls == 1:  # square / rectangle
        cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), color, -1)
    elif cls == 2:  # triangle
        pts = np.array([[cx, y1], [x2 - 1, y2 - 1], [x1, y2 - 1]], np.int32)
        cv2.fillPoly(img, [pts], color, cv2.LINE_AA)
    elif cls == 3:  # cross
        t = max(2, min(w, h) // 4)
        cv2.rectangle(img, (cx - t // 2, y1), (cx + t // 2, y2 - 1), color, -1)
        cv2.rectangle(img, (x1, cy - t // 2), (x2 - 1, cy + t // 2), color, -1)
    else:  # ring
        t = max(2, min(w, h) // 5)
        cv2.ellipse(img, (cx, cy), (max(1, w // 2 - t // 2), max(1, h // 2 - t // 2)), 0, 0, 360, color, t, cv2.LINE_AA)


def _overlaps(box: tuple, boxes: list[tuple], limit: float = 0.15) -> bool:
    for b in boxes:
        iw = min(box[2], b[2]) - max(box[0], b[0])
        ih = min(box[3], b[3]) - max(box[1], b[1])
        if iw > 0 and ih > 0:
            inter = iw * ih
            if inter / min((box[2] - box[0]) * (box[3] - box[1]), (b[2] - b[0]) * (b[3] - b[1])) > limit:
                return True
    return False


def _polygon(mask: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The outline of the largest visible part of an object's mask (its box when nothing usable is left), (N, 2)."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contours = [c for c in contours if len(c) >= 3 and cv2.contourArea(c) >= 4]
    if not contours:
        x1, y1, x2, y2 = box
        return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float64)
    return max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float64)


def _sample(rng: np.random.Generator, size: int, max_objects: int, masks: bool = False) -> tuple[np.ndarray, list[str]]:
    img = _background(rng, size)
    _clutter(rng, img)
    boxes, labels, classes, drawn = [], [], [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(10):
            side = int(size * rng.uniform(0.08, 0.45))
            aspect = rng.uniform(0.7, 1.4)
            w, h = max(6, int(side * aspect)), max(6, int(side / aspect))
            w, h = min(w, size - 2), min(h, size - 2)
            x1, y1 = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            box = (x1, y1, x1 + w, y1 + h)
            if not _overlaps(box, boxes):
                break
        else:
            continue
        cls = int(rng.integers(0, len(CLASS_NAMES)))
        _draw(img, cls, box, _contrasting_color(rng, img, box))
        boxes.append(box)
        classes.append(cls)
        cx, cy = (box[0] + box[2]) / 2 / size, (box[1] + box[3]) / 2 / size
        labels.append(f"{cls} {cx:.6f} {cy:.6f} {w / size:.6f} {h / size:.6f}")
        if masks:  # the same shape alone, for its instance mask (no random draws: the image stays the same)
            drawn.append(np.zeros((size, size), np.uint8))
            _draw(drawn[-1], cls, box, (255,))
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    if masks:
        labels, hidden = [], np.zeros((size, size), np.uint8)
        for mask, cls, box in reversed(list(zip(drawn, classes, boxes, strict=True))):  # later objects cover earlier
            polygon = _polygon(cv2.bitwise_and(mask, cv2.bitwise_not(hidden)), box) / size
            labels.insert(0, f"{cls} " + " ".join(f"{v:.6f}" for v in polygon.clip(0, 1).reshape(-1)))
            hidden = cv2.bitwise_or(hidden, mask)
    return img, labels


def make_dataset(
    out: str | Path,
    *,
    seed: int = 0,
    n_train: int = 300,
    n_val: int = 80,
    imgsz: int | None = None,
    max_objects: int | None = None,
    task: str = "detect",
    kind: str = "shapes",
) -> Path:
    """Write the generated dataset to `out` and return the path of its `data.yaml`.

    The folder is built under a temporary name and renamed into place, so an interrupted run leaves nothing
    half-written. An existing dataset with the same parameters is reused.

    Args:
        out: Destination folder (holds `images/`, `labels/` and `data.yaml`).
        seed: Random seed; the same seed and parameters give the same bytes.
        n_train: Number of training images.
        n_val: Number of validation images.
        imgsz: Image side in pixels (shapes: square; hard sets: 0.6-1x of it per side); default 160 for shapes,
            640 for the hard sets.
        max_objects: Most objects in one image (default 6 for shapes, 30 for the hard sets).
        task: "detect" (box labels) or "segment" (the same images, with instance polygons).
        kind: "shapes" (5 classes), "hard" (36 classes told apart by small markings, crowded, small objects,
            photographs and textures) or "transfer" (12 other classes in the same kind of scenes).

    Returns:
        Path to `out/data.yaml`.
    """
    if kind not in KINDS:
        raise ConfigError(f"kind={kind!r}: choose one of {', '.join(KINDS)}")
    imgsz = DEFAULTS[kind][0] if imgsz is None else imgsz
    max_objects = DEFAULTS[kind][1] if max_objects is None else max_objects
    if n_train < 1 or n_val < 1:
        raise ConfigError(f"n_train and n_val must be >= 1 (got n_train={n_train}, n_val={n_val})")
    if not 32 <= imgsz <= 4096:
        raise ConfigError(f"imgsz must be in [32, 4096] (got {imgsz})")
    if max_objects < 1:
        raise ConfigError(f"max_objects must be >= 1 (got {max_objects})")
    if task not in TASKS:
        raise ConfigError(f"task={task!r}: the generated dataset is for one of: {', '.join(TASKS)}")
    out = Path(out).resolve()
    signature = f"seed={seed} n_train={n_train} n_val={n_val} imgsz={imgsz} max_objects={max_objects}"
    signature += f" task={task}" if task != "detect" else ""  # detection datasets keep their earlier signature
    signature += f" kind={kind}" if kind != "shapes" else ""
    yaml_path = out / "data.yaml"
    if yaml_path.exists():
        if (out / ".signature").exists() and (out / ".signature").read_text() == signature:
            return yaml_path
        raise ConfigError(f"{out} already holds a different dataset; choose another out= or delete it")
    from ultralytics.utils.tqdm import TQDM as tqdm  # noqa: N813 (Ultralytics ships its own tqdm)

    from yolo_opt.data import hard

    photos = hard._photos() if kind != "shapes" else []
    with atomic_folder(out, "dataset", replace=False) as tmp:
        for split_id, (split, count, split_seed) in enumerate((("train", n_train, seed),
                                                               ("val", n_val, seed + 1_000_003))):
            rng = np.random.default_rng(split_seed)
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
            for i in tqdm(range(count), desc=f"{kind} {split} images", disable=count < 500):
                if kind == "shapes":
                    img, labels = _sample(rng, imgsz, max_objects, masks=task == "segment")
                    name = f"{i:05d}.png"
                else:  # a seed per image: a larger set starts with the smaller one's images
                    img, labels = hard.hard_sample(np.random.default_rng([seed, split_id, i]), imgsz, max_objects,
                                                   kind, photos=photos, masks=task == "segment")
                    name = f"{i:05d}.jpg"
                cv2.imwrite(str(tmp / "images" / split / name), img)
                (tmp / "labels" / split / f"{i:05d}.txt").write_text("\n".join(labels) + "\n")
        names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASS_NAMES if kind == "shapes" else hard.class_names(kind)))
        (tmp / "data.yaml").write_text(
            f"# yolo-opt generated dataset ({signature})\npath: {out}\ntrain: images/train\nval: images/val\n"
            f"names:\n{names}\n"
        )
        (tmp / ".signature").write_text(signature)
    return yaml_path
