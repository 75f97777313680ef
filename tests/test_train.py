"""End to end: pruning inside the real Ultralytics trainer, checkpoints in fresh processes, resume."""

import json

import pytest

from tests.conftest import IMGSZ, run_cli, run_cli_killed_after_epoch, run_python

TRAIN = ("imgsz=64", "batch=8", "workers=0", "plots=False", "val=True", "exist_ok=True", "warmup_epochs=0")


def _params(path) -> int:
    r = run_python(f"from ultralytics import YOLO; print(sum(p.numel() for p in YOLO(r'{path}').model.parameters()))")
    assert r.returncode == 0, r.stderr
    return int(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory, v8_checkpoint, tiny_data):
    """`yolo-opt train ... prune=0.5 prune_steps=2` on the tiny model: the CI's real end-to-end run."""
    project = tmp_path_factory.mktemp("runs")
    result = run_cli(
        "train", f"model={v8_checkpoint}", f"data={tiny_data}", "epochs=3", "prune=0.5", "prune_steps=2",
        f"project={project}", "name=pruned", *TRAIN,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return project / "pruned", result.stdout + result.stderr


def test_train_prunes_in_trainer(pruned_run, v8_checkpoint):
    run_dir, log = pruned_run
    assert "prune step 1/2" in log and "prune step 2/2" in log
    assert "Transferred" not in log.split("prune step 1/2")[1]  # never rebuilt from yaml after pruning
    best, last = run_dir / "weights" / "best.pt", run_dir / "weights" / "last.pt"
    assert best.exists() and last.exists()
    ratio = _params(best) / _params(v8_checkpoint)
    assert 0.15 < ratio < 0.45, ratio  # ~0.25 for a 0.5 channel ratio
    assert _params(last) == _params(best)  # best.pt is never the wider, pre-pruning model
    assert "nbs: 8" in (run_dir / "args.yaml").read_text()  # a fine-tune steps the optimizer every batch


def test_fine_tune_steps_every_batch_unless_told():
    from yolo_opt.training.phases import fine_tune_steps

    cases = [("best.pt", {"batch": 8}, 8), ("best.pt", {}, 16), ("best.pt", {"batch": 8, "nbs": 64}, 64),
             ("yolov8n.yaml", {"batch": 8}, None), ("best.pt", {"batch": -1}, None), ("best.pt", {"batch": 0.7}, None)]
    for model, args, nbs in cases:
        fine_tune_steps(model, args)
        assert args.get("nbs") == nbs, (model, args)


def test_pruned_checkpoint_in_fresh_process(pruned_run, tiny_data, tmp_path):
    """Plain Ultralytics (yolo CLI, YOLO class) loads, validates, exports and fine-tunes the pruned model."""
    import subprocess
    import sys

    best = pruned_run[0] / "weights" / "best.pt"
    code = (
        "import json; from ultralytics import YOLO;"
        f"m = YOLO(r'{best}'); r = m.val(data=r'{tiny_data}', imgsz={IMGSZ}, plots=False, batch=8);"
        f"onnx = m.export(format='onnx', imgsz={IMGSZ});"
        "print(json.dumps({'map': float(r.box.map), 'onnx': str(onnx)}))"
    )
    r = run_python(code, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["onnx"].endswith(".onnx")
    yolo = [sys.executable, "-c", "from ultralytics.cfg import entrypoint; entrypoint()"]
    v = subprocess.run([*yolo, "val", f"model={best}", f"data={tiny_data}", f"imgsz={IMGSZ}", "plots=False"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert v.returncode == 0, v.stderr[-2000:]


def test_finetune_keeps_pruned_shapes(pruned_run, tiny_data, tmp_path):
    """A second `yolo-opt train` on the pruned checkpoint fine-tunes it without rebuilding from its yaml."""
    best = pruned_run[0] / "weights" / "best.pt"
    r = run_cli("train", f"model={best}", f"data={tiny_data}", "epochs=1", f"project={tmp_path}", "name=ft", *TRAIN)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _params(tmp_path / "ft" / "weights" / "last.pt") == _params(best)


def test_resume_after_kill_continues_pruned_run(tmp_path, v8_checkpoint, tiny_data):
    """Kill the process right after epoch 2 is saved, then `resume=True` finishes the remaining prune step."""
    args = ["train", f"model={v8_checkpoint}", f"data={tiny_data}", "epochs=4", "prune=0.5", "prune_steps=3",
            f"project={tmp_path}", "name=killed", *TRAIN]
    killed = run_cli_killed_after_epoch(1, *args)
    assert killed.returncode == 17, killed.stderr[-3000:]
    log = killed.stdout + killed.stderr
    assert "prune step 2/3" in log and "prune step 3/3" not in log
    last = tmp_path / "killed" / "weights" / "last.pt"
    mid_params = _params(last)

    resumed = run_cli("train", f"model={last}", "resume=True")
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert "Resuming training" in log
    assert "prune step 3/3" in log and "prune step 1/3" not in log and "prune step 2/3" not in log
    final = _params(tmp_path / "killed" / "weights" / "last.pt")
    assert final < mid_params
    assert 0.15 < final / _params(v8_checkpoint) < 0.45


def test_sparsity_then_bn_pruning(tmp_path, v8_checkpoint, tiny_data):
    """sparsity= trains with L1 on BN scales first; prune_method=bn then cuts the smallest scales."""
    r = run_cli(
        "train", f"model={v8_checkpoint}", f"data={tiny_data}", "epochs=2", "sparsity=0.01", "sparsity_epochs=1",
        "prune=0.3", "prune_method=bn", f"project={tmp_path}", "name=slim", *TRAIN,
    )
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert "prune step 1/1 at epoch 2" in log  # after the 1-epoch sparsity phase


def test_steps_sharing_an_epoch_and_global_ranking(tmp_path, v8_checkpoint, tiny_data):
    """More prune steps than epochs: every step still runs; prune_global ranks channels across layers."""
    r = run_cli("train", f"model={v8_checkpoint}", f"data={tiny_data}", "epochs=1", "prune=0.4", "prune_steps=2",
                "prune_global=True", f"project={tmp_path}", "name=g", *TRAIN)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert "prune step 1/2 at epoch 1" in log and "prune step 2/2 at epoch 1" in log
    assert _params(tmp_path / "g" / "weights" / "last.pt") < 0.8 * _params(v8_checkpoint)


def test_python_api_attach(tmp_path, v8_checkpoint, tiny_data):
    """The README's Python path: attach() to a YOLO model, then Ultralytics' own model.train()."""
    code = (
        "from ultralytics import YOLO; from yolo_opt import attach, ConfigError\n"
        f"m = YOLO(r'{v8_checkpoint}'); attach(m, prune=0.5)\n"
        f"m.train(data=r'{tiny_data}', epochs=1, imgsz=64, batch=8, workers=0, plots=False, project=r'{tmp_path}',"
        " name='api', exist_ok=True, warmup_epochs=0)\n"
        "try:\n    attach(m, qat=True)\nexcept ConfigError as e:\n    print('refused:', e)\n"
    )
    r = run_python(code)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "refused: attach() handles pruning only" in r.stdout
    assert _params(tmp_path / "api" / "weights" / "last.pt") < 0.45 * _params(v8_checkpoint)
