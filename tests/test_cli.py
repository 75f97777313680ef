"""CLI: one clear line and a non-zero exit for each bad input, and nothing written."""

from pathlib import Path

import pytest

from tests.conftest import run_cli


def _assert_clean_error(result, *needles: str):
    assert result.returncode == 2, result.stdout + result.stderr
    err = result.stderr.strip()
    assert err.startswith("yolo-opt: error:"), err
    assert len(err.splitlines()) == 1, f"expected one line, got:\n{err}"
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in err, err


@pytest.fixture(scope="module")
def corrupt_pt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bad") / "corrupt.pt"
    path.write_bytes(b"PK\x03\x04 this is not a checkpoint" * 10)
    return path


@pytest.fixture(scope="module")
def cls_pt(tmp_path_factory) -> Path:
    from ultralytics.nn.tasks import ClassificationModel

    from yolo_opt.io.checkpoint import save_model

    return save_model(ClassificationModel("yolov8n-cls.yaml", nc=3, verbose=False), tmp_path_factory.mktemp("cls") / "cls.pt")


def test_prune_missing_model(tmp_path):
    out = tmp_path / "out.pt"
    _assert_clean_error(run_cli("prune", "model=nowhere/best.pt", "prune=0.5", f"out={out}"), "not found")
    assert not out.exists()


def test_prune_corrupt_model(tmp_path, corrupt_pt):
    out = tmp_path / "out.pt"
    _assert_clean_error(run_cli("prune", f"model={corrupt_pt}", "prune=0.5", f"out={out}"), "corrupt")
    assert not out.exists()


def test_prune_non_detection_model(tmp_path, cls_pt):
    out = tmp_path / "out.pt"
    _assert_clean_error(run_cli("prune", f"model={cls_pt}", "prune=0.5", f"out={out}"), "detection")
    assert not out.exists()


@pytest.mark.parametrize("ratio", ["1.0", "-0.2", "abc"])
def test_prune_ratio_out_of_range(tmp_path, v8_checkpoint, ratio):
    out = tmp_path / "out.pt"
    _assert_clean_error(run_cli("prune", f"model={v8_checkpoint}", f"prune={ratio}", f"out={out}"), "prune=")
    assert not out.exists()


def test_unknown_method(tmp_path, v8_checkpoint):
    out = tmp_path / "out.pt"
    _assert_clean_error(
        run_cli("prune", f"model={v8_checkpoint}", "prune=0.5", "prune_method=magic", f"out={out}"), "prune_method"
    )
    assert not out.exists()


def test_unreachable_target(tmp_path, v8_checkpoint):
    out = tmp_path / "out.pt"
    _assert_clean_error(
        run_cli("prune", f"model={v8_checkpoint}", "prune_target=0.01", f"out={out}", "imgsz=64"), "not reachable"
    )
    assert not out.exists()


def test_unknown_keys(tmp_path, v8_checkpoint, tiny_data):
    _assert_clean_error(run_cli("train", f"model={v8_checkpoint}", f"data={tiny_data}", "prnue=0.5"), "prnue", "prune")
    _assert_clean_error(run_cli("prune", f"model={v8_checkpoint}", "prune=0.5", "out=x.pt", "bogus=1"), "bogus")
    _assert_clean_error(run_cli("frobnicate"), "unknown mode")


def test_train_bad_inputs(tmp_path, v8_checkpoint, tiny_data, corrupt_pt):
    _assert_clean_error(run_cli("train", f"model={v8_checkpoint}", "data=missing.yaml", "prune=0.5"), "missing.yaml")
    _assert_clean_error(run_cli("train", f"model={corrupt_pt}", f"data={tiny_data}", "prune=0.5"), "corrupt")
    _assert_clean_error(run_cli("train", f"model={v8_checkpoint}", f"data={tiny_data}", "prune=1.2"), "prune=")
    _assert_clean_error(
        run_cli("train", f"model={v8_checkpoint}", f"data={tiny_data}", "prune=0.3", "prune_target=0.5"), "not both"
    )
    _assert_clean_error(run_cli("train", f"model={v8_checkpoint}", f"data={tiny_data}", "out=x.pt"), "out")


def test_help_lists_every_key():
    from yolo_opt.options import our_keys

    result = run_cli("help")
    assert result.returncode == 0
    for name in our_keys():
        assert name in result.stdout


def test_help_like_every_cli():
    """`--help` and `-h` as every CLI; `MODE help` (or `MODE --help`) lists that mode's keys only."""
    from yolo_opt.cli import main

    for flag in ("--help", "-h"):
        r = run_cli(flag)
        assert r.returncode == 0 and r.stdout.startswith("usage: yolo-opt MODE") and "max_map_drop" in r.stdout
    r = run_cli("deploy", "help")
    assert r.returncode == 0 and r.stdout.startswith("usage: yolo-opt deploy")
    assert "keep_candidates" in r.stdout and "prune_steps" not in r.stdout  # deploy's keys, not train's
    r = run_cli("data", "--help")
    assert r.returncode == 0 and "n_train" in r.stdout and "max_map_drop" not in r.stdout
    assert main(["nope", "help"]) == 2  # an unknown mode stays an error


def test_train_unreachable_target_writes_nothing(tmp_path, v8_checkpoint, tiny_data):
    r = run_cli("train", f"model={v8_checkpoint}", f"data={tiny_data}", "prune_target=0.01", f"project={tmp_path}",
                "name=never", "imgsz=64")
    _assert_clean_error(r, "not reachable")
    assert not (tmp_path / "never").exists()


def test_yolo_opt_keys_refused_by_plain_modes(v8_checkpoint, tiny_data):
    _assert_clean_error(run_cli("val", f"model={v8_checkpoint}", f"data={tiny_data}", "calib=entropy"), "calib")
    _assert_clean_error(run_cli("benchmark", f"model={v8_checkpoint}", f"data={tiny_data}", "imgsz=abc"), "imgsz")
