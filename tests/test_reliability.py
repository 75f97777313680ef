"""Bad input, unusable outputs and interruptions, through the real CLI: one line, exit 2, nothing written or deleted.

A kill (SIGTERM as from `kill`, systemd, Docker or CI) unwinds like Ctrl-C; temporaries of a dead writer are removed
by the next run; two `optimize` runs never share a run folder.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import IMGSZ, run_cli
from tests.test_cli import _assert_clean_error

FIVE = "names: {0: circle, 1: square, 2: triangle, 3: cross, 4: ring}\n"


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under `folder` with its size and mtime: equal before and after means nothing written or deleted."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.fixture()
def work(tmp_path, v8_checkpoint) -> Path:
    """A folder holding a copy of the tiny checkpoint (so nothing is ever written next to the shared one)."""
    shutil.copy(v8_checkpoint, tmp_path / "m.pt")
    return tmp_path


def _bad_dataset(folder: Path, kind: str) -> Path:
    """A data.yaml with empty image folders, or with only corrupt images (with labels)."""
    root = folder / kind
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        if kind == "corrupt":
            for i in range(3):
                (root / "images" / split / f"{i}.jpg").write_bytes(b"not an image" * 10)
                (root / "labels" / split / f"{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    yaml = folder / f"{kind}.yaml"
    yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/val\n{FIVE}")
    return yaml


def test_prune_imgsz_not_a_multiple_of_the_stride(work):
    before = _tree(work)
    r = run_cli("prune", f"model={work / 'm.pt'}", "prune=0.3", f"out={work / 'p.pt'}", "imgsz=100")
    _assert_clean_error(r, "imgsz=100", "multiple of the model stride 32", "imgsz=128")
    assert _tree(work) == before


@pytest.mark.parametrize("kind", ["empty", "corrupt"])
def test_unusable_image_folders(work, kind):
    data = _bad_dataset(work, kind)
    model = work / "m.pt"
    before = _tree(work)
    needle = "no images found" if kind == "empty" else "none of the 3 images"
    _assert_clean_error(run_cli("prune", f"model={model}", "prune=0.3", "prune_method=taylor", f"data={data}",
                                f"out={work / 'p.pt'}", f"imgsz={IMGSZ}"), needle, "'train' split")
    _assert_clean_error(run_cli("train", f"model={model}", f"data={data}", "epochs=1", f"imgsz={IMGSZ}",
                                f"project={work / 'runs'}", "name=t"), needle)
    _assert_clean_error(run_cli("optimize", f"model={model}", f"data={data}", "epochs=1", f"imgsz={IMGSZ}",
                                f"project={work / 'runs'}", "name=o"), needle)
    if kind == "corrupt":  # the calibration reads the same check (dataset_images); once is enough
        _assert_clean_error(run_cli("export", f"model={model}", "int8=True", f"data={data}", f"imgsz={IMGSZ}",
                                    f"out={work / 'q.onnx'}"), needle)
    assert _tree(work) == before


def test_output_that_is_a_folder_or_the_input(work, tiny_data):
    model = work / "m.pt"
    (work / "d").mkdir()
    (work / "x.pt").mkdir()
    before = _tree(work)
    t0 = time.time()
    r = run_cli("export", f"model={model}", "int8=True", f"data={tiny_data}", f"imgsz={IMGSZ}", f"out={work / 'd'}")
    _assert_clean_error(r, "is an existing folder", "model_int8.onnx")
    assert "calibrat" not in r.stdout + r.stderr and "Ultralytics" not in r.stdout  # refused before any work
    assert time.time() - t0 < 60
    _assert_clean_error(run_cli("prune", f"model={model}", "prune=0.3", f"out={work / 'x.pt'}", f"imgsz={IMGSZ}"),
                        "is an existing folder")
    _assert_clean_error(run_cli("prune", f"model={model}", "prune=0.3", f"out={model}", f"imgsz={IMGSZ}"),
                        "is the input")
    _assert_clean_error(run_cli("export", f"model={model}", "int8=True", f"data={tiny_data}", f"imgsz={IMGSZ}",
                                f"out={model}"), "is the input")
    assert _tree(work) == before


def test_unwritable_output(work, tiny_data):
    model = work / "m.pt"
    blocker = work / "file.txt"  # a path below a regular file can never be created
    blocker.write_text("x")
    before = _tree(work)
    _assert_clean_error(run_cli("prune", f"model={model}", "prune=0.3", f"out={blocker / 'p.pt'}", f"imgsz={IMGSZ}"),
                        "is a file, not a folder")
    _assert_clean_error(run_cli("export", f"model={model}", "int8=True", f"data={tiny_data}", f"imgsz={IMGSZ}",
                                f"out={blocker / 'q.onnx'}"), "is a file, not a folder")
    _assert_clean_error(run_cli("optimize", f"model={model}", f"data={tiny_data}", f"project={blocker}", "name=o"),
                        "is a file, not a folder")
    _assert_clean_error(run_cli("benchmark", f"model={model}", f"data={tiny_data}", f"imgsz={IMGSZ}",
                                f"project={blocker}", "name=b"), "is a file, not a folder")
    _assert_clean_error(run_cli("train", f"model={model}", f"data={tiny_data}", f"imgsz={IMGSZ}", "epochs=1",
                                f"project={blocker}"), "is an existing file, not a folder")
    assert _tree(work) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders (the path-below-a-file case covers "
                    "the same check)")
def test_read_only_output_folder(work, tiny_data):
    ro = work / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        _assert_clean_error(run_cli("prune", f"model={work / 'm.pt'}", "prune=0.3", f"out={ro / 'p.pt'}",
                                    f"imgsz={IMGSZ}"), "not writable")
        _assert_clean_error(run_cli("export", f"model={work / 'm.pt'}", "int8=True", f"data={tiny_data}",
                                    f"imgsz={IMGSZ}", f"out={ro / 'q.onnx'}"), "not writable")
        assert not any(ro.iterdir())
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize(("arg", "needle"), [("imgsz=abc", "imgsz=abc must be"), ("epochs=abc", "'epochs' must be an int"),
                                             ("prune_target=5", "prune_target=5 is out of range")])
def test_optimize_validates_the_whole_recipe_first(work, tiny_data, arg, needle):
    r = run_cli("optimize", f"model={work / 'm.pt'}", f"data={tiny_data}", "recipe=cpu-onnx", arg,
                f"project={work / 'runs'}", "name=o")
    _assert_clean_error(r, needle)
    assert not (work / "runs").exists()


def test_missing_recipe_file(work, tiny_data):
    r = run_cli("optimize", f"model={work / 'm.pt'}", f"data={tiny_data}", f"recipe={work / 'mine.yaml'}",
                f"project={work / 'runs'}")
    _assert_clean_error(r, "recipe file not found", "mine.yaml")
    assert "unknown recipe" not in r.stderr and not (work / "runs").exists()


@pytest.mark.parametrize("imgsz", ["-32", "0"])
def test_export_int8_refuses_bad_imgsz(work, tiny_data, imgsz):
    before = _tree(work)
    r = run_cli("export", f"model={work / 'm.pt'}", "int8=True", f"data={tiny_data}", f"imgsz={imgsz}",
                f"out={work / 'q.onnx'}")
    _assert_clean_error(r, f"imgsz={imgsz}")
    assert _tree(work) == before


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory, tiny_data) -> Path:
    """The tiny dataset's yaml with 3 of its 5 classes named: a model of 5 classes does not fit it."""
    yaml = tmp_path_factory.mktemp("three") / "three.yaml"
    yaml.write_text(f"path: {tiny_data.parent}\ntrain: images/train\nval: images/val\n"
                    "names: {0: circle, 1: square, 2: triangle}\n")
    return yaml


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory, v8_checkpoint) -> Path:
    from yolo_opt.deploy.onnx import export_onnx

    return export_onnx(v8_checkpoint, tmp_path_factory.mktemp("onnx") / "m.onnx", imgsz=IMGSZ)


def test_class_count_mismatch_is_caught(work, three_classes, tiny_onnx, tmp_path):
    from yolo_opt.errors import DataError
    from yolo_opt.quant import quantize_onnx

    model = work / "m.pt"
    before = _tree(work)
    _assert_clean_error(run_cli("export", f"model={model}", "int8=True", f"data={three_classes}", f"imgsz={IMGSZ}",
                                f"out={work / 'q.onnx'}"), "has 3 classes but the model predicts 5")
    _assert_clean_error(run_cli("benchmark", f"model={model},{tiny_onnx}", f"data={three_classes}", f"imgsz={IMGSZ}",
                                f"project={work}", "name=b"), "has 3 classes but m.pt predicts 5")
    _assert_clean_error(run_cli("benchmark", f"model={tiny_onnx}", f"data={three_classes}", f"imgsz={IMGSZ}",
                                f"project={work}", "name=b"), "has 3 classes but m.onnx predicts 5")
    _assert_clean_error(run_cli("optimize", f"model={model}", f"data={three_classes}", "stages=[export,ptq]",
                                f"imgsz={IMGSZ}", f"project={work}", "name=o"), "has 3 classes")
    assert _tree(work) == before
    with pytest.raises(DataError, match="has 3 classes but m.onnx predicts 5"):  # the ptq stage's own check
        quantize_onnx(tiny_onnx, three_classes, tmp_path / "q.onnx", calib_images=2, validate=False)
    assert not (tmp_path / "q.onnx").exists()


def test_prune_and_prune_target_together_refused(work):
    from yolo_opt.errors import ConfigError
    from yolo_opt.training import prune_checkpoint

    r = run_cli("prune", f"model={work / 'm.pt'}", "prune=0.3", "prune_target=0.5", f"out={work / 'p.pt'}")
    _assert_clean_error(r, "not both")
    with pytest.raises(ConfigError, match="not both"):
        prune_checkpoint(work / "m.pt", work / "p.pt", prune=0.3, prune_target=0.5)
    assert not (work / "p.pt").exists()


def test_key_given_twice(work, tiny_data):
    _assert_clean_error(run_cli("prune", f"model={work / 'm.pt'}", "prune=0.3", "prune=0.4", f"out={work / 'p.pt'}"),
                        "'prune' is given twice")
    _assert_clean_error(run_cli("export", f"model={work / 'm.pt'}", "int8=True", "quantize=8", f"data={tiny_data}"),
                        "not both")
    assert not (work / "p.pt").exists()


def test_sensitivity_takes_val_arguments(work, tiny_data):
    r = run_cli("sensitivity", f"model={work / 'm.pt'}", f"data={tiny_data}", f"imgsz={IMGSZ}", "ratios=0.5",
                "groups=model.1", "max_images=4", "project=sens", "workers=0", "batch=4", "conf=0.01", "iou=0.6",
                "max_det=50", "rect=False", cwd=work)  # a relative project: the image subset must still be found
    assert r.returncode == 0, r.stderr[-2000:]
    assert (work / "sens" / "exp" / "sensitivity.json").exists()


def _temporaries(folder: Path) -> list[str]:
    """Hidden entries under `folder` (the fixture's folder holds none of its own): partial outputs."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


def test_sigterm_during_int8_export_leaves_nothing(work, tiny_data):
    out = work / "out" / "q.onnx"
    cmd = [sys.executable, "-m", "yolo_opt.cli", "export", f"model={work / 'm.pt'}", "int8=True", f"data={tiny_data}",
           f"imgsz={IMGSZ}", f"out={out}", "calib_images=24"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "YOLO_OFFLINE": "1"})
    deadline = time.time() + 120
    while not _temporaries(work) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert _temporaries(work), "the export wrote no temporary to interrupt"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert err.strip().splitlines()[-1] == "yolo-opt: interrupted (SIGTERM)"
    assert "Traceback" not in err
    assert _temporaries(work) == [] and not out.exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_rerun_removes_only_stale_temporaries_of_ours(work):
    from yolo_opt.io.files import HOST

    dead, out = _dead_pid(), work / "p.pt"
    stale_file = work / f".p.yolo-opt-{HOST}-{dead}.abcd1234.tmp.pt"
    stale_dir = work / f".model_int8.yolo-opt-{HOST}-{dead}.wxyz_678"
    stale_file.write_bytes(b"half")
    stale_dir.mkdir()
    (stale_dir / "pre.onnx").write_bytes(b"half")
    keep = [work / f".p.yolo-opt-{HOST}-{os.getpid()}.abcd1234.tmp.pt",  # a live writer (this test)
            work / f".p.yolo-opt-{'0000' if HOST != '0000' else '1111'}-{dead}.abcd1234.tmp.pt",  # another host's
            work / ".p.abcd1234.tmp.pt", work / ".notes.yolo-opt.txt"]  # the user's own
    for p in keep:
        p.write_bytes(b"keep")
    r = run_cli("prune", f"model={work / 'm.pt'}", "prune=0.3", f"out={out}", f"imgsz={IMGSZ}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.exists() and not stale_file.exists() and not stale_dir.exists()
    assert all(p.read_bytes() == b"keep" for p in keep)


def test_second_optimize_on_the_same_folder_is_refused(work, tiny_data):
    folder = work / "runs" / "same"
    folder.mkdir(parents=True)
    args = ("optimize", f"model={work / 'm.pt'}", f"data={tiny_data}", "stages=[baseline]", f"project={work / 'runs'}",
            "name=same")
    with open(folder / ".lock", "a+") as held:  # another run holds the folder
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(f"{os.getpid()}\n")
        held.flush()
        _assert_clean_error(run_cli(*args), "in use by another yolo-opt run", f"pid {os.getpid()}")
        assert not (folder / "state.json").exists()
    (folder / ".lock").write_text(f"{_dead_pid()}\n")  # a killed run's lock: taken over
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (folder / "state.json").exists()


def test_error_text_is_cut_at_a_word_boundary():
    from yolo_opt.errors import first_line

    text = "word " * 100 + "\nsecond line"
    line = first_line(ValueError(text), 42)
    assert line.endswith(" ...") and len(line) <= 46
    assert all(w == "word" for w in line[:-4].split())
    assert first_line("\x1b[34mtrain: \x1b[0mshort\nmore") == "train: short"
    assert first_line(ValueError()) == "ValueError"
