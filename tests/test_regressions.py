"""Defects found on a fresh install (Ultralytics 8.4.190), each checked through the real CLI so that it stays fixed:
one clear line and exit 2 where the input is bad, and nothing written outside the output folder."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import IMGSZ, make_checkpoint, run_cli

TRIAL = ("epochs=1", f"imgsz={IMGSZ}", "batch=8", "workers=0", "warmup_epochs=0", "prune=0.25", "prune_steps=1")


def test_tune_with_a_relative_project_keeps_its_trials_in_the_study_folder(tmp_path, v8_checkpoint, tiny_data):
    """Ultralytics 8.4.190 places a relative `project=` under its own runs folder: every trial then 'wrote no
    best.pt' where yolo-opt looked. The study folder is made absolute and each trial asks its trainer."""
    r = run_cli("tune", f"model={v8_checkpoint}", f"data={tiny_data}", "project=rel/tune", "study=s", "trials=1",
                *TRIAL, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    study = tmp_path / "rel" / "tune" / "s"
    assert (study / "summary.json").exists() and (study / "pareto.md").exists()
    assert list((study / "trials" / "0000").rglob("best.pt")) and list((study / "trials" / "0000").rglob("*.onnx"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rel"]  # nothing outside it


def test_study_names_cannot_climb_out_of_the_project(tmp_path, v8_checkpoint, tiny_data):
    for name in ("..", ".", "../x"):
        r = run_cli("tune", f"model={v8_checkpoint}", f"data={tiny_data}", f"project={tmp_path / 'p'}",
                    f"study={name}", "trials=1", *TRIAL)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]
        assert "study=" in r.stderr and "Traceback" not in r.stderr
    assert not list(tmp_path.iterdir())


def test_openvino_int8_to_a_folder_of_any_name(tmp_path, v8_checkpoint, tiny_data):
    """`out=my_ir` (no `_openvino_model` in its name) failed after the whole calibration: Ultralytics tells formats
    by folder name. Validation now reads it through a folder of the name Ultralytics expects."""
    out = tmp_path / "my_ir"
    r = run_cli("export", f"model={v8_checkpoint}", "format=openvino", "int8=True", f"data={tiny_data}",
                f"imgsz={IMGSZ}", "calib_images=4", f"out={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list(out.glob("*.xml"))) == 1 and "OpenVINO INT8 IR" in r.stdout and "mAP50-95 FP32" in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_ir"]


def test_yolov10_prunes_instead_of_a_contradictory_refusal(tmp_path):
    """It said "only detection models are supported (this is a 'detect' model with a v10Detect head)"."""
    ckpt = make_checkpoint("yolov10n.yaml", tmp_path / "v10n.pt")
    out = tmp_path / "v10n_pruned.pt"
    r = run_cli("prune", f"model={ckpt}", "prune=0.5", f"out={out}", f"imgsz={IMGSZ}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert out.exists() and "GFLOPs" in r.stdout and Path(ckpt).exists()
