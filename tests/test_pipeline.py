"""Recipes, the resumable pipeline and its report."""

import json
import re
from pathlib import Path

import pytest

from tests.conftest import run_cli
from yolo_opt.errors import ConfigError
from yolo_opt.pipeline import available_recipes, load_recipe


def test_shipped_recipes_are_valid():
    names = available_recipes()
    assert {"cpu-onnx", "jetson-int8", "accuracy-first"} <= set(names)
    for name in names:
        recipe = load_recipe(name)
        assert recipe.stages


def test_recipe_override_from_command_line():
    recipe = load_recipe("cpu-onnx", {"prune_target": 0.3, "epochs": 2})
    assert recipe.train.prune.prune_target == 0.3 and recipe.ultralytics["epochs"] == 2


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

    from yolo_opt.bench.latency import with_spread

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
        # each latency as every report shows it: the median and its rounds' range
        assert with_spread(row["latency_ms"], row.get("latency_ms_spread")) in report
        assert row["latency_ms_spread"][0] <= row["latency_ms"] <= row["latency_ms_spread"][1]
    png = (out / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    pt_row, onnx_row = rows.values()
    assert onnx_row["params"] == pytest.approx(pt_row["params"], rel=0.02)
    assert onnx_row["gflops"] == pytest.approx(pt_row["gflops"], rel=0.1)


def test_benchmark_reference_column(tmp_path, v8_checkpoint, tiny_data):
    """reference= measures one more model as the reference: its row is marked and the table compares with it."""
    r = run_cli("benchmark", f"model={v8_checkpoint}", f"reference={v8_checkpoint}", f"data={tiny_data}", "imgsz=64",
                f"project={tmp_path}", "name=bench")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert list(rows) == ["yolov8n", "reference"] and rows["reference"]["reference"]
    assert not rows["yolov8n"].get("reference")
    header = next(line for line in (tmp_path / "bench" / "report.md").read_text().splitlines() if "| stage" in line)
    assert "mAP50-95 (vs input) | vs reference |" in header
    r = run_cli("benchmark", f"model={v8_checkpoint}", f"reference={tmp_path / 'nope.pt'}", f"data={tiny_data}",
                f"project={tmp_path}", "name=b2")
    assert r.returncode == 2 and "nope.pt" in r.stderr and not (tmp_path / "b2").exists()


def test_benchmark_missing_file(tmp_path, tiny_data):
    r = run_cli("benchmark", "model=nope.pt", f"data={tiny_data}", f"project={tmp_path}")
    assert r.returncode == 2 and "not found" in r.stderr


# runtimes=onnx: the select stage measures ONNX Runtime's forms only here (tests/test_select.py covers OpenVINO's)
OPT = ("imgsz=64", "epochs=1", "batch=8", "calib_images=8", "lat_imgsz=64", "plots=False", "workers=0",
       "warmup_epochs=0", "runtimes=onnx")


@pytest.fixture(scope="module")
def optimized(tmp_path_factory, v8_checkpoint, tiny_data):
    """A tiny `yolo-opt optimize` run of the default recipe, killed right after its prune stage, then resumed."""
    import os
    import subprocess
    import sys

    project = tmp_path_factory.mktemp("opt")
    args = ["optimize", f"model={v8_checkpoint}", f"data={tiny_data}", "recipe=cpu-onnx", "name=tiny",
            f"project={project}", *OPT]
    kill = (
        "import dataclasses, os, sys; from yolo_opt.pipeline.stages import STAGES\n"
        "STAGES['export'] = dataclasses.replace(STAGES['export'], fn=lambda *a: os._exit(17))\n"
        "from yolo_opt.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    killed = subprocess.run([sys.executable, "-c", kill, *args], capture_output=True, text=True, timeout=900, env=env)
    assert killed.returncode == 17, killed.stderr[-3000:]
    state = json.loads((project / "tiny" / "state.json").read_text())
    pruned_mtime = (project / "tiny" / "prune.pt").stat().st_mtime
    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    return project / "tiny", state, pruned_mtime, resumed.stdout + resumed.stderr


def test_resume_skips_finished_stages(optimized):
    folder, state_at_kill, pruned_mtime, log = optimized
    assert set(state_at_kill["stages"]) == {"baseline", "reference", "prune"}
    assert "stage 'prune' already done" in log and "stage 'baseline' already done" in log
    assert (folder / "prune.pt").stat().st_mtime == pruned_mtime  # not trained again
    state = json.loads((folder / "state.json").read_text())
    assert all(state["stages"][s]["status"] == "done"
               for s in ("baseline", "reference", "prune", "export", "ptq", "benchmark"))


def test_optimize_report(optimized):
    from yolo_opt.quant import count_qdq

    folder = optimized[0]
    rows = json.loads((folder / "results.json").read_text())
    assert list(rows) == ["baseline", "reference", "pruned", "baseline onnx", "reference onnx", "fp32 onnx",
                          "ptq int8 onnx"]
    assert rows["pruned"]["gflops"] < 0.6 * rows["baseline"]["gflops"]
    # the reference is the input trained the same epochs, unpruned: same size, and the report compares with it
    assert rows["reference"]["gflops"] == rows["baseline"]["gflops"] and rows["reference"]["reference"]
    assert rows["reference onnx"]["reference"] and not rows["pruned"].get("reference")
    assert count_qdq(folder / "model_int8.onnx") > 20
    report = (folder / "report.md").read_text()
    assert "| vs reference |" in report
    for row in rows.values():
        assert f"{row['map50']:.3f}" in report
    assert (folder / "report.png").read_bytes().startswith(b"\x89PNG")
    # the select stage: the fastest form here within the bound, and the report says which and by how much
    selection = json.loads((folder / "deploy" / "selection.json").read_text())
    assert selection["selected"]["eligible"] and Path(selection["model"]).exists()
    assert "## Deployed form (chosen by measurement here)" in report and "Selected: **" in report
    # one file, one figure: every file the selection timed shows the same latency in the report's main table
    timed = {(c["model"], c["form"]): c for c in selection["candidates"]}
    for label, key in (("fp32 onnx", ("pruned", "onnx_fp32")), ("ptq int8 onnx", ("pruned", "onnx_int8")),
                       ("baseline onnx", ("unpruned", "onnx_fp32")), ("reference onnx", ("reference", "onnx_fp32"))):
        assert rows[label]["latency_ms"] == timed[key]["latency_ms"], label
        assert rows[label]["pipeline_ms"] == timed[key]["pipeline_ms"], label
    assert all(r["pipeline_ms"] >= r["latency_ms"] for r in rows.values() if r.get("pipeline_ms") is not None)
    # the reference is a candidate, and the bar is the better of the unpruned models
    assert ("reference", "onnx_fp32") in timed and selection["reference"]["model"] in ("unpruned", "reference")


def test_resume_refuses_other_model(optimized, tmp_path, tiny_data):
    from tests.conftest import make_checkpoint

    other = make_checkpoint("yolo11n.yaml", tmp_path / "other.pt")
    folder = optimized[0]
    r = run_cli("optimize", f"model={other}", f"data={tiny_data}", "recipe=cpu-onnx", "name=tiny",
                f"project={folder.parent}", *OPT)
    assert r.returncode == 2 and "another model or dataset" in r.stderr


def test_optimize_bad_inputs(tmp_path, v8_checkpoint, tiny_data):
    r = run_cli("optimize", f"model={v8_checkpoint}", f"data={tiny_data}", "recipe=nope", f"project={tmp_path}")
    assert r.returncode == 2 and "unknown recipe" in r.stderr
    r = run_cli("optimize", f"model={v8_checkpoint}", f"data={tiny_data}", "stages=[baseline,zap]",
                f"project={tmp_path}")
    assert r.returncode == 2 and "unknown stage 'zap'" in r.stderr
    r = run_cli("optimize", f"model={v8_checkpoint}", f"data={tiny_data}", "bogus_key=1", f"project={tmp_path}")
    assert r.returncode == 2 and "unknown key 'bogus_key'" in r.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_jetson_recipe_end_to_end(tmp_path, v8_checkpoint, tiny_data):
    """prune -> QAT -> export -> bundle -> engine (skipped without TensorRT) -> benchmark, on the tiny model (a second
    recipe end to end: the default set runs the default recipe, killed and resumed, and the demo; QAT and the bundle
    have tests of their own)."""
    r = run_cli("optimize", f"model={v8_checkpoint}", f"data={tiny_data}", "recipe=jetson-int8", "name=j",
                f"project={tmp_path}", "qat_epochs=1", "prune_steps=1", *OPT)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    folder = tmp_path / "j"
    state = json.loads((folder / "state.json").read_text())
    assert [s for s in state["stages"]] == ["baseline", "reference", "prune", "qat", "export", "bundle", "engine",
                                           "benchmark"]
    bundle = folder / "jetson"
    assert {"model_fp32.onnx", "model_int8.onnx", "model_int8_qat.onnx", "metadata.json", "build_engine.py",
            "infer.py"} <= {
        p.name for p in bundle.iterdir()}
    rows = json.loads((folder / "results.json").read_text())
    assert {"baseline", "pruned", "fp32 onnx", "qat int8 onnx"} <= set(rows)
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert "skipped" in state["stages"]["engine"] and "TensorRT" in state["stages"]["engine"]["skipped"]


def test_rerun_of_finished_run_reports_and_other_keys_are_refused(optimized, v8_checkpoint, tiny_data):
    folder = optimized[0]
    args = ["optimize", f"model={v8_checkpoint}", f"data={tiny_data}", "recipe=cpu-onnx", "name=tiny",
            f"project={folder.parent}", *OPT]
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "stage 'benchmark' already done" in again.stdout + again.stderr
    other = run_cli(*args, "prune_target=0.3")
    assert other.returncode == 2 and "other recipe keys" in other.stderr


def test_demo_takes_every_key_it_documents(tmp_path):
    """`yolo-opt demo` end to end on a tiny scale through the CLI, with the keys its messages name (name=,
    max_map_drop=): the report is written and names the deployed form, and nothing lands outside out=."""
    out = tmp_path / "demo"
    r = run_cli("demo", f"out={out}", "name=x", "max_map_drop=0.1", "n_train=16", "n_val=8", "imgsz=64",
                "base_epochs=2", "epochs=1", "batch=8", "warmup_epochs=0", "calib_images=4", "runtimes=onnx",
                "throughput_batch=0", "rounds=1", cwd=tmp_path, timeout=1200)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    report = (out / "x" / "report.md").read_text()
    assert "## Deployed form (chosen by measurement here)" in report and "The bar: " in report
    assert f"report: {out / 'x' / 'report.md'}" in r.stdout + r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # no runs/ in the working folder
    assert not (out / "x" / "deploy" / "candidates").exists()  # intermediates removed once measured
