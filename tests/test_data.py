"""The generated dataset: deterministic, Ultralytics-format, atomic."""

import hashlib
from pathlib import Path

import pytest

from yolo_opt.data import CLASS_NAMES, make_dataset
from yolo_opt.errors import ConfigError


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "data.yaml"):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes(tmp_path):
    a = make_dataset(tmp_path / "a", seed=3, n_train=6, n_val=2, imgsz=96).parent
    b = make_dataset(tmp_path / "b", seed=3, n_train=6, n_val=2, imgsz=96).parent
    c = make_dataset(tmp_path / "c", seed=4, n_train=6, n_val=2, imgsz=96).parent
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_ultralytics_format(tmp_path):
    from ultralytics.data.utils import check_det_dataset

    yaml_path = make_dataset(tmp_path / "d", n_train=10, n_val=4, imgsz=96)
    info = check_det_dataset(str(yaml_path))
    assert info["nc"] == len(CLASS_NAMES)
    labels = list((yaml_path.parent / "labels" / "train").glob("*.txt"))
    assert len(labels) == 10
    seen = set()
    for f in labels:
        for line in f.read_text().split("\n"):
            if line:
                cls, *box = line.split()
                seen.add(int(cls))
                assert all(0 < float(v) <= 1 for v in box)
    assert len(seen) >= 3, "several classes must appear"


def test_existing_different_dataset_refused(tmp_path):
    make_dataset(tmp_path / "e", seed=0, n_train=3, n_val=1, imgsz=64)
    assert make_dataset(tmp_path / "e", seed=0, n_train=3, n_val=1, imgsz=64).exists()  # same: reused
    with pytest.raises(ConfigError, match="different dataset"):
        make_dataset(tmp_path / "e", seed=1, n_train=3, n_val=1, imgsz=64)


def test_bad_sizes(tmp_path):
    with pytest.raises(ConfigError):
        make_dataset(tmp_path / "f", n_train=0)
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("kind, nc", [("hard", 36), ("transfer", 12)])
def test_hard_sets_deterministic_crowded_and_valid(tmp_path, kind, nc):
    """The hard sets: same seed same bytes; a seed per image (a larger set starts with the smaller one's images);
    many classes, crowded scenes with small objects, boxes inside the image; Ultralytics reads them."""
    from ultralytics.data.utils import check_det_dataset

    a = make_dataset(tmp_path / "a", seed=2, n_train=8, n_val=2, imgsz=256, kind=kind)
    b = make_dataset(tmp_path / "b", seed=2, n_train=8, n_val=2, imgsz=256, kind=kind)
    small = make_dataset(tmp_path / "s", seed=2, n_train=3, n_val=2, imgsz=256, kind=kind)
    assert _digest(a.parent) == _digest(b.parent)
    for i in range(3):
        name = f"images/train/{i:05d}.jpg"
        assert (small.parent / name).read_bytes() == (a.parent / name).read_bytes()
    assert check_det_dataset(str(a))["nc"] == nc
    boxes = [line.split() for f in (a.parent / "labels" / "train").glob("*.txt")
             for line in f.read_text().splitlines() if line]
    assert len(boxes) >= 8 * 5, "crowded scenes"
    assert all(0 <= int(c) < nc and all(0 <= float(v) <= 1 for v in box) for c, *box in boxes)
    widths = sorted(float(b[3]) for b in boxes)
    assert widths[len(widths) // 2] < 0.12, "most objects are small"
    assert len({int(b[0]) for b in boxes}) >= nc // 3
    sizes = {tuple(__import__("cv2").imread(str(p)).shape[:2]) for p in (a.parent / "images" / "train").iterdir()}
    assert len(sizes) > 1 and all(152 <= s <= 256 for hw in sizes for s in hw), sizes


def test_hard_set_segment_polygons_and_cli_refusal(tmp_path):
    from tests.conftest import run_cli

    seg = make_dataset(tmp_path / "seg", seed=0, n_train=2, n_val=1, imgsz=192, kind="hard", task="segment")
    lines = [ln.split() for f in (seg.parent / "labels" / "train").glob("*.txt") for ln in f.read_text().splitlines()]
    assert lines and all(len(ln) >= 7 and len(ln) % 2 == 1 for ln in lines)
    r = run_cli("data", "kind=coco", f"out={tmp_path / 'x'}")
    assert r.returncode == 2 and "kind" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
