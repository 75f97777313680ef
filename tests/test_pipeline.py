"""Recipes, the resumable pipeline and its report."""

import json
import re

import pytest

from tests.conftest import run_cli
from yolo_opt.errors import ConfigError
from yolo_opt.pipeline import available_recipes, load_recipe


def test_shipped_recipes_are_valid():
    names = available_recipes()
    assert {"cpu-onnx", "jetson-int8", "accuracy-first"} <= set(names)
    for name in names:
        cfg = load_recipe(name)
        assert cfg["stages"]


def test_recipe_override_from_command_line():
    cfg = load_recipe("cpu-onnx", {"prune_target": 0.3, "epochs": 2})
    assert cfg["prune_target"] == 0.3 and cfg["epochs"] == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stages: [baseline, sharpen]\n", "unknown stage 'sharpen'"),
        ("stages: [baseline]\nprnue: 0.5\n", "unknown key 'prnue'"),
        ("stages: [ptq]\n", "needs an ONNX model"),
        ("prune: 0.5\n", "needs a list of stages"),
        ("stages: [baseline\n", "not valid YAML"),
    ],
)
def test_recipe_errors(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_recipe(path)


def test_unknown_recipe():
    with pytest.raises(ConfigError, match="unknown recipe 'nope'"):
        load_recipe("nope")


def test_benchmark_report_holds_json_figures(tmp_path, v8_checkpoint, tiny_data):
    from ultralytics import YOLO

    onnx = YOLO(str(v8_checkpoint)).export(format="onnx", imgsz=64)
    out = tmp_path / "bench"
    r = run_cli("benchmark", f"model={v8_checkpoint},{onnx}", f"data={tiny_data}", "imgsz=64",
                f"project={tmp_path}", "name=bench")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 2
    report = (out / "report.md").read_text()
    for row in rows.values():
        assert f"{row['map50']:.3f}" in report
        assert f"{row['size_mb']:.3g}" in report
        assert f"{row['latency_ms']:.3g}" in report
    png = (out / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    pt_row, onnx_row = rows.values()
    assert onnx_row["params"] == pytest.approx(pt_row["params"], rel=0.02)
    assert onnx_row["gflops"] == pytest.approx(pt_row["gflops"], rel=0.1)


def test_benchmark_missing_file(tmp_path, tiny_data):
    r = run_cli("benchmark", "model=nope.pt", f"data={tiny_data}", f"project={tmp_path}")
    assert r.returncode == 2 and "not found" in r.stderr
