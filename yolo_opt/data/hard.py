"""The hard generated sets (`yolo-opt data kind=hard|transfer`): scenes a nano detector cannot saturate.

Each class is an outline *and* a small inner marking (a dot, a bar, a ring, ...): 36 classes in `hard` (6 outlines x
6 markings), 12 other ones in `transfer` (4 other outlines x 3 markings), so classes differ in fine detail that
shrinks with the object. Colour and fill texture are random, never the class. Scenes are crowded (up to
`max_objects`), objects range from ~8 px to two thirds of the image, mostly small (at 640 px: median side ~22 px, 60% under 32 px; COCO has 41% under 32 px), overlap and hide
each other, run off the image (labels are the visible part's box; an object less than 40% visible is not labelled
and, being there, is a hard negative), sit on procedural textures or crops of the photographs that Matplotlib (a
dependency of Ultralytics) ships, among distractors that are no class (irregular polygons, strokes, outlines
without a class's marking); lighting, gamma, blur, motion blur and noise vary per image, and images are 0.6-1x
`imgsz` on each side. Every image has its own seed (seed, split, index): the same seed gives the same bytes, and
a larger set starts with the smaller one's images.

`transfer` is the set users are in: a few hundred images of classes the `hard` pre-training never saw.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

OUTLINES = {"hard": ("circle", "square", "triangle", "hexagon", "star", "diamond"),
            "transfer": ("pentagon", "arrow", "crescent", "cross")}
MARKINGS = {"hard": ("plain", "dot", "bar", "ring", "x", "twin"), "transfer": ("plain", "dot", "bar")}
KINDS = tuple(OUTLINES)
MIN_VISIBLE = 0.4  # an object showing less than this share of itself is not labelled


def class_names(kind: str) -> tuple[str, ...]:
    return tuple(f"{o}-{m}" for o in OUTLINES[kind] for m in MARKINGS[kind])


def _photos() -> list[np.ndarray]:
    """The photographs installed packages ship (Matplotlib's sample data; scikit-learn's where NNCF brought it)."""
    import matplotlib

    found = [Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"]
    try:
        import sklearn.datasets

        found += sorted((Path(sklearn.datasets.__file__).parent / "images").glob("*.jpg"))
    except ImportError:
        pass
    images = [cv2.imread(str(p)) for p in found if p.exists()]
    return [im for im in images if im is not None]


def _noise_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Multi-octave value noise in colour."""
    img = np.zeros((h, w, 3), np.float32)
    for octave, amp in ((4, 60), (12, 30), (40, 14)):
        coarse = rng.normal(0, amp, (octave, octave, 3)).astype(np.float32)
        img += cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return img + rng.uniform(60, 190, 3).astype(np.float32)


def _background(rng: np.random.Generator, h: int, w: int, photos: list[np.ndarray]) -> np.ndarray:
    kind = rng.random()
    if photos and kind < 0.4:  # a rotated, scaled, colour-shifted crop of a photograph
        photo = photos[int(rng.integers(len(photos)))]
        scale = rng.uniform(0.5, 2.0)
        m = cv2.getRotationMatrix2D((photo.shape[1] / 2, photo.shape[0] / 2), rng.uniform(-180, 180), scale)
        m[:, 2] += (w / 2 - photo.shape[1] / 2, h / 2 - photo.shape[0] / 2)
        m[:, 2] += rng.uniform(-0.3, 0.3, 2) * photo.shape[1::-1] * scale
        img = cv2.warpAffine(photo, m, (w, h), borderMode=cv2.BORDER_REFLECT).astype(np.float32)
        img = img * rng.uniform(0.6, 1.3, 3) + rng.uniform(-30, 30, 3)
    elif kind < 0.75:
        img = _noise_texture(rng, h, w)
    else:  # stripes or a checkerboard, warped
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        angle, period = rng.uniform(0, np.pi), rng.uniform(6, 40)
        phase = (xx * np.cos(angle) + yy * np.sin(angle)) / period
        wave = np.sin(2 * np.pi * phase) if rng.random() < 0.5 else np.sign(np.sin(2 * np.pi * phase)
                                                                              * np.sin(2 * np.pi * yy / period))
        img = _noise_texture(rng, h, w) * 0.5 + wave[..., None] * rng.uniform(10, 50, 3) + 60
    return img


def _outline(name: str, cx: float, cy: float, r: float, *, angle: float) -> list[np.ndarray]:
    """Filled polygons (pixel coordinates) of an outline of radius r around (cx, cy), rotated by angle."""
    def poly(n: int, radii: list[float] | None = None, start: float = -np.pi / 2) -> np.ndarray:
        t = start + angle + np.arange(n) * 2 * np.pi / n
        rr = np.array(radii if radii else [r] * n)
        return np.stack([cx + rr * np.cos(t), cy + rr * np.sin(t)], 1)

    if name == "circle":
        return [poly(48)]
    if name == "square":
        return [poly(4, start=-np.pi / 4)]
    if name == "triangle":
        return [poly(3)]
    if name == "hexagon":
        return [poly(6)]
    if name == "pentagon":
        return [poly(5)]
    if name == "star":
        return [poly(10, [r if i % 2 == 0 else r * 0.45 for i in range(10)])]
    if name == "diamond":
        return [poly(4, [r, r * 0.6, r, r * 0.6])]
    if name == "cross":
        t = r * 0.38
        pts = np.array([[-t, -r], [t, -r], [t, -t], [r, -t], [r, t], [t, t], [t, r], [-t, r], [-t, t], [-r, t],
                        [-r, -t], [-t, -t]])
    elif name == "arrow":
        pts = np.array([[-r, -0.3 * r], [0.1 * r, -0.3 * r], [0.1 * r, -0.8 * r], [r, 0], [0.1 * r, 0.8 * r],
                        [0.1 * r, 0.3 * r], [-r, 0.3 * r]])
    elif name == "crescent":
        t = np.linspace(-np.pi / 2, np.pi / 2, 24)
        outer = np.stack([r * np.cos(t), r * np.sin(t)], 1)
        inner = np.stack([0.35 * r * np.cos(t[::-1]), r * np.sin(t[::-1])], 1)
        pts = np.concatenate([outer, inner])
    else:
        raise ValueError(name)
    c, s = np.cos(angle), np.sin(angle)
    return [pts @ np.array([[c, s], [-s, c]]) + (cx, cy)]


def _marking(img: np.ndarray, name: str, cx: float, cy: float, *, r: float, angle: float, color: tuple) -> None:
    """The class's inner detail, ~1/3 of the object's radius: what tells classes of one outline apart."""
    if name == "plain":
        return
    m = max(1.0, 0.32 * r)
    p = (int(cx * 16), int(cy * 16))  # cv2 draws at 1/16 px (shift=4)
    thick = max(1, int(round(0.3 * m)))
    if name == "dot":
        cv2.circle(img, p, int(m * 0.7 * 16), color, -1, cv2.LINE_AA, 4)
    elif name == "ring":
        cv2.circle(img, p, int(m * 16), color, thick, cv2.LINE_AA, 4)
    elif name in ("bar", "x", "twin"):
        c, s = np.cos(angle), np.sin(angle)
        def seg(dx, dy, ex, ey):
            a = (int((cx + dx * c - dy * s) * 16), int((cy + dx * s + dy * c) * 16))
            b = (int((cx + ex * c - ey * s) * 16), int((cy + ex * s + ey * c) * 16))
            cv2.line(img, a, b, color, thick + 1, cv2.LINE_AA, 4)
        if name == "bar":
            seg(-m, 0, m, 0)
        elif name == "x":
            seg(-m, -m, m, m)
            seg(-m, m, m, -m)
        else:
            seg(-m, -m * 0.5, m, -m * 0.5)
            seg(-m, m * 0.5, m, m * 0.5)


def _fill(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An object's colour: solid, or a tinted texture (stripes, checks, noise), never tied to the class."""
    color = rng.integers(0, 256, 3).astype(np.float32)
    kind = rng.random()
    if kind < 0.5:
        return np.broadcast_to(color, (h, w, 3)).copy()
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = rng.uniform(3, 10)
    if kind < 0.75:
        pattern = np.sin(2 * np.pi * (xx * np.cos(period) + yy * np.sin(period)) / period)[..., None]
    else:
        pattern = cv2.resize(rng.normal(0, 1, (max(2, h // 4), max(2, w // 4), 1)).astype(np.float32), (w, h))[..., None]
    return color + pattern * rng.uniform(15, 45)


def _distractor(rng: np.random.Generator, img: np.ndarray, outlines: tuple[str, ...]) -> None:
    """Something that is no class: an irregular polygon, a stroke, or a class's outline with a marking no class
    has (a ring with an off-centre dot): only outline and marking together make a class."""
    h, w = img.shape[:2]
    color = tuple(float(c) for c in rng.integers(0, 256, 3))
    kind = rng.random()
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    r = float(np.exp(rng.uniform(np.log(4), np.log(min(h, w) / 6))))
    if kind < 0.4:
        n = int(rng.integers(5, 10))
        t = np.sort(rng.uniform(0, 2 * np.pi, n))
        rr = r * rng.uniform(0.4, 1.0, n)
        pts = np.stack([cx + rr * np.cos(t), cy + rr * np.sin(t)], 1)
        cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], color, cv2.LINE_AA, 4)
    elif kind < 0.75:
        p1 = (int(cx * 16), int(cy * 16))
        p2 = (int(rng.uniform(0, w) * 16), int(rng.uniform(0, h) * 16))
        cv2.line(img, p1, p2, color, int(rng.integers(1, 4)), cv2.LINE_AA, 4)
    else:
        shape = outlines[int(rng.integers(len(outlines)))]
        polys = _outline(shape, cx, cy, r, angle=rng.uniform(0, 2 * np.pi))
        cv2.fillPoly(img, [np.round(p * 16).astype(np.int32) for p in polys], color, cv2.LINE_AA, 4)
        ink = tuple(255.0 - c for c in color)
        cv2.circle(img, (int(cx * 16), int(cy * 16)), int(r * 0.5 * 16), ink, 1, cv2.LINE_AA, 4)
        cv2.circle(img, (int((cx + r * 0.2) * 16), int(cy * 16)), int(max(1, r * 0.12) * 16), ink, -1, cv2.LINE_AA, 4)


def _light(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Illumination gradient, contrast, gamma, blur or motion blur, sensor noise."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gx, gy = rng.uniform(-0.5, 0.5, 2)
    gain = 1 + gx * (xx / w - 0.5) + gy * (yy / h - 0.5)
    img = img * gain[..., None] * rng.uniform(0.6, 1.3) + rng.uniform(-25, 25)
    img = 255 * (np.clip(img, 0, 255) / 255) ** rng.uniform(0.7, 1.5)
    blur = rng.random()
    if blur < 0.35:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.6))
    elif blur < 0.5:
        k = int(rng.integers(3, 8))
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2] = 1 / k
        m = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), rng.uniform(0, 180), 1)
        img = cv2.filter2D(img, -1, cv2.warpAffine(kernel, m, (k, k)))
    img = img + rng.normal(0, rng.uniform(2, 10), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def hard_sample(rng: np.random.Generator, imgsz: int, max_objects: int, kind: str, *, photos: list[np.ndarray],
                masks: bool = False) -> tuple[np.ndarray, list[str]]:
    """One image of `kind` and its label lines (boxes, or polygons with `masks`)."""
    outlines, markings = OUTLINES[kind], MARKINGS[kind]
    h, w = (int(imgsz * rng.uniform(0.6, 1.0)) // 8 * 8 for _ in range(2))
    img = _background(rng, h, w, photos)
    objects = []  # (class, mask of the whole object)
    n = int(rng.integers(max(1, max_objects // 4), max_objects + 1))
    layers = sorted(rng.choice(n + n // 2 + 1, n // 2 + 1, replace=False).tolist())  # distractors between objects
    for i in range(n + n // 2 + 1):
        if i in layers:
            _distractor(rng, img, outlines)
            continue
        o, mk = int(rng.integers(len(outlines))), int(rng.integers(len(markings)))
        lo, hi = np.log(4), np.log(min(h, w) / 3.5)  # radius 4 px to ~1/3 of the image, skewed small
        r = float(np.exp(lo + (hi - lo) * rng.random() ** 1.5))
        cx, cy = rng.uniform(-0.3 * r, w + 0.3 * r), rng.uniform(-0.3 * r, h + 0.3 * r)  # some run off the image
        angle = rng.uniform(0, 2 * np.pi)
        mask = np.zeros((h, w), np.uint8)
        polys = [np.round(p * 16).astype(np.int32) for p in _outline(outlines[o], cx, cy, r, angle=angle)]
        cv2.fillPoly(mask, polys, 255, cv2.LINE_8, 4)
        if not mask.any():
            continue
        x0, y0, bw, bh = cv2.boundingRect(mask)
        texture = _fill(rng, bh, bw)
        region = img[y0:y0 + bh, x0:x0 + bw]
        sel = mask[y0:y0 + bh, x0:x0 + bw] > 0
        region[sel] = texture[sel]
        mean = texture[sel].mean(0)
        ink = tuple(float(v) for v in np.where(mean > 128, rng.uniform(0, 70, 3), rng.uniform(185, 255, 3)))
        _marking(img, markings[mk], cx, cy, r=r, angle=angle, color=ink)
        full = (mask > 0).sum() / max(1.0, _area(outlines[o], r))  # share inside the image
        objects.append((o * len(markings) + mk, mask, min(1.0, full)))
    img = _light(rng, img)
    labels, hidden = [], np.zeros((h, w), np.uint8)
    for cls, mask, inside in reversed(objects):  # later objects cover earlier ones
        visible = cv2.bitwise_and(mask, cv2.bitwise_not(hidden))
        hidden = cv2.bitwise_or(hidden, mask)
        share = (visible > 0).sum() / max(1, (mask > 0).sum()) * inside
        if share < MIN_VISIBLE:
            continue
        if masks:
            contours, _ = cv2.findContours(visible, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            poly = max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float64)
            if len(poly) < 3:
                continue
            labels.insert(0, f"{cls} " + " ".join(f"{v:.6f}" for v in (poly / (w, h)).clip(0, 1).reshape(-1)))
        else:
            x0, y0, bw, bh = cv2.boundingRect(visible)
            labels.insert(0, f"{cls} {(x0 + bw / 2) / w:.6f} {(y0 + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}")
    return img, labels


_UNIT_AREA: dict[str, float] = {}


def _area(name: str, r: float) -> float:
    """Pixel area of an outline of radius r (from a large rendering, cached per outline)."""
    if name not in _UNIT_AREA:
        canvas = np.zeros((400, 400), np.uint8)
        cv2.fillPoly(canvas, [np.round(p * 16).astype(np.int32) for p in _outline(name, 200, 200, 150, angle=0.0)], 255,
                     cv2.LINE_8, 4)
        _UNIT_AREA[name] = (canvas > 0).sum() / 150**2
    return _UNIT_AREA[name] * r * r
