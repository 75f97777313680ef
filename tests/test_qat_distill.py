"""QAT (Ultralytics' ModelOpt fake-quant through yolo-opt's trainer) and distillation-based recovery."""

import numpy as np
import pytest

from tests.conftest import make_checkpoint, run_cli

TRAIN = ("imgsz=64", "batch=8", "workers=0", "plots=False", "exist_ok=True", "warmup_epochs=0")


@pytest.fixture(scope="module")
def prune_distill_qat_run(tmp_path_factory, v8_checkpoint, tiny_data):
    """prune=0.5 distill=True qat=True: prune + distilled recovery, then a QAT phase, then a QDQ ONNX."""
    project = tmp_path_factory.mktemp("qat")
    r = run_cli("train", f"model={v8_checkpoint}", f"data={tiny_data}", "epochs=1", "prune=0.5", "distill=True",
                "distill_features=1", "qat=True", "qat_epochs=1", f"project={project}", "name=pdq", *TRAIN)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return project, r.stdout + r.stderr


def test_prune_distill_recovers_with_teacher(prune_distill_qat_run):
    project, log = prune_distill_qat_run
    assert "prune step 1/1" in log
    assert "kd_cls" in log and "kd_box" in log  # output-level distillation is part of the recovery
    assert "dis_loss" in log  # and, with distill_features=, Ultralytics' feature distillation too
    assert (project / "pdq" / "weights" / "best.pt").exists()


def test_qat_phase_writes_qdq_onnx_that_ort_runs(prune_distill_qat_run, tiny_data):
    import onnxruntime as ort
    from ultralytics import YOLO

    from yolo_opt.quant import count_qdq

    project, log = prune_distill_qat_run
    onnx_path = project / "pdq-qat" / "weights" / "best_qat.onnx"
    assert onnx_path.exists(), log[-2000:]
    assert count_qdq(onnx_path) > 20
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    (y,) = session.run(None, {session.get_inputs()[0].name: x})
    assert y.shape[:2] == (1, 4 + 5) and np.isfinite(y).all()
    # the QAT phase kept the pruned shapes: far fewer parameters than the unpruned yolov8n (3.0M)
    params = sum(p.numel() for p in YOLO(str(project / "pdq-qat" / "weights" / "best.pt")).model.parameters())
    assert params < 1.2e6
    # the Ultralytics validator runs the QDQ model
    metrics = YOLO(str(onnx_path), task="detect").val(data=str(tiny_data), imgsz=64, batch=1, plots=False)
    assert 0 <= metrics.box.map <= 1


def test_qat_without_pruning_is_one_phase(tmp_path, v8_checkpoint, tiny_data):
    r = run_cli("train", f"model={v8_checkpoint}", f"data={tiny_data}", "epochs=1", "qat=True",
                f"project={tmp_path}", "name=q", *TRAIN)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "q" / "weights" / "best_qat.onnx").exists()
    assert not (tmp_path / "q-qat").exists()


def test_missing_teacher(tmp_path, v8_checkpoint, tiny_data):
    r = run_cli("train", f"model={v8_checkpoint}", f"data={tiny_data}", "prune=0.3", "distill=True",
                "teacher=nowhere.pt", f"project={tmp_path}", "name=t", *TRAIN)
    assert r.returncode == 2 and "teacher model not found" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "t").exists()


def test_teacher_with_other_classes(tmp_path, v8_checkpoint, tiny_data):
    from ultralytics.nn.tasks import DetectionModel

    from yolo_opt.io.checkpoint import save_model

    other = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    other.names = {0: "a", 1: "b", 2: "c"}
    teacher = save_model(other, tmp_path / "other.pt")
    r = run_cli("train", f"model={v8_checkpoint}", f"data={tiny_data}", "prune=0.3", "distill=True",
                f"teacher={teacher}", f"project={tmp_path}", "name=t", *TRAIN)
    assert r.returncode == 2 and "classes" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("asks", ["distill=True", "distill_schedule=linear"])  # a distill_* setting asks for it too
def test_distill_from_yaml_needs_teacher(tmp_path, tiny_data, asks):
    r = run_cli("train", "model=yolov8n.yaml", f"data={tiny_data}", asks, f"project={tmp_path}", *TRAIN)
    assert r.returncode == 2 and "teacher=" in r.stderr and "Traceback" not in r.stderr
    assert not any(tmp_path.iterdir())  # refused before anything is written


def test_amp_flag_is_accepted_on_cpu(tmp_path, tiny_data):
    """amp=True is Ultralytics' own; on CPU it is ignored as Ultralytics does, pruning still runs."""
    ckpt = make_checkpoint("yolov8n.yaml", tmp_path / "m.pt")
    r = run_cli("train", f"model={ckpt}", f"data={tiny_data}", "epochs=1", "prune=0.3", "amp=True",
                f"project={tmp_path}", "name=amp", *TRAIN)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "prune step 1/1" in r.stdout + r.stderr
