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
